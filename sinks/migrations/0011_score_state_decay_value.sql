-- Why: a time-decayed score beside the window totals (rules: decay_half_life_days). The
-- aggregating stage keeps, per key, the decayed score as of its latest point: decay_value
-- at decay_at_ms, with the half-life in force (decay_half_life_s). Its value at time t is
-- decay_value * pow(2, -(t - decay_at_ms / 1000) / decay_half_life_s); kudos.decayed_scores
-- gives it as of now. One column per migration: 18.16 has no ADD COLUMN IF NOT EXISTS, and
-- the cluster form can then skip a column that an interrupted run already added.
ALTER TABLE kudos.score_state ADD COLUMN decay_value Float64 DEFAULT 0
