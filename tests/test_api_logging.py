"""`configure_logging(settings)`: what the runbook's `tail` and `grep` rely on."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from pathlib import Path

import pytest

from tradeengine.logs import configure_logging
from tradeengine.settings import Settings

Make = Callable[..., Settings]


pytestmark = pytest.mark.usefixtures("restore_logging")


def test_text_lines_carry_time_level_logger_and_message(
    make_settings: Make, tmp_path: Path
) -> None:
    path = configure_logging(make_settings(LOG_FILE=str(tmp_path / "deep" / "dir" / "app.log")))
    assert path.parent.is_dir()  # the directory is created
    logging.getLogger("tradeengine.engine").warning(
        "RISK_BLOCK rule=%s client_order_id=%s", "x", "c1"
    )
    logging.getLogger("tradeengine.engine").error("ERROR journal write failed")
    logging.getLogger("tradeengine.engine").debug("not at INFO")
    lines = path.read_text().splitlines()
    assert len(lines) == 2
    pattern = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (WARNING|ERROR) tradeengine\.engine .+"
    assert all(re.fullmatch(pattern, line) for line in lines), lines
    assert lines[0].endswith("RISK_BLOCK rule=x client_order_id=c1")


def test_json_lines(make_settings: Make, tmp_path: Path) -> None:
    path = configure_logging(make_settings(LOG_FILE=str(tmp_path / "app.log"), LOG_FORMAT="json"))
    try:
        raise ValueError("boom")
    except ValueError:
        logging.getLogger("tradeengine.api").exception("unexpected")
    [line] = path.read_text().splitlines()
    entry = json.loads(line)
    assert (entry["level"], entry["logger"], entry["message"]) == (
        "ERROR",
        "tradeengine.api",
        "unexpected",
    )
    assert "ValueError: boom" in entry["exception"]
    assert entry["time"].endswith("+00:00")


def test_the_file_rotates(make_settings: Make, tmp_path: Path) -> None:
    settings = make_settings(
        LOG_FILE=str(tmp_path / "app.log"), LOG_MAX_BYTES="2000", LOG_BACKUPS="2"
    )
    path = configure_logging(settings)
    for number in range(100):
        logging.getLogger("tradeengine").info("line %03d %s", number, "x" * 40)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["app.log", "app.log.1", "app.log.2"]
    assert path.stat().st_size <= 2000


def test_configuring_again_replaces_the_handlers(make_settings: Make, tmp_path: Path) -> None:
    first = configure_logging(make_settings(LOG_FILE=str(tmp_path / "one.log")))
    second = configure_logging(
        make_settings(LOG_FILE=str(tmp_path / "two.log"), LOG_LEVEL="WARNING")
    )
    logging.getLogger("tradeengine").warning("once")
    logging.getLogger("tradeengine").info("filtered by LOG_LEVEL")
    assert first.read_text() == ""
    assert second.read_text().count("once") == 1
    assert "filtered" not in second.read_text()
