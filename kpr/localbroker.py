"""A RabbitMQ node the project starts itself, for the demo and the tests.

:class:`LocalRabbitMQ` runs Debian's ``rabbitmq-server`` as a child process (its own
process group, not a system service) with everything private to one state directory:
node name, AMQP and Erlang distribution ports, Mnesia and log directories, the
generated ``rabbitmq.conf`` (from the templates in ``infra/rabbitmq/``), the enabled
plugins file, and the Erlang cookie (``HOME`` is the state directory). Several nodes,
from several engineers or test sessions, can therefore run on one machine at once.
``rabbitmqctl`` is always run with the same ``HOME`` and node name (:meth:`LocalRabbitMQ.ctl`).

Starting takes 5-9 s on a 2-core machine (RabbitMQ 3.10.8, Erlang 25; about 7 s typical),
a restart (stop + start) about 8.5 s, each ``rabbitmqctl`` call about 0.4 s.

:class:`LocalRabbitCluster` joins several such nodes into one cluster.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from string import Template

from kpr.localprocess import (
    BlockingService,
    LocalServiceError,
    first_lines_containing,
    free_port,
    log_tail,
    port_accepts,
)

__all__ = [
    "LocalRabbitCluster",
    "LocalRabbitMQ",
    "TlsListener",
    "rabbitmq_bin_dir",
    "stop_node_group",
]

DEFAULT_PLUGINS: tuple[str, ...] = ("rabbitmq_consistent_hash_exchange", "rabbitmq_amqp1_0")
EXTERNAL_AUTH_PLUGIN = "rabbitmq_auth_mechanism_ssl"
TEMPLATE_DIR = Path(__file__).resolve().parents[1] / "infra" / "rabbitmq"

_LOOPBACK = "127.0.0.1"
_STOP_TIMEOUT_SECONDS = 60.0


@dataclass(frozen=True)
class TlsListener:
    """A TLS listener for a local node: TLS 1.3 / 1.2, peer verified against ``cacertfile``.

    ``external_auth`` makes clients on this listener log in as their certificate's
    common name (SASL EXTERNAL); the user must exist on the node (``ctl("add_user", ...)``).
    ``port`` ``None`` picks a free port.
    """

    cacertfile: Path
    certfile: Path
    keyfile: Path
    port: int | None = None
    fail_if_no_peer_cert: bool = True
    external_auth: bool = True


def rabbitmq_bin_dir() -> Path:
    """The directory holding the real ``rabbitmq-server`` and ``rabbitmqctl`` scripts.

    Debian's ``/usr/sbin`` wrappers switch to the ``rabbitmq`` user and its fixed home
    when run as root, which would share one cookie and state; the scripts under
    ``/usr/lib/rabbitmq/bin`` do not. ``KPR_RABBITMQ_BIN_DIR`` overrides the search.
    Raises :class:`LocalServiceError` if RabbitMQ is not installed.
    """
    override = os.environ.get("KPR_RABBITMQ_BIN_DIR")
    candidates = [Path(override)] if override else [Path("/usr/lib/rabbitmq/bin")]
    found = shutil.which("rabbitmq-server")
    if found is not None and not override:
        candidates.append(Path(found).resolve().parent)
    for candidate in candidates:
        if (candidate / "rabbitmq-server").is_file() and (candidate / "rabbitmqctl").is_file():
            return candidate
    raise LocalServiceError(
        "RabbitMQ is not installed (no rabbitmq-server in /usr/lib/rabbitmq/bin or on PATH); "
        "run infra/setup.sh or set KPR_AMQP_URL to an existing broker"
    )


def _base_environment() -> dict[str, str]:
    """The caller's environment without anything that would steer RabbitMQ or Erlang."""
    inherited = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("RABBITMQ_", "ERL_", "CTL_"))
    }
    # The Elixir CLI warns (and mangles non-ASCII names) under a non-UTF-8 locale.
    inherited.update(LANG="C.UTF-8", LC_ALL="C.UTF-8")
    return inherited


