"""The HTTP API and the live page, on faust's web server.

views (registers the routes; the names the worker and the CLI import), api (leaderboard,
explain, badges, erasures, health, metrics), directory (team boards, bridging, balance),
page (the live page and what it reads), context (what the areas share: the worker they
read, parameters, windows), payloads (the bodies they share), params (every query
parameter parsed once), explain (the explain read), live (the server-sent-event feed),
admission (read slots, /health's probe), guard (request limits and safe errors),
readcache, static/ (the page).
"""
