// The Session API's hourly budgets through createClient: a 429 rate-limited answer is a
// RateLimitedError with the server's Retry-After, retried only when the client opts in.

import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import { RateLimitedError, createClient } from "secureflows-js";
import { anonymousToken, startServer } from "./support/server.mjs";

const APP_ORIGIN = "http://127.0.0.1:9";
let server;

before(async () => {
  server = await startServer({
    setup: async (cli) => {
      const ws = (await cli("workspace", "create", "--name", "Budget", "--plan", "pro")).workspace_id;
      const app = await cli("app", "create", "--workspace", ws, "--name", "web", "--kind", "browser",
        "--redirect-uri", `${APP_ORIGIN}/callback`, "--allow-anonymous");
      const owner = await cli("token", "issue", "--workspace", ws, "--email", "owner@budget.example", "--role", "owner");
      return { ws, clientId: app.client_id, owner: owner.token };
    },
  });
  // One request a second: a used-up budget comes back within a second.
  const response = await fetch(`${server.url}/api/v1/applications/${server.fixture.clientId}`, {
    method: "PATCH",
    headers: { authorization: `Bearer ${server.fixture.owner}`, "content-type": "application/json" },
    body: JSON.stringify({ tiers: [{ name: "metered", requests_per_hour: 3600 }], default_tier: "metered" }),
  });
  assert.equal(response.status, 200, await response.text());
});
after(() => server?.stop());

/** A client holding a new anonymous user's token, with its whole budget but `left` charged away. */
async function client(options = {}, left = 0) {
  const sf = createClient({
    issuer: server.issuerOf(server.fixture.ws),
    clientId: server.fixture.clientId,
    redirectUri: `${APP_ORIGIN}/callback`,
    ...options,
  });
  const token = await anonymousToken(server, server.fixture.clientId);
  sf.setSessionToken(token);
  let remaining = 3600;
  while (remaining > left) {
    const cost = Math.min(1000, remaining - left);
    const response = await fetch(`${server.url}/api/v1/limits/consume`, {
      method: "POST",
      headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
      body: JSON.stringify({ cost }),
    });
    assert.equal(response.status, 200);
    remaining = (await response.json()).budgets[0].remaining;
  }
  return sf;
}

test("a used-up budget is a RateLimitedError with retryAfter, thrown at once by default", async () => {
  const sf = await client();
  const started = Date.now();
  const error = await sf.get("notes").then(() => null, (e) => e);
  assert.ok(error instanceof RateLimitedError, error);
  assert.equal(error.status, 429);
  assert.equal(error.slug, "rate-limited");
  assert.equal(error.retryAfter, 1);
  assert.ok(Date.now() - started < 900, "no waiting without opting in");
});

test("opting in, the call waits out Retry-After and succeeds", async () => {
  const sf = await client({ retry: { rateLimited: 2, maxWaitSeconds: 5 } });
  const started = Date.now();
  assert.equal(await sf.get("notes"), undefined);
  assert.ok(Date.now() - started >= 900, "waited for Retry-After");
  await sf.set("notes", { ok: true });
});

test("the budget is the user's own: another user is not limited", async () => {
  await client();
  const other = await client({}, 3599);
  assert.deepEqual(await other.list(), []);
});
