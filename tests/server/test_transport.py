"""HTTP transport: malformed or hostile requests never get a 5xx and never hurt other clients.

Raw sockets send what HTTP clients would refuse to: chunked bodies over the limit, stalled and
drip-fed bodies, broken chunk framing, non-UTF-8 header bytes, duplicated Authorization. The
keyless cases run against the shared session server; the keyed ones against the app with two
API keys served in-process by uvicorn (no model: routes past the guard answer 503 "loading").
The guard's tenant and body replay are checked directly as ASGI.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import select
import socket
import threading
import time
from urllib.parse import urlsplit

import httpx
import pytest
import uvicorn

from radixgen.launcher import free_port
from radixgen.runtime.config import EngineConfig
from radixgen.server.app import create_app
from radixgen.server.context import ServerSettings
from radixgen.server.guard import MAX_BODY_BYTES, GuardMiddleware, key_tenant
from tests.server.conftest import BODY_READ_TIMEOUT

TINY = {"text": "Hi", "sampling_params": {"max_new_tokens": 2, "temperature": 0}}
KEYS = ("key-one", "key-two")


def _connect(url: str, timeout: float = 15.0) -> socket.socket:
    parts = urlsplit(url)
    return socket.create_connection((parts.hostname, parts.port), timeout=timeout)


def _head(method: str, path: str, headers: list[tuple[bytes, bytes]]) -> bytes:
    lines = [f"{method} {path} HTTP/1.1".encode(), b"Host: test"]
    lines += [name + b": " + value for name, value in headers]
    return b"\r\n".join(lines) + b"\r\n\r\n"


def _response(sock: socket.socket) -> http.client.HTTPResponse:
    """The response on `sock`, read whole (http.client parses what the raw socket receives)."""
    response = http.client.HTTPResponse(sock)
    response.begin()
    response.read()
    return response


def _exchange(url: str, request: bytes) -> tuple[int, dict]:
    with _connect(url) as sock:
        sock.sendall(request)
        response = http.client.HTTPResponse(sock)
        response.begin()
        return response.status, json.loads(response.read() or b"null")


def _generate_request(headers: list[tuple[bytes, bytes]] = ()) -> bytes:
    body = json.dumps(TINY).encode()
    head = [
        (b"Content-Type", b"application/json"),
        (b"Content-Length", str(len(body)).encode()),
        *headers,
    ]
    return _head("POST", "/generate", head) + body


def _assert_still_serving(url: str) -> None:
    assert httpx.get(f"{url}/health", timeout=10).status_code == 200
    resp = httpx.post(f"{url}/generate", json=TINY, timeout=60)
    assert resp.status_code == 200 and resp.json()["meta_info"]["completion_tokens"] == 2


def _assert_refusal(response: http.client.HTTPResponse, status: int) -> dict:
    assert response.status == status
    assert response.getheader("connection", "").lower() == "close"  # the rest is never read
    return json.loads(response.read())["error"]


def test_chunked_body_over_the_limit_gets_413_at_once(server_url):
    """A chunked body declares no length; the server must count it as it arrives. The final
    chunk is never sent: the 413 has to come while the body is still open."""
    chunk = b"x" * (64 * 1024)
    with _connect(server_url) as sock:
        sock.sendall(_head("POST", "/generate", [(b"Transfer-Encoding", b"chunked")]))
        sent = 0
        while sent <= MAX_BODY_BYTES:
            part = chunk[: MAX_BODY_BYTES + 1 - sent]
            sock.sendall(b"%x\r\n%s\r\n" % (len(part), part))
            sent += len(part)
        response = http.client.HTTPResponse(sock)
        response.begin()
        error = _assert_refusal(response, 413)
    assert error["type"] == "invalid_request_error" and str(MAX_BODY_BYTES) in error["message"]
    _assert_still_serving(server_url)


def test_declared_length_over_the_limit_gets_413_before_the_body(server_url):
    with _connect(server_url) as sock:
        length = str(MAX_BODY_BYTES + 1).encode()
        sock.sendall(_head("POST", "/generate", [(b"Content-Length", length)]))
        response = http.client.HTTPResponse(sock)
        response.begin()
        _assert_refusal(response, 413)


@pytest.mark.parametrize("drip", [False, True], ids=["stalled", "drip-fed"])
def test_a_slow_body_gets_408_after_the_read_timeout(server_url, drip):
    """The timeout is a total deadline: a client sending a byte every 0.3 s (never idle for
    long) is cut off as surely as one that stops."""
    head = [(b"Content-Type", b"application/json"), (b"Content-Length", b"1000")]
    started = time.monotonic()
    with _connect(server_url) as sock:
        sock.sendall(_head("POST", "/generate", head) + b'{"text": ')
        while not select.select([sock], [], [], 0.3)[0]:
            assert time.monotonic() - started < BODY_READ_TIMEOUT + 5, "no answer"
            if drip:
                with contextlib.suppress(OSError):  # the server may close as we send
                    sock.sendall(b" ")
        response = http.client.HTTPResponse(sock)
        response.begin()
        elapsed = time.monotonic() - started
        error = _assert_refusal(response, 408)
    assert BODY_READ_TIMEOUT - 0.5 < elapsed < BODY_READ_TIMEOUT + 3, elapsed
    assert "not received" in error["message"]
    _assert_still_serving(server_url)


def test_non_utf8_header_bytes_are_not_a_server_error(server_url):
    odd = [(b"X-Note", b"caf\xe9 \xff\xfe")]  # latin-1 text and bytes that are not UTF-8
    with _connect(server_url) as sock:
        sock.sendall(_head("GET", "/health", odd))
        assert _response(sock).status == 200
    status, out = _exchange(server_url, _generate_request(odd))
    assert status == 200 and out["meta_info"]["completion_tokens"] == 2


@pytest.mark.parametrize(
    "body",
    [
        b"zz\r\nhello\r\n0\r\n\r\n",  # chunk size is not hex
        b"5\r\nhelloXX3\r\nabc\r\n0\r\n\r\n",  # no CRLF after the chunk data
        b"-5\r\nhello\r\n0\r\n\r\n",  # negative size
        b"5;" + b"x" * 70000 + b"\r\nhello\r\n0\r\n\r\n",  # endless chunk extension
    ],
    ids=["not-hex", "no-crlf", "negative", "long-extension"],
)
def test_malformed_chunked_encoding_is_refused_without_5xx(server_url, body):
    head = [(b"Content-Type", b"application/json"), (b"Transfer-Encoding", b"chunked")]
    status = None
    with _connect(server_url) as sock:
        with contextlib.suppress(ConnectionError):
            sock.sendall(_head("POST", "/generate", head) + body)
        with contextlib.suppress(ConnectionError, http.client.RemoteDisconnected):
            status = _response(sock).status
    assert status is None or 400 <= status < 500, status
    _assert_still_serving(server_url)


@pytest.fixture(scope="module")
def keyed_url():
    """The app with two API keys, served by uvicorn in a thread. Its lifespan is off, so the
    engine never loads: a request past the guard gets 503 "still loading"."""
    port = free_port()
    app = create_app(ServerSettings(engine=EngineConfig(), api_keys=KEYS))
    config = uvicorn.Config(app, host="127.0.0.1", port=port, lifespan="off", log_level="error")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="keyed-uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "keyed server did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=30)


def _models(url: str, *authorization: bytes) -> tuple[int, dict]:
    headers = [(b"Authorization", value) for value in authorization]
    return _exchange(url, _head("GET", "/v1/models", headers))


def test_every_configured_key_is_accepted_and_health_needs_none(keyed_url):
    for key in KEYS:
        assert _models(keyed_url, b"Bearer " + key.encode())[0] == 503  # past the guard
    assert _models(keyed_url)[0] == 401
    assert _exchange(keyed_url, _head("GET", "/health", []))[0] == 503  # open, still loading


@pytest.mark.parametrize(
    "value",
    [b"Bearer caf\xe9", b"Bearer key-one\xff", b"Bearer \xe2\x82\xac", b"\xff key-one"],
    ids=["latin-1", "key-plus-byte", "utf-8-euro", "odd-scheme"],
)
def test_a_non_ascii_authorization_is_an_invalid_key(keyed_url, value):
    status, out = _models(keyed_url, value)
    assert status == 401 and out["error"]["type"] == "authentication_error"


@pytest.mark.parametrize(
    "values",
    [
        (b"Bearer wrong", b"Bearer key-one"),
        (b"Bearer key-one", b"Bearer wrong"),
        (b"Bearer key-one", b"Bearer key-two"),
        (b"Bearer key-one", b"Bearer key-one"),
    ],
    ids=["wrong-then-right", "right-then-wrong", "two-keys", "same-key-twice"],
)
def test_two_authorization_headers_are_a_400_never_last_one_wins(keyed_url, values):
    status, out = _models(keyed_url, *values)
    assert status == 400 and out["error"]["param"] == "Authorization"


class _Recorder:
    """An ASGI app that records what it receives (the body, then one more message) and
    answers with the tenant the guard gave it."""

    def __init__(self):
        self.received: list[dict] = []

    async def __call__(self, scope, receive, send):
        self.received = [await receive(), await receive()]
        body = json.dumps({"tenant": scope["state"]["tenant"]}).encode()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})


def _call(guard, path: str, headers: list, messages: list[dict]) -> tuple[int, dict]:
    """Run one request through `guard`; the client sends `messages`, then disconnects."""
    scope = {"type": "http", "method": "POST", "path": path, "headers": headers}
    pending = list(messages)
    sent: list[dict] = []

    async def receive():
        return pending.pop(0) if pending else {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    asyncio.run(guard(scope, receive, send))
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return sent[0]["status"], json.loads(body)


def test_the_tenant_is_the_key_that_authenticated():
    app = _Recorder()
    guard = GuardMiddleware(app, api_keys=KEYS)
    tenants = []
    for key in KEYS:
        auth = [(b"authorization", b"Bearer " + key.encode())]
        status, out = _call(guard, "/generate", auth, [])
        assert status == 200
        tenants.append(out["tenant"])
    assert tenants == [key_tenant(k) for k in KEYS] and len(set(tenants)) == 2
    assert all(len(t) == 16 and KEYS[0] not in t for t in tenants)
    assert _call(guard, "/health", [], [])[1] == {"tenant": None}
    assert _call(GuardMiddleware(app), "/generate", [], [])[1] == {"tenant": None}


def test_the_body_is_read_whole_then_replayed_then_the_server_receive_follows():
    app = _Recorder()
    chunks = [
        {"type": "http.request", "body": b"ab", "more_body": True},
        {"type": "http.request", "body": b"c", "more_body": False},
    ]
    headers = [(b"transfer-encoding", b"chunked")]
    assert _call(GuardMiddleware(app, max_body_bytes=3), "/generate", headers, chunks)[0] == 200
    assert app.received == [
        {"type": "http.request", "body": b"abc", "more_body": False},
        {"type": "http.disconnect"},  # the client going away is still seen
    ]
    status, out = _call(GuardMiddleware(app, max_body_bytes=2), "/generate", headers, chunks)
    assert status == 413 and out["error"]["message"] == "request body over 2 bytes"
