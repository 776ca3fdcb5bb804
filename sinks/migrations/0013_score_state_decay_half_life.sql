-- Why: see 0011. The org's half-life in seconds when the row was written (7 days in v1).
ALTER TABLE kudos.score_state ADD COLUMN decay_half_life_s Float64 DEFAULT 604800
