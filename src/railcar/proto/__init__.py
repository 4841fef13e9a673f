"""Sans-I/O protocol cores: bytes in, events out, no sockets, loops or clocks."""
