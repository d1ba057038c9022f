-- Owners' bikes, theft cases with their status history, alerts, audit log and API keys.

CREATE TABLE IF NOT EXISTS bikes (
    tag_id         UInt64,
    owner_id       String,
    make           String,
    model          String,
    color          String,
    frame_no       String,
    registered_at  Int64,
    updated_at     Int64,
    is_deleted     UInt8
) ENGINE = ReplacingMergeTree(updated_at, is_deleted)
ORDER BY tag_id;

-- Current state of each case: the row with the highest updated_at wins.
CREATE TABLE IF NOT EXISTS theft_cases (
    case_id      String,
    tag_id       UInt64,
    owner_id     String,
    status       LowCardinality(String),
    reported_at  Int64,
    stolen_at    Int64,
    description  String,
    updated_at   Int64
) ENGINE = ReplacingMergeTree(updated_at)
ORDER BY case_id;

-- Every status change, kept for years (the legal record of a case).
CREATE TABLE IF NOT EXISTS case_status_history (
    case_id  String,
    at_ms    Int64,
    status   LowCardinality(String),
    actor    String,
    note     String
) ENGINE = MergeTree
ORDER BY (case_id, at_ms)
SETTINGS non_replicated_deduplication_window = 10000;

-- alert_id is deterministic (case, sighting), so a redelivered alert replaces itself.
CREATE TABLE IF NOT EXISTS alerts (
    alert_id    String,
    case_id     String,
    tag_id      UInt64,
    reader_id   UInt32,
    first_ts    Int64,
    last_ts     Int64,
    lat         Float64,
    lon         Float64,
    created_at  Int64
) ENGINE = ReplacingMergeTree
ORDER BY alert_id;

CREATE TABLE IF NOT EXISTS audit_log (
    at_ms       Int64 CODEC(DoubleDelta, ZSTD(1)),
    actor       String,
    role        LowCardinality(String),
    action      LowCardinality(String),
    target      String,
    params      String CODEC(ZSTD(3)),
    client_ip   String,
    request_id  String
) ENGINE = MergeTree
PARTITION BY toYYYYMM(toDateTime(intDiv(at_ms, 1000), 'UTC'))
ORDER BY (at_ms, actor)
SETTINGS non_replicated_deduplication_window = 10000;

-- Only a hash of each key is stored; the key itself is shown once at creation.
CREATE TABLE IF NOT EXISTS api_keys (
    key_hash    String,
    key_id      String,
    name        String,
    role        LowCardinality(String),
    owner_id    String,
    created_at  Int64,
    revoked     UInt8,
    updated_at  Int64
) ENGINE = ReplacingMergeTree(updated_at)
ORDER BY key_hash;
