"""Planted poison messages for the fault tests (`KUDOS_FAULT_POISON_DECIDE`, `..._AGGREGATE`).

A stage meets a message that makes it fail when a bug or a dependency refuses something
about that one message. The tests cannot ship a bug, so they plant one: a rules lookup that
raises for the orgs named by a prefix, handed to one stage only, so an event of such an org
fails inside the deciding stage (while it decides the batch) or, decided normally, inside
the aggregating stage (while it applies the points). Unset, nothing is wrapped.
"""

from __future__ import annotations

from streams.domain.rules import RuleConfig, RulesLookup


class PlantedPoison(RuntimeError):
    """The error a planted poison message raises: a stand-in for a bug."""


class PoisonedRules(RulesLookup):
    """`RulesLookup` that raises `PlantedPoison` for orgs whose id starts with `prefix`."""

    def __init__(self, inner: RulesLookup, prefix: str) -> None:
        super().__init__(inner.default, inner.per_org)
        self.prefix = prefix

    def __call__(self, org_id: str) -> RuleConfig:
        if org_id.startswith(self.prefix):
            raise PlantedPoison(f"fault injected: a poison event of org {org_id!r}")
        return super().__call__(org_id)


def poisoned(rules_for: RulesLookup, prefix: str) -> RulesLookup:
    """`rules_for`, or a `PoisonedRules` over it when a prefix is set."""
    return PoisonedRules(rules_for, prefix) if prefix else rules_for
