"""The limits on ids and other text (schemas/limits.py), as both codecs apply them."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from schemas.codec import DecodeError, default_codec
from schemas.directory import DirectoryCodec, DirectoryDecodeError, DirectoryRecord
from schemas.event import CollaborationEvent
from schemas.limits import (
    MAX_CONTENT_ID_BYTES,
    MAX_ID_BYTES,
    MAX_VALUES,
    LimitError,
    check_event_texts,
    check_org,
    check_text,
)
from tests.schemas.test_codec import FUZZ, sample_event

CODEC = default_codec()
# One character each of 1, 2, 3 and 4 UTF-8 bytes.
WIDTHS = {1: "x", 2: "é", 3: "日", 4: "😀"}
ID_FIELDS = ("event_id", "org_id", "actor_id", "source", "channel")


def at_length(n_bytes: int, width: int = 1) -> str:
    """Text of exactly `n_bytes` UTF-8 bytes (the tail padded with 'x')."""
    wide, rest = divmod(n_bytes, width)
    return WIDTHS[width] * wide + "x" * rest


def decode_both(event: CollaborationEvent) -> list[CollaborationEvent | DecodeError]:
    """The event through Avro (v1 and v2 writers) and JSON."""
    raws = [CODEC.encode_avro(event, 1), CODEC.encode_avro(event, 2), CODEC.encode_json(event)]
    return CODEC.decode_many(raws)


def reasons(event: CollaborationEvent) -> set[str]:
    return {d.reason if isinstance(d, DecodeError) else "ok" for d in decode_both(event)}


@pytest.mark.parametrize("width", [1, 2, 3, 4])
@pytest.mark.parametrize("field", ID_FIELDS)
def test_ids_of_256_bytes_pass_and_257_are_too_long(field: str, width: int) -> None:
    assert reasons(replace(sample_event(), **{field: at_length(MAX_ID_BYTES, width)})) == {"ok"}
    longer = at_length(MAX_ID_BYTES + 1, width)
    assert reasons(replace(sample_event(), **{field: longer})) == {"too_long"}


@pytest.mark.parametrize("width", [1, 4])
def test_each_recipient_is_limited(width: int) -> None:
    ok = (at_length(MAX_ID_BYTES, width), "u-bob")
    assert reasons(sample_event(recipient_ids=ok)) == {"ok"}
    long = ("u-bob", at_length(MAX_ID_BYTES + 1, width))
    assert reasons(sample_event(recipient_ids=long)) == {"too_long"}


def test_content_id_may_be_1024_bytes() -> None:
    assert reasons(sample_event(content_id=at_length(MAX_CONTENT_ID_BYTES, 3))) == {"ok"}
    assert reasons(sample_event(content_id=at_length(MAX_CONTENT_ID_BYTES + 1))) == {"too_long"}


def test_a_million_character_actor_is_too_long_and_the_detail_does_not_repeat_it() -> None:
    for error in decode_both(sample_event(actor_id="a" * 1_000_000)):
        assert isinstance(error, DecodeError)
        assert error.reason == "too_long"
        assert "actor_id" in error.detail and "aaaa" not in error.detail
        assert len(error.detail) < 100


@pytest.mark.parametrize("char", ["\x00", "\t", "\n", "\r", "\x1b", "\x7f", "\x85", "\x9f"])
@pytest.mark.parametrize("field", [*ID_FIELDS, "content_id", "recipient_ids"])
def test_control_characters_are_bad_ids(field: str, char: str) -> None:
    value: Any = (f"u-{char}x",) if field == "recipient_ids" else f"id-{char}-1"
    assert reasons(replace(sample_event(), **{field: value})) == {"bad_id"}


def test_org_id_with_a_slash_is_a_bad_id_elsewhere_slashes_are_fine() -> None:
    assert reasons(sample_event(org_id="acme/eu")) == {"bad_id"}
    fine = sample_event(actor_id="u/1", recipient_ids=("a/b",), content_id="wiki:a/b")
    assert reasons(fine) == {"ok"}


def test_unicode_that_is_not_a_control_character_is_fine() -> None:
    text = "u-\u200b\u202e\u00a0\ufeff😀"  # zero-width, bidi, nbsp, BOM (Cf/Zs, not Cc)
    assert reasons(sample_event(actor_id=text, event_id=text)) == {"ok"}


def test_too_long_wins_over_a_control_character_in_the_same_field() -> None:
    assert reasons(sample_event(actor_id="\x00" + "x" * 300)) == {"too_long"}


def test_limit_error_is_data() -> None:
    error = LimitError("too_long", "actor_id: 300 bytes (limit 256)")
    assert str(error) == "too_long: actor_id: 300 bytes (limit 256)"
    import pickle

    clone = pickle.loads(pickle.dumps(error))
    assert (clone.reason, clone.detail) == (error.reason, error.detail)


def spec(texts: dict[str, Any]) -> str | None:
    """The limits as DESIGN.md words them, written without the module's fast path."""
    problems: list[str] = []
    if len(texts.get("values", ())) > MAX_VALUES:
        problems.append("too_long")
    for field, value in texts.items():
        values = value if isinstance(value, tuple) else (value,)
        for v in values:
            if v is None:
                continue
            limit = MAX_CONTENT_ID_BYTES if field == "content_id" else MAX_ID_BYTES
            if len(v.encode()) > limit:
                problems.append("too_long")
            elif any(0 <= ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in v) or (
                field == "org_id" and "/" in v
            ):
                problems.append("bad_id")
    return problems[0] if problems else None


