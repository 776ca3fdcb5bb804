"""Control messages on kudos.effects that change more than one key: erasing a person.

A `forget` control reaches the aggregating stage that owns the person's keys, in its place
among the effects (streams/stages/aggregate.py). That stage drops what it holds of them
(`forget_held`) and runs an `Erasure`: erase the rows (sinks/erase.py), rebuild the org's
boards, tell every effects partition to reset its boards of the org and its deciding stage
to scrub the person (`reset_boards`, `scrub`), then record the erasure.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sinks.clickhouse import ClickHouse
from sinks.erase import erase_person, rebuild_org_boards, record_erasure
from streams import metrics
from streams.domain.tally import ColumnApplied, ColumnBook
from streams.stages.flush import Blocking, Publisher, publish
from streams.stages.transport import Control, encode_control

log = logging.getLogger(__name__)


def forget_held(book: ColumnBook, org: str, user: str) -> None:
    """Drop a person's keys and badges from the stage's book."""
    book.forget_user(org, user)


@dataclass(frozen=True, slots=True)
class Erasure:
    """What erasing a person needs: the stage's writers and the effects topic."""

    blocking: Blocking
    publisher: Publisher
    ch: ClickHouse
    effects_topic: str
    effects_partitions: int
    leader_depth: int

    async def run(self, control: Control, token: str) -> ColumnApplied:
        org, user = control.org_id, control.user_id
        touched = await self.blocking.retrying("erase", erase_person, self.ch, org, user, token)
        await self.blocking.retrying(
            "leader_rows", rebuild_org_boards, self.ch, org, self.leader_depth
        )
        await self._fan_out(org, user, token)
        await self.blocking.retrying(
            "erasures", record_erasure, self.ch, control.request_id, org, sum(touched.values())
        )
        metrics.ERASURES.inc()
        log.info("erased a person of org %s (request %s)", org, control.request_id)
        return ColumnApplied()

    async def _fan_out(self, org: str, user: str, token: str) -> None:
        """Every worker's boards of the org must forget what they knew, and its deciding
        stage the person."""
        reset = encode_control(Control("reset_boards", org))
        scrub = encode_control(Control("scrub", org, user, token=token))
        await publish(
            self.publisher,
            self.effects_topic,
            [
                (None, message, p, [])
                for p in range(self.effects_partitions)
                for message in (reset, scrub)
            ],
            self.blocking.stop_requested,
        )
