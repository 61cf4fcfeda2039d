// verifySessionToken against a real issuer: real tokens verify; forged, expired, wrong-audience,
// wrong-issuer, wrong-type and unknown-key tokens are refused, and the JWKS is refetched sparingly.

import assert from "node:assert/strict";
import { createHmac, generateKeyPairSync, sign } from "node:crypto";
import { after, before, test } from "node:test";

import { SESSION_TOKEN_TYPE, TokenExpiredError, UnauthorizedError, verifySessionToken } from "secureflows-js";
import { anonymousToken, startServer } from "./support/server.mjs";

const ORIGIN = "http://127.0.0.1:9";
let server;
let jwksFetches = 0;
const countingFetch = (input, init) => {
  if (String(input).endsWith("/jwks.json")) jwksFetches++;
  return fetch(input, init);
};

before(async () => {
  server = await startServer({
    setup: async (cli) => {
      const a = await cli("workspace", "create", "--name", "A", "--plan", "pro");
      const b = await cli("workspace", "create", "--name", "B", "--plan", "pro");
      const app = (ws, name, ttl) => cli("app", "create", "--workspace", ws, "--name", name, "--kind", "browser",
        "--redirect-uri", `${ORIGIN}/callback`, "--allow-origin", ORIGIN, "--allow-anonymous", "--token-ttl", ttl);
      return {
        a: a.workspace_id,
        b: b.workspace_id,
        web: (await app(a.workspace_id, "web", "1h")).client_id,
        short: (await app(a.workspace_id, "short", "2s")).client_id,
        other: (await app(b.workspace_id, "other", "1h")).client_id,
        console: (await cli("token", "issue", "--workspace", a.workspace_id, "--email", "owner@example.com", "--role", "owner")).token,
      };
    },
  });
});
after(() => server?.stop());

const b64 = (value) => Buffer.from(typeof value === "string" ? value : JSON.stringify(value)).toString("base64url");
const parts = (token) => token.split(".").map((p, i) => (i < 2 ? JSON.parse(Buffer.from(p, "base64url")) : p));
const options = () => ({ issuer: server.issuerOf(server.fixture.a), audience: server.fixture.web, fetch: countingFetch });

async function refused(token, opts = options(), kind = UnauthorizedError) {
  const error = await verifySessionToken(token, opts).then(() => null, (e) => e);
  assert.ok(error instanceof kind, `expected ${kind.name}, got ${error}`);
  return error;
}

test("a real session token verifies and answers its claims", async () => {
  const token = await anonymousToken(server, server.fixture.web);
  const claims = await verifySessionToken(token, options());
  assert.equal(claims.iss, server.issuerOf(server.fixture.a));
  assert.equal(claims.aud, server.fixture.web);
  assert.equal(claims.ws, server.fixture.a);
  assert.equal(claims.role, "anon");
  assert.match(claims.sub, /\S/);
  assert.ok(claims.exp > Date.now() / 1000);
  assert.equal(parts(token)[0].typ, SESSION_TOKEN_TYPE);
  // An issuer with a trailing slash is the same issuer; an audience list may name it.
  await verifySessionToken(token, { ...options(), issuer: `${server.issuerOf(server.fixture.a)}/`, audience: ["x", server.fixture.web] });
});

test("forged tokens are refused: altered claims, altered signature, another key, none, HMAC with the public key", async () => {
  const token = await anonymousToken(server, server.fixture.web);
  const [header, payload, signature] = parts(token);
  const h = token.split(".")[0];

  // Claims changed after signing.
  await refused(`${h}.${b64({ ...payload, role: "owner" })}.${signature}`);
  // A signature byte changed.
  const sig = Buffer.from(signature, "base64url");
  sig[10] ^= 1;
  await refused(`${h}.${token.split(".")[1]}.${sig.toString("base64url")}`);
  // Signed by a key of our own under the server's kid.
  const { privateKey } = generateKeyPairSync("rsa", { modulusLength: 2048 });
  const body = `${h}.${b64({ ...payload, role: "owner" })}`;
  await refused(`${body}.${sign("sha256", Buffer.from(body), privateKey).toString("base64url")}`);
  // alg none.
  await refused(`${b64({ ...header, alg: "none" })}.${b64(payload)}.`);
  // HS256 keyed with the server's public key (algorithm confusion).
  const jwks = await (await fetch(`${server.url}/.well-known/jwks.json`)).json();
  const hsHeader = b64({ ...header, alg: "HS256" });
  const secret = JSON.stringify(jwks.keys[0]);
  const mac = createHmac("sha256", secret).update(`${hsHeader}.${b64(payload)}`).digest("base64url");
  await refused(`${hsHeader}.${b64(payload)}.${mac}`);
  // Not a JWS at all.
  for (const junk of ["", "a.b", "a.b.c.d", "!!!.???.***", `${h}.${b64("not json")}.${signature}`]) await refused(junk);
  // An algorithm name that is a property of every object.
  await refused(`${b64({ ...header, alg: "toString" })}.${b64(payload)}.${signature}`);
  // The same signature spelled differently (non-zero unused bits in its last character) is refused:
  // one token has one spelling.
  const last = signature.at(-1);
  const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  const twin = alphabet[alphabet.indexOf(last) + 1];
  if (Buffer.from(signature.slice(0, -1) + twin, "base64url").equals(Buffer.from(signature, "base64url"))) {
    await refused(`${token.split(".").slice(0, 2).join(".")}.${signature.slice(0, -1)}${twin}`);
  }
});

