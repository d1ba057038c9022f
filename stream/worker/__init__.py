"""The worker: consumes gateway batches, validates, sessionizes, geo-indexes and matches the
hotlist."""
