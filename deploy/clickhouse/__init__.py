"""Run Debian's clickhouse-server as a child process for native-protocol tests."""
