"""Kafka plumbing of the stream: topics, consumer-group names, admin, metadata and lag helpers."""
