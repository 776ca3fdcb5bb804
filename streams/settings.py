"""The one settings object, read once at start from KUDOS_* variables and optional kudos.toml."""

from __future__ import annotations

import dataclasses
import os
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal, get_type_hints

from pydantic import BaseModel, Field, SecretStr, create_model, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from streams.domain import rules as rules_module
from streams.domain.rules import DEFAULT_RULES, RuleConfig, RulesLookup

# What an override of a RuleConfig field may be, beyond its type (RuleConfig.__post_init__
# checks the same for code that builds a RuleConfig directly).
_OVERRIDE_LIMITS: Final[dict[str, dict[str, Any]]] = {
    "max_recipients_per_event": {"ge": 1},
    "giver_daily_budget": {"ge": 0},
    "giver_weekly_budget": {"ge": 0},
    "timezone": {"description": "IANA time zone of the org's windows"},
    "week_start": {"description": "first day of the week, e.g. sunday"},
    "year_start_month": {"ge": 1, "le": 12, "description": "first month of the fiscal year"},
    "decay_half_life_days": {"gt": 0},
    "collusion_min_each": {"ge": 0},
    "collusion_ratio": {"ge": 0},
    "collusion_max_group": {"ge": 2, "le": 8},
}


class _Overrides(BaseModel):
    """Per-org changes to rules v1: any field of RuleConfig, None meaning unchanged. Rules
    that differ from v1 should say so in `version`: decisions and badges carry it. `badges`
    replaces v1's four (streams/domain/badges.py): [[org_rules.X.badges]]."""

    model_config = {"frozen": True, "extra": "forbid"}

    def apply(self, base: RuleConfig) -> RuleConfig:
        changes = {k: v for k, v in self.model_dump(exclude={"badges"}).items() if v is not None}
        badges = getattr(self, "badges", None)
        if badges is not None:
            names = [b.name for b in badges]
            if len(set(names)) != len(names):
                raise ValueError(f"badge names must be unique: {names}")
            changes["badges"] = badges
        return dataclasses.replace(base, **changes)


def _override_fields() -> dict[str, Any]:
    """One optional field per RuleConfig field, of its type, with its limits."""
    hints = get_type_hints(RuleConfig, globalns=vars(rules_module))
    return {
        f.name: (hints[f.name] | None, Field(None, **_OVERRIDE_LIMITS.get(f.name, {})))
        for f in dataclasses.fields(RuleConfig)
    }


if TYPE_CHECKING:

    class RuleOverrides(_Overrides):
        def __init__(self, **overrides: Any) -> None: ...

