-- Why: see 0011. Epoch milliseconds of the latest point the decayed score includes.
ALTER TABLE kudos.score_state ADD COLUMN decay_at_ms Int64 DEFAULT 0
