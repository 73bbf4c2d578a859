"""Sans-I/O wire protocols: bytes and text in, typed events out, and back. No sockets, no clocks."""
