-- Readers registry, raw reads and sightings with their area index.
-- Times are Int64 UTC epoch milliseconds everywhere (the Python API's unit).
-- {{name}} placeholders are filled from settings when the migration is rendered.

CREATE TABLE IF NOT EXISTS readers (
    reader_id   UInt32,
    lat         Float64,
    lon         Float64,
    kind        Enum8('fixed' = 1, 'mobile' = 2),
    gateway_id  UInt32,
    district    LowCardinality(String),
    h3_r7       UInt64,
    h3_r9       UInt64,
    h3_r12      UInt64,
    updated_at  Int64
) ENGINE = ReplacingMergeTree(updated_at)
ORDER BY reader_id;

-- Raw reads are kept a few days for replay and read-rate dashboards.
CREATE TABLE IF NOT EXISTS raw_reads (
    tag_id     UInt64 CODEC(ZSTD(1)),
    reader_id  UInt32 CODEC(T64, ZSTD(1)),
    ts_ms      Int64 CODEC(DoubleDelta, ZSTD(1)),
    rssi_dbm   Int8 CODEC(ZSTD(1)),
    flags      UInt8 CODEC(ZSTD(1)),
    lat        Float64 CODEC(Gorilla, ZSTD(1)),
    lon        Float64 CODEC(Gorilla, ZSTD(1))
) ENGINE = MergeTree
PARTITION BY toYYYYMMDD(toDateTime(intDiv(ts_ms, 1000), 'UTC'))
ORDER BY (reader_id, ts_ms, tag_id)
TTL toDateTime(intDiv(ts_ms, 1000), 'UTC') + toIntervalDay({{raw_reads_ttl_days}})
SETTINGS non_replicated_deduplication_window = 10000, ttl_only_drop_parts = 1;

-- One row per sighting version; the identity is (tag_id, reader_id, first_ts). A superseded
-- sighting is retracted by the same key with a higher version and is_deleted = 1, so readers
-- must use FINAL. The key never crosses a partition (first_ts decides both), which lets FINAL
-- run per partition.
CREATE TABLE IF NOT EXISTS sightings (
    tag_id      UInt64 CODEC(Delta, ZSTD(1)),
    reader_id   UInt32 CODEC(T64, ZSTD(1)),
    first_ts    Int64 CODEC(Delta, ZSTD(1)),
    last_ts     Int64 CODEC(Delta, ZSTD(1)),
    n_reads     UInt32 CODEC(T64, ZSTD(1)),
    max_rssi    Int8 CODEC(ZSTD(1)),
    lat         Float64 CODEC(Gorilla, ZSTD(1)),
    lon         Float64 CODEC(Gorilla, ZSTD(1)),
    h3_r7       UInt64 CODEC(ZSTD(1)),
    h3_r9       UInt64 CODEC(ZSTD(1)),
    h3_r12      UInt64 CODEC(ZSTD(1)),
    version     UInt64 CODEC(T64, ZSTD(1)),
    is_deleted  UInt8 CODEC(ZSTD(1)),
    -- a sighting overlapping [from, to] may have begun before `from`: skip granules that ended earlier
    INDEX last_ts_minmax last_ts TYPE minmax GRANULARITY 1
) ENGINE = ReplacingMergeTree(version, is_deleted)
PARTITION BY toYYYYMMDD(toDateTime(intDiv(first_ts, 1000), 'UTC'))
ORDER BY (tag_id, first_ts, reader_id)
TTL toDateTime(intDiv(first_ts, 1000), 'UTC') + toIntervalDay({{sightings_ttl_days}})
SETTINGS non_replicated_deduplication_window = 10000, index_granularity = 1024;

-- Area index: the same rows keyed by (res-9 cell, time). A separate ReplacingMergeTree rather
-- than a projection because projections on Replacing tables are refused or inexact when rows
-- are replaced; this table carries version/is_deleted itself, so FINAL here is exact too.
CREATE TABLE IF NOT EXISTS sightings_by_cell (
    h3_r9       UInt64 CODEC(ZSTD(1)),
    first_ts    Int64 CODEC(Delta, ZSTD(1)),
    tag_id      UInt64 CODEC(ZSTD(1)),
    reader_id   UInt32 CODEC(T64, ZSTD(1)),
    last_ts     Int64 CODEC(Delta, ZSTD(1)),
    n_reads     UInt32 CODEC(T64, ZSTD(1)),
    max_rssi    Int8 CODEC(ZSTD(1)),
    lat         Float64 CODEC(Gorilla, ZSTD(1)),
    lon         Float64 CODEC(Gorilla, ZSTD(1)),
    h3_r12      UInt64 CODEC(ZSTD(1)),
    version     UInt64 CODEC(T64, ZSTD(1)),
    is_deleted  UInt8 CODEC(ZSTD(1)),
    INDEX last_ts_minmax last_ts TYPE minmax GRANULARITY 1
) ENGINE = ReplacingMergeTree(version, is_deleted)
PARTITION BY toYYYYMMDD(toDateTime(intDiv(first_ts, 1000), 'UTC'))
ORDER BY (h3_r9, first_ts, tag_id, reader_id)
TTL toDateTime(intDiv(first_ts, 1000), 'UTC') + toIntervalDay({{sightings_ttl_days}})
SETTINGS non_replicated_deduplication_window = 10000, index_granularity = 1024;

CREATE MATERIALIZED VIEW IF NOT EXISTS sightings_by_cell_mv TO sightings_by_cell AS
SELECT h3_r9, first_ts, tag_id, reader_id, last_ts, n_reads, max_rssi, lat, lon, h3_r12,
       version, is_deleted
FROM sightings;
