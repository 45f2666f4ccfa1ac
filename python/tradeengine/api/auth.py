"""Bearer tokens and roles.

Roles are ordered viewer < trader < operator < admin; a route declares the least role it needs
(or `public`: `/api/health` and `/openapi.json`). Tokens are made by
`tradeengine token create --role ROLE --name NAME`; only their SHA-256 hash is stored, and a
presented token is compared against every stored hash with `hmac.compare_digest`.

With no token configured, paper mode serves loopback clients only (127.0.0.1, ::1) and treats
them as admin, actor `local`: that is how the runbook's plain `curl` lines work on the machine
that runs the engine. Live mode refuses to start without a token. Every 401 and 403 is logged
with the client address and the path, with the word `unauthorized`, never with the token.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import secrets
import time
from typing import Literal, NoReturn, get_args

from starlette.requests import Request

from tradeengine.api.errors import Forbidden, Unauthorized
from tradeengine.schemas import TokenRecord, utc_now
from tradeengine.settings import Settings
from tradeengine.store import Store

log = logging.getLogger("tradeengine.auth")

Role = Literal["viewer", "trader", "operator", "admin"]
Access = Literal["public", "viewer", "trader", "operator", "admin"]
ROLES: tuple[Role, ...] = get_args(Role)
RANK: dict[str, int] = {role: rank for rank, role in enumerate(ROLES)}
LOCAL_ACTOR = "local"
TOKEN_PREFIX = "te_"
# A revoked or new token takes effect within this many seconds on a running server.
TOKEN_CACHE_SECONDS = 1.0


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def live(settings: Settings) -> bool:
    return settings.trading_mode == "live" or settings.execution_mode == "live"


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Authenticator:
    """Decides who a request comes from. Tokens are re-read from the store at most every
    TOKEN_CACHE_SECONDS, so `tradeengine token revoke` takes effect on a running server."""

    def __init__(self, store: Store, cache_seconds: float = TOKEN_CACHE_SECONDS) -> None:
        self.store = store
        self.cache_seconds = cache_seconds
        self._tokens: list[TokenRecord] = []
        self._loaded_at = -float("inf")

    async def active_tokens(self) -> list[TokenRecord]:
        if time.monotonic() - self._loaded_at >= self.cache_seconds:
            self._tokens = [t for t in await self.store.tokens() if t.revoked_at is None]
            self._loaded_at = time.monotonic()
        return self._tokens

    def match(self, token: str, tokens: list[TokenRecord]) -> TokenRecord | None:
        presented = hash_token(token)
        found = None
        for record in tokens:  # no early exit: the time taken does not depend on which matched
            if hmac.compare_digest(record.token_hash, presented):
                found = record
        return found

    async def authorize(self, request: Request, access: Access) -> str:
        """The actor (token name, or `local`) when the request may use a route of `access`;
        raises Unauthorized (401) or Forbidden (403) otherwise."""
        if access == "public":
            return "anonymous"
        client = request.client.host if request.client else "unknown"
        header = request.headers.get("authorization")
        tokens = await self.active_tokens()
        if header is None and not tokens:
            if is_loopback(client):
                return LOCAL_ACTOR
            self._deny(
                request,
                client,
                Forbidden(
                    "no API token is configured, so only loopback clients are served; "
                    "create one with `tradeengine token create --role ROLE --name NAME`"
                ),
            )
        scheme, _, token = (header or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            self._deny(request, client, Unauthorized("send `Authorization: Bearer <token>`"))
        record = self.match(token.strip(), tokens)
        if record is None:
            self._deny(request, client, Unauthorized("the token is not valid or was revoked"))
        if RANK[record.role] < RANK[access]:
            self._deny(
                request,
                client,
                Forbidden(f"this needs the {access} role; token {record.name!r} has {record.role}"),
            )
        return record.name

    def _deny(self, request: Request, client: str, error: Unauthorized | Forbidden) -> NoReturn:
        log.warning(
            "unauthorized %s %s from %s: %s %s",
            request.method,
            request.url.path,
            client,
            error.status,
            error.message,
        )
        raise error


async def create_token(store: Store, name: str, role: Role) -> str:
    """Stores a new token's hash and returns the token (shown once, never stored)."""
    if not name.strip():
        raise ValueError("a token needs a name")
    token = new_token()
    await store.save_token(
        TokenRecord(
            name=name.strip(), role=role, token_hash=hash_token(token), created_at=utc_now()
        )
    )
    return token


async def revoke_token(store: Store, name: str) -> bool:
    return await store.revoke_token(name, utc_now())
