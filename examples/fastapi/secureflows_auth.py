"""Verifying secureFlows session tokens in a FastAPI back end, with PyJWT.

The signing keys come from the workspace issuer's discovery document and its JWKS (PyJWKClient caches
them and refetches once on an unknown ``kid``). A token is accepted when its signature verifies with the
key its ``kid`` names, for that key's algorithm, its ``typ`` is ``sf-session+jwt``, ``iss`` is the
workspace issuer, ``aud`` is this application's client id and it has not expired. An expired token is
answered 410 (the user's data is intact; the front end signs in again), anything else 401 — both as
``application/problem+json``, like the Session API. When the issuer's keys cannot be fetched the answer
is 503: nobody's token is judged.

Revocation is visible only to secureFlows: to refuse a signed-out session at once, ask the Session API.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from typing import Any

import jwt
from fastapi import HTTPException, Request

SESSION_TOKEN_TYPE = "sf-session+jwt"
ALGORITHMS = ["RS256", "EdDSA"]
REFETCH_INTERVAL = 10.0


class Problem(HTTPException):
    """An RFC 9457 problem; the app's exception handler renders it."""

    def __init__(self, status: int, slug: str, title: str, detail: str) -> None:
        super().__init__(status_code=status, detail=detail)
        self.body = {
            "type": f"urn:secureflows:problem:{slug}",
            "title": title,
            "status": status,
            "detail": detail,
        }


def _invalid(detail: str) -> Problem:
    return Problem(401, "invalid-token", "Invalid token", detail)


class SessionTokenVerifier:
    """A FastAPI dependency: ``claims = Depends(verifier)`` answers a verified token's claims."""

    def __init__(self, issuer: str, audience: str, *, leeway: float = 5.0) -> None:
        self.issuer = issuer.rstrip("/")
        self.audience = audience
        self.leeway = leeway
        with urllib.request.urlopen(f"{self.issuer}/.well-known/openid-configuration", timeout=10) as r:
            metadata = json.load(r)
        # OpenID Connect Discovery 1.0 §4.3: the document must name the issuer asked for.
        if metadata.get("issuer") != self.issuer:
            raise ValueError("the discovery document names another issuer")
        # The key set is cached for ten minutes; no per-kid cache, so a key the issuer removed stops
        # verifying when the set is next fetched.
        self.jwks = jwt.PyJWKClient(metadata["jwks_uri"], cache_keys=False, lifespan=600, timeout=10)
        self._refetched_at = 0.0
        self._lock = threading.Lock()

    def _key(self, kid: str) -> jwt.PyJWK:
        """The key named ``kid``; an unknown one refetches the set at most every 10 seconds."""
        try:
            for key in self.jwks.get_jwk_set().keys:
                if key.key_id == kid:
                    return key
            with self._lock:
                if time.monotonic() - self._refetched_at < REFETCH_INTERVAL:
                    raise _invalid("no key of the issuer has this token's kid")
                self._refetched_at = time.monotonic()
            for key in self.jwks.get_jwk_set(refresh=True).keys:
                if key.key_id == kid:
                    return key
        except (jwt.PyJWKClientError, jwt.exceptions.PyJWKSetError) as e:
            # The issuer's keys cannot be had: nobody's token is judged (503), not this one refused.
            raise Problem(503, "service-unavailable", "Issuer unavailable", "the issuer's keys cannot be fetched") from e
        raise _invalid("no key of the issuer has this token's kid")

    def verify(self, token: str) -> dict[str, Any]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError as e:
            raise _invalid("the token is not a JWT") from e
        if str(header.get("typ", "")).lower() != SESSION_TOKEN_TYPE:
            raise _invalid("the token is not a session token")
        kid = header.get("kid")
        if not isinstance(kid, str):
            raise _invalid("the token names no key")
        key = self._key(kid)
        # The key fixes the algorithm (never the token's header alone).
        algorithm = key.algorithm_name
        if algorithm not in ALGORITHMS or header.get("alg") != algorithm:
            raise _invalid("the token's algorithm does not fit the key")
        try:
            return jwt.decode(
                token,
                key=key,
                algorithms=[algorithm],
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway,
                options={"require": ["exp", "iss", "aud", "sub"]},
            )
        except jwt.ExpiredSignatureError as e:
            raise Problem(410, "token-expired", "Token expired", "sign in again; the data is intact") from e
        except jwt.InvalidTokenError as e:
            raise _invalid("the token does not verify") from e

    def __call__(self, request: Request) -> dict[str, Any]:
        authorization = request.headers.get("authorization", "")
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise _invalid("send the session token as Authorization: Bearer <token>")
        return self.verify(token.strip())
