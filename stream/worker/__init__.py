"""The worker: consumes gateway batches, validates, sessionizes, geo-indexes and matches the
hotlist; publishes the outputs and checkpoints its partitions."""
