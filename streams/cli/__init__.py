"""The `kudos` command: main (the parser and each command), replay (`kudos replay`'s run),
synthetic (demo traffic)."""
