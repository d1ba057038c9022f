-- Exact time index of sightings, for the heatmap and for validating the area index.
-- sightings_by_cell is keyed by cell, so a row superseded from another cell (a mobile reader's
-- sighting whose representative read moved, or a retraction row that carries no cells) stays live
-- there under FINAL. This table is keyed by the sighting identity (first_ts leading), so FINAL here
-- is exact whatever the cells of later versions: the area query keeps an area-index row only if it
-- is the identity's current version here, and the heatmap counts live rows here.

CREATE TABLE IF NOT EXISTS sightings_by_time (
    first_ts    Int64 CODEC(Delta, ZSTD(1)),
    tag_id      UInt64 CODEC(ZSTD(1)),
    reader_id   UInt32 CODEC(T64, ZSTD(1)),
    h3_r7       UInt64 CODEC(ZSTD(1)),
    h3_r9       UInt64 CODEC(ZSTD(1)),
    h3_r12      UInt64 CODEC(ZSTD(1)),
    version     UInt64 CODEC(T64, ZSTD(1)),
    is_deleted  UInt8 CODEC(ZSTD(1))
) ENGINE = ReplacingMergeTree(version, is_deleted)
PARTITION BY toYYYYMMDD(toDateTime(intDiv(first_ts, 1000), 'UTC'))
ORDER BY (first_ts, tag_id, reader_id)
TTL toDateTime(intDiv(first_ts, 1000), 'UTC') + toIntervalDay({{sightings_ttl_days}})
SETTINGS non_replicated_deduplication_window = 10000, index_granularity = 2048,
    min_compress_block_size = 4096, max_compress_block_size = 65536,
    min_age_to_force_merge_seconds = 3600, min_age_to_force_merge_on_partition_only = 1;

CREATE MATERIALIZED VIEW IF NOT EXISTS sightings_by_time_mv TO sightings_by_time AS
SELECT first_ts, tag_id, reader_id, h3_r7, h3_r9, h3_r12, version, is_deleted
FROM sightings;

-- Stores created before this migration: copy what they hold (re-running it is harmless, the
-- ReplacingMergeTree keeps one row per identity and version).
INSERT INTO sightings_by_time
SELECT first_ts, tag_id, reader_id, h3_r7, h3_r9, h3_r12, version, is_deleted
FROM sightings;

