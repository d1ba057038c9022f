"""Sinks into the store: sighting upserts, raw reads, and the merge of late reads (backfill)."""
