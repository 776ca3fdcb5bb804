"""The rules of recognition, as pure code: no I/O, no clock, no faust, no ClickHouse.

rules (who gets a point, and why not), windows (calendars), scorebook (window totals and
badges earned), badges, leaders (board thresholds), collusion (the weekly audit), explain
and replay (what a decision meant, what other rules would have decided), state (the rule
state rebuilt from stored rows). Everything here takes its inputs as arguments.
"""
