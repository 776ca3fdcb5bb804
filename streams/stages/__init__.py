"""The running chain: from a topic's messages to stored rows, flushed before commit.

drain (batches per route), pipeline (Blocking/retry, publish, the deciding and aggregating
stages), transport (the effects and control topics' wire format), directory (the user
directory stage), audit (the collusion audit's rounds), isolation (poison messages),
breaker (bad input ratio), progress (lag, stalls), state_store (rules objects <-> rows),
faults (test hooks).
"""
