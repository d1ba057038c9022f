"""The store: ClickHouse schema and migrations, embedded (chdb) and native backends, the query
library."""
