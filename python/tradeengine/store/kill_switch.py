"""`tradeengine kill-switch status|engage|reset`: the latch, read and written directly in the
journal, for when the API is down. A running engine applies what is written here within a
second (see `tradeengine.recovery.follow_journal`); a stopped one at its next start."""

from __future__ import annotations

from typing import Literal

from tradeengine.schemas import AuditRecord, KillSwitchRecord, utc_now
from tradeengine.store.base import Store

Action = Literal["status", "engage", "reset"]


def describe(history: list[KillSwitchRecord]) -> str:
    """The latch as an operator reads it: state, who, why, when, and the last reset."""
    engaged = history[-1] if history and history[-1].engaged else None
    if engaged is not None:
        lines = [f"kill switch: ENGAGED by {engaged.actor} at {engaged.at}: {engaged.reason}"]
    else:
        lines = ["kill switch: released (new orders are allowed)"]
    resets = [r for r in history if not r.engaged]
    if resets:
        last = resets[-1]
        lines.append(f"last reset: by {last.actor} at {last.at}: {last.reason}")
    return "\n".join(lines)


async def kill_switch_command(
    store: Store, action: Action, actor: str, reason: str
) -> tuple[int, str]:
    """Runs the command on an opened store; returns (exit code, what to print)."""
    history = await store.kill_switch_history()
    engaged = bool(history) and history[-1].engaged
    reason = reason.strip()
    if action == "status":
        return 0, describe(history)
    if action == "reset" and not reason:
        return 2, "error: a kill switch reset needs --reason"
    if action == "engage" and engaged:
        return 0, "kill switch already engaged; nothing written\n" + describe(history)
    if action == "reset" and not engaged:
        return 0, "kill switch is not engaged; nothing written\n" + describe(history)
    word = "engaged" if action == "engage" else "reset"
    reason = reason or "engaged with `tradeengine kill-switch engage`"
    at = utc_now()
    await store.write(
        [
            KillSwitchRecord(engaged=action == "engage", actor=actor, reason=reason, at=at),
            AuditRecord(
                actor=actor,
                action=f"kill_switch_{word}",
                reason=reason,
                detail={"via": "tradeengine kill-switch"},
                at=at,
            ),
        ]
    )
    return 0, describe(await store.kill_switch_history())
