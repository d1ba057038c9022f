"""The gateway side: read columns, wire format, publisher, city simulator and replay."""
