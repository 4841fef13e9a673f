"""The HTTP/1.1 server: the app interface, the engine handler, timeouts and the ASGI adapter."""
