"""``auditseal dev up --brokers 3``: the local stack's Kafka as a three-node KRaft cluster.

Each node is a combined broker/controller with the single node's security (SASL_SSL + SCRAM for clients,
mutual TLS between brokers and in the quorum, super users by certificate only, StandardAuthorizer, deny by default), all on loopback with
ports of their own. Node 1 keeps the single node's ports and folder (``.stack/kafka``); node N uses
``.stack/kafka-N`` and ports ``kafka_client + 10 + 3*(N-2)`` (client, internal, controller) unless the
stack's port table says otherwise. The audit topics get replication factor 3 and ``min.insync.replicas=2``:
one node may die without losing an acknowledged event or stopping writes.

The number of nodes is chosen when the stack is first brought up and saved with its ports; changing it
needs ``auditseal dev down --purge``.
"""

from __future__ import annotations

import base64
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from pipeline.dev import kafka
from pipeline.dev.processes import ManagedProcess, StackError, make_private

MAX_BROKERS = 3
NODE_PORT_OFFSET = 10
# three JVMs beside everything else on a small machine: each gets half the single node's heap
CLUSTER_HEAP = "512m"
CLUSTER_REPLICATION = 3
CLUSTER_MIN_INSYNC = 2


@dataclass(frozen=True)
class Node:
    """One Kafka node of the stack: its id, folder, ports and process."""

    node_id: int
    home: Path
    ports: kafka.KafkaPorts
    process: ManagedProcess

    @property
    def name(self) -> str:
        return "kafka" if self.node_id == 1 else f"kafka-{self.node_id}"


def check_brokers(brokers: int) -> int:
    """``brokers`` if the stack can run that many nodes (1 or 3); ConfigError-like StackError otherwise."""
    if brokers not in (1, MAX_BROKERS):
        raise StackError(f"--brokers must be 1 or {MAX_BROKERS} (a KRaft quorum of 3 survives one failure), "
                         f"found {brokers}")
    return brokers


def node_port_names(node_id: int) -> tuple[str, str, str]:
    """The port table's names of node ``node_id``'s client, internal and controller ports."""
    if node_id == 1:
        return "kafka_client", "kafka_internal", "kafka_controller"
    return f"kafka{node_id}_client", f"kafka{node_id}_internal", f"kafka{node_id}_controller"


def cluster_ports(ports: dict[str, int], brokers: int) -> dict[str, int]:
    """``ports`` plus the ports of nodes 2..``brokers`` that it does not name yet."""
    extended = dict(ports)
    for node_id in range(2, brokers + 1):
        for i, name in enumerate(node_port_names(node_id)):
            extended.setdefault(name, ports["kafka_client"] + NODE_PORT_OFFSET + 3 * (node_id - 2) + i)
    return extended


def port_purpose(name: str) -> str | None:
    """What a node port of the table is for ("Kafka node 2 client listener"), None if not a node port."""
    for node_id in range(2, MAX_BROKERS + 1):
        for kind, port_name in zip(("client", "inter-broker", "controller"), node_port_names(node_id)):
            if name == port_name:
                return f"Kafka node {node_id} {kind} listener"
    return None


def nodes(root: Path, ports: dict[str, int], brokers: int, first: ManagedProcess) -> list[Node]:
    """The stack's Kafka nodes; node 1 is the single node of a one-broker stack (process ``first``)."""
    found = []
    for node_id in range(1, brokers + 1):
        client, internal, controller = (ports[name] for name in node_port_names(node_id))
        home = root / "kafka" if node_id == 1 else root / f"kafka-{node_id}"
        process = first if node_id == 1 else ManagedProcess(
            f"kafka-{node_id}", root / "run" / f"kafka-{node_id}.pid", home / "logs" / "kafka.out", str(home))
        found.append(Node(node_id, home, kafka.KafkaPorts(client, internal, controller), process))
    return found


def bootstrap(all_nodes: list[Node]) -> str:
    """The clients' bootstrap list: every node, so a client starts while any one of them is down."""
    return ",".join(f"localhost:{node.ports.client}" for node in all_nodes)


def start_nodes(all_nodes: list[Node], *, java: str, libs: Path, pki_dir: Path, principal_builder: Path,
                log=print) -> tuple[list[ManagedProcess], bool]:
    """Configure, format (once, one cluster id for all) and start every node that is not running.

    Returns the processes started and whether storage was formatted now (a new cluster)."""
    brokers = len(all_nodes)
    quorum = {node.node_id: node.ports.controller for node in all_nodes}
    cluster_id = _existing_cluster_id(all_nodes) or base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
    to_start = [node for node in all_nodes if node.process.pid() is None]
    to_format = []
    for node in to_start:
        make_private(node.home)
        (node.home / "logs").mkdir(mode=0o700, exist_ok=True)
        properties = node.home / "server.properties"
        properties.write_text(kafka.server_properties(
            data_dir=node.home / "data", pki_dir=pki_dir, ports=node.ports, node_id=node.node_id,
            quorum=quorum if brokers > 1 else None, replicas=CLUSTER_REPLICATION if brokers > 1 else 1))
        (node.home / "log4j2.properties").write_text(kafka.log4j_properties(node.home / "logs"))
        if not (node.home / "data" / "meta.properties").exists():
            to_format.append(node)

    def format_node(node: Node) -> None:
        kafka.format_storage(java, libs, node.home / "server.properties", node.home / "log4j2.properties",
                             principal_builder, cluster_id=cluster_id)
        make_private(node.home / "data")  # the storage tool ran with the caller's umask

    if to_format:
        if brokers > 1:
            log(f"kafka: formatting {len(to_format)} node(s) of cluster {cluster_id}")
        with ThreadPoolExecutor(max_workers=len(to_format)) as pool:
            list(pool.map(format_node, to_format))
    started = []
    heap = CLUSTER_HEAP if brokers > 1 else "1g"
    for node in to_start:
        kafka.start_broker(node.process, java, libs, node.home / "server.properties", node.home / "log4j2.properties",
                           principal_builder, heap=heap)
        started.append(node.process)
    return started, bool(to_format) and len(to_format) == len(all_nodes)


def _existing_cluster_id(all_nodes: list[Node]) -> str | None:
    for node in all_nodes:
        meta = node.home / "data" / "meta.properties"
        if meta.exists():
            for line in meta.read_text().splitlines():
                if line.startswith("cluster.id="):
                    return line.split("=", 1)[1].strip()
    return None
