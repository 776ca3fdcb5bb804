"""Effects as columns: the points that counted decisions give, one row per point.

The columnar form of `streams.domain.rules.Effect`, as an Arrow record batch of
`EFFECT_SCHEMA`: what the deciding stage publishes and the aggregating stage applies. The
effects of one source event are consecutive rows, in the order `rules.effects_of` gives.

Column `values` (added with schema v3's company values): per thanks_received row, the
event's values that its org lists; an empty list on every other row. Effects written
before it (`EFFECT_SCHEMA_V1`) still decode: `with_values` gives them empty lists.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import numpy as np
import pyarrow as pa

from schemas.vocabulary import Metric
from streams.domain.rules import Effect

# A metric's code in the `metric` column is its index here.
METRIC_CODES: Final[tuple[Metric, ...]] = (
    Metric.SHARES,
    Metric.THANKS_GIVEN,
    Metric.THANKS_RECEIVED,
    Metric.REACTIONS_RECEIVED,
)
METRIC_CODE: Final = {m: i for i, m in enumerate(METRIC_CODES)}
SHARES_CODE: Final = METRIC_CODE[Metric.SHARES]
GIVEN_CODE: Final = METRIC_CODE[Metric.THANKS_GIVEN]
RECEIVED_CODE: Final = METRIC_CODE[Metric.THANKS_RECEIVED]
REACTIONS_CODE: Final = METRIC_CODE[Metric.REACTIONS_RECEIVED]

EFFECT_SCHEMA_V1: Final = pa.schema(
    [
        pa.field("org_id", pa.string(), nullable=False),
        pa.field("user_id", pa.string(), nullable=False),
        pa.field("metric", pa.int8(), nullable=False),
        pa.field("actor_id", pa.string(), nullable=False),
        pa.field("occurred_at", pa.int64(), nullable=False),
        pa.field("partition", pa.int32(), nullable=False),
        pa.field("offset", pa.int64(), nullable=False),
    ]
)
VALUES_TYPE: Final = pa.list_(pa.string())
EFFECT_SCHEMA: Final = EFFECT_SCHEMA_V1.append(pa.field("values", VALUES_TYPE, nullable=False))


def no_values(rows: int) -> pa.ListArray:
    """An empty list of values per row."""
    offsets = pa.array(np.zeros(rows + 1, dtype=np.int32))
    return pa.ListArray.from_arrays(offsets, pa.array([], pa.string()))


def with_values(batch: pa.RecordBatch) -> pa.RecordBatch:
    """A batch of `EFFECT_SCHEMA_V1` (no values column) as one of `EFFECT_SCHEMA`."""
    if batch.schema.equals(EFFECT_SCHEMA):
        return batch
    arrays = [*batch.columns, no_values(batch.num_rows)]
    return pa.RecordBatch.from_arrays(arrays, schema=EFFECT_SCHEMA)


def effect_batch(
    org_id: Sequence[str] | pa.Array,
    user_id: Sequence[str] | pa.Array,
    metric: np.ndarray | Sequence[int],
    actor_id: Sequence[str] | pa.Array,
    occurred_at: np.ndarray | Sequence[int],
    partition: np.ndarray | Sequence[int],
    offset: np.ndarray | Sequence[int],
    values: Sequence[Sequence[str]] | pa.Array | None = None,
) -> pa.RecordBatch:
    """A batch of `EFFECT_SCHEMA` from its columns (`values` None: none on any row)."""
    if values is None:
        values = no_values(len(org_id))
    columns = (org_id, user_id, metric, actor_id, occurred_at, partition, offset, values)
    arrays = [
        c if isinstance(c, pa.Array) else pa.array(c, type=f.type)
        for c, f in zip(columns, EFFECT_SCHEMA, strict=True)
    ]
    return pa.RecordBatch.from_arrays(arrays, schema=EFFECT_SCHEMA)


def effects_to_batch(effects: Sequence[Effect]) -> pa.RecordBatch:
    """`Effect` objects as a batch (tests, and old JSON effects messages)."""
    return effect_batch(
        [e.org_id for e in effects],
        [e.user_id for e in effects],
        [METRIC_CODE[e.metric] for e in effects],
        [e.actor_id for e in effects],
        [e.occurred_at for e in effects],
        [e.partition for e in effects],
        [e.offset for e in effects],
        [list(e.values) for e in effects],
    )


def batch_to_effects(batch: pa.RecordBatch) -> list[Effect]:
    """A batch as `Effect` objects (the per-event oracle in the tests)."""
    c = batch.to_pydict()
    return [
        Effect(org, user, METRIC_CODES[m], actor, at, p, o, tuple(v))
        for org, user, m, actor, at, p, o, v in zip(
            c["org_id"],
            c["user_id"],
            c["metric"],
            c["actor_id"],
            c["occurred_at"],
            c["partition"],
            c["offset"],
            c["values"],
            strict=True,
        )
    ]
