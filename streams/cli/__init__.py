"""The `kudos` command: main (the parser, one subcommand per module: up, worker, migrate,
produce, forget, leaderboard, replay), common (what they share), synthetic (demo traffic)."""
