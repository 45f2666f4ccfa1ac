"""Deployment files: the Dockerfile lints clean, the alert rules parse and fire when they
should, the dashboard only asks for metrics tradeengine exports, and the image's install and
start commands work in a fresh virtual environment. There is no Docker engine on these
machines, so the image itself is not built here."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
import venv
from pathlib import Path

import pytest
from prometheus_client import generate_latest

from tradeengine.engine import Engine
from tradeengine.schemas import OrderRequest
from tradeengine.settings import load_settings
from tradeengine.store import MemoryStore

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
BIN = Path(sys.executable).parent


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("promtool is missing: make test installs it (scripts/ensure-promtool.sh)")
        pytest.skip("promtool not installed; run scripts/ensure-promtool.sh")
    return path


def test_dockerfile_is_hadolint_clean() -> None:
    result = subprocess.run(
        [BIN / "hadolint", "Dockerfile"], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_runs_as_non_root_with_a_healthcheck_on_8002() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^USER 10001", text, re.MULTILINE)
    assert "HEALTHCHECK" in text
    assert "/api/health" in text
    assert "EXPOSE 8002" in text
    assert "deploy/build-wheels.sh" in text
    assert "install-wheels" in text


def test_alert_rules_parse_and_their_unit_tests_pass() -> None:
    tool = promtool()
    subprocess.run([tool, "check", "rules", "alerts.yml"], cwd=DEPLOY / "prometheus", check=True)
    subprocess.run(
        [tool, "test", "rules", "alerts_test.yml"], cwd=DEPLOY / "prometheus", check=True
    )


def test_prometheus_config_is_valid(tmp_path: Path) -> None:
    tool = promtool()
    config = (DEPLOY / "prometheus" / "prometheus.yml").read_text()
    shutil.copy(DEPLOY / "prometheus" / "alerts.yml", tmp_path / "alerts.yml")
    (tmp_path / "token").write_text("te_example\n")
    (tmp_path / "prometheus.yml").write_text(
        config.replace("/etc/prometheus/alerts.yml", str(tmp_path / "alerts.yml")).replace(
            "/etc/prometheus/tradeengine.token", str(tmp_path / "token")
        )
    )
    subprocess.run([tool, "check", "config", str(tmp_path / "prometheus.yml")], check=True)


def exported_metric_names() -> set[str]:
    async def scrape() -> str:
        settings = load_settings({"SYNTHETIC_FEED": "false"}, dotenv=None)
        engine = Engine(settings, store=MemoryStore())
        await engine.start()
        await engine.set_marks({"AAPL": 100.0})
        await engine.submit(OrderRequest(symbol="AAPL", side="buy", qty=1))
        metrics = engine.pm.get_plugin("metrics")
        assert metrics is not None
        text = generate_latest(metrics.registry).decode()
        await engine.stop()
        return text

    text = asyncio.run(scrape())
    return {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line[:1].isalpha()}


def test_dashboard_and_alerts_only_use_metrics_tradeengine_exports() -> None:
    exported = exported_metric_names()
    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "tradeengine.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    exprs += re.findall(r"expr: (.+)", (DEPLOY / "prometheus" / "alerts.yml").read_text())
    promql = {"rate", "sum", "by", "max", "on", "histogram_quantile", "le", "limit", "state"}
    used = {
        name
        for expr in exprs
        for name in re.findall(r"[a-z_]+(?=[{\[ )]|$)", re.sub(r'"[^"]*"', "", expr))
        if "_" in name and name not in promql
    }
    missing = used - exported
    assert not missing, f"dashboard/alerts use metrics tradeengine does not export: {missing}"
    assert {"kill_switch_engaged", "broker_connection_status", "daily_pnl_usd"} <= used


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.mark.slow
def test_the_image_install_and_start_commands_work_in_a_fresh_venv(tmp_path: Path) -> None:
    """What the Dockerfile runs, run here: build the wheels, install them with their
    dependencies into an empty environment, start the server as the image's CMD does (on
    loopback), and ask the HEALTHCHECK's question."""
    wheels = tmp_path / "wheels"
    env = {**os.environ, "PYTHON": sys.executable, "PATH": f"{BIN}:{os.environ['PATH']}"}
    subprocess.run(
        ["bash", "deploy/build-wheels.sh", str(wheels)], cwd=ROOT, env=env, check=True,
        timeout=900, capture_output=True,
    )  # fmt: skip
    home = tmp_path / "image"
    venv.EnvBuilder(with_pip=True).create(home)
    python = home / "bin" / "python"
    subprocess.run(
        ["bash", "deploy/install-wheels.sh", str(wheels)], cwd=ROOT,
        env={**os.environ, "PYTHON": str(python)}, check=True, timeout=600, capture_output=True,
    )  # fmt: skip
    port = free_port()
    workdir = tmp_path / "home"
    workdir.mkdir()
    server = subprocess.Popen(
        [home / "bin" / "tradeengine", "serve", "--host", "127.0.0.1", "--port", str(port)],
        cwd=workdir,
        env={"PATH": "/usr/bin:/bin", "TRADING_MODE": "paper", "EXECUTION_MODE": "backtest"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        status = 0
        while time.monotonic() < deadline and server.poll() is None:
            try:
                url = f"http://127.0.0.1:{port}/api/health"
                with urllib.request.urlopen(url, timeout=2) as response:
                    status = response.status
                break
            except OSError:
                time.sleep(0.25)
        assert status == 200, "the server from the image's install did not answer its health check"
    finally:
        server.terminate()
        server.wait(timeout=30)
        if server.stderr is not None:
            server.stderr.close()
