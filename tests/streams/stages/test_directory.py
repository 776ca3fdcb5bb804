"""The directory stage with fakes: decode, dead-letter, store, and only then complete the
flush future (what the batch route acks on); retries while ClickHouse is away."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from schemas.directory import DirectoryCodec, DirectoryRecord, directory_key
from sinks.clickhouse import ClickHouseUnavailable
from sinks.directory import DirectoryRow
from streams import metrics
from streams.stages import flush
from streams.stages.directory import DirectoryStage
from streams.stages.flush import Blocking, RawMessage
from tests.streams.stages.test_pipeline import FakePublisher

CODEC = DirectoryCodec()
TOPIC = "directory.users"


class FakeDirectoryStore:
    def __init__(self, log: list[str], fail_times: int = 0) -> None:
        self.log = log
        self.rows: list[DirectoryRow] = []
        self.fail_times = fail_times

    def write(self, rows: Sequence[DirectoryRow]) -> int:
        if self.fail_times:
            self.fail_times -= 1
            raise ClickHouseUnavailable("ClickHouse is away")
        self.log.append("directory")
        self.rows.extend(rows)
        return len(rows)


def stage(fail_times: int = 0) -> tuple[DirectoryStage, FakeDirectoryStore, FakePublisher]:
    log: list[str] = []
    store = FakeDirectoryStore(log, fail_times)
    publisher = FakePublisher(log)
    return (
        DirectoryStage(store, CODEC, publisher, Blocking(), dlq_topic="collab.events.dlq"),
        store,
        publisher,
    )


def record(user: str, **fields: Any) -> DirectoryRecord:
    return DirectoryRecord("acme", user, updated_at=1, **fields)


def message(offset: int, key: bytes | None, value: bytes, partition: int = 0) -> RawMessage:
    return RawMessage(TOPIC, partition, offset, key, value)


def test_records_and_tombstones_are_stored_with_their_offsets_as_versions() -> None:
    s, store, publisher = stage()
    ann, bob = record("ann", team="red"), record("bob", opted_out=True)
    before = metrics.DIRECTORY_APPLIED._value.get()
    stored = asyncio.run(
        s.process(
            [
                message(0, b"acme/ann", CODEC.encode_avro(ann)),
                message(1, b"acme/bob", CODEC.encode_json(bob)),
                message(2, b"acme/bob", b""),  # tombstone (a null value reaches us as b"")
                message(3, b"acme/ann", CODEC.encode_json(record("ann", team="blue"))),
            ]
        )
    )
    # Per person, the latest record and the latest tombstone (the table keeps the same).
    assert stored == 3
    assert sorted((r.record.user_id, r.record.deleted, r.offset) for r in store.rows) == [
        ("ann", False, 3),
        ("bob", False, 1),
        ("bob", True, 2),
    ]
    assert [r.record.team for r in store.rows if r.record.user_id == "ann"] == ["blue"]
    assert publisher.sent == {}
    assert metrics.DIRECTORY_APPLIED._value.get() - before == 4


def test_undecodable_messages_go_to_the_dlq_before_the_batch_is_stored() -> None:
    s, store, publisher = stage()
    ann = record("ann")
    batch = [
        message(5, b"acme/ann", CODEC.encode_json(ann)),
        message(6, b"ann", CODEC.encode_json(ann)),  # key is not org/user
        message(7, None, b""),  # a tombstone nobody can place
        message(8, b"acme/x", b"\x07garbage"),
    ]
    asyncio.run(s.process(batch))
    assert store.log == ["publish:collab.events.dlq", "directory"]
    assert [r.offset for r in store.rows] == [5]
    dead = publisher.sent["collab.events.dlq"]
    assert [dict(h)["kudos.dlq.reason"] for _, _, _, h in dead] == [
        b"key_mismatch",
        b"bad_key",
        b"unknown_encoding",
    ]
    for (key, value, _, headers), m in zip(dead, batch[1:], strict=True):
        assert (key, value) == (m.key, m.value)  # the original bytes
        h = dict(headers)
        assert h["kudos.dlq.topic"] == TOPIC.encode()
        assert h["kudos.dlq.offset"] == str(m.offset).encode()


def test_the_flush_future_completes_only_once_stored_and_retries_meanwhile(
    monkeypatch: Any,
) -> None:
    monkeypatch.setattr(flush.asyncio, "sleep", _no_sleep)
    s, store, _ = stage(fail_times=3)

    async def run() -> None:
        first = await s.submit([message(0, directory_key("acme", "ann"), b"")])
        second = await s.submit([message(1, directory_key("acme", "bob"), b"")])
        assert await first == 1
        assert await second == 1

    asyncio.run(run())
    assert [r.offset for r in store.rows] == [0, 1]  # in order, after three failures


def test_a_replayed_batch_writes_the_same_rows_again() -> None:
    s, store, _ = stage()
    batch = [message(4, b"acme/ann", CODEC.encode_json(record("ann", opted_out=True)))]
    asyncio.run(s.process(batch))
    asyncio.run(s.process(batch))
    assert store.rows[0] == store.rows[1]  # same (person, version): the table collapses them


async def _no_sleep(_: float) -> None:
    return None
