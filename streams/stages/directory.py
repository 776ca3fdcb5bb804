"""The directory stage: `directory.users` -> decode -> dead-letter the undecodable ->
store in `kudos.directory`; the caller acks a batch only when its future completes.

Stateless: a row's version is its offset, and every message of a person has the same key
(so the same partition), so a replayed batch writes the same (person, version) rows again,
which `ReplacingMergeTree(version)` collapses, and the latest message always wins, as
compaction would have it. Nothing is reloaded after a restart or a rebalance.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Protocol

from schemas.directory import DirectoryCodec, DirectoryDecodeError
from sinks.directory import DirectoryRow
from streams import metrics
from streams.stages.flush import (
    Blocking,
    FlushChain,
    Publisher,
    RawMessage,
    dead_letter,
    resolve_schemas,
)


class DirectoryWriter(Protocol):
    def write(self, rows: Sequence[DirectoryRow]) -> int: ...


class DirectoryStage:
    """Applies a batch of directory messages; see the module docstring."""

    name = "directory"  # the `stage` label of its metrics

    def __init__(
        self,
        store: DirectoryWriter,
        codec: DirectoryCodec,
        publisher: Publisher,
        blocking: Blocking,
        *,
        dlq_topic: str,
    ) -> None:
        self.store = store
        self.codec = codec
        self.publisher = publisher
        self.blocking = blocking
        self.dlq_topic = dlq_topic
        self.chain = FlushChain()

    async def reset(self) -> None:
        """After a failed batch (streams/stages/isolation.py): nothing is held but the chain."""
        await self.chain.wait()
        self.chain = FlushChain()

    def split(self, message: RawMessage) -> list[RawMessage] | None:
        return None

    async def poison(self, message: RawMessage, detail: str) -> None:
        """Dead-letter a directory message that fails on its own (streams/stages/isolation.py)."""
        stop = self.blocking.stop_requested
        await dead_letter(self.publisher, self.dlq_topic, [(message, "poison", detail)], stop)

    async def process(self, messages: Sequence[RawMessage]) -> int:
        """Apply and store one batch; returns the number of records stored."""
        return await (await self.submit(messages))

    async def submit(self, messages: Sequence[RawMessage]) -> asyncio.Future[int]:
        """Decode now; the flush (DLQ, then the insert) runs after earlier flushes. The
        future completes when the batch is stored: only then may it be acked."""
        started = time.perf_counter()
        await resolve_schemas(self.codec, messages, self.blocking.stop_requested)
        # Within a batch only the latest record and the latest tombstone of a person
        # matter: the table keeps exactly those per (org_id, user_id, deleted).
        latest: dict[tuple[str, str, bool], DirectoryRow] = {}
        dead: list[tuple[RawMessage, str, str]] = []
        for m, decoded in zip(
            messages,
            self.codec.decode_many([(m.key, m.value) for m in messages]),
            strict=True,
        ):
            if isinstance(decoded, DirectoryDecodeError):
                dead.append((m, decoded.reason, decoded.detail))
                continue
            key = (decoded.org_id, decoded.user_id, decoded.deleted)
            latest[key] = DirectoryRow(decoded, m.partition, m.offset)
        rows = sorted(latest.values(), key=lambda r: (r.partition, r.offset))
        metrics.BATCH_SECONDS.labels("directory").observe(time.perf_counter() - started)

        async def flush() -> int:
            await dead_letter(self.publisher, self.dlq_topic, dead, self.blocking.stop_requested)
            if rows:
                await self.blocking.retrying("directory", self.store.write, rows)
                metrics.INSERT_BATCHES.labels("directory").inc()
                metrics.INSERT_ROWS.labels("directory").inc(len(rows))
            metrics.DIRECTORY_APPLIED.inc(len(messages) - len(dead))
            return len(rows)

        return self.chain.then(flush)