test("a tolerance that is not a finite number of seconds is refused, not taken as 'anything goes'", async () => {
  const token = await anonymousToken(server, server.fixture.short);
  for (const clockTolerance of [Number.NaN, Infinity, -1]) {
    await assert.rejects(verifySessionToken(token, { ...options(), audience: server.fixture.short, clockTolerance }), (e) => e.status === 0);
  }
  await assert.rejects(verifySessionToken(token, { ...options(), currentTime: Number.NaN }), (e) => e.status === 0);
});

test("an issuer that cannot give its keys is 503 for every token, asked at most once per back-off", async () => {
  let asked = 0;
  const gone = (input, init) => {
    asked++;
    return Promise.resolve(new Response("gone", { status: 410 }));
  };
  const token = await anonymousToken(server, server.fixture.web);
  const issuer = `${server.url}/w/00000000-0000-0000-0000-00000000dead`;
  const outcomes = await Promise.allSettled(
    Array.from({ length: 20 }, () => verifySessionToken(token, { issuer, audience: server.fixture.web, fetch: gone })),
  );
  for (const o of outcomes) {
    assert.equal(o.status, "rejected");
    assert.ok(!(o.reason instanceof TokenExpiredError) && !(o.reason instanceof UnauthorizedError), o.reason);
    assert.equal(o.reason.status, 503);
  }
  assert.equal(asked, 1, "one fetch for 20 verifications");
});

test("a token for another audience or from another issuer is refused", async () => {
  const token = await anonymousToken(server, server.fixture.web);
  await refused(token, { ...options(), audience: "someone-else" });
  // Workspace B's issuer publishes the same instance keys: the signature verifies, the issuer does not.
  await refused(token, { ...options(), issuer: server.issuerOf(server.fixture.b) });
  const other = await anonymousToken(server, server.fixture.other);
  await refused(other, { ...options(), audience: server.fixture.other });
});

test("a console token is not a session token (typ)", async () => {
  const error = await refused(server.fixture.console, { ...options(), audience: [server.fixture.web, "console"] });
  assert.equal(error.status, 401);
});

test("an expired token is TokenExpiredError (410); the tolerance is honoured", async () => {
  const token = await anonymousToken(server, server.fixture.short);
  const exp = parts(token)[1].exp;
  const opts = { ...options(), audience: server.fixture.short };
  await verifySessionToken(token, { ...opts, currentTime: exp - 1, clockTolerance: 0 });
  const error = await refused(token, { ...opts, currentTime: exp, clockTolerance: 0 }, TokenExpiredError);
  assert.equal(error.status, 410);
  await verifySessionToken(token, { ...opts, currentTime: exp + 3, clockTolerance: 5 });
  await refused(token, { ...opts, currentTime: exp + 5, clockTolerance: 5 }, TokenExpiredError);
  await new Promise((r) => setTimeout(r, 2100));
  await refused(token, { ...opts, clockTolerance: 0 }, TokenExpiredError);
});

test("an unknown kid refetches the JWKS at most every 10 seconds; a rotated key is found", async () => {
  const token = await anonymousToken(server, server.fixture.web);
  await verifySessionToken(token, options());
  const [header, payload, signature] = parts(token);
  const before = jwksFetches;
  await Promise.all(
    Array.from({ length: 50 }, (_, i) => refused(`${b64({ ...header, kid: `unknown-${i}` })}.${b64(payload)}.${signature}`)),
  );
  for (let i = 0; i < 5; i++) await refused(`${b64({ ...header, kid: `later-${i}` })}.${b64(payload)}.${signature}`);
  assert.ok(jwksFetches - before <= 1, `${jwksFetches - before} JWKS fetches for 55 unknown kids`);

  await server.cli("keys", "rotate-signing");
  let rotated;
  for (let i = 0; i < 50; i++) {
    rotated = await anonymousToken(server, server.fixture.web);
    if (parts(rotated)[0].kid !== header.kid) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  assert.notEqual(parts(rotated)[0].kid, header.kid, "the server signs with the new key");
  await new Promise((r) => setTimeout(r, 10_500));
  const claims = await verifySessionToken(rotated, options());
  assert.equal(claims.aud, server.fixture.web);
  // The old key still verifies its tokens.
  await verifySessionToken(token, options());
});
