"""The HTTP API and the live page, on faust's web server.

views (routes), params (every query parameter parsed once), explain (the explain read),
live (the server-sent-event feed), admission (read slots, /health's probe), guard
(request limits and safe errors), readcache, static/ (the page).
"""