-- The latest sighting per (tag, reader), for last_seen from a few small rows whatever the
-- retention. `latest` is the greatest (last_ts, version, first_ts, lat, lon, h3_r9) ever upserted
-- there, `retracted` the first_ts of identities retracted there. At one reader a tag's live
-- sightings never overlap and a live sighting only grows, so a `latest` not retracted is that
-- reader's current latest sighting; a retracted one bounds that reader's live ones from above
-- (last_seen scans the tag's sightings when such a bound could win). `expires` drives the TTL.
CREATE TABLE IF NOT EXISTS tag_reader_latest (
    tag_id     UInt64 CODEC(Delta, ZSTD(1)),
    reader_id  UInt32 CODEC(ZSTD(1)),
    latest     SimpleAggregateFunction(max, Tuple(Int64, UInt64, Int64, Float64, Float64, UInt64))
               CODEC(ZSTD(1)),
    retracted  SimpleAggregateFunction(groupUniqArrayArray, Array(Int64)) CODEC(ZSTD(1)),
    expires    SimpleAggregateFunction(max, Int64) CODEC(ZSTD(1))
) ENGINE = AggregatingMergeTree
ORDER BY (tag_id, reader_id)
TTL toDateTime(intDiv(expires, 1000), 'UTC') + toIntervalDay({{sightings_ttl_days}})
SETTINGS index_granularity = 1024, min_compress_block_size = 4096,
    max_compress_block_size = 65536;

CREATE MATERIALIZED VIEW IF NOT EXISTS tag_reader_latest_mv TO tag_reader_latest AS
SELECT tag_id, reader_id,
       maxIf((last_ts, version, first_ts, lat, lon, h3_r9), is_deleted = 0) AS latest,
       groupUniqArrayIf(first_ts, is_deleted = 1) AS retracted,
       max(first_ts) AS expires
FROM sightings
GROUP BY tag_id, reader_id;

INSERT INTO tag_reader_latest
SELECT tag_id, reader_id,
       maxIf((last_ts, version, first_ts, lat, lon, h3_r9), is_deleted = 0),
       groupUniqArrayIf(first_ts, is_deleted = 1),
       max(first_ts)
FROM sightings
GROUP BY tag_id, reader_id;

-- Point reads decompress whole blocks: 4 KiB blocks instead of 64 KiB-1 MiB cut the work of a
-- one-tag read (+3 % bytes). A partition that stopped receiving rows an hour ago is merged into
-- one part, so a day's track or area query reads one part, not a dozen.
ALTER TABLE sightings MODIFY SETTING min_compress_block_size = 4096,
    max_compress_block_size = 65536, min_age_to_force_merge_seconds = 3600,
    min_age_to_force_merge_on_partition_only = 1;
ALTER TABLE sightings_by_cell MODIFY SETTING min_compress_block_size = 4096,
    max_compress_block_size = 65536, min_age_to_force_merge_seconds = 3600,
    min_age_to_force_merge_on_partition_only = 1;

-- Retracted sighting identities per minute, so dashboards can subtract them:
-- live sightings = uniqMerge(sightings) - uniqMerge(retracted). Exact per reader (a retraction
-- row always carries its tag, reader and first_ts); per cell only when the retraction row carries
-- the cell of the sighting it retracts (the stream's fixed-reader retractions do).
ALTER TABLE cell_minute ADD COLUMN IF NOT EXISTS retracted AggregateFunction(uniq, UInt64);
ALTER TABLE reader_minute ADD COLUMN IF NOT EXISTS retracted AggregateFunction(uniq, UInt64);

CREATE MATERIALIZED VIEW IF NOT EXISTS cell_minute_retracted_mv TO cell_minute AS
SELECT intDiv(first_ts, 60000) * 60000 AS minute_ms,
       h3_r9,
       uniqStateIf(toUInt64(0), 0) AS tags,
       uniqStateIf(toUInt64(0), 0) AS sightings,
       uniqState(cityHash64(tag_id, reader_id, first_ts)) AS retracted
FROM sightings
WHERE is_deleted = 1
GROUP BY minute_ms, h3_r9;

CREATE MATERIALIZED VIEW IF NOT EXISTS reader_minute_retracted_mv TO reader_minute AS
SELECT intDiv(first_ts, 60000) * 60000 AS minute_ms,
       reader_id,
       toUInt64(0) AS reads,
       toInt8(-128) AS max_rssi,
       uniqStateIf(toUInt64(0), 0) AS tags,
       uniqStateIf(toUInt64(0), 0) AS sightings,
       uniqState(cityHash64(tag_id, reader_id, first_ts)) AS retracted
FROM sightings
WHERE is_deleted = 1
GROUP BY minute_ms, reader_id;

-- Retractions stored before this migration (uniq states: re-running adds nothing).
INSERT INTO cell_minute (minute_ms, h3_r9, retracted)
SELECT intDiv(first_ts, 60000) * 60000 AS minute_ms, h3_r9,
       uniqState(cityHash64(tag_id, reader_id, first_ts))
FROM sightings
WHERE is_deleted = 1
GROUP BY minute_ms, h3_r9;

INSERT INTO reader_minute (minute_ms, reader_id, max_rssi, retracted)
SELECT intDiv(first_ts, 60000) * 60000 AS minute_ms, reader_id, toInt8(-128),
       uniqState(cityHash64(tag_id, reader_id, first_ts))
FROM sightings
WHERE is_deleted = 1
GROUP BY minute_ms, reader_id;
