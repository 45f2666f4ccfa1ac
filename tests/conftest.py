"""Fixtures shared by the API, auth, CLI and runbook tests: settings for tests, and real
uvicorn servers on free loopback ports."""

from __future__ import annotations

import contextlib
import logging
import os
import pwd
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tradeengine.settings import VARIABLES, Settings, load_settings

VENV_BIN = Path(sys.executable).parent

SettingsFactory = Callable[..., Settings]
Server = tuple["subprocess.Popen[bytes]", str]
"""A running server process and its base URL (`http://127.0.0.1:PORT`)."""
ServerFactory = Callable[..., Server]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(scope="session")
def free_port() -> Callable[[], int]:
    """A TCP port free on 127.0.0.1 right now."""
    return _free_port


@pytest.fixture
def make_settings(tmp_path: Path) -> SettingsFactory:
    """`make_settings(MAX_DRAWDOWN="0.2", ...)`: settings from these variables only (no `.env`,
    no process environment), with no synthetic prices and the log and journal in tmp_path."""

    def make(**variables: str) -> Settings:
        environ = {
            "SYNTHETIC_FEED": "false",
            "LOG_FILE": str(tmp_path / "logs" / "trading_platform.log"),
            "DATABASE_URL": f"sqlite:///{tmp_path / 'trading_platform.db'}",
            **variables,
        }
        return load_settings(environ, dotenv=None)

    return make


@pytest.fixture(scope="module")
def server_env() -> Callable[..., dict[str, str]]:
    """`server_env(directory, VAR=value...)`: the process environment without any setting of
    tradeengine, plus the journal and the log in `directory` and the given variables."""

    def env(directory: Path, **variables: str) -> dict[str, str]:
        clean = {k: v for k, v in os.environ.items() if k not in VARIABLES}
        return {
            **clean,
            "PYTHONUNBUFFERED": "1",
            "DATABASE_URL": f"sqlite:///{directory / 'trading_platform.db'}",
            "LOG_FILE": str(directory / "logs" / "trading_platform.log"),
            **variables,
        }

    return env


@pytest.fixture(scope="module")
def start_server() -> Iterator[ServerFactory]:
    """`start_server(env, cwd, args=..., scheme="http", verify=True)` starts a real server
    (default `uvicorn tradeengine.main:app`) on a free 127.0.0.1 port and returns once
    `/api/health` answers. `{port}` in args is replaced. Servers still running at the end of the
    module are terminated."""
    started: list[subprocess.Popen[bytes]] = []

    def start(
        env: dict[str, str],
        cwd: Path,
        args: list[str] | None = None,
        scheme: str = "http",
        verify: ssl.SSLContext | bool = True,
        timeout: float = 30.0,
    ) -> Server:
        port = _free_port()
        command = args or [
            str(VENV_BIN / "uvicorn"),
            "tradeengine.main:app",
            "--host",
            "127.0.0.1",
            "--port",
            "{port}",
        ]
        command = [part.replace("{port}", str(port)) for part in command]
        output = (cwd / f"server-{port}.out").open("wb")
        process = subprocess.Popen(command, env=env, cwd=cwd, stdout=output, stderr=output)
        output.close()
        started.append(process)
        base = f"{scheme}://127.0.0.1:{port}"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                log = (cwd / f"server-{port}.out").read_text()
                pytest.fail(f"server exited with {process.returncode}:\n{log}")
            try:
                if httpx.get(f"{base}/api/health", verify=verify, timeout=2).status_code == 200:
                    return process, base
            except httpx.TransportError:
                time.sleep(0.1)
        pytest.fail(f"server did not answer on {base} within {timeout}s")

    yield start
    for process in started:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


# ---- PostgreSQL: a throwaway cluster for the store, recovery and crash tests ---------------

POSTGRES_USER = "tradeengine"
POSTGRES_PASSWORD = "throwaway-test-password"


class PostgresUnavailable(Exception):
    """No PostgreSQL server binaries, or the cluster would not start."""


