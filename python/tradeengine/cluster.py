"""One engine behind many workers.

`uvicorn tradeengine.main:app --workers 4` starts four processes, each with the same app. Only
one of them may own the engine: four engines would mean four kill switches, four throttles and
four books. An OS file lock (`flock`) in a state directory derived from DATABASE_URL decides
which process owns it. The owner serves HTTP itself and also listens on a Unix socket in the
same directory; every other worker (a follower) forwards each whole HTTP request over that
socket as a msgpack frame and answers with the owner's reply. So orders, the kill switch, the
throttle, `/metrics`, health and positions all come from the one engine, whichever worker the
client reached. With one worker the process owns the lock and nothing is forwarded.

Followers keep trying the lock. When the owner dies the OS releases it; the first follower to
take it starts an engine (which recovers from the journal) and serves on. Requests caught in
the change get a 503 with Retry-After; retrying an order with its client_order_id is safe.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import logging
import os
import stat
import struct
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import msgspec
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tradeengine.settings import Settings, redact_url

log = logging.getLogger("tradeengine.cluster")

FORWARDED = "tradeengine.forwarded"
MAX_FORWARDED_BODY = 1024 * 1024
FORWARD_TIMEOUT = 30.0
LOCK_POLL_SECONDS = 0.1
# Connections a follower keeps to the owner: requests beyond wait for one, they do not fail.
FOLLOWER_CONNECTIONS = 32
_HEADER = struct.Struct(">I")


class ForwardedRequest(msgspec.Struct, array_like=True):
    method: str
    scheme: str
    http_version: str
    path: str
    raw_path: bytes
    query_string: bytes
    headers: list[tuple[bytes, bytes]]
    client: tuple[str, int] | None
    server: tuple[str, int] | None
    body: bytes


class ForwardedResponse(msgspec.Struct, array_like=True):
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes


_encode = msgspec.msgpack.Encoder().encode
_decode_request = msgspec.msgpack.Decoder(ForwardedRequest).decode
_decode_response = msgspec.msgpack.Decoder(ForwardedResponse).decode


MAX_SOCKET_PATH = 100


def state_dir(settings: Settings) -> Path:
    """TRADEENGINE_STATE_DIR; else, for SQLite, a private directory beside the database file;
    else (PostgreSQL, or a path too long for a Unix socket, about 100 bytes) a private
    directory under the temp dir named after a hash of DATABASE_URL without its password.
    Processes on one journal share it; processes on different journals never do."""
    if settings.state_dir:
        return Path(settings.state_dir)
    url = settings.database_url
    if url.startswith("sqlite:///"):
        database = Path(url.removeprefix("sqlite:///").split("?")[0]).resolve()
        beside = database.parent / f".{database.name}.tradeengine"
        if len(str(beside / "engine.sock")) <= MAX_SOCKET_PATH:
            return beside
        key = hashlib.sha256(str(database).encode()).hexdigest()[:16]
    else:
        key = hashlib.sha256(redact_url(url).encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"tradeengine-{key}"


def _private_dir(path: Path) -> None:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = path.stat()
    if info.st_uid != os.getuid() or stat.S_IMODE(info.st_mode) & 0o077:
        raise PermissionError(
            f"state directory {path} must be owned by this user with mode 0700: another user "
            "could otherwise reach the engine's socket"
        )


async def _read_frame(reader: asyncio.StreamReader) -> bytes:
    (size,) = _HEADER.unpack(await reader.readexactly(_HEADER.size))
    return await reader.readexactly(size)


def _write_frame(writer: asyncio.StreamWriter, payload: bytes) -> None:
    writer.write(_HEADER.pack(len(payload)) + payload)


class Cluster:
    """This process's part: owner (has the lock, runs the engine) or follower (forwards)."""

    def __init__(self, settings: Settings) -> None:
        self.dir = state_dir(settings)
        self.lock_path = self.dir / "engine.lock"
        self.socket_path = self.dir / "engine.sock"
        self.is_owner = False
        self.is_follower = False
        self._lock_fd: int | None = None
        self._server: asyncio.Server | None = None
        self._follow_task: asyncio.Task[None] | None = None
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self._connections = asyncio.Semaphore(FOLLOWER_CONNECTIONS)
        self._app: ASGIApp | None = None

    def _try_lock(self) -> bool:
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._lock_fd = fd
        return True

    def owner_pid(self) -> int | None:
        """The pid the owner wrote into the lock file (for operators and tests)."""
        try:
            return int(self.lock_path.read_text().strip() or 0) or None
        except (OSError, ValueError):
            return None

    async def start(self, app: ASGIApp, become_owner: Callable[[], Awaitable[None]]) -> None:
        """Takes the lock and starts the engine, or becomes a follower that keeps trying."""
        self._app = app
        _private_dir(self.dir)
        if self._try_lock():
            await self._become_owner(become_owner)
        else:
            log.info("engine is owned by pid %s: this worker forwards to it", self.owner_pid())
            self.is_follower = True
            self._follow_task = asyncio.create_task(self._follow(become_owner), name="follow")

    async def _become_owner(self, become_owner: Callable[[], Awaitable[None]]) -> None:
        try:
            await become_owner()
        except BaseException:
            self._release()
            raise
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()  # a dead owner's; only the lock holder gets here
        self._server = await asyncio.start_unix_server(
            self._serve, path=str(self.socket_path), backlog=1024
        )
        os.chmod(self.socket_path, 0o600)
        self.is_owner = True
        self.is_follower = False
        self._drop_idle()
        log.info("this worker (pid %s) owns the engine; socket %s", os.getpid(), self.socket_path)

    async def _follow(self, become_owner: Callable[[], Awaitable[None]]) -> None:
        while True:
            await asyncio.sleep(LOCK_POLL_SECONDS)
            if self._try_lock():
                log.warning("the engine owner is gone: pid %s takes over", os.getpid())
                try:
                    await self._become_owner(become_owner)
                except Exception:
                    log.exception("ERROR taking over the engine failed; trying again")
                    continue
                return

    def _release(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    async def stop(self) -> None:
        if self._follow_task is not None:
            self._follow_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._follow_task
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 5)
            with contextlib.suppress(FileNotFoundError):
                self.socket_path.unlink()
        self._drop_idle()
        self._release()

    def _drop_idle(self) -> None:
        for _, writer in self._idle:
            writer.close()
        self._idle.clear()

    # ---- owner: run forwarded requests through this process's app ----

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                request = _decode_request(await _read_frame(reader))
                try:
                    response = await self._run(request)
                except Exception:
                    log.exception("ERROR forwarded %s %s failed", request.method, request.path)
                    body = msgspec.json.encode(
                        {"error": {"code": "internal_error", "message": "internal error"}}
                    )
                    response = ForwardedResponse(
                        500, [(b"content-type", b"application/json")], body
                    )
                _write_frame(writer, _encode(response))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        except Exception:
            log.exception("ERROR the engine socket's connection failed")
        finally:
            writer.close()

    async def _run(self, request: ForwardedRequest) -> ForwardedResponse:
        assert self._app is not None
        scope: dict[str, Any] = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": request.http_version,
            "method": request.method,
            "scheme": request.scheme,
            "path": request.path,
            "raw_path": request.raw_path,
            "root_path": "",
            "query_string": request.query_string,
            "headers": request.headers,
            "client": request.client,
            "server": request.server,
            FORWARDED: True,
        }
        body_sent = False
        status = 500
        headers: list[tuple[bytes, bytes]] = []
        chunks: list[bytes] = []

        async def receive() -> Message:
            nonlocal body_sent
            if not body_sent:
                body_sent = True
                return {"type": "http.request", "body": request.body, "more_body": False}
            await asyncio.Event().wait()  # the client never disconnects mid-request here
            return {"type": "http.disconnect"}

        async def send(message: Message) -> None:
            nonlocal status, headers
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = [(bytes(k), bytes(v)) for k, v in message.get("headers", [])]
            elif message["type"] == "http.response.body":
                chunks.append(bytes(message.get("body", b"")))

        await self._app(scope, receive, send)
        return ForwardedResponse(status, headers, b"".join(chunks))

    # ---- follower: send a request to the owner ----

    async def forward(self, request: ForwardedRequest) -> ForwardedResponse:
        async with self._connections:
            return await self._forward(request)

    async def _forward(self, request: ForwardedRequest) -> ForwardedResponse:
        frame = _encode(request)
        while self._idle:
            reader, writer = self._idle.pop()
            if reader.at_eof() or writer.is_closing():
                # The owner at the other end has gone (the kernel closed its side).
                writer.close()
                continue
            try:
                _write_frame(writer, frame)
                await writer.drain()
            except ConnectionError:
                # A connection to an owner that has died: nothing was sent, try the next one.
                writer.close()
                continue
            return await self._answer(reader, writer)
        reader, writer = await asyncio.open_unix_connection(str(self.socket_path))
        try:
            _write_frame(writer, frame)
            await writer.drain()
        except BaseException:
            writer.close()
            raise
        return await self._answer(reader, writer)

    async def _answer(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> ForwardedResponse:
        """Reads the owner's reply. Once a request is sent it is never sent again: if the owner
        dies now, the caller answers 503 and the client decides (an order retried with its
        client_order_id is safe)."""
        try:
            response = _decode_response(
                await asyncio.wait_for(_read_frame(reader), FORWARD_TIMEOUT)
            )
        except BaseException:
            writer.close()
            raise
        self._idle.append((reader, writer))
        return response


class ForwardingMiddleware:
    """Outermost middleware: in a follower, every HTTP request goes to the engine's owner."""

    def __init__(self, app: ASGIApp, cluster: Cluster) -> None:
        self.app = app
        self.cluster = cluster

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        cluster = self.cluster
        if scope["type"] != "http" or scope.get(FORWARDED):
            await self.app(scope, receive, send)
            return
        send = _tag_worker(send)
        if not cluster.is_follower:
            await self.app(scope, receive, send)
            return
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body.extend(message.get("body", b""))
            if len(body) > MAX_FORWARDED_BODY:
                await _error(send, 413, "body_too_large", "the request body is too large")
                return
            if not message.get("more_body", False):
                break
        request = ForwardedRequest(
            method=scope["method"],
            scheme=scope.get("scheme", "http"),
            http_version=scope.get("http_version", "1.1"),
            path=scope["path"],
            raw_path=scope.get("raw_path") or scope["path"].encode(),
            query_string=scope.get("query_string", b""),
            headers=[(bytes(k), bytes(v)) for k, v in scope.get("headers", [])],
            client=tuple(scope["client"]) if scope.get("client") else None,
            server=tuple(scope["server"]) if scope.get("server") else None,
            body=bytes(body),
        )
        try:
            response = await cluster.forward(request)
        except (OSError, asyncio.IncompleteReadError, TimeoutError, msgspec.DecodeError) as exc:
            log.warning("engine owner unreachable (%s): %s %s answered 503", exc,
                        request.method, request.path)  # fmt: skip
            await _error(
                send,
                503,
                "engine_unavailable",
                "the engine is changing owner; retry in a moment (an order retried with the "
                "same client_order_id is never placed twice)",
                retry_after=1,
            )
            return
        await send(
            {"type": "http.response.start", "status": response.status, "headers": response.headers}
        )
        await send({"type": "http.response.body", "body": response.body})


WORKER_HEADER = b"x-tradeengine-worker"


def _tag_worker(send: Send) -> Send:
    """Names the worker process that took the request in a response header."""
    pid = str(os.getpid()).encode()

    async def tagged(message: Message) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message.get("headers", []), (WORKER_HEADER, pid)]}
        await send(message)

    return tagged


async def _error(
    send: Send, status: int, code: str, message: str, retry_after: int | None = None
) -> None:
    body = msgspec.json.encode({"error": {"code": code, "message": message}})
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if retry_after is not None:
        headers.append((b"retry-after", str(retry_after).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
