"""The FastAPI example against a real secureFlows server (the binary built by cargo) and a real uvicorn
server, over loopback HTTP: real session tokens pass; expired, forged, wrong-audience, wrong-issuer and
wrong-type tokens do not.

The binary: SECUREFLOWS_BIN, else $CARGO_TARGET_DIR (or ~/.cache/secureflows-target)/debug/secureflows.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import httpx
import pytest
import uvicorn

from app import create_app

ORIGIN = "http://127.0.0.1:9"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def binary() -> str:
    if os.environ.get("SECUREFLOWS_BIN"):
        return os.environ["SECUREFLOWS_BIN"]
    target = os.environ.get("CARGO_TARGET_DIR", str(Path.home() / ".cache" / "secureflows-target"))
    return str(Path(target) / "debug" / "secureflows")


@pytest.fixture(scope="module")
def secureflows():
    bin_ = binary()
    assert Path(bin_).exists(), f"no secureflows binary at {bin_}: cargo build -p secureflows"
    tmp = tempfile.mkdtemp(prefix="secureflows-fastapi-")
    config = Path(tmp) / "config.toml"
    config.write_text("[tokens]\nleeway_secs = 0\nmin_ttl_secs = 1\n\n[login]\nattempts_per_minute = 100000\n")
    port = free_port()
    env = {**os.environ, "SECUREFLOWS_CONFIG": str(config), "SECUREFLOWS_DATA_DIR": str(Path(tmp) / "data")}
    env.pop("SECUREFLOWS_DATABASE_URL", None)
    base = [bin_, "--listen", f"127.0.0.1:{port}", "--json"]

    def cli(*args: str) -> dict:
        return json.loads(subprocess.run([*base, *args], env=env, check=True, capture_output=True, text=True).stdout)

    subprocess.run([*base[:-1], "migrate"], env=env, check=True, capture_output=True)
    a = cli("workspace", "create", "--name", "A", "--plan", "pro")["workspace_id"]
    b = cli("workspace", "create", "--name", "B", "--plan", "pro")["workspace_id"]

    def app(ws: str, name: str, ttl: str) -> str:
        return cli("app", "create", "--workspace", ws, "--name", name, "--kind", "browser",
                   "--redirect-uri", f"{ORIGIN}/callback", "--allow-origin", ORIGIN,
                   "--allow-anonymous", "--token-ttl", ttl)["client_id"]

    fixture = {
        "url": f"http://127.0.0.1:{port}",
        "a": a,
        "web": app(a, "web", "1h"),
        "short": app(a, "short", "2s"),
        "other": app(b, "other", "1h"),
        "console": cli("token", "issue", "--workspace", a, "--email", "owner@example.com", "--role", "owner")["token"],
    }
    fixture["issuer"] = f"{fixture['url']}/w/{a}"
    fixture["other_issuer"] = f"{fixture['url']}/w/{b}"
    server = subprocess.Popen([*base[:-1], "serve"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        for _ in range(600):
            try:
                if httpx.get(f"{fixture['url']}/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.05)
        else:
            raise RuntimeError("secureflows did not start")
        yield fixture
    finally:
        server.terminate()
        server.wait(timeout=30)
        shutil.rmtree(tmp, ignore_errors=True)


def anonymous(secureflows: dict, client_id: str) -> str:
    r = httpx.post(f"{secureflows['url']}/api/v1/auth/anonymous", json={"client_id": client_id})
    r.raise_for_status()
    return r.json()["sessionToken"]


@contextlib.contextmanager
def run_backend(issuer: str, audience: str):
    """The example app under uvicorn, a real HTTP server on a free port."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(issuer, audience), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture(scope="module")
def backend(secureflows):
    with run_backend(secureflows["issuer"], secureflows["web"]) as url:
        yield url


def me(backend: str, token: str | None) -> httpx.Response:
    headers = {"authorization": f"Bearer {token}"} if token is not None else {}
    return httpx.get(f"{backend}/me", headers=headers)


def b64(value: dict | str) -> str:
    raw = value.encode() if isinstance(value, str) else json.dumps(value).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def decode(part: str) -> dict:
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


def assert_problem(r: httpx.Response, status: int, slug: str) -> None:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["type"] == f"urn:secureflows:problem:{slug}"


def test_a_session_token_identifies_the_user(secureflows, backend):
    token = anonymous(secureflows, secureflows["web"])
    r = me(backend, token)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["workspace"] == secureflows["a"]
    assert body["role"] == "anon"
    assert body["user"] == decode(token.split(".")[1])["sub"]


def test_no_token_or_not_a_jwt_is_401(secureflows, backend):
    assert_problem(me(backend, None), 401, "invalid-token")
    assert_problem(me(backend, "not-a-jwt"), 401, "invalid-token")
    assert me(backend, "x.y.z").status_code == 401


def test_an_expired_token_is_410(secureflows):
    token = anonymous(secureflows, secureflows["short"])
    with run_backend(secureflows["issuer"], secureflows["short"]) as url:
        assert me(url, token).status_code == 200
        time.sleep(2 + 5 + 0.5)  # the token's lifetime and the verifier's 5-second leeway
        assert_problem(me(url, token), 410, "token-expired")


def test_forged_tokens_are_401(secureflows, backend):
    token = anonymous(secureflows, secureflows["web"])
    h, p, s = token.split(".")
    claims = decode(p)
    assert_problem(me(backend, f"{h}.{b64({**claims, 'role': 'owner'})}.{s}"), 401, "invalid-token")
    header = decode(h)
    assert_problem(me(backend, f"{b64({**header, 'alg': 'none'})}.{p}."), 401, "invalid-token")
    assert_problem(me(backend, f"{b64({**header, 'alg': 'HS256'})}.{p}.{s}"), 401, "invalid-token")
    assert_problem(me(backend, f"{b64({**header, 'kid': 'unknown'})}.{p}.{s}"), 401, "invalid-token")


def test_wrong_audience_issuer_or_type_is_401(secureflows, backend):
    # Another application of the same workspace: the audience differs.
    assert_problem(me(backend, anonymous(secureflows, secureflows["short"])), 401, "invalid-token")
    # Another workspace's application: same keys, other issuer and audience.
    assert_problem(me(backend, anonymous(secureflows, secureflows["other"])), 401, "invalid-token")
    # A console token of the same workspace is not a session token.
    assert_problem(me(backend, secureflows["console"]), 401, "invalid-token")
    # The right audience, but the back end trusts another workspace's issuer (which publishes the
    # same instance keys): the issuer does not match.
    with run_backend(secureflows["other_issuer"], secureflows["web"]) as other:
        assert_problem(me(other, anonymous(secureflows, secureflows["web"])), 401, "invalid-token")


def test_an_issuer_whose_keys_cannot_be_fetched_is_503_not_401(secureflows):
    from secureflows_auth import Problem, SessionTokenVerifier

    verifier = SessionTokenVerifier(secureflows["issuer"], secureflows["web"])
    verifier.jwks.uri = "http://127.0.0.1:9/.well-known/jwks.json"  # nothing listens there
    with pytest.raises(Problem) as refused:
        verifier.verify(anonymous(secureflows, secureflows["web"]))
    assert refused.value.status_code == 503
