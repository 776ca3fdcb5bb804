-- Why: `kudos forget USER --org ORG` asks the worker that owns the person to erase them
-- (sinks/erase.py) and waits for this record of it. It names the org and the request, never
-- the person. A replayed request writes its record again; the engine keeps one.
CREATE TABLE IF NOT EXISTS kudos.erasures
(
    request_id String,
    org_id String,
    rows_touched UInt64,
    erased_at DateTime
)
ENGINE = ReplacingMergeTree()
ORDER BY (org_id, request_id)
