-- Why: messages that cannot be decoded are recorded in kudos.decisions too (reason
-- 'undecodable', the decoder's reason and detail in `error`), in the same insert as the
-- batch's other decisions. Stored decisions then cover every offset of a batch, so a
-- restarted worker neither re-decides nor re-sends to the DLQ what it already handled.
-- (No IF NOT EXISTS: 18.16 does not parse it; the runner records what it applied.)
ALTER TABLE kudos.decisions ADD COLUMN error String DEFAULT ''