any_text = st.text(
    st.sampled_from(["a", "é", "日", "😀", "/", "\x00", "\n", "\x85", " "]), max_size=300
)


@FUZZ
@given(
    st.fixed_dictionaries(
        {
            "event_id": any_text,
            "org_id": any_text,
            "actor_id": any_text,
            "recipient_ids": st.lists(any_text, max_size=3).map(tuple),
            "content_id": st.none() | any_text,
            "channel": st.none() | any_text,
            "source": any_text,
            "values": st.lists(any_text, max_size=3).map(tuple)
            | st.integers(15, 18).map(lambda n: ("v",) * n),
        }
    )
)
def test_check_event_texts_agrees_with_the_spec(texts: dict[str, Any]) -> None:
    want = spec(texts)
    try:
        check_event_texts(**texts)
    except LimitError as exc:
        assert want is not None, exc
        # Field order decides which problem is named first; both tell the same story.
        assert exc.reason in ("too_long", "bad_id")
    else:
        assert want is None


def test_check_text_and_check_org() -> None:
    check_text("x", at_length(MAX_ID_BYTES, 4))
    with pytest.raises(LimitError, match="too_long"):
        check_text("x", at_length(MAX_ID_BYTES + 1, 4))
    with pytest.raises(LimitError, match="U\\+0000"):
        check_text("x", "a\x00b")
    with pytest.raises(LimitError, match="'/'"):
        check_org("org", "a/b")


# --- the directory ---------------------------------------------------------------------

DIRECTORY = DirectoryCodec()


def directory_reason(doc: dict[str, Any], key: bytes | None = None) -> str:
    org, user = doc.get("org_id", "acme"), doc.get("user_id", "u-1")
    body = json.dumps({"org_id": org, "user_id": user, "updated_at": 1, **doc}).encode()
    try:
        DIRECTORY.decode(key if key is not None else f"{org}/{user}".encode(), body)
    except DirectoryDecodeError as exc:
        return exc.reason
    return "ok"


def test_directory_ids_and_names_obey_the_limits() -> None:
    assert directory_reason({"user_id": at_length(MAX_ID_BYTES, 2)}) == "ok"
    assert directory_reason({"user_id": at_length(MAX_ID_BYTES + 1)}) == "too_long"
    assert directory_reason({"org_id": "x" * 300}) == "too_long"
    assert directory_reason({"user_id": "u-\x00"}) == "bad_id"
    assert directory_reason({"display_name": "x" * 257}) == "too_long"
    assert directory_reason({"team": "a\nb"}) == "bad_id"
    assert directory_reason({"display_name": "Zoë Ångström 日本"}) == "ok"


def test_directory_tombstone_keys_obey_the_limits() -> None:
    with pytest.raises(DirectoryDecodeError) as info:
        DIRECTORY.decode(b"acme/" + b"u" * 300, None)
    assert info.value.reason == "too_long"
    with pytest.raises(DirectoryDecodeError) as info:
        DIRECTORY.decode(b"acme/u-\x01", None)
    assert info.value.reason == "bad_id"
    assert DIRECTORY.decode(b"acme/u-1", None) == DirectoryRecord("acme", "u-1", deleted=True)
