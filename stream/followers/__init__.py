"""Compacted topics followed in full by every worker: the hotlist and the reader registry."""
