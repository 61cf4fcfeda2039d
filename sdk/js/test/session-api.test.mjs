// The Session API through secureflows-js, against a real server: values round-trip with their content
// types, and every contract status arrives as its own error class.

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";

import {
  createClient,
  ForbiddenError,
  NetworkError,
  NotAuthenticatedError,
  SecureFlowsError,
  TokenExpiredError,
  TooManySessionsError,
  UnauthorizedError,
  ValidationError,
  ValueTooLargeError,
} from "secureflows-js";
import { request } from "../dist/esm/http.js";
import { anonymousToken, startServer } from "./support/server.mjs";

const APP_ORIGIN = "http://127.0.0.1:9";
const app = (workspace, name, ...flags) => [
  "app", "create", "--workspace", workspace, "--name", name, "--kind", "browser",
  "--redirect-uri", `${APP_ORIGIN}/callback`, "--allow-origin", APP_ORIGIN, "--allow-anonymous", ...flags,
];

let server;
before(async () => {
  server = await startServer({
    setup: async (cli) => {
      const pro = await cli("workspace", "create", "--name", "SDK Pro", "--plan", "pro");
      const free = await cli("workspace", "create", "--name", "SDK Free", "--plan", "free");
      return {
        pro: pro.workspace_id,
        free: free.workspace_id,
        web: (await cli(...app(pro.workspace_id, "web", "--token-ttl", "1h"))).client_id,
        short: (await cli(...app(pro.workspace_id, "short", "--token-ttl", "2s"))).client_id,
        small: (await cli(...app(free.workspace_id, "small", "--token-ttl", "1h"))).client_id,
        console: (await cli("token", "issue", "--workspace", pro.workspace_id, "--email", "owner@example.com", "--role", "owner")).token,
      };
    },
  });
});
after(() => server?.stop());

/** A client of `clientId` holding a new anonymous user's token. */
async function signedIn(clientId, options = {}) {
  const f = server.fixture;
  const client = createClient({
    issuer: server.issuerOf(f.pro),
    clientId,
    redirectUri: `${APP_ORIGIN}/callback`,
    ...options,
  });
  client.setSessionToken(await anonymousToken(server, clientId));
  return client;
}

/** A client of the pro workspace's web application, with no token yet. */
function webClient() {
  return createClient({ issuer: server.issuerOf(server.fixture.pro), clientId: server.fixture.web, redirectUri: `${APP_ORIGIN}/callback` });
}

function freeClient(token) {
  const client = createClient({
    issuer: server.issuerOf(server.fixture.free),
    clientId: server.fixture.small,
    redirectUri: `${APP_ORIGIN}/callback`,
  });
  client.setSessionToken(token);
  return client;
}

describe("values", () => {
  test("JSON, text and bytes round-trip with their content types", async () => {
    const sf = await signedIn(server.fixture.web);
    const first = await sf.set("profile.theme", { theme: "dark", n: [1, 2, 3] });
    assert.equal(first.created, true);
    assert.equal(first.key, "profile.theme");
    assert.equal(typeof first.expiresAt, "string");
    assert.deepEqual(await sf.get("profile.theme"), { theme: "dark", n: [1, 2, 3] });
    const replaced = await sf.set("profile.theme", { theme: "light" });
    assert.equal(replaced.created, false);

    await sf.set("note", "héllo, wörld ✓");
    assert.equal(await sf.get("note"), "héllo, wörld ✓");

    const bytes = new Uint8Array([0, 1, 2, 253, 254, 255]);
    await sf.set("blob", bytes);
    const back = await sf.get("blob");
    assert.ok(back instanceof Uint8Array);
    assert.deepEqual([...back], [...bytes]);

    await sf.set("picture", bytes, { contentType: "image/png" });
    assert.deepEqual([...(await sf.get("picture"))], [...bytes]);
    await sf.set("quoted", "just a string", { contentType: "application/json" });
    assert.equal(await sf.get("quoted"), "just a string");
    await sf.set("flag", false);
    assert.equal(await sf.get("flag"), false);
    await sf.set("nothing", null);
    assert.equal(await sf.get("nothing"), null);

    const keys = await sf.list();
    assert.deepEqual(
      keys.map((k) => k.key),
      ["blob", "flag", "note", "nothing", "picture", "profile.theme", "quoted"],
    );
    assert.ok(keys.every((k) => typeof k.size === "number" && k.createdAt && k.updatedAt && k.expiresAt));
  });

  test("a missing value is undefined; deleting answers whether there was one", async () => {
    const sf = await signedIn(server.fixture.web);
    assert.equal(await sf.get("absent"), undefined);
    await sf.set("k", 1);
    assert.equal(await sf.delete("k"), true);
    assert.equal(await sf.delete("k"), false);
    assert.equal(await sf.get("k"), undefined);
    assert.deepEqual(await sf.list(), []);
  });

  test("keys the server would refuse are refused before anything is sent", async () => {
    let sent = 0;
    const counting = (input, init) => {
      if (String(input).includes("/sessions")) sent++;
      return fetch(input, init);
    };
    const sf = await signedIn(server.fixture.web, { fetch: counting });
    for (const key of ["", "..", ".", "../sessions", "a/b", "a b", "é", "-x", "a..b", "x".repeat(129), "%2F"]) {
      await assert.rejects(sf.get(key), ValidationError, `get(${JSON.stringify(key)})`);
      await assert.rejects(sf.set(key, 1), ValidationError);
      await assert.rejects(sf.delete(key), ValidationError);
    }
    assert.equal(sent, 0);
    await assert.rejects(sf.set("fn", () => 1), TypeError);
    await assert.rejects(sf.set("undef", undefined), TypeError);
  });

  test("another user sees none of the values", async () => {
    const alice = await signedIn(server.fixture.web);
    const bob = await signedIn(server.fixture.web);
    await alice.set("secret", "alice's");
    assert.equal(await bob.get("secret"), undefined);
    assert.deepEqual(await bob.list(), []);
  });
});

