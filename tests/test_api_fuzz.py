"""Nothing a client sends may cause a server error: schemathesis generates requests from
`/openapi.json`, valid and invalid ones, against a real uvicorn on a loopback port (in a thread
of this process, so that its journal can hold an admin token), and every answer must be below
500.

One test per route of the table and generation mode. `POST /api/admin/shutdown` is left out:
it stops taking orders for good (its own tests are in test_api.py and test_runbook.py)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
import uvicorn
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

from tradeengine.api import create_app
from tradeengine.api.auth import create_token
from tradeengine.api.routes import ENDPOINTS, Endpoint
from tradeengine.settings import load_settings
from tradeengine.store import MemoryStore

EXAMPLES = {GenerationMode.POSITIVE: 40, GenerationMode.NEGATIVE: 25}
CASES = [
    (endpoint, mode)
    for endpoint in ENDPOINTS
    if endpoint.path != "/api/admin/shutdown"
    for mode in EXAMPLES
    # Invalid data needs something with a schema to violate: a body or a query (a path
    # parameter is any string).
    if mode is GenerationMode.POSITIVE or endpoint.body is not None or endpoint.query is not None
]


@pytest.fixture(scope="module")
def server(
    free_port: Callable[[], int], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, str]]:
    """(base URL, admin token) of a uvicorn serving the app on 127.0.0.1."""
    directory: Path = tmp_path_factory.mktemp("fuzz")
    app_settings = load_settings(
        {
            # The synthetic feed gives marks, so that generated orders reach the whole gate.
            "SYNTHETIC_INTERVAL": "0.2",
            "LOG_FILE": str(directory / "logs" / "trading_platform.log"),
            "DATABASE_URL": f"sqlite:///{directory / 'trading_platform.db'}",
        },
        dotenv=None,
    )
    store = MemoryStore()
    token = asyncio.run(create_token(store, "fuzz", "admin"))
    app = create_app(app_settings, store_factory=lambda: store)
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}", token
    server.should_exit = True
    thread.join(30)


@pytest.fixture(scope="module")
def api_schema(server: tuple[str, str]) -> Any:
    """The served document, fuzzed as an admin: without its security requirements, so that
    invalid data goes into bodies, queries and paths rather than into the token (auth has its
    own tests in test_auth.py)."""
    base, _ = server
    document = httpx.get(f"{base}/openapi.json").json()
    for operations in document["paths"].values():
        for operation in operations.values():
            operation.pop("security", None)
    return schemathesis.openapi.from_dict(document)


@pytest.mark.parametrize(
    ("endpoint", "mode"), CASES, ids=[f"{e.method} {e.path} {m}" for e, m in CASES]
)
def test_no_request_makes_a_server_error(
    api_schema: Any, server: tuple[str, str], endpoint: Endpoint, mode: GenerationMode
) -> None:
    base, token = server
    operation = api_schema[endpoint.path][endpoint.method]

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=EXAMPLES[mode],
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def fuzz(case: Any) -> None:
        case.call_and_validate(
            base_url=base,
            headers={"Authorization": f"Bearer {token}"},
            checks=[not_a_server_error],
            timeout=10,
        )

    fuzz()


numbers = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False),
    st.floats(min_value=0.0001, max_value=1e7),
    st.sampled_from([0, -1, 1e-12, 1e308, 2**63, "1e400", "-0", "12.5"]),
)
# Mostly plausible sizes and prices, so that many orders pass the gate and reach the book.
quantities = st.one_of(st.integers(1, 50), st.integers(1, 50), numbers)
prices = st.one_of(st.floats(50, 600), st.floats(50, 600), numbers)
maybe_price = st.one_of(st.none(), prices)


@settings(max_examples=150, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(
    marks=st.dictionaries(st.sampled_from(["AAPL", "MSFT", "SPY"]), prices, max_size=2),
    order=st.fixed_dictionaries(
        {
            "symbol": st.sampled_from(["AAPL", "MSFT", "SPY", "ZZZZ"]),
            "side": st.sampled_from(["buy", "sell"]),
            "qty": quantities,
        },
        optional={
            "type": st.sampled_from(["market", "limit", "stop", "stop_limit"]),
            "time_in_force": st.sampled_from(["day", "gtc", "ioc", "fok"]),
            "limit_price": maybe_price,
            "stop_price": maybe_price,
            "stop_loss": maybe_price,
            "reduce_only": st.booleans(),
            "client_order_id": st.sampled_from(["a", "b", "c"]),
        },
    ),
    then=st.sampled_from(["none", "cancel_all", "liquidate", "close", "kill", "reset"]),
)
def test_orders_that_reach_the_gate_make_no_server_error(
    server: tuple[str, str], marks: dict[str, Any], order: dict[str, Any], then: str
) -> None:
    """Schemathesis rarely makes a well-formed symbol: this drives valid symbols with every
    kind of number through prices, orders and the emergency controls."""
    base, token = server
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}) as client:
        answers = []
        if marks:
            answers.append(client.post("/api/market/prices", json=marks))
        answers.append(client.post("/api/trading/orders", json=order))
        follow_up = {
            "none": ("GET", "/api/trading/positions", None),
            "cancel_all": ("DELETE", "/api/trading/orders/all", None),
            "liquidate": ("POST", "/api/emergency/liquidate-all", None),
            "close": ("DELETE", f"/api/trading/positions/{order['symbol']}", None),
            "kill": ("POST", "/api/emergency/kill-switch", None),
            "reset": ("DELETE", "/api/emergency/kill-switch", {"reason": "fuzz"}),
        }[then]
        method, path, body = follow_up
        answers.append(client.request(method, path, json=body))
        answers.append(client.get("/api/trading/status"))
    for answer in answers:
        assert answer.status_code < 500, (answer.request.method, answer.request.url, answer.text)
