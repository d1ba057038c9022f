-- Recovery service columns: plates and owner webhooks on bikes, the place of a theft, the alerts
-- topic offset (the SSE event id), audit fields asked for by the police-access rules, and a
-- retired flag so a reader can be removed from the registry without losing its history.

ALTER TABLE bikes ADD COLUMN IF NOT EXISTS plate String;
ALTER TABLE bikes ADD COLUMN IF NOT EXISTS webhook_url String;
ALTER TABLE theft_cases ADD COLUMN IF NOT EXISTS place String;
ALTER TABLE alerts ADD COLUMN IF NOT EXISTS h3_r9 UInt64;
ALTER TABLE alerts ADD COLUMN IF NOT EXISTS stream_offset Int64;
ALTER TABLE alerts ADD COLUMN IF NOT EXISTS read_published_ms Int64;
ALTER TABLE audit_log ADD COLUMN IF NOT EXISTS route String;
ALTER TABLE audit_log ADD COLUMN IF NOT EXISTS case_id String;
ALTER TABLE audit_log ADD COLUMN IF NOT EXISTS reason String;
ALTER TABLE audit_log ADD COLUMN IF NOT EXISTS rows_returned Int64;
ALTER TABLE readers ADD COLUMN IF NOT EXISTS retired UInt8 DEFAULT 0;