class LocalRabbitMQ(BlockingService):
    """One RabbitMQ node under ``state_dir``, on free (or given) loopback ports.

    Ports and node name are fixed at construction, so :meth:`restart` comes back on the
    same ports with the same data. ``erlang_cookie`` is only needed to cluster nodes.
    Use as ``with LocalRabbitMQ(path) as broker:`` or ``async with``.
    """

    def __init__(
        self,
        state_dir: Path,
        *,
        amqp_port: int | None = None,
        tls: TlsListener | None = None,
        plugins: Sequence[str] = DEFAULT_PLUGINS,
        node_name: str | None = None,
        erlang_cookie: str | None = None,
        default_user: str = "guest",
        default_pass: str = "guest",  # noqa: S107 - RabbitMQ's well-known local-only account
        startup_timeout: float = 120.0,
    ) -> None:
        self.state_dir = state_dir.resolve()
        self.amqp_port = amqp_port if amqp_port is not None else free_port()
        self.dist_port = free_port()
        self.tls = tls
        self.amqps_port: int | None = None
        if tls is not None:
            self.amqps_port = tls.port if tls.port is not None else free_port()
        wanted = list(plugins)
        if tls is not None and tls.external_auth and EXTERNAL_AUTH_PLUGIN not in wanted:
            wanted.append(EXTERNAL_AUTH_PLUGIN)
        self.plugins: tuple[str, ...] = tuple(wanted)
        self._node_name = node_name or f"kpr-{self.amqp_port}@localhost"
        self._erlang_cookie = erlang_cookie
        self.default_user = default_user
        self.default_pass = default_pass
        self.startup_timeout = startup_timeout
        self._bin_dir = rabbitmq_bin_dir()
        self._process: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()
        self.last_start_seconds: float | None = None

    # -- what clients and tests use ------------------------------------------------

    @property
    def node_name(self) -> str:
        return self._node_name

    @property
    def amqp_url(self) -> str:
        return f"amqp://{self.default_user}:{self.default_pass}@{_LOOPBACK}:{self.amqp_port}/"

    @property
    def amqps_url(self) -> str:
        """The TLS listener's URL, without credentials (clients log in with their certificate)."""
        if self.amqps_port is None:
            raise LocalServiceError(f"node {self._node_name} was started without a TLS listener")
        return f"amqps://{_LOOPBACK}:{self.amqps_port}/"

    @property
    def log_file(self) -> Path:
        return self.log_dir / f"{self._node_name}.log"

    @property
    def log_dir(self) -> Path:
        return self.state_dir / "log"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int | None:
        """The server's process id (also its process group's), while this object runs it."""
        return self._process.pid if self.running and self._process is not None else None

    def leave_running(self) -> None:
        """Let the node outlive this object and this process (``kpr broker start``):
        :meth:`stop` no longer stops it; :func:`stop_node_group` does, from anywhere."""
        with self._lock:
            self._process = None

    def ctl(self, *args: str, timeout: float = 60.0) -> str:
        """Run ``rabbitmqctl -q -n NODE *args`` against this node and return its stdout.

        Raises :class:`LocalServiceError` with rabbitmqctl's output if it exits non-zero
        or does not finish within ``timeout`` seconds.
        """
        return self._run_cli("rabbitmqctl", args, timeout)

    def diagnostics(self, *args: str, timeout: float = 60.0) -> str:
        """Run ``rabbitmq-diagnostics -q -n NODE *args`` against this node."""
        return self._run_cli("rabbitmq-diagnostics", args, timeout)

    # -- lifecycle ------------------------------------------------------------------

    def start(self) -> None:
        """Start the node and return once the broker and its plugins run.

        Harmless if already running. Raises :class:`LocalServiceError` with the tail of
        the node's log if the node exits or is not up within ``startup_timeout``.
        """
        with self._lock:
            if self.running:
                return
            started = time.monotonic()
            self._write_state_files()
            self._launch()
            try:
                self._await_startup(started + self.startup_timeout)
            except BaseException:
                self._stop_locked()
                raise
            self.last_start_seconds = time.monotonic() - started

    def stop(self) -> None:
        """Stop the node (``rabbitmqctl stop``, then SIGTERM / SIGKILL to its process group).

        Harmless if the node is not running; data stays in ``state_dir``.
        """
        with self._lock:
            self._stop_locked()

    def restart(self) -> None:
        """Stop the node and start it again on the same ports, name and data."""
        self.stop()
        self.start()

    # -- internals --------------------------------------------------------------------

    def _environment(self) -> dict[str, str]:
        environment = _base_environment()
        environment.update(
            HOME=str(self.state_dir),
            RABBITMQ_CONF_ENV_FILE=str(self.state_dir / "rabbitmq-env.conf"),
            RABBITMQ_NODENAME=self._node_name,
            # The CLI's own distribution listener: any free port, not the shared 35672-35682.
            RABBITMQ_CTL_DIST_PORT_MIN="0",
            RABBITMQ_CTL_DIST_PORT_MAX="0",
        )
        return environment

    def _server_environment(self) -> dict[str, str]:
        environment = self._environment()
        environment.update(
            RABBITMQ_NODE_IP_ADDRESS=_LOOPBACK,
            RABBITMQ_NODE_PORT=str(self.amqp_port),
            RABBITMQ_DIST_PORT=str(self.dist_port),
            RABBITMQ_MNESIA_BASE=str(self.state_dir / "mnesia"),
            RABBITMQ_LOG_BASE=str(self.log_dir),
            RABBITMQ_CONFIG_FILE=str(self.state_dir / "rabbitmq.conf"),
            RABBITMQ_ADVANCED_CONFIG_FILE=str(self.state_dir / "advanced.config"),
            RABBITMQ_ENABLED_PLUGINS_FILE=str(self.state_dir / "enabled_plugins"),
            RABBITMQ_PID_FILE=str(self.state_dir / "rabbitmq.pid"),
            RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}",
        )
        return environment

    def _render_config(self) -> str:
        values: Mapping[str, object] = {
            "amqp_port": self.amqp_port,
            "default_user": self.default_user,
            "default_pass": self.default_pass,
        }
        parts = [_template("rabbitmq.conf.template").substitute(values)]
        if self.tls is not None:
            parts.append(
                _template("tls.conf.template").substitute(
                    amqps_port=self.amqps_port,
                    cacertfile=self.tls.cacertfile.resolve(),
                    certfile=self.tls.certfile.resolve(),
                    keyfile=self.tls.keyfile.resolve(),
                    fail_if_no_peer_cert=str(self.tls.fail_if_no_peer_cert).lower(),
                )
            )
            if self.tls.external_auth:
                parts.append(_template("external-auth.conf.template").substitute())
        return "\n".join(parts)

    def _write_state_files(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(exist_ok=True)
        (self.state_dir / "rabbitmq.conf").write_text(self._render_config(), encoding="utf-8")
        # Empty on purpose: /etc/rabbitmq/rabbitmq-env.conf must not steer a local node.
        (self.state_dir / "rabbitmq-env.conf").write_text("", encoding="utf-8")
        (self.state_dir / "enabled_plugins").write_text(
            f"[{','.join(self.plugins)}].\n", encoding="utf-8"
        )
        if self._erlang_cookie is not None:
            cookie = self.state_dir / ".erlang.cookie"
            if cookie.exists():
                cookie.chmod(0o600)
            cookie.write_text(self._erlang_cookie, encoding="ascii")
            cookie.chmod(0o400)

    def _launch(self) -> None:
        with (self.log_dir / "server-stdout.log").open("ab") as output:
            self._process = subprocess.Popen(
                [str(self._bin_dir / "rabbitmq-server")],
                cwd=self.state_dir,
                env=self._server_environment(),
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def _await_startup(self, deadline: float) -> None:
        process = self._process
        assert process is not None
        while not port_accepts(_LOOPBACK, self.amqp_port):
            if process.poll() is not None:
                raise self._failure(f"exited with status {process.returncode} while starting")
            if time.monotonic() > deadline:
                raise self._failure("did not open its AMQP port in time")
            time.sleep(0.2)
        remaining = max(deadline - time.monotonic(), 5.0)
        try:
            self.ctl("await_startup", "--timeout", str(int(remaining)), timeout=remaining + 15)
        except LocalServiceError as error:
            raise self._failure(f"did not finish booting: {error}") from error

    def _failure(self, what: str) -> LocalServiceError:
        stdout_log = self.log_dir / "server-stdout.log"
        return LocalServiceError(
            f"RabbitMQ node {self._node_name} (AMQP port {self.amqp_port}, state {self.state_dir}) "
            f"{what}.\n--- first errors in {self.log_file} ---\n"
            f"{first_lines_containing(self.log_file, '[error]') or '(none)'}\n"
            f"--- {stdout_log} (tail) ---\n{log_tail(stdout_log, 6)}"
            f"--- {self.log_file} (tail) ---\n{log_tail(self.log_file, 15)}"
        )

    def _stop_locked(self) -> None:
        process = self._process
        if process is None:
            return
        try:
            if process.poll() is None:
                with contextlib.suppress(LocalServiceError):  # signals below take over
                    self.ctl("stop", timeout=_STOP_TIMEOUT_SECONDS)
                try:
                    process.wait(timeout=_STOP_TIMEOUT_SECONDS)
                except subprocess.TimeoutExpired:
                    _signal_group(process, signal.SIGTERM)
                    try:
                        process.wait(timeout=10)
                    except subprocess.TimeoutExpired:
                        _signal_group(process, signal.SIGKILL)
                        process.wait(timeout=10)
            # Helpers (erl_child_setup, inet_gethost) must not outlive the node.
            _signal_group(process, signal.SIGKILL)
        finally:
            self._process = None

    def _run_cli(self, tool: str, args: Sequence[str], timeout: float) -> str:
        command = [str(self._bin_dir / tool), "-q", "-n", self._node_name, *args]
        try:
            result = subprocess.run(
                command,
                env=self._environment(),
                cwd=self.state_dir,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as error:
            raise LocalServiceError(
                f"{tool} {' '.join(args)} on {self._node_name} took longer than {timeout:.0f} s"
            ) from error
        if result.returncode != 0:
            output = (result.stderr.strip() or result.stdout.strip())[-2000:]
            raise LocalServiceError(
                f"{tool} {' '.join(args)} on {self._node_name} failed "
                f"(exit {result.returncode}): {output}"
            )
        return result.stdout


def _signal_group(process: subprocess.Popen[bytes], signum: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signum)


def stop_node_group(node: LocalRabbitMQ, pid: int) -> None:
    """Stop a node started by another process (its server had ``pid``, which leads its
    process group): ``rabbitmqctl stop``, then SIGTERM / SIGKILL to the group, as
    :meth:`LocalRabbitMQ.stop` does for a node it runs. Harmless if it is already gone."""
    with contextlib.suppress(LocalServiceError):  # the signals below take over
        node.ctl("stop", timeout=_STOP_TIMEOUT_SECONDS)
    for signum in (signal.SIGTERM, signal.SIGKILL):
        deadline = time.monotonic() + 10
        while _group_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signum)


def _group_alive(pid: int) -> bool:
    try:
        os.killpg(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def _template(name: str) -> Template:
    path = TEMPLATE_DIR / name
    try:
        return Template(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise LocalServiceError(
            f"broker config template {path} is missing: the local launchers run from a "
            "source checkout (pip install -e .)"
        ) from error


class LocalRabbitCluster(BlockingService):
    """``size`` local nodes joined into one RabbitMQ cluster (``state_dir/node1`` ...).

    All nodes share one generated Erlang cookie. Nodes start in parallel, then every node
    but the first joins the first. ``amqp_urls`` lists one URL per node.
    """

    def __init__(
        self,
        state_dir: Path,
        *,
        size: int = 3,
        plugins: Sequence[str] = DEFAULT_PLUGINS,
        startup_timeout: float = 180.0,
    ) -> None:
        if size < 1:
            raise ValueError("a cluster needs at least one node")
        cookie = secrets.token_hex(20).upper()
        self.nodes: tuple[LocalRabbitMQ, ...] = tuple(
            LocalRabbitMQ(
                state_dir / f"node{index}",
                plugins=plugins,
                erlang_cookie=cookie,
                startup_timeout=startup_timeout,
            )
            for index in range(1, size + 1)
        )

    @property
    def amqp_urls(self) -> tuple[str, ...]:
        return tuple(node.amqp_url for node in self.nodes)

    @property
    def node_names(self) -> tuple[str, ...]:
        return tuple(node.node_name for node in self.nodes)

    def start(self) -> None:
        """Start every node and join them to the first; raises LocalServiceError on failure."""
        failures: list[BaseException] = []

        def start_node(node: LocalRabbitMQ) -> None:
            try:
                node.start()
            except BaseException as error:  # collected and re-raised in the caller's thread
                failures.append(error)

        threads = [threading.Thread(target=start_node, args=(node,)) for node in self.nodes]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if failures:
            raise failures[0]
        seed = self.nodes[0].node_name
        for node in self.nodes[1:]:
            if seed in self._members_seen_by(node):
                continue  # started again on data that already knows the cluster
            node.ctl("stop_app")
            node.ctl("join_cluster", seed)
            node.ctl("start_app")
            node.ctl("await_startup")

    @staticmethod
    def _members_seen_by(node: LocalRabbitMQ) -> list[str]:
        status = json.loads(node.ctl("cluster_status", "--formatter", "json"))
        members: list[str] = status.get("disk_nodes", []) + status.get("ram_nodes", [])
        return members

    def stop(self) -> None:
        """Stop every node, last first; harmless if they are not running."""
        for node in reversed(self.nodes):
            node.stop()
