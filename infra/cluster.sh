#!/usr/bin/env bash
# A three-node RabbitMQ cluster on this machine, for replication and failover work.
#
#   infra/cluster.sh start            start the nodes (in parallel) and join them to node 1
#   infra/cluster.sh status           which nodes answer, and the cluster as node 1 sees it
#   infra/cluster.sh stop-node N      stop node N (1-based) only; `start` brings it back
#   infra/cluster.sh stop             stop every node (last first); data stays
#   infra/cluster.sh urls             one AMQP URL per node
#
# Each node is kpr.localbroker.LocalRabbitMQ: its own state directory, node name
# kpr-{port}@localhost, AMQP port, Erlang distribution port and log; the nodes share one
# Erlang cookie (kept in the cluster directory). Nothing runs as a system service.
#
#   KPR_CLUSTER_DIR     state directory (default .kpr/cluster)
#   KPR_CLUSTER_PORTS   AMQP ports, one per node (default "5681 5682 5683")
#   PYTHON              interpreter with kpr installed (default .venv/bin/python)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${PYTHON:-$here/.venv/bin/python}"
[[ -x "$python" ]] || python="$(command -v python3)"
export KPR_CLUSTER_DIR="${KPR_CLUSTER_DIR:-.kpr/cluster}"
export KPR_CLUSTER_PORTS="${KPR_CLUSTER_PORTS:-5681 5682 5683}"

case "${1:-}" in
  start | stop | status | urls | stop-node) ;;
  *)
    echo "usage: $0 start|stop|status|urls|stop-node N" >&2
    exit 2
    ;;
esac

exec "$python" - "$@" <<'PYTHON'
import json
import os
import secrets
import sys
import threading
from pathlib import Path

from kpr.localbroker import LocalRabbitMQ
from kpr.localprocess import LocalServiceError, port_accepts

state = Path(os.environ["KPR_CLUSTER_DIR"]).resolve()
ports = [int(port) for port in os.environ["KPR_CLUSTER_PORTS"].split()]
cookie_file = state / "cookie"


def cookie() -> str:
    if not cookie_file.exists():
        state.mkdir(parents=True, exist_ok=True)
        cookie_file.write_text(secrets.token_hex(20).upper(), encoding="ascii")
        cookie_file.chmod(0o600)
    return cookie_file.read_text(encoding="ascii").strip()


nodes = [
    LocalRabbitMQ(state / f"node{index}", amqp_port=port, erlang_cookie=cookie())
    for index, port in enumerate(ports, start=1)
]


def up(node: LocalRabbitMQ) -> bool:
    return port_accepts("127.0.0.1", node.amqp_port)


def members(node: LocalRabbitMQ) -> list[str]:
    status = json.loads(node.ctl("cluster_status", "--formatter", "json"))
    return status.get("disk_nodes", []) + status.get("ram_nodes", [])


def start() -> None:
    failures: list[BaseException] = []

    def start_one(node: LocalRabbitMQ) -> None:
        try:
            if not up(node):
                node.start()
        except BaseException as error:  # reported below, in the main thread
            failures.append(error)

    threads = [threading.Thread(target=start_one, args=(node,)) for node in nodes]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        raise failures[0]
    seed = nodes[0].node_name
    for node in nodes[1:]:
        if seed in members(node):
            continue  # restarted on data that already knows the cluster
        node.ctl("stop_app")
        node.ctl("join_cluster", seed)
        node.ctl("start_app")
        node.ctl("await_startup")
    print(f"cluster of {len(nodes)} running: {' '.join(n.node_name for n in nodes)}")


def stop_node(node: LocalRabbitMQ) -> None:
    if not up(node):
        return
    # The node was started by another process: stop it by name and wait for its pid.
    node.ctl("stop", str(node.state_dir / "rabbitmq.pid"), timeout=90)


command = sys.argv[1]
if command == "start":
    start()
elif command == "stop":
    for node in reversed(nodes):
        stop_node(node)
    print("cluster stopped")
elif command == "stop-node":
    stop_node(nodes[int(sys.argv[2]) - 1])
    print(f"stopped {nodes[int(sys.argv[2]) - 1].node_name}")
elif command == "urls":
    for node in nodes:
        print(node.amqp_url)
else:
    for node in nodes:
        print(f"{node.node_name}  amqp {node.amqp_port}  {'up' if up(node) else 'down'}")
    running = [node for node in nodes if up(node)]
    if running:
        try:
            status = json.loads(running[0].ctl("cluster_status", "--formatter", "json"))
            print("running nodes:", " ".join(status.get("running_nodes", [])))
        except LocalServiceError as error:
            print(f"cluster status unavailable: {error}", file=sys.stderr)
            sys.exit(1)
PYTHON
