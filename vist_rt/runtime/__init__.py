"""The real-time pipeline: sources, model clock, ZeroMQ wire format, publisher, control, recording."""
