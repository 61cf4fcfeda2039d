"""A third-party OpenID Connect relying party against our issuer: authlib (PyPI), not our code.

Discovery, authorization code + PKCE (S256) with state and nonce, the token endpoint with
client_secret_basic, ID token validation against our JWKS (signature, iss, aud, exp, nonce, at_hash),
userinfo, refresh-token rotation, revocation (RFC 7009) and introspection (RFC 7662).
The user signs up on the hosted pages through a plain HTTP session acting as the browser.

Usage: authlib_client.py ISSUER CLIENT_ID CLIENT_SECRET REDIRECT_URI EMAIL PASSWORD
Exit 0 and "ok" on success; an assertion or exception otherwise.
"""

import re
import sys
from urllib.parse import urljoin

import requests
from authlib.common.security import generate_token
from authlib.integrations.base_client.errors import OAuthError
from authlib.integrations.requests_client import OAuth2Session
from authlib.jose import JsonWebKey, jwt
from authlib.oidc.core import CodeIDToken

issuer, client_id, client_secret, redirect_uri, email, password = sys.argv[1:7]

meta = requests.get(issuer + "/.well-known/openid-configuration", timeout=10).json()
assert meta["issuer"] == issuer, meta
assert "S256" in meta["code_challenge_methods_supported"]

client = OAuth2Session(
    client_id,
    client_secret,
    scope="openid email",
    redirect_uri=redirect_uri,
    code_challenge_method="S256",
    token_endpoint_auth_method="client_secret_basic",
)
verifier = generate_token(64)
nonce = generate_token(24)
url, state = client.create_authorization_url(
    meta["authorization_endpoint"], code_verifier=verifier, nonce=nonce
)

# The browser: follow the hosted login to the sign-up page and submit it.
browser = requests.Session()
r = browser.get(url, allow_redirects=False, timeout=10)
assert r.status_code == 303, (r.status_code, r.text)
login = urljoin(url, r.headers["location"])
signup = login.replace("/login?", "/signup?")
page = browser.get(signup, timeout=10).text
csrf = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
flow = re.search(r'name="flow" value="([^"]+)"', page).group(1)
r = browser.post(
    signup.split("?")[0],
    data={"csrf": csrf, "flow": flow, "email": email, "password": password},
    allow_redirects=False,
    timeout=10,
)
assert r.status_code == 303, (r.status_code, r.text)
callback = r.headers["location"]
assert callback.startswith(redirect_uri), callback

token = client.fetch_token(
    meta["token_endpoint"],
    authorization_response=callback,
    state=state,
    code_verifier=verifier,
)
jwks = JsonWebKey.import_key_set(requests.get(meta["jwks_uri"], timeout=10).json())
claims = jwt.decode(
    token["id_token"],
    jwks,
    claims_cls=CodeIDToken,
    claims_options={
        "iss": {"essential": True, "value": issuer},
        "aud": {"essential": True, "value": client_id},
    },
    claims_params={"nonce": nonce, "client_id": client_id, "access_token": token["access_token"]},
)
claims.validate(leeway=30)
assert claims["email"] == email, claims

info = client.get(meta["userinfo_endpoint"], timeout=10).json()
assert info["sub"] == claims["sub"], info

refreshed = client.refresh_token(meta["token_endpoint"], refresh_token=token["refresh_token"])
assert refreshed["refresh_token"] != token["refresh_token"]
assert "id_token" in refreshed

active = client.introspect_token(meta["introspection_endpoint"], token=refreshed["access_token"]).json()
assert active["active"] is True and active["client_id"] == client_id, active

r = client.revoke_token(
    meta["revocation_endpoint"], token=refreshed["refresh_token"], token_type_hint="refresh_token"
)
assert r.status_code == 200, r.text
inactive = client.introspect_token(meta["introspection_endpoint"], token=refreshed["access_token"]).json()
assert inactive["active"] is False, inactive

try:
    client.refresh_token(meta["token_endpoint"], refresh_token=refreshed["refresh_token"])
    raise AssertionError("a revoked refresh token was accepted")
except OAuthError as e:
    assert e.error == "invalid_grant", e

print("ok")
