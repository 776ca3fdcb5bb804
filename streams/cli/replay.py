"""`kudos replay`: read the stored decisions, replay them under other rules (the pure
`streams/domain/replay.py`), diff with what is stored and, with `--apply`, write
kudos.replay_scores.

`streams/cli/main.py` imports this module to build its parser, so what reads ClickHouse and
replays (sinks.history, streams.domain.replay) is imported inside the functions."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from schemas import times
from schemas.times import ms_to_dt, now_utc
from streams.cli.common import log, progress_bar, setup_logging
from streams.domain.rules import RulesLookup
from streams.settings import RuleOverrides, Settings, get_settings

if TYPE_CHECKING:
    from sinks.history import DecisionHistory
    from streams.domain.replay import WindowDiff


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    rp = sub.add_parser(
        "replay",
        help="recompute a time range's scores under other rules and print the diff",
        description="Replays the stored decisions of events that occurred in [--from, --to) "
        "under the rules of --rules and prints, per user and window, old -> new scores and "
        "the decisions that changed. Touches nothing unless --apply.",
    )
    rp.add_argument("--rules", required=True, help="TOML with [rules] / [org_rules.ORG]")
    rp.add_argument("--from", dest="from_", required=True, help="RFC 3339, inclusive")
    rp.add_argument("--to", required=True, help="RFC 3339, exclusive")
    rp.add_argument("--org", default=None, help="report this org only (default: every org)")
    rp.add_argument(
        "--apply",
        action="store_true",
        help="also write the recomputed totals to kudos.replay_scores (never to the live tables)",
    )
    rp.add_argument("--format", choices=("table", "json"), default="table")
    rp.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bar on stderr (default: only when stderr is a terminal)",
    )
    rp.set_defaults(func=cmd_replay)


def cmd_replay(args: argparse.Namespace) -> int:
    """Recompute a time range's scores under the rules of a TOML file (streams/domain/replay.py)."""
    from sinks.clickhouse import connect
    from sinks.history import DecisionHistory
    from streams.domain import replay
    from streams.domain.replay import ReplayError

    settings = get_settings()
    setup_logging(settings)
    try:
        start, end = parse_time(args.from_), parse_time(args.to)
        rules_path = Path(args.rules)
        new_rules = load_rules(rules_path, settings)
        rules_text = rules_path.read_bytes()
    except (ReplayError, OSError) as exc:
        log.error("%s", exc)
        return 2
    progress = progress_bar("replay", args.progress)

    def set_total(n: int) -> None:
        progress.total = n
        progress.refresh()

    ch = connect(settings.clickhouse_url())
    try:
        data = run_replay(
            DecisionHistory(ch),
            settings.rules_lookup(),
            new_rules,
            start,
            end,
            args.org,
            apply_as=replay.replay_id(rules_text, start, end, args.org) if args.apply else None,
            rules_text=rules_text.decode(errors="replace"),
            progress=progress.update,
            total=set_total,
        )
    except ReplayError as exc:
        log.error("%s", exc)
        return 2
    finally:
        progress.close()
        ch.close()
    print(replay.dumps(data) if args.format == "json" else replay.format_table(data))
    return 0


def parse_time(value: str) -> int:
    """RFC 3339 (or epoch millis) to epoch millis; a time without zone is UTC."""
    from streams.domain.replay import ReplayError

    try:
        return times.parse_time(value)
    except ValueError as exc:
        raise ReplayError(f"not an RFC 3339 timestamp: {value!r}") from exc


def load_rules(path: Path, base: Settings) -> RulesLookup:
    """The rules of a TOML file shaped like kudos.toml's `[rules]` and `[org_rules.X]`
    (other tables are ignored, so a whole kudos.toml works). The file replaces the running
    rule overrides: what it does not set is rules v1's default."""
    import tomllib

    from streams.domain.replay import ReplayError

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
    from streams.domain.replay import (
        SEED_MARGIN_MS,
        ReplayError,
        check_calendars,
        diff_windows,
        rebuild_events,
        replay,
        report,
    )

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
        written = _write_replay_scores(history, apply_as, windows, start_ms, end_ms, rules_text)
        data["applied"] = {"table": "kudos.replay_scores", "replay_id": apply_as, "rows": written}
    return data


def _write_replay_scores(
    history: DecisionHistory,
    replay_id: str,
    windows: Sequence[WindowDiff],
    start_ms: int,
    end_ms: int,
    rules_text: str,
) -> int:
    """`--apply`: each window's old and new totals into kudos.replay_scores; rows written."""
    at = now_utc()
    rows = [
        (
            replay_id,
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
    return history.write_replay_scores(rows)