else:
    RuleOverrides = create_model("RuleOverrides", __base__=_Overrides, **_override_fields())


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="KUDOS_",
        toml_file=os.environ.get("KUDOS_CONFIG", "kudos.toml"),
        # A file named like a variable (KUDOS_KAFKA_SASL_PASSWORD, KUDOS_CLICKHOUSE, ...) in
        # this directory supplies that setting (a mounted Kubernetes Secret, Docker secrets).
        secrets_dir=os.environ.get("KUDOS_SECRETS_DIR") or None,
        frozen=True,
        extra="ignore",
    )

    kafka: str = Field("", description="bootstrap servers; empty = start the embedded Tansu broker")
    # Kafka security (streams/kafka/security.py turns these into faust, kafka-python and
    # confluent-kafka settings). Secrets are SecretStr: never in repr, logs or dumps. Any
    # of them may come from a file in KUDOS_SECRETS_DIR named like its variable.
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = "PLAIN"
    kafka_sasl_username: str = ""
    kafka_sasl_password: SecretStr = SecretStr("")
    kafka_ssl_ca_file: Path | None = Field(
        None, description="PEM CA bundle that signs the brokers' certificates (default: system)"
    )
    kafka_ssl_cert_file: Path | None = Field(None, description="client certificate (mTLS), PEM")
    kafka_ssl_key_file: Path | None = Field(None, description="client private key (mTLS), PEM")
    kafka_ssl_key_password: SecretStr = SecretStr("")
    kafka_ssl_check_hostname: bool = Field(
        True, description="check that the broker certificate names the host connected to"
    )
    clickhouse: SecretStr = Field(
        SecretStr(""),
        description="chdb:///path or clickhouse://user:password@host:9000/kudos "
        "(empty: chdb in data_dir)",
    )
    # Schema Registry (schemas/registry.py). The URL may carry credentials, so it is a
    # SecretStr like the auth; neither is ever logged (shown URLs have userinfo as ***).
    schema_registry: SecretStr = Field(
        SecretStr(""),
        description="http(s)://[user:pass@]host:port[,...] of a Confluent-compatible "
        "Schema Registry; empty: the schemas shipped in schemas/avro",
    )
    schema_registry_auth: SecretStr = Field(
        SecretStr(""), description="basic auth as user:password, if not in the URL"
    )
    schema_registry_ca_file: Path | None = Field(
        None, description="PEM CA bundle trusted for an https registry (default: the system's)"
    )
    http_port: int = 6066
    http_host: str = "0.0.0.0"
    data_dir: Path = Path("var")
    group_id: str = "kudos"
    events_topic: str = "collab.events"
    dlq_topic: str = "collab.events.dlq"
    badges_topic: str = "recognition.badges"
    effects_topic: str = "kudos.effects"
    # The user directory (compacted; key org_id/user_id; schemas/directory.py).
    directory_topic: str = "directory.users"
    team_min_size: int = Field(
        5,
        ge=1,
        description="team and department boards show groups of at least this many "
        "visible (not opted-out) members",
    )
    partitions: int = Field(4, ge=1, description="partitions of topics the worker creates")
    replication_factor: int = 1
    # Large batches are cheap (one insert per table per batch, each key's row once per
    # batch) and cost no freshness: a batch is cut short whenever no flush is in flight.
    batch_max_events: int = Field(20_000, ge=1)
    batch_max_bytes: int = Field(
        8 << 20, ge=1, description="a batch ends at this many bytes of message values too"
    )
    max_state_keys: int = Field(
        500_000,
        ge=1,
        description="window keys the aggregating stage caches (columns: about 125 bytes "
        "each, and about 350 per user held); "
        "past it the quarter read longest ago is dropped and reloads from ClickHouse when touched",
    )
    read_cache_ms: int = Field(
        100,
        ge=0,
        description="leaderboard answers younger than this are served from memory; up to "
        "10x as old while a background read refreshes them (0: always read)",
    )
    # The HTTP API (streams/web/admission.py, streams/web/guard.py; README "HTTP API limits").
    api_read_concurrency: int = Field(
        4,
        ge=1,
        le=64,
        description="API reads that run at once, each on its own ClickHouse connection "
        "(separate from the writers' and from /health's)",
    )
    api_timeout_s: float = Field(
        5.0,
        gt=0,
        le=60,
        description="an API request that cannot get a read slot, or whose reads do not "
        "finish, within this time answers 503 with Retry-After; ClickHouse stops its "
        "statements a second later (max_execution_time)",
    )
    api_max_waiting: int = Field(
        64, ge=0, description="API reads waiting for a slot beyond this answer 503 at once"
    )
    live_max_streams: int = Field(
        200, ge=1, description="open /api/live streams per worker; beyond: 429"
    )
    live_max_streams_per_client: int = Field(
        4, ge=1, description="open /api/live streams per client address; beyond: 429"
    )
    # Who may read what (streams/web/auth.py; README "Authentication"). No default for
    # `kudos worker`: an open API is a decision someone writes down (`kudos up`: off).
    auth: Literal["jwt", "off"] | None = Field(
        None, description="jwt: OIDC bearer tokens on every /api/* path; off: open API"
    )
    auth_jwks: str = Field(
        "", description="the identity provider's keys: a JWKS file path or an https URL"
    )
    auth_jwks_ca_file: Path | None = Field(
        None, description="PEM CA bundle trusted for an https JWKS URL (default: the system's)"
    )
    auth_jwks_max_age_s: float = Field(
        300.0,
        gt=0,
        description="keys are fetched again when older than this; while they cannot be, "
        "requests with tokens answer 503 (fail closed)",
    )
    auth_issuer: str = Field("", description="the tokens' `iss`")
    auth_audience: str = Field("", description="the tokens' `aud` (one of them)")
    auth_org_claim: str = Field("org", description="claim holding the org id (a.b: nested)")
    auth_roles_claim: str = Field("roles", description="claim holding a list of roles")
    leader_depth: int = Field(
        1000, ge=1, description="leaderboards up to this top-N are read from kudos.leader_rows"
    )
    max_message_bytes: int = Field(
        1 << 20, description="larger events go to the DLQ as too_large (with their bytes)"
    )
    max_transport_bytes: int = Field(
        16 << 20, description="largest message fetched or produced (the DLQ carries originals)"
    )
    fetch_partition_bytes: int = Field(
        2 << 20,
        ge=1,
        description="bytes a fetch asks for per partition (the fetched records are held "
        "as objects until delivered); a larger message still comes whole, as the broker "
        "returns a first record batch that does not fit",
    )
    dlq_max_ratio: float = Field(
        0.5, gt=0, le=1, description="stop when this share of recent input is undecodable"
    )
    dlq_window: int = Field(10_000, ge=1, description="messages the DLQ ratio is taken over")
    dlq_min_messages: int = Field(1000, ge=1, description="messages seen before the ratio counts")
    fault_file: Path | None = Field(
        None, description="tests only: ClickHouse calls fail while this file exists"
    )
    fault_poison_decide: str = Field(
        "",
        description="tests only: events of orgs whose id starts with this raise an "
        "error inside the deciding stage (a planted poison message)",
    )
    fault_poison_aggregate: str = Field(
        "",
        description="tests only: points of orgs whose id starts with this raise an "
        "error inside the aggregating stage (a planted poison message)",
    )
    poison_max_consecutive: int = Field(
        10,
        ge=2,
        description="a stage that meets this many poison messages in a row stops the "
        "worker (exit 70) instead of dead-lettering them: the fault is not in the messages",
    )
    stall_seconds: float = Field(
        120.0,
        gt=0,
        description="a partition with lag whose offset has not moved this long is stalled "
        "(/health/ready fails, kudos_partition_stalled is 1)",
    )
    progress_interval_s: float = Field(
        2.0, gt=0, description="how often lag, stalls and watermark lag are measured"
    )
    audit_interval_s: float = Field(
        30.0,
        gt=0,
        description="how often the collusion audit looks for org weeks that have closed "
        "(only when some org's rules enable it)",
    )
    session_timeout_s: float = 10.0
    fetch_max_wait_ms: int = Field(
        100, ge=1, description="longest a fetch waits at the broker for new data"
    )
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    rules: RuleOverrides = RuleOverrides()
    org_rules: dict[str, RuleOverrides] = Field(default_factory=dict)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (
            init_settings,
            env_settings,
            TomlConfigSettingsSource(settings_cls),
            file_secret_settings,
        )

    @field_validator("auth", mode="before")
    @classmethod
    def _empty_auth_is_unset(cls, value: Any) -> Any:
        return None if value == "" else value

    def clickhouse_url(self) -> str:
        url = self.clickhouse.get_secret_value()
        if url:
            return url
        return f"chdb://{(self.data_dir / 'chdb').resolve()}"

    def rules_lookup(self) -> RulesLookup:
        default = self.rules.apply(DEFAULT_RULES)
        return RulesLookup(default, {org: o.apply(default) for org, o in self.org_rules.items()})


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
