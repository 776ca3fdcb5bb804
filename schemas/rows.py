"""Rows that a table stores and more than one layer reads, as typed values.

`sinks/` returns them and the rules (`streams/`) reason about them; defining them here keeps
the storage layer from importing the rules.
"""

from __future__ import annotations

from dataclasses import dataclass

from schemas.vocabulary import Reason

DecisionKey = tuple[str, int, int, str]  # topic, partition, offset, recipient_id


@dataclass(frozen=True, slots=True)
class ThanksDecision:
    """One stored decision about one recipient of a THANKS (a row of kudos.decisions)."""

    org_id: str
    event_id: str
    actor_id: str
    recipient_id: str
    reason: Reason  # what the deciding stage decided
    occurred_at: int  # epoch ms
    topic: str
    partition: int
    offset: int

    @property
    def key(self) -> DecisionKey:
        """Its identity: a stored row references the decision by this lineage."""
        return (self.topic, self.partition, self.offset, self.recipient_id)

    @property
    def counted(self) -> bool:
        return self.reason is Reason.COUNTED


@dataclass(frozen=True, slots=True)
class Audit:
    """How the collusion audit changed a decision (a kudos.reversals row, without the
    other members of the group: only how many there were)."""

    was: str  # the reason the deciding stage gave
    rule: str  # 'reciprocal', 'clique' or 'recap'
    rule_version: int
    group_size: int
    delta: int  # +1: counts now; -1: no longer counts


@dataclass(frozen=True, slots=True)
class DecisionRow:
    """One stored decision (one event x one target), deduplicated. When read with the
    audit applied (`user_entries`), `counted` and `reason` are what the decision is now
    and `audit` says what changed it; `rule_version` stays the deciding stage's."""

    org_id: str
    event_id: str
    event_type: str
    actor_id: str
    recipient_id: str
    counted: bool
    reason: str
    rule_version: int
    occurred_at_ms: int
    visibility: str
    channel: str
    source: str
    src_topic: str
    src_partition: int
    src_offset: int
    decided_at_ms: int
    audit: Audit | None = None


@dataclass(frozen=True, slots=True)
class DecisionGroup:
    """How many decisions of one kind touch a user (see `user_decision_groups`); `reason`
    is the one after the audit, `reversed` and `reinstated` count the decisions the audit
    made stop or start counting."""

    event_type: str
    reason: str
    as_recipient: bool
    as_actor: bool
    decisions: int
    distinct_actors: int
    reversed: int = 0
    reinstated: int = 0


@dataclass(frozen=True, slots=True)
class StoredTotals:
    shares: int
    thanks_given: int
    thanks_received: int
    reactions_received: int
    score: int