describe("errors", () => {
  test("a value over the plan's size is ValueTooLargeError (413)", async () => {
    const sf = freeClient(await anonymousToken(server, server.fixture.small));
    const error = await sf.set("big", new Uint8Array(1025)).then(() => null, (e) => e);
    assert.ok(error instanceof ValueTooLargeError, error);
    assert.equal(error.status, 413);
    assert.equal(error.type, "urn:secureflows:problem:value-too-large");
    assert.equal(typeof error.title, "string");
    assert.match(error.requestId, /\S/);
  });

  test("a new key over the plan's quota is ForbiddenError quota-exceeded; overwriting still works", async () => {
    const sf = freeClient(await anonymousToken(server, server.fixture.small));
    for (const k of ["a", "b", "c"]) await sf.set(k, k);
    const error = await sf.set("d", "d").then(() => null, (e) => e);
    assert.ok(error instanceof ForbiddenError, error);
    assert.equal(error.slug, "quota-exceeded");
    assert.equal((await sf.set("a", "again")).created, false);
  });

  test("too many concurrent sessions is TooManySessionsError with retryAfter", async () => {
    // The free plan allows 3 sessions per workspace here: sign-ins beyond that are refused.
    let error = null;
    for (let i = 0; i < 4 && !error; i++) {
      error = await request(fetch, `${server.url}/api/v1/auth/anonymous`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ client_id: server.fixture.small }),
      }).then(() => null, (e) => e);
    }
    assert.ok(error instanceof TooManySessionsError, error);
    assert.equal(error.status, 429);
    assert.equal(error.slug, "too-many-sessions");
    assert.ok(error.retryAfter >= 1, `retryAfter ${error.retryAfter}`);
  });

  test("a forged token is UnauthorizedError invalid-token, and forgotten", async () => {
    const sf = await signedIn(server.fixture.web);
    const real = await anonymousToken(server, server.fixture.web);
    const [h, p, s] = real.split(".");
    sf.setSessionToken(`${h}.${p}.${s.slice(0, -4)}AAAA`);
    const error = await sf.list().then(() => null, (e) => e);
    assert.ok(error instanceof UnauthorizedError, error);
    assert.equal(error.revoked, false);
    assert.equal(error.slug, "invalid-token");
    assert.equal(await sf.isAuthenticated(), false);
    await assert.rejects(sf.list(), NotAuthenticatedError);
  });

  test("after revokeAll every token of the user is UnauthorizedError session-revoked", async () => {
    const token = await anonymousToken(server, server.fixture.web);
    const mine = webClient();
    mine.setSessionToken(token);
    const other = webClient();
    other.setSessionToken(token);
    await mine.set("kept", "the data stays");
    await mine.revokeAll();
    assert.equal(await mine.isAuthenticated(), false);
    const error = await other.get("kept").then(() => null, (e) => e);
    assert.ok(error instanceof UnauthorizedError, error);
    assert.equal(error.revoked, true);
    assert.equal(error.status, 401);
  });

  test("a console token is ForbiddenError wrong-token-kind", async () => {
    const sf = await signedIn(server.fixture.web);
    sf.setSessionToken(server.fixture.console);
    const error = await sf.list().then(() => null, (e) => e);
    assert.ok(error instanceof ForbiddenError, error);
    assert.equal(error.slug, "wrong-token-kind");
  });

  test("a call from an origin the application does not allow is ForbiddenError origin-not-allowed", async () => {
    const elsewhere = (input, init) => fetch(input, { ...init, headers: { ...init.headers, origin: "https://evil.example" } });
    const sf = await signedIn(server.fixture.web, { fetch: elsewhere });
    const error = await sf.list().then(() => null, (e) => e);
    assert.ok(error instanceof ForbiddenError, error);
    assert.equal(error.slug, "origin-not-allowed");
  });

  test("a call without a token is NotAuthenticatedError; an unreachable server is NetworkError", async () => {
    const sf = webClient();
    assert.equal(await sf.isAuthenticated(), false);
    const error = await sf.get("x").then(() => null, (e) => e);
    assert.ok(error instanceof NotAuthenticatedError && error instanceof SecureFlowsError, error);
    const nowhere = createClient({ issuer: "http://127.0.0.1:1/w/none", clientId: "x", redirectUri: `${APP_ORIGIN}/callback` });
    nowhere.setSessionToken("t");
    await assert.rejects(nowhere.list(), NetworkError);
  });

  test("an issuer that is not a workspace is refused", async () => {
    const sf = createClient({ issuer: `${server.url}/w/00000000-0000-0000-0000-000000000000`, clientId: "x", redirectUri: `${APP_ORIGIN}/callback` });
    sf.setSessionToken("t");
    await assert.rejects(sf.list(), SecureFlowsError);
    assert.throws(() => createClient({ issuer: "not a url", clientId: "x", redirectUri: `${APP_ORIGIN}/callback` }), SecureFlowsError);
    assert.throws(() => createClient({ issuer: server.url, clientId: "", redirectUri: `${APP_ORIGIN}/callback` }), SecureFlowsError);
  });
});

