"""RUNBOOK.md is executable: every `curl` line of its `bash` blocks runs, in order, through the
real `curl` against a real `uvicorn tradeengine.main:app` on a free loopback port, and each
answer is checked: the status the runbook promises (`# → 200` under the command) and what the
step is for (the kill switch engaged, the positions flat...).

Only the address changes (`localhost:8002` becomes `127.0.0.1:PORT`), and `ORDER_ID` becomes
the id of the order the runbook placed. After the graceful shutdown section the server must
exit by itself; it is started again (same journal) for the sections that follow."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import signal
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

RUNBOOK = Path(__file__).resolve().parent.parent / "RUNBOOK.md"
ADDRESS = "localhost:8002"
EXPECT = re.compile(r"^#\s*→\s*(\d{3})\b")
STATUS = re.compile(r"^HTTP (\d{3})$", re.MULTILINE)


@dataclass(frozen=True)
class Step:
    section: str
    command: str
    status: int | None
    """The status the runbook says to expect; None for a command that is not curl."""

    @property
    def method(self) -> str:
        words = shlex.split(self.command.split("|")[0])
        return words[words.index("-X") + 1] if "-X" in words else "GET"

    @property
    def path(self) -> str:
        url = next(w for w in shlex.split(self.command.split("|")[0]) if "://" in w)
        return urlsplit(url).path


def runbook_steps() -> list[Step]:
    """The commands of RUNBOOK.md's bash blocks (continuation lines joined), each curl with the
    status of the `# → NNN` line under it."""
    steps: list[Step] = []
    section = ""
    in_bash = False
    pending: list[str] = []
    for line in RUNBOOK.read_text().splitlines():
        if line.startswith("#") and not in_bash:
            section = line.lstrip("# ").strip()
        elif line.strip() == "```bash":
            in_bash = True
        elif line.strip() == "```":
            in_bash = False
        elif in_bash:
            text = line.strip()
            expected = EXPECT.match(text)
            if (
                expected
                and steps
                and steps[-1].status is None
                and steps[-1].command.startswith("curl")
            ):
                steps[-1] = Step(steps[-1].section, steps[-1].command, int(expected[1]))
            elif text and not text.startswith("#"):
                pending.append(text.removesuffix("\\").strip())
                if not text.endswith("\\"):
                    steps.append(Step(section, " ".join(pending), None))
                    pending = []
    return steps


def test_the_runbook_parses_into_curl_steps_with_expected_answers() -> None:
    curls = [s for s in runbook_steps() if s.command.startswith("curl")]
    assert len(curls) >= 30
    missing = [s.command for s in curls if s.status is None]
    assert not missing, f"curl lines without a `# → NNN` line under them: {missing}"
    # Every endpoint of the operator's runbook is in it.
    spec = {
        ("GET", "/api/health"), ("POST", "/api/admin/shutdown"),
        ("GET", "/api/trading/positions"), ("POST", "/api/emergency/kill-switch"),
        ("DELETE", "/api/trading/orders/all"), ("GET", "/api/trading/orders/pending"),
        ("POST", "/api/emergency/liquidate-all"), ("PUT", "/api/config/risk"),
        ("PUT", "/api/config/throttle"), ("GET", "/metrics"), ("GET", "/api/trading/status"),
        ("GET", "/api/health/broker"), ("POST", "/api/broker/test-connection"),
        ("GET", "/api/trading/orders/status/ORDER_ID"), ("GET", "/api/health/risk-service"),
        ("GET", "/api/config/throttle"), ("GET", "/api/health/system"),
        ("POST", "/api/admin/clear-cache"),
    }  # fmt: skip
    assert spec <= {(s.method, s.path) for s in curls}
    assert "uvicorn tradeengine.main:app --port 8002" in RUNBOOK.read_text()


def _json(text: str) -> Any:
    return json.loads(text)


def _check(step: Step, body: str) -> None:
    """What each step is for, beyond its status."""
    key = (step.method, step.path)
    if "| grep" in step.command:
        term = shlex.split(step.command.split("| grep", 1)[1])[0]
        assert term in body, f"{term!r} not in the metrics"
        return
    if "| jq" in step.command or step.path != "/metrics":
        data = _json(body)
    if key == ("POST", "/api/emergency/kill-switch"):
        assert data["engaged"] is True
        assert data["actor"] == "local"
    elif key == ("DELETE", "/api/emergency/kill-switch"):
        assert (data["engaged"], data["last_reset_reason"]) == (False, "incident resolved")
    elif key == ("GET", "/api/emergency/kill-switch"):
        assert data["reason"] == "kill switch engaged via API"
    elif key == ("POST", "/api/trading/orders") and step.status == 403:
        assert data["error"]["rule"] == "kill_switch"
    elif key == ("POST", "/api/trading/orders"):
        assert data["status"] in ("filled", "new")
    elif key == ("GET", "/api/trading/orders/pending"):
        assert data == []
    elif key == ("POST", "/api/emergency/liquidate-all"):
        assert data["count"] == 1
    elif key == ("PUT", "/api/config/risk"):
        assert (data["max_daily_loss"], data["portfolio_heat_limit"]) == (-500.0, 0.2)
    elif key in (("PUT", "/api/config/throttle"), ("GET", "/api/config/throttle")):
        assert (data["max_orders_per_minute"], data["enabled"]) == (30, True)
    elif key == ("GET", "/api/trading/orders/status/ORDER_ID"):
        assert (data["client_order_id"], data["status"]) == ("order_12345", "filled")
    elif key == ("GET", "/api/health"):
        assert data["status"] in ("ok", "halted", "shutting_down")
    elif key == ("POST", "/api/admin/shutdown"):
        assert (data["shutting_down"], data["exit_in_seconds"]) == (True, 5.0)
    elif key == ("GET", "/api/audit"):
        assert {"kill_switch_engaged", "kill_switch_reset", "liquidate_all"} <= {
            a["action"] for a in data
        }


@pytest.mark.slow
def test_every_curl_of_the_runbook_answers_as_it_says(
    start_server: Callable[..., tuple[subprocess.Popen[bytes], str]],
    server_env: Callable[..., dict[str, str]],
    tmp_path: Path,
) -> None:
    # Status codes come from a curlrc, to stderr, so the runbook's command lines and pipes run
    # unchanged.
    (tmp_path / ".curlrc").write_text('write-out = "%{stderr}HTTP %{http_code}\\n"\n')
    env = server_env(tmp_path, SYNTHETIC_FEED="false")
    process, base = start_server(env, tmp_path)
    curl_env = {**env, "CURL_HOME": str(tmp_path)}
    order_id = ""
    stopping_after: str | None = None

    for step in runbook_steps():
        if not step.command.startswith("curl"):
            continue
        if stopping_after is not None and step.section != stopping_after:
            # The grace period is over by now or soon: the server stops by itself, gracefully
            # (uvicorn re-raises the SIGTERM it handled, hence that exit status).
            assert process.wait(30) in (0, -signal.SIGTERM)
            log = (tmp_path / "logs" / "trading_platform.log").read_text()
            assert "engine stopped" in log
            assert "Application shutdown complete" in log
            process, base = start_server(env, tmp_path)
            stopping_after = None
        command = step.command.replace(f"http://{ADDRESS}", base).replace("ORDER_ID", order_id)
        if shutil.which("jq") is None:
            command = command.replace(" | jq", "")
        result = subprocess.run(
            ["bash", "-o", "pipefail", "-c", command],
            env=curl_env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=30,
        )
        statuses = STATUS.findall(result.stderr)
        assert statuses, f"no answer to {command}: {result.stderr}"
        assert int(statuses[-1]) == step.status, (command, result.stdout)
        assert result.returncode == 0, (command, result.stderr)
        _check(step, result.stdout)
        if (step.method, step.path) == ("POST", "/api/trading/orders") and "order_12345" in command:
            order_id = _json(result.stdout)["id"]
        if (step.method, step.path) == ("POST", "/api/admin/shutdown"):
            stopping_after = step.section

    log = (tmp_path / "logs" / "trading_platform.log").read_text()
    # The runbook's log searches find what they look for.
    assert re.search(r"^\S+ \S+ WARNING tradeengine.engine RISK_BLOCK rule=kill_switch", log, re.M)
    assert re.search(r"^\S+ \S+ CRITICAL tradeengine.engine KILL_SWITCH engaged", log, re.M)
    assert "client_order_id=order_12345" in log
    assert f"ORDER {order_id}" in log
