"""`kudos replay`'s run: read the stored decisions, replay them under other rules (the pure
`streams/domain/replay.py`), diff with what is stored and, with `--apply`, write
kudos.replay_scores."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from schemas import times
from schemas.times import ms_to_dt, now_utc
from sinks.history import DecisionHistory
from streams.domain.replay import (
    SEED_MARGIN_MS,
    ReplayError,
    check_calendars,
    diff_windows,
    rebuild_events,
    replay,
    report,
)
from streams.domain.rules import RulesLookup
from streams.settings import RuleOverrides, Settings


def parse_time(value: str) -> int:
    """RFC 3339 (or epoch millis) to epoch millis; a time without zone is UTC."""
    try:
        return times.parse_time(value)
    except ValueError as exc:
        raise ReplayError(f"not an RFC 3339 timestamp: {value!r}") from exc


def load_rules(path: Path, base: Settings) -> RulesLookup:
    """The rules of a TOML file shaped like kudos.toml's `[rules]` and `[org_rules.X]`
    (other tables are ignored, so a whole kudos.toml works). The file replaces the running
    rule overrides: what it does not set is rules v1's default."""
    import tomllib

    try:
        with path.open("rb") as f:
            doc = tomllib.load(f)
        rules = RuleOverrides.model_validate(doc.get("rules", {}))
        org_rules = {
            str(org): RuleOverrides.model_validate(o)
            for org, o in dict(doc.get("org_rules", {})).items()
        }
        return base.model_copy(update={"rules": rules, "org_rules": org_rules}).rules_lookup()
    except (OSError, tomllib.TOMLDecodeError, ValueError) as exc:
        raise ReplayError(f"{path}: {exc}") from exc


def run_replay(
    history: DecisionHistory,
    old_rules: RulesLookup,
    new_rules: RulesLookup,
    start_ms: int,
    end_ms: int,
    org: str | None = None,
    *,
    apply_as: str | None = None,
    rules_text: str = "",
    progress: Callable[[int], object] = lambda n: None,
    total: Callable[[int], object] = lambda n: None,
) -> dict[str, Any]:
    """Read, replay, diff; with `apply_as` (a replay id) also write kudos.replay_scores."""
    if end_ms <= start_ms:
        raise ReplayError("--to must be after --from")
    if apply_as is not None and not history.has_replay_table():
        raise ReplayError(
            "--apply writes to kudos.replay_scores, which this database does not have "
            "(sinks.history.REPLAY_SCORES_DDL, to ship as a migration); nothing was written"
        )
    since = start_ms - max(old_rules.max_grace_ms(), new_rules.max_grace_ms()) - SEED_MARGIN_MS
    last = history.last_offsets(start_ms, end_ms)
    events = rebuild_events(history.replay_rows(since, last))
    check_calendars(events, old_rules, new_rules)
    total(len(events))
    replayed = replay(events, old_rules, new_rules, start_ms, end_ms, org, progress)
    keys = set(replayed.old_book.totals) | set(replayed.new_book.totals)
    windows = diff_windows(replayed, history.stored_totals(keys), new_rules, start_ms, end_ms)
    data = report(replayed, windows, start_ms=start_ms, end_ms=end_ms, since_ms=since, org=org)
    if apply_as is not None:
        at = now_utc()
        rows = [
            (
                apply_as,
                at,
                ms_to_dt(start_ms),
                ms_to_dt(end_ms),
                w.org_id,
                w.window,
                ms_to_dt(w.window_start),
                w.user_id,
                1 if w.whole else 0,
                w.old_score,
                w.new_score,
                *w.new,
                rules_text,
            )
            for w in windows
        ]
        written = history.write_replay_scores(rows)
        data["applied"] = {"table": "kudos.replay_scores", "replay_id": apply_as, "rows": written}
    return data
