"""The example plugin installed the way a third party installs theirs: pip, into a fresh
virtual environment next to tradeengine. It must be discovered, listed and enforced."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "plugins" / "tradeengine-example"

ENFORCE = """
import asyncio
from tradeengine.engine import Engine
from tradeengine.errors import OrderRejected
from tradeengine.schemas import OrderRequest
from tradeengine.settings import load_settings
from tradeengine.store import MemoryStore

async def main():
    engine = Engine(load_settings({"SYNTHETIC_FEED": "false"}, dotenv=None), store=MemoryStore())
    await engine.start()
    await engine.set_marks({"TSLA": 200.0, "AAPL": 100.0})
    try:
        await engine.submit(OrderRequest(symbol="TSLA", side="buy", qty=1))
    except OrderRejected as exc:
        print("REJECTED", exc.rule)
    order, _ = await engine.submit(OrderRequest(symbol="AAPL", side="buy", qty=1))
    print("FILLED", order.status)
    import tradeengine_example
    print("OBSERVED", tradeengine_example.fills_seen["AAPL"])
    await engine.stop()

asyncio.run(main())
"""


@pytest.fixture(scope="module")
def fresh_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A new virtual environment that sees tradeengine (and its dependencies) through a .pth
    file, as if tradeengine had been pip-installed there, and has the example plugin
    installed into it by pip from its source directory."""
    home = tmp_path_factory.mktemp("venv")
    venv.EnvBuilder(with_pip=True).create(home)
    python = home / "bin" / "python"
    site = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    ours = sysconfig.get_paths()["purelib"]
    # addsitedir also runs the .pth files there (editable installs of tradeengine and plugins).
    (Path(site) / "tradeengine-host.pth").write_text(f"import site; site.addsitedir({ours!r})\n")
    subprocess.run(
        [python, "-m", "pip", "install", "-q", "--no-deps", "--disable-pip-version-check",
         str(EXAMPLE)],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return python


def run_in(python: Path, *args: str, **env: str) -> str:
    result = subprocess.run(
        [python, *args],
        capture_output=True,
        text=True,
        env={**os.environ, "TRADEENGINE_DISABLED_PLUGINS": "", **env},
        cwd=ROOT,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_the_installed_plugin_is_listed(fresh_venv: Path) -> None:
    listing = json.loads(run_in(fresh_venv, "-m", "tradeengine.cli", "plugins", "--json"))
    example = next(p for p in listing if p["name"] == "example")
    assert example["version"] == "0.1.0"
    assert example["origin"] == "entry point (tradeengine-example)"
    assert example["hooks"] == ["check_order", "on_fill"]
    assert {p["name"] for p in listing} >= {"sim", "audit", "metrics", "example"}


def test_the_installed_rule_is_enforced_and_the_observer_called(fresh_venv: Path) -> None:
    out = run_in(fresh_venv, "-c", ENFORCE, EXAMPLE_BLOCKED_SYMBOLS="TSLA")
    assert "REJECTED example_blocked_symbol" in out
    assert "FILLED filled" in out
    assert "OBSERVED 1" in out


def test_a_disabled_plugin_is_not_loaded(fresh_venv: Path) -> None:
    listing = json.loads(
        run_in(
            fresh_venv, "-m", "tradeengine.cli", "plugins", "--json",
            TRADEENGINE_DISABLED_PLUGINS="example,audit",
        )
    )  # fmt: skip
    names = {p["name"] for p in listing}
    assert "example" not in names
    assert "audit" not in names
    assert {"sim", "metrics"} <= names


def test_this_interpreter_is_not_the_fresh_one(fresh_venv: Path) -> None:
    assert Path(sys.executable).resolve() != fresh_venv.resolve()
