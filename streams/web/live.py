"""The live page's server-sent events: one poller per watched board, and limits on streams.

`GET /api/live` (streams/web/page.py) streams snapshots of a board. `LiveFeed` reads each
watched board once per interval however many browsers watch it; `StreamLimits` bounds the
open streams per client address and in total (beyond: 429), so a client cannot make the
worker hold thousands of streams. A stream for an org without any points starts no poller
at all (streams/web/page.py). Per-stream queues hold one snapshot: a slow reader skips
snapshots, it never makes memory grow.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Final, Literal

from schemas.vocabulary import WindowName
from streams import metrics

log = logging.getLogger(__name__)

LIVE_POLL_S: Final = 0.25  # how often a live board is re-read while someone watches it
LiveKey = tuple[str, WindowName, int, str]  # org, window, top, view (people | teams)
Refusal = Literal["live_client", "live_total"]


def sse_message(event: str, data: str) -> bytes:
    """One server-sent event; `data` is one line of JSON (json.dumps escapes newlines)."""
    return f"event: {event}\ndata: {data}\n\n".encode()


class StreamLimits:
    """Open streams per client address (at most `per_client`) and in total (`total`)."""

    def __init__(self, total: int, per_client: int) -> None:
        self.total = total
        self.per_client = per_client
        self.open_streams = 0
        self._by_client: dict[str, int] = {}  # only clients with an open stream

    def open(self, client: str) -> Refusal | None:
        """Counts a new stream of `client`; the reason when it may not have one."""
        if self.open_streams >= self.total:
            return "live_total"
        if self._by_client.get(client, 0) >= self.per_client:
            return "live_client"
        self._by_client[client] = self._by_client.get(client, 0) + 1
        self.open_streams += 1
        metrics.LIVE_STREAMS.set(self.open_streams)
        return None

    def close(self, client: str) -> None:
        left = self._by_client.get(client, 0) - 1
        if left < 0:
            return
        if left:
            self._by_client[client] = left
        else:
            del self._by_client[client]
        self.open_streams -= 1
        metrics.LIVE_STREAMS.set(self.open_streams)


class _Channel:
    __slots__ = ("last", "subscribers", "task")

    def __init__(self) -> None:
        self.last: str | None = None
        self.subscribers: set[asyncio.Queue[str | None]] = set()
        self.task: asyncio.Task[None] | None = None


def _offer(queue: asyncio.Queue[str | None], item: str | None) -> None:
    """Latest wins: a slow reader skips snapshots it has not read yet, never falls behind."""
    if queue.full():
        queue.get_nowait()
    queue.put_nowait(item)


class LiveFeed:
    """Live snapshots of boards people are watching, one reader per board.

    While a key has subscribers, one task loads its snapshot every `interval_s` and hands
    it, as JSON, to every subscriber when it differs from the last one. ClickHouse sees one
    read per watched board and interval however many browsers watch it, and a browser gets
    a message only when something it shows changed. Reading ClickHouse (rather than hooking
    this worker's writes) also sees what other workers of the group wrote.
    """

    def __init__(
        self,
        load: Callable[[LiveKey], Awaitable[dict[str, Any]]],
        interval_s: float = LIVE_POLL_S,
    ) -> None:
        self._load = load
        self.interval_s = interval_s
        self._channels: dict[LiveKey, _Channel] = {}

    def subscribe(self, key: LiveKey) -> asyncio.Queue[str | None]:
        channel = self._channels.get(key)
        if channel is None:
            channel = self._channels[key] = _Channel()
            metrics.LIVE_BOARDS_WATCHED.set(len(self._channels))
        queue: asyncio.Queue[str | None] = asyncio.Queue(maxsize=1)
        if channel.last is not None:
            queue.put_nowait(channel.last)
        channel.subscribers.add(queue)
        if channel.task is None:
            channel.task = asyncio.ensure_future(self._poll(key, channel))
        return queue

    def unsubscribe(self, key: LiveKey, queue: asyncio.Queue[str | None]) -> None:
        channel = self._channels.get(key)
        if channel is None:
            return
        channel.subscribers.discard(queue)
        if not channel.subscribers:
            del self._channels[key]
            metrics.LIVE_BOARDS_WATCHED.set(len(self._channels))
            if channel.task is not None:
                channel.task.cancel()

    @property
    def watched(self) -> int:
        return len(self._channels)

    async def close(self) -> None:
        """Ends every stream (the worker is stopping; browsers reconnect elsewhere)."""
        channels, self._channels = list(self._channels.values()), {}
        metrics.LIVE_BOARDS_WATCHED.set(0)
        for channel in channels:
            if channel.task is not None:
                channel.task.cancel()
            for queue in channel.subscribers:
                _offer(queue, None)

    async def _poll(self, key: LiveKey, channel: _Channel) -> None:
        while True:
            try:
                body = json.dumps(await self._load(key), separators=(",", ":"))
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # ClickHouse away or busy: say so, keep the last board
                log.warning("live page read failed: %s", type(exc).__name__)
                body = json.dumps({"error": "data temporarily unavailable"})
            if body != channel.last:
                channel.last = body
                for queue in channel.subscribers:
                    _offer(queue, body)
            await asyncio.sleep(self.interval_s)
