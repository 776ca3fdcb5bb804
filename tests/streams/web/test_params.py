"""The strict parameter reader (streams/web/params.py), without I/O: every bad value is a
`BadRequest` naming the parameter and never repeating the value; good values parse."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from schemas.vocabulary import BOARD_METRICS
from streams.domain.explain import Page
from streams.web.params import MAX_AT, MAX_OFFSET, MIN_AT, BadRequest, Params, parse_user
from tests.streams.factories import ms

NOW = ms("2026-11-25T12:34:56")


def q(*pairs: tuple[str, str]) -> Params:
    return Params(pairs)


def refusal(read: Callable[[], object]) -> str:
    with pytest.raises(BadRequest) as caught:
        read()
    return str(caught.value)


@pytest.mark.parametrize(
    "value",
    [
        "²",
        "\u0663",
        "1e3",
        "+5",
        "-1",
        " 5",
        "5 ",
        "0x10",
        "1_000",
        "0",
        "1001",
        "9" * 40,
        "\uff15",
    ],
)
def test_integers_are_ascii_digits_within_bounds(value: str) -> None:
    assert (
        refusal(lambda: q(("top", value)).integer("top", 10, 1, 1000))
        == "'top' must be an integer from 1 to 1000"
    )


def test_integers_parse_and_default() -> None:
    assert q(("top", "25")).integer("top", 10, 1, 1000) == 25
    assert q(("top", "0007")).integer("top", 10, 1, 1000) == 7
    assert q().integer("top", 10, 1, 1000) == 10
    assert q(("top", "")).integer("top", 10, 1, 1000) == 10  # empty: absent


@pytest.mark.parametrize(
    ("value", "want"),
    [
        ("2026-11-25T12:00:00Z", ms("2026-11-25T12:00:00")),
        ("2026-11-25t12:00:00z", ms("2026-11-25T12:00:00")),
        ("2026-11-25 12:00:00", ms("2026-11-25T12:00:00")),  # no zone: UTC
        ("2026-11-25T13:30:00+01:30", ms("2026-11-25T12:00:00")),
        ("2026-11-25T12:00:00.123456789Z", ms("2026-11-25T12:00:00") + 123),
        (str(NOW), NOW),
        ("2000-01-01T00:00:00Z", MIN_AT),
        (str(MAX_AT - 1), MAX_AT - 1),
    ],
)
def test_times_parse(value: str, want: int) -> None:
    assert q(("at", value)).at(NOW) == want


@pytest.mark.parametrize(
    "value",
    [
        "0000-01-01T00:00:00Z",  # year 0: a 500 once
        "10000-01-01T00:00:00Z",
        "9999-12-31T23:59:59Z",  # beyond 2100
        "1999-12-31T23:59:59Z",
        "2100-01-01T00:00:00Z",
        str(MAX_AT),
        "9" * 30,  # beyond int64: a 500 once
        "-1",
        "²",
        "\u0661\u0667" + "\u0660" * 11,  # Arabic-Indic digits: int() would take them
        "2026-02-30T00:00:00Z",
        "2026-11-25T24:00:00Z",
        "2026-11-25T12:00:00+99:00",
        "2026-11-25",
        "now",
        "2026-11-25T12:00:00Z\x00",
    ],
)
def test_times_out_of_form_or_range_are_refused(value: str) -> None:
    assert refusal(lambda: q(("at", value)).at(NOW)).startswith(
        "'at' must be an RFC 3339 date-time"
    )


def test_time_defaults_to_now() -> None:
    assert q().at(NOW) == NOW


def test_orgs_and_users_obey_the_id_limits() -> None:
    assert q(("org", "acme")).org() == "acme"
    assert q(("org", "ü" * 128)).org() == "ü" * 128  # 256 bytes
    for bad, problem in [
        ("", "is required"),
        ("a/b", "must not contain control characters or '/'"),
        ("a\x00b", "must not contain control characters or '/'"),
        ("ü" * 129, "is too long (at most 256 UTF-8 bytes)"),
    ]:
        with pytest.raises(BadRequest) as caught:
            q(("org", bad)).org()
        assert str(caught.value) == f"'org' {problem}"
    assert refusal(lambda: q().org()) == "'org' is required"
    assert parse_user("a/b") == "a/b"  # a user id may hold '/' (it cannot reach a path)
    for bad in ("", "x" * 257, "\x7f"):
        assert refusal(lambda bad=bad: parse_user(bad)).startswith("'user' ")
    assert q(("user", "ann")).user() == "ann" and q().user() is None


def test_choices_and_windows() -> None:
    assert q().window() == "week"
    assert q(("window", "hour")).window() == "hour"
    assert q().window("day", ("hour", "day", "week")) == "day"
    assert (
        refusal(lambda: q(("window", "all")).window("day", ("hour", "day", "week")))
        == "'window' must be one of hour, day, week"
    )
    assert (
        refusal(lambda: q(("window", "HOUR")).window())
        == "'window' must be one of hour, day, week, month, quarter, year, all"
    )
    assert q(("by", "department")).choice("by", ("team", "department"), "team") == "department"


def test_board_metrics_and_offsets() -> None:
    assert q().metric() == "score" and q(("metric", "")).metric() == "score"
    for metric in BOARD_METRICS:
        assert q(("metric", metric)).metric() == metric
    for bad in ("SCORE", "version", "score DESC", "thanks_received ", "user_id"):
        assert refusal(lambda bad=bad: q(("metric", bad)).metric()) == METRIC_RULE
    assert q().offset() == 0 and q(("offset", "10")).offset() == 10
    assert q(("offset", str(MAX_OFFSET))).offset() == MAX_OFFSET
    for bad in ("-1", str(MAX_OFFSET + 1), "²", "1e3"):
        assert (
            refusal(lambda bad=bad: q(("offset", bad)).offset())
            == "'offset' must be an integer from 0 to 1000000"
        )


def test_a_repeated_parameter_is_refused() -> None:
    assert (
        refusal(lambda: q(("top", "1"), ("top", "1")).integer("top", 10, 1, 1000))
        == "'top' is given more than once"
    )
    assert q(("top", "1"), ("other", "x"), ("other", "y")).integer("top", 10, 1, 5) == 1


def test_pages() -> None:
    page = q(("limit", "50"), ("offset", "100")).page(100, 1000)
    assert page == Page(50, 100)
    assert page.next_offset(True) == 150 and page.next_offset(False) is None
    assert q().page(100, 1000) == Page(100, 0)
    assert q(("offset", str(MAX_OFFSET))).page(1, 1).offset == MAX_OFFSET
    assert (
        refusal(lambda: q(("offset", str(MAX_OFFSET + 1))).page(1, 1))
        == "'offset' must be an integer from 0 to 1000000"
    )
    assert (
        refusal(lambda: q(("top", "1001")).page(10, 1000, name="top"))
        == "'top' must be an integer from 1 to 1000"
    )


METRIC_RULE = (
    "'metric' must be one of score, thanks_received, thanks_given, shares, "
    "reactions_received, distinct_thankers"
)
FIXED_MESSAGES = {
    "'top' must be an integer from 1 to 1000",
    "'offset' must be an integer from 0 to 1000000",
    "'at' must be an RFC 3339 date-time or epoch milliseconds "
    "from 2000-01-01T00:00:00Z to before 2100-01-01T00:00:00Z",
    "'org' is required",
    "'org' is too long (at most 256 UTF-8 bytes)",
    "'org' must not contain control characters or '/'",
    "'window' must be one of hour, day, week, month, quarter, year, all",
    METRIC_RULE,
}


@given(st.text(max_size=300), st.sampled_from(["top", "at", "org", "window", "offset", "metric"]))
def test_any_text_either_parses_or_is_a_fixed_message_naming_the_parameter(
    value: str, name: str
) -> None:
    params = Params([(name, value)])
    read = {
        "top": lambda: params.integer("top", 10, 1, 1000),
        "at": lambda: params.at(NOW),
        "org": params.org,
        "window": params.window,
        "offset": lambda: params.page(10, 100).offset,
        "metric": params.metric,
    }[name]
    try:
        read()
    except BadRequest as exc:
        assert exc.parameter == name
        assert str(exc) in FIXED_MESSAGES  # never the value itself
