"""Kafka plumbing of the stream: topics, group names and members, metadata, offsets and lag."""