def _postgres_bindir() -> Path:
    """The newest installed server's bin directory (Debian puts it off PATH)."""

    def version(path: Path) -> tuple[int, ...]:
        return tuple(int(p) for p in path.parent.parent.name.split(".") if p.isdigit())

    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=version)
    if found:
        return found[-1].parent
    initdb = shutil.which("initdb")
    if initdb is None:
        raise PostgresUnavailable("initdb not found: run scripts/ensure-postgres.sh")
    return Path(initdb).parent


class PostgresCluster:
    """A cluster made by initdb in a temporary directory, served on a free loopback port.

    initdb refuses to run as root, so as root it runs as the `postgres` user that Debian's
    packages create. Durability settings are off: the tests kill the engine, not the server.
    """

    def __init__(self) -> None:
        self.bindir = _postgres_bindir()
        self.base = Path(tempfile.mkdtemp(prefix="tradeengine-pg-"))
        self.data = self.base / "data"
        self.port = _free_port()
        self._databases = 0
        self._as_postgres: list[str] = []
        if os.geteuid() == 0:
            try:
                owner = pwd.getpwnam("postgres")
            except KeyError:
                raise PostgresUnavailable("running as root and no `postgres` user") from None
            os.chown(self.base, owner.pw_uid, owner.pw_gid)
            self._as_postgres = ["runuser", "-u", "postgres", "--"]

    def _run(self, *command: str) -> None:
        result = subprocess.run(
            [*self._as_postgres, *command], capture_output=True, text=True, timeout=60
        )
        if result.returncode != 0:
            log = self.base / "server.log"
            detail = log.read_text() if log.exists() else ""
            raise PostgresUnavailable(
                f"{command[0]} failed ({result.returncode}): {result.stderr}{result.stdout}{detail}"
            )

    def start(self) -> None:
        password_file = self.base / "password"
        password_file.write_text(POSTGRES_PASSWORD)
        os.chmod(password_file, 0o644)
        self._run(
            str(self.bindir / "initdb"),
            "--pgdata",
            str(self.data),
            "--username",
            POSTGRES_USER,
            "--pwfile",
            str(password_file),
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "--encoding=UTF8",
            "--no-sync",
        )
        options = (
            f"-p {self.port} -k {self.base} -c listen_addresses=127.0.0.1 "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        )
        self._run(
            str(self.bindir / "pg_ctl"),
            "--pgdata",
            str(self.data),
            "--log",
            str(self.base / "server.log"),
            "--options",
            options,
            "--wait",
            "--timeout=60",
            "start",
        )

    def url(self, database: str) -> str:
        return f"postgresql://{POSTGRES_USER}:{POSTGRES_PASSWORD}@127.0.0.1:{self.port}/{database}"

    def create_database(self) -> str:
        """A new, empty database; returns its URL (with the password)."""
        import psycopg

        self._databases += 1
        name = f"journal_{self._databases}"
        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            # FILE_COPY (PostgreSQL 15+): half the time of the default for a small template
            strategy = " STRATEGY FILE_COPY" if conn.info.server_version >= 150000 else ""
            conn.execute(f"CREATE DATABASE {name}{strategy}")
        return self.url(name)

    def stop(self) -> None:
        with contextlib.suppress(PostgresUnavailable, subprocess.TimeoutExpired):
            self._run(
                str(self.bindir / "pg_ctl"), "--pgdata", str(self.data), "-m", "immediate", "stop"
            )
        shutil.rmtree(self.base, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[PostgresCluster]:
    """A running throwaway PostgreSQL cluster. Skipped where PostgreSQL is missing, except in
    CI (CI=true), where the PostgreSQL tests must run: there a missing server fails them."""
    try:
        cluster = PostgresCluster()
        cluster.start()
    except PostgresUnavailable as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"PostgreSQL must run in CI: {exc}")
        pytest.skip(f"PostgreSQL unavailable: {exc}")
    yield cluster
    cluster.stop()


@pytest.fixture
def postgres_url(postgres_cluster: PostgresCluster) -> str:
    """The URL of a new, empty PostgreSQL database."""
    return postgres_cluster.create_database()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A DATABASE_URL for an empty journal: a SQLite file, then a PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'journal.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """Takes away the log handlers a test's app added, and the root level it changed."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in root.handlers:
        if handler not in handlers:
            root.removeHandler(handler)
            handler.close()
    root.setLevel(level)
