"""The `tradeengine` command and the settings it starts from: a bad value stops the start with a
message naming the variable, `.env` is read, `.env.example` documents every variable, and
tokens are managed from the command line."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tradeengine.settings import VARIABLES, Settings, load_settings

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent

Env = Callable[..., dict[str, str]]


def run(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, env=env, cwd=cwd, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize(
    ("variable", "value", "says"),
    [
        ("MAX_DRAWDOWN", "10", "is a fraction"),
        ("MAX_DAILY_LOSS", "1000", "must be negative"),
        ("TRADING_MODE", "yolo", "expected one of paper, live"),
        ("MAX_ORDERS_PER_MINUTE", "many", "is not valid"),
    ],
)
def test_a_bad_value_stops_the_start_naming_the_variable(
    server_env: Env, tmp_path: Path, variable: str, value: str, says: str
) -> None:
    env = server_env(tmp_path, **{variable: value})
    serve = run([str(VENV_BIN / "tradeengine"), "serve", "--port", "1"], env, tmp_path)
    assert serve.returncode == 2
    assert serve.stderr.startswith(f"error: {variable}={value!r}")
    assert says in serve.stderr

    uvicorn = [str(VENV_BIN / "uvicorn"), "tradeengine.main:app", "--port", "1"]
    direct = run(uvicorn, env, tmp_path)
    assert direct.returncode == 2
    assert f"error: {variable}={value!r}" in direct.stderr
    assert "Traceback" not in direct.stderr


def test_dot_env_in_the_working_directory_is_read(server_env: Env, tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("# the runbook copies .env.example here\nMAX_DRAWDOWN=5\n")
    serve = run([str(VENV_BIN / "tradeengine"), "serve"], server_env(tmp_path), tmp_path)
    assert serve.returncode == 2
    assert "MAX_DRAWDOWN='5'" in serve.stderr


def test_env_example_lists_every_variable_with_its_default() -> None:
    example = ROOT / ".env.example"
    lines = example.read_text().splitlines()
    assigned = [line.partition("=")[0] for line in lines if re.match(r"[A-Z_]+=", line)]
    assert sorted(assigned) == sorted(VARIABLES), "every variable exactly once"
    for number, line in enumerate(lines):
        if re.match(r"[A-Z_]+=", line):
            above = number - 1
            while re.match(r"[A-Z_]+=", lines[above]):  # a group under one comment
                above -= 1
            assert lines[above].startswith("# "), f"no comment says what {line} means"
    # Copied to .env as the runbook says, it changes nothing: the values are the defaults.
    assert load_settings({}, dotenv=example) == Settings()


def test_dot_env_is_never_committed() -> None:
    assert ".env" in (ROOT / ".gitignore").read_text().splitlines()


def test_live_mode_without_a_token_refuses_to_start(server_env: Env, tmp_path: Path) -> None:
    env = server_env(tmp_path, TRADING_MODE="live")
    serve = run([str(VENV_BIN / "tradeengine"), "serve", "--port", "1"], env, tmp_path)
    assert serve.returncode != 0
    assert "live trading needs API tokens" in serve.stderr
    assert "engine started" not in serve.stderr


def test_tokens_from_the_command_line_open_the_api(
    server_env: Env,
    tmp_path: Path,
    start_server: Callable[..., tuple[subprocess.Popen[bytes], str]],
) -> None:
    env = server_env(tmp_path, SYNTHETIC_FEED="false")
    tradeengine = str(VENV_BIN / "tradeengine")
    created = run(
        [tradeengine, "token", "create", "--role", "trader", "--name", "bot"], env, tmp_path
    )
    assert created.returncode == 0, created.stderr
    token = created.stdout.strip().splitlines()[-1]
    assert re.fullmatch(r"te_[\w-]{40,}", token)
    again = run([tradeengine, "token", "create", "--role", "admin", "--name", "bot"], env, tmp_path)
    assert (again.returncode, "exists already" in again.stderr) == (1, True)
    run([tradeengine, "token", "create", "--role", "viewer", "--name", "dash"], env, tmp_path)

    listed = run([tradeengine, "token", "list"], env, tmp_path).stdout
    assert re.search(r"^bot\ttrader\tcreated \S+\tactive$", listed, re.M)
    assert token not in listed

    _, base = start_server(env, tmp_path)
    as_bot = {"Authorization": f"Bearer {token}"}
    assert httpx.get(f"{base}/api/trading/positions").status_code == 401
    assert httpx.get(f"{base}/api/trading/positions", headers=as_bot).status_code == 200
    engaged = httpx.post(f"{base}/api/emergency/kill-switch", headers=as_bot)
    assert engaged.json()["actor"] == "bot"
    reset = httpx.delete(f"{base}/api/emergency/kill-switch?reason=x", headers=as_bot)
    assert reset.status_code == 403

    revoked = run([tradeengine, "token", "revoke", "bot"], env, tmp_path)
    assert revoked.returncode == 0
    assert "revoked" in run([tradeengine, "token", "list"], env, tmp_path).stdout
    assert run([tradeengine, "token", "revoke", "bot"], env, tmp_path).returncode == 1
    deadline_status = 0
    for _ in range(30):  # the server re-reads tokens at most once a second
        deadline_status = httpx.get(f"{base}/api/trading/positions", headers=as_bot).status_code
        if deadline_status == 401:
            break
        time.sleep(0.1)
    assert deadline_status == 401
