"""Ready-made services built on the engine contract."""