describe("expiry", () => {
  test("410 without onExpired and without a browser is TokenExpiredError; the data is intact", async () => {
    const sf = await signedIn(server.fixture.short);
    await sf.set("kept", { v: 1 });
    await new Promise((r) => setTimeout(r, 2500));
    const error = await sf.get("kept").then(() => null, (e) => e);
    assert.ok(error instanceof TokenExpiredError, error);
    assert.equal(error.status, 410);
    assert.equal(error.slug, "token-expired");
    assert.equal(await sf.isAuthenticated(), false);
  });

  test("many calls failing together call onExpired once, and are made again with the new token", async () => {
    let expired = 0;
    let sf;
    sf = await signedIn(server.fixture.short, {
      onExpired: async (error) => {
        assert.ok(error instanceof TokenExpiredError);
        expired++;
        await new Promise((r) => setTimeout(r, 100));
        sf.setSessionToken(await anonymousToken(server, server.fixture.short));
      },
    });
    await new Promise((r) => setTimeout(r, 2500));
    const results = await Promise.all(Array.from({ length: 20 }, (_, i) => sf.set(`k${i}`, i)));
    assert.equal(expired, 1);
    assert.equal(results.length, 20);
    assert.equal((await sf.list()).length, 20);
  });

  test("onExpired that gives no new token leaves the calls failing with TokenExpiredError", async () => {
    let expired = 0;
    const sf = await signedIn(server.fixture.short, { onExpired: () => void expired++ });
    await new Promise((r) => setTimeout(r, 2500));
    const outcomes = await Promise.allSettled([sf.list(), sf.list(), sf.get("x")]);
    assert.ok(outcomes.every((o) => o.status === "rejected" && o.reason instanceof TokenExpiredError));
    assert.equal(expired, 1);
  });
});

describe("logout", () => {
  test("without a browser, logout ends this login session (POST /auth/logout)", async () => {
    const token = await anonymousToken(server, server.fixture.web);
    const sf = webClient();
    sf.setSessionToken(token);
    await sf.set("stays", 1);
    await sf.logout();
    assert.equal(await sf.isAuthenticated(), false);
    const again = webClient();
    again.setSessionToken(token);
    const error = await again.list().then(() => null, (e) => e);
    assert.ok(error instanceof UnauthorizedError && error.revoked, error);
  });
});
