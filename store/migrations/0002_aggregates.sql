-- Per-cell-per-minute and per-reader-per-minute aggregates for dashboards.
-- Counts of sightings and tags are uniq states of the sighting identity and of tag_id: they
-- are unchanged when the stream re-sends or upserts the same sighting, so they stay right
-- under exact upserts (a plain count() would grow with every new version).

CREATE TABLE IF NOT EXISTS cell_minute (
    minute_ms  Int64 CODEC(DoubleDelta, ZSTD(1)),
    h3_r9      UInt64 CODEC(ZSTD(1)),
    tags       AggregateFunction(uniq, UInt64),
    sightings  AggregateFunction(uniq, UInt64)
) ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMMDD(toDateTime(intDiv(minute_ms, 1000), 'UTC'))
ORDER BY (minute_ms, h3_r9)
TTL toDateTime(intDiv(minute_ms, 1000), 'UTC') + toIntervalDay({{sightings_ttl_days}})
SETTINGS non_replicated_deduplication_window = 10000;

CREATE MATERIALIZED VIEW IF NOT EXISTS cell_minute_mv TO cell_minute AS
SELECT intDiv(first_ts, 60000) * 60000 AS minute_ms,
       h3_r9,
       uniqState(tag_id) AS tags,
       uniqState(cityHash64(tag_id, reader_id, first_ts)) AS sightings
FROM sightings
WHERE is_deleted = 0
GROUP BY minute_ms, h3_r9;

-- `reads` and `max_rssi` come from raw reads (exact: raw inserts are deduplicated by token);
-- `tags` and `sightings` from sightings.
CREATE TABLE IF NOT EXISTS reader_minute (
    minute_ms  Int64 CODEC(DoubleDelta, ZSTD(1)),
    reader_id  UInt32 CODEC(T64, ZSTD(1)),
    reads      SimpleAggregateFunction(sum, UInt64),
    max_rssi   SimpleAggregateFunction(max, Int8),
    tags       AggregateFunction(uniq, UInt64),
    sightings  AggregateFunction(uniq, UInt64)
) ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMMDD(toDateTime(intDiv(minute_ms, 1000), 'UTC'))
ORDER BY (minute_ms, reader_id)
TTL toDateTime(intDiv(minute_ms, 1000), 'UTC') + toIntervalDay({{sightings_ttl_days}})
SETTINGS non_replicated_deduplication_window = 10000;

CREATE MATERIALIZED VIEW IF NOT EXISTS reader_minute_reads_mv TO reader_minute AS
SELECT intDiv(ts_ms, 60000) * 60000 AS minute_ms,
       reader_id,
       count() AS reads,
       max(rssi_dbm) AS max_rssi,
       uniqState(tag_id) AS tags,
       uniqStateIf(toUInt64(0), 0) AS sightings
FROM raw_reads
GROUP BY minute_ms, reader_id;

CREATE MATERIALIZED VIEW IF NOT EXISTS reader_minute_sightings_mv TO reader_minute AS
SELECT intDiv(first_ts, 60000) * 60000 AS minute_ms,
       reader_id,
       toUInt64(0) AS reads,
       toInt8(-128) AS max_rssi,
       uniqState(tag_id) AS tags,
       uniqState(cityHash64(tag_id, reader_id, first_ts)) AS sightings
FROM sightings
WHERE is_deleted = 0
GROUP BY minute_ms, reader_id;
