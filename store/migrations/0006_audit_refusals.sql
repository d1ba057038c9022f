-- Refused police requests are audited too: the HTTP status the service answered (200 for a
-- served request) and, for a refusal, what the caller was told.

ALTER TABLE audit_log ADD COLUMN IF NOT EXISTS status UInt16 DEFAULT 200;
ALTER TABLE audit_log ADD COLUMN IF NOT EXISTS refusal String;
