"""A PostgreSQL server the project starts itself, for the demo and the tests.

:class:`LocalPostgres` runs ``initdb`` once and ``pg_ctl start`` / ``stop`` on a data
directory under its state directory, listening on ``127.0.0.1`` on a free (or given) port
with its Unix socket in the state directory, trust authentication, and a database ``kpr``.

PostgreSQL refuses to run as root. Run as root, every server command runs as the
``postgres`` system user (``runuser -u postgres --``) and the state directory is handed
to that user, so every parent directory of it must be searchable by ``postgres``.
The first start (with ``initdb``) takes about 1 s on a 2-core machine, a restart about 0.2 s.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import subprocess
import threading
import time
from pathlib import Path

import psycopg
from psycopg import sql

from kpr.localprocess import BlockingService, LocalServiceError, free_port, log_tail

__all__ = ["LocalPostgres", "postgres_bin_dir"]

SERVICE_USER = "postgres"
_LOOPBACK = "127.0.0.1"
_SETTINGS_FILE = "kpr-local.conf"


def postgres_bin_dir() -> Path:
    """The newest ``/usr/lib/postgresql/<version>/bin`` (or ``KPR_POSTGRES_BIN_DIR``).

    Falls back to the directory of ``pg_ctl`` on PATH. Raises :class:`LocalServiceError`
    if PostgreSQL's server binaries are not installed.
    """
    override = os.environ.get("KPR_POSTGRES_BIN_DIR")
    candidates: list[Path] = []
    if override:
        candidates.append(Path(override))
    else:
        versions = sorted(
            Path("/usr/lib/postgresql").glob("*/bin"),
            key=lambda path: [int(part) for part in re.findall(r"\d+", path.parent.name)],
            reverse=True,
        )
        candidates.extend(versions)
        on_path = shutil.which("pg_ctl")
        if on_path is not None:
            candidates.append(Path(on_path).resolve().parent)
    for candidate in candidates:
        if all((candidate / tool).is_file() for tool in ("initdb", "pg_ctl", "postgres")):
            return candidate
    raise LocalServiceError(
        "PostgreSQL server binaries (initdb, pg_ctl) not found under /usr/lib/postgresql/*/bin; "
        "run infra/setup.sh or set KPR_TEST_POSTGRES_URL to an existing server"
    )


class LocalPostgres(BlockingService):
    """One PostgreSQL server under ``state_dir`` on ``127.0.0.1:port``, database ``kpr``.

    The port is fixed at construction, so ``stop()`` then ``start()`` comes back on the
    same port with the same data (what store fault tests need). ``fsync=False`` trades
    durability against an operating-system crash for speed; a server crash or kill still
    loses no committed transaction. Use as ``with LocalPostgres(path) as pg:`` or ``async with``.
    """

    def __init__(
        self,
        state_dir: Path,
        *,
        port: int | None = None,
        database: str = "kpr",
        fsync: bool = True,
        startup_timeout: float = 60.0,
    ) -> None:
        self.state_dir = state_dir.resolve()
        self.port = port if port is not None else free_port()
        self.database = database
        self.fsync = fsync
        self.startup_timeout = startup_timeout
        self._bin_dir = postgres_bin_dir()
        self._as_service_user = os.geteuid() == 0
        self._running = False
        self._lock = threading.Lock()
        self.last_start_seconds: float | None = None

    @property
    def url(self) -> str:
        return f"postgresql://{SERVICE_USER}@{_LOOPBACK}:{self.port}/{self.database}"

    @property
    def data_dir(self) -> Path:
        return self.state_dir / "data"

    @property
    def socket_dir(self) -> Path:
        return self.state_dir / "run"

    @property
    def log_file(self) -> Path:
        return self.state_dir / "postgres.log"

    @property
    def running(self) -> bool:
        return self._running

    def start(self) -> None:
        """Initialise the data directory if new, start the server, create the database.

        Harmless if already running. Raises :class:`LocalServiceError` with the tail of
        the server log if any step fails.
        """
        with self._lock:
            if self._running:
                return
            started = time.monotonic()
            self._prepare_directories()
            if not (self.data_dir / "PG_VERSION").exists():
                self._initdb()
            self._write_settings()
            self._run(
                "start",
                [
                    str(self._bin_dir / "pg_ctl"),
                    "start",
                    "--pgdata",
                    str(self.data_dir),
                    "--log",
                    str(self.log_file),
                    "--wait",
                    "--timeout",
                    str(int(self.startup_timeout)),
                    "--silent",
                ],
                timeout=self.startup_timeout + 15,
            )
            self._running = True
            try:
                self._create_database()
            except BaseException:
                self._stop_locked()
                raise
            self.last_start_seconds = time.monotonic() - started

    def stop(self) -> None:
        """Fast shutdown (open sessions are disconnected); harmless if not running."""
        with self._lock:
            self._stop_locked()

    def restart(self) -> None:
        """Stop and start again on the same port and data."""
        self.stop()
        self.start()

    # -- internals --------------------------------------------------------------------

    def _prepare_directories(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.socket_dir.mkdir(exist_ok=True)
        if not self._as_service_user:
            return
        try:
            account = pwd.getpwnam(SERVICE_USER)
        except KeyError as error:
            raise LocalServiceError(
                "running as root, PostgreSQL needs the 'postgres' system user "
                "(created by Debian's postgresql package: run infra/setup.sh)"
            ) from error
        for path in (self.state_dir, self.socket_dir):
            os.chown(path, account.pw_uid, account.pw_gid)
        probe = subprocess.run(
            ["runuser", "-u", SERVICE_USER, "--", "test", "-w", str(self.state_dir)],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=30,
            check=False,
        )
        if probe.returncode != 0:
            raise LocalServiceError(
                f"the postgres user cannot reach {self.state_dir}: every parent directory "
                "must be searchable by it (chmod o+x), e.g. use a directory under /tmp"
            )

    def _initdb(self) -> None:
        self._run(
            "initdb",
            [
                str(self._bin_dir / "initdb"),
                "--pgdata",
                str(self.data_dir),
                "--username",
                SERVICE_USER,
                "--auth",
                "trust",
                "--encoding",
                "UTF8",
                "--locale",
                "C.UTF-8",
                "--no-sync",
            ],
            timeout=120,
        )
        with (self.data_dir / "postgresql.conf").open("a", encoding="utf-8") as settings:
            settings.write(
                f"\n# kpr-stream local server: port, socket, speed\ninclude '{_SETTINGS_FILE}'\n"
            )

    def _write_settings(self) -> None:
        # Rewritten at every start so a moved state directory or new port still works.
        settings = self.data_dir / _SETTINGS_FILE
        settings.write_text(
            "\n".join(
                [
                    f"listen_addresses = '{_LOOPBACK}'",
                    f"port = {self.port}",
                    f"unix_socket_directories = '{self.socket_dir}'",
                    f"fsync = {'on' if self.fsync else 'off'}",
                    "max_connections = 200",
                    "",
                ]
            ),
            encoding="utf-8",
        )
        if self._as_service_user:
            account = pwd.getpwnam(SERVICE_USER)
            os.chown(settings, account.pw_uid, account.pw_gid)

    def _create_database(self) -> None:
        admin = f"postgresql://{SERVICE_USER}@{_LOOPBACK}:{self.port}/postgres"
        try:
            with psycopg.connect(admin, autocommit=True, connect_timeout=10) as connection:
                exists = connection.execute(
                    "SELECT 1 FROM pg_database WHERE datname = %s", (self.database,)
                ).fetchone()
                if exists is None:
                    connection.execute(
                        sql.SQL("CREATE DATABASE {}").format(sql.Identifier(self.database))
                    )
        except psycopg.Error as error:
            raise self._failure(f"could not create database {self.database!r}: {error}") from error

    def _stop_locked(self) -> None:
        if not self._running:
            return
        try:
            pg_ctl = str(self._bin_dir / "pg_ctl")
            try:
                self._run(
                    "stop",
                    [
                        pg_ctl,
                        "stop",
                        "--pgdata",
                        str(self.data_dir),
                        "--mode",
                        "fast",
                        "--wait",
                        "--timeout",
                        "60",
                        "--silent",
                    ],
                    timeout=75,
                )
            except LocalServiceError:
                self._run(
                    "stop (immediate)",
                    [
                        pg_ctl,
                        "stop",
                        "--pgdata",
                        str(self.data_dir),
                        "--mode",
                        "immediate",
                        "--wait",
                        "--timeout",
                        "30",
                        "--silent",
                    ],
                    timeout=45,
                )
        finally:
            self._running = False

    def _run(self, step: str, command: list[str], *, timeout: float) -> None:
        if self._as_service_user:
            command = ["runuser", "-u", SERVICE_USER, "--", *command]
        try:
            result = subprocess.run(
                command,
                cwd=self.state_dir,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
                env={**os.environ, "LC_ALL": "C.UTF-8", "LANG": "C.UTF-8"},
            )
        except subprocess.TimeoutExpired as error:
            raise self._failure(f"{step} took longer than {timeout:.0f} s") from error
        if result.returncode != 0:
            output = (result.stderr.strip() or result.stdout.strip())[-2000:]
            raise self._failure(f"{step} failed (exit {result.returncode}): {output}")

    def _failure(self, what: str) -> LocalServiceError:
        return LocalServiceError(
            f"PostgreSQL on port {self.port} (state {self.state_dir}): {what}\n"
            f"--- {self.log_file} (tail) ---\n{log_tail(self.log_file)}"
        )
