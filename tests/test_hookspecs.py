"""Every hook is documented in docs/plugins.md, has a docstring, and is exercised by a test."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

from tradeengine import hookspecs

ROOT = Path(__file__).resolve().parent.parent


def hook_names() -> list[str]:
    return sorted(
        name
        for name, fn in inspect.getmembers(hookspecs, inspect.isfunction)
        if hasattr(fn, "tradeengine_spec")
    )


def test_there_are_hooks() -> None:
    assert {"register_brokers", "check_order", "on_fill", "on_kill_switch"} <= set(hook_names())


def test_every_hook_has_a_docstring_saying_when_it_is_called() -> None:
    for name in hook_names():
        doc = inspect.getdoc(getattr(hookspecs, name)) or ""
        assert "Called" in doc, f"hook {name} has no docstring saying when it is called"


def test_every_hook_has_a_section_in_the_plugin_docs() -> None:
    docs = (ROOT / "docs" / "plugins.md").read_text()
    sections = set(re.findall(r"^### (\w+)$", docs, flags=re.MULTILINE))
    missing = set(hook_names()) - sections
    assert not missing, f"hooks without a section in docs/plugins.md: {sorted(missing)}"


def test_every_hook_is_used_by_a_test() -> None:
    """A hook counts as tested when a test file (other than this one) implements or calls it."""
    sources = "\n".join(
        p.read_text() for p in (ROOT / "tests").glob("test_*.py") if p.name != Path(__file__).name
    )
    untested = [name for name in hook_names() if not re.search(rf"\b{name}\b", sources)]
    assert not untested, f"hooks no test exercises: {untested}"
