"""A real two-shard ClickHouse cluster: two Debian clickhouse-server (18.16) processes and
one ZooKeeper, all on 127.0.0.1, started by the test session without systemd.

Each server is a `ClickHouseServer` (its own directory and ports) plus two files the server
merges into its packaged configuration, the way an operator would deploy them
(deploy/clickhouse/config.d/kudos-cluster.xml, users.d/kudos-profile.xml):

* `config.d/cluster.xml`: `remote_servers` with the cluster `CLUSTER` (shard 01 = server 0,
  shard 02 = server 1, one replica each), `zookeeper`, `distributed_ddl` and the server's
  `macros` (`shard`, `replica`);
* `users.d/profile.xml`: `insert_distributed_sync = 1` for the default profile.

`ClickHouseCluster.start()` raises (with log tails) when a process does not start or the
servers do not see each other and ZooKeeper: a test that needs the cluster fails.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path
from types import TracebackType

from clickhouse_driver import Client

from tests.services.clickhouse_server import ClickHouseServer, ClickHouseServerError
from tests.services.zookeeper import ZooKeeper

CLUSTER = "kudos_test"
READY_TIMEOUT_S = 30.0


def cluster_config(cluster: str, ports: list[int], zookeeper_port: int, shard: int) -> str:
    """config.d XML for one server of a cluster with one shard per port (shard numbers 01..)."""
    shards = "\n".join(
        "      <shard><internal_replication>true</internal_replication>"
        f"<replica><host>127.0.0.1</host><port>{port}</port></replica></shard>"
        for port in ports
    )
    return f"""<?xml version="1.0"?>
<yandex>
  <remote_servers>
    <{cluster}>
{shards}
    </{cluster}>
  </remote_servers>
  <zookeeper>
    <node><host>127.0.0.1</host><port>{zookeeper_port}</port></node>
    <session_timeout_ms>10000</session_timeout_ms>
  </zookeeper>
  <distributed_ddl><path>/clickhouse/task_queue/ddl</path></distributed_ddl>
  <macros>
    <shard>{shard:02d}</shard>
    <replica>r1</replica>
  </macros>
  <interserver_http_host>127.0.0.1</interserver_http_host>
</yandex>
"""


PROFILE_XML = """<?xml version="1.0"?>
<yandex>
  <profiles>
    <default>
      <insert_distributed_sync>1</insert_distributed_sync>
    </default>
  </profiles>
</yandex>
"""


class ClickHouseCluster:
    """ZooKeeper plus `shards` clickhouse-servers forming cluster `name` (one replica each)."""

    def __init__(self, name: str = CLUSTER, shards: int = 2) -> None:
        self.name = name
        self.base = Path(tempfile.mkdtemp(prefix="kudos-ch-cluster-"))
        self.zookeeper = ZooKeeper(self.base / "zookeeper")
        self.servers = [ClickHouseServer(self.base / f"ch{i + 1}") for i in range(shards)]
        ports = [s.port for s in self.servers]
        for number, server in enumerate(self.servers, 1):
            (server.base / "config.d").mkdir(exist_ok=True)
            (server.base / "users.d").mkdir(exist_ok=True)
            (server.base / "config.d" / "cluster.xml").write_text(
                cluster_config(name, ports, self.zookeeper.port, number)
            )
            (server.base / "users.d" / "profile.xml").write_text(PROFILE_XML)

    def start(self) -> None:
        self.zookeeper.start()
        for server in self.servers:
            server.start()
        self._wait_ready()

    def _wait_ready(self) -> None:
        """Every server sees the cluster, its macros and ZooKeeper."""
        deadline = time.monotonic() + READY_TIMEOUT_S
        last: object = None
        while time.monotonic() < deadline:
            try:
                if all(self._ready(server) for server in self.servers):
                    return
            except Exception as exc:  # any failure means "not ready yet"
                last = exc
            time.sleep(0.2)
        tails = "\n".join(s.log_tail() for s in self.servers)
        raise ClickHouseServerError(
            f"cluster {self.name} not ready within {READY_TIMEOUT_S:.0f}s (last: {last!r})\n"
            f"{self.zookeeper.log_tail()}\n{tails}"
        )

    def _ready(self, server: ClickHouseServer) -> bool:
        client = Client(host="127.0.0.1", port=server.port, connect_timeout=2)
        try:
            hosts = client.execute(
                "SELECT count() FROM system.clusters WHERE cluster = %(c)s", {"c": self.name}
            )
            macros = client.execute("SELECT count() FROM system.macros")
            client.execute("SELECT count() FROM system.zookeeper WHERE path = '/'")
        finally:
            client.disconnect()
        return bool(hosts[0][0] == len(self.servers) and macros[0][0] == 2)

    @property
    def urls(self) -> list[str]:
        return [s.url for s in self.servers]

    def close(self) -> None:
        # SIGKILL: the data is thrown away, and a graceful 18.16 stop with ZooKeeper
        # sessions open takes about 20 s.
        for server in self.servers:
            server.kill()
            server.close()
        self.zookeeper.close()
        shutil.rmtree(self.base, ignore_errors=True)

    def __enter__(self) -> ClickHouseCluster:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
