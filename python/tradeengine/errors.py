"""The errors of the engine, each with the HTTP status and machine-readable code the API answers
with. Every one carries a message for the operator; risk blocks also carry their rule."""

from __future__ import annotations

# Rules of the gate that mean the order itself is malformed.
VALIDATION_RULES = frozenset(
    {
        "symbol_invalid",
        "qty_invalid",
        "price_invalid",
        "price_missing",
        "price_unexpected",
        "stop_loss_invalid",
        "client_order_id_invalid",
    }
)


class EngineError(Exception):
    """Base of the engine's errors. `status` is the HTTP status, `code` the error code."""

    status = 400
    code = "bad_request"

    def __init__(
        self,
        message: str,
        *,
        rule: str | None = None,
        retry_after: float | None = None,
        code: str | None = None,
        status: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.rule = rule
        self.retry_after = retry_after
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status


class OrderRejected(EngineError):
    """The gate or a risk plugin refused an order. See `for_rule` for the status per rule."""

    status = 422
    code = "risk_limit"

    @classmethod
    def for_rule(cls, rule: str, message: str, retry_after: float | None = None) -> OrderRejected:
        if rule in VALIDATION_RULES:
            return cls(message, rule=rule, code="invalid_order", status=422)
        if rule == "throttle":
            return cls(message, rule=rule, code="throttled", status=429, retry_after=retry_after)
        if rule == "kill_switch":
            return cls(message, rule=rule, code="kill_switch_engaged", status=403)
        if rule == "reduce_only":
            return cls(message, rule=rule, code="reduce_only", status=403)
        if rule == "duplicate_client_order_id":
            return cls(message, rule=rule, code="duplicate_client_order_id", status=409)
        if rule == "shutting_down":
            return cls(message, rule=rule, code="shutting_down", status=503)
        return cls(message, rule=rule)


class NotFound(EngineError):
    status = 404
    code = "not_found"


class Conflict(EngineError):
    status = 409
    code = "conflict"


class InvalidRequest(EngineError):
    status = 422
    code = "invalid_request"


class Unavailable(EngineError):
    """Fail closed: the journal or the broker cannot be trusted right now."""

    status = 503
    code = "unavailable"
