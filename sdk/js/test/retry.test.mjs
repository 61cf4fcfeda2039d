// 429 rate-limited answers are retried only when the caller opts in, after the server's Retry-After.
// The server's per-address sign-in limit (anonymous sessions here) gives real 429 answers.

import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import { RateLimitedError } from "secureflows-js";
import { request } from "../dist/esm/http.js";
import { startServer } from "./support/server.mjs";

const PER_MINUTE = 30;
let server;
before(async () => {
  server = await startServer({
    attemptsPerMinute: PER_MINUTE,
    setup: async (cli) => {
      const ws = (await cli("workspace", "create", "--name", "Limits", "--plan", "pro")).workspace_id;
      const app = await cli("app", "create", "--workspace", ws, "--name", "web", "--kind", "browser",
        "--redirect-uri", "http://127.0.0.1:9/callback", "--allow-anonymous");
      return { clientId: app.client_id };
    },
  });
});
after(() => server?.stop());

const anonymous = (retry) =>
  request(fetch, `${server.url}/api/v1/auth/anonymous`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ client_id: server.fixture.clientId }),
  }, retry);

async function exhaust() {
  for (let i = 0; i < PER_MINUTE * 2; i++) {
    const error = await anonymous().then(() => null, (e) => e);
    if (error) return error;
  }
  throw new Error("never limited");
}

test("without opting in, a 429 is thrown at once with retryAfter", async () => {
  const error = await exhaust();
  assert.ok(error instanceof RateLimitedError, error);
  assert.equal(error.status, 429);
  assert.equal(error.slug, "rate-limited");
  assert.ok(error.retryAfter >= 1 && error.retryAfter <= 2 * 60 / PER_MINUTE, `retryAfter ${error.retryAfter}`);
});

test("a Retry-After longer than the caller will wait is thrown without waiting", async () => {
  await exhaust();
  const started = Date.now();
  const error = await anonymous({ rateLimited: 3, maxWaitSeconds: 0 }).then(() => null, (e) => e);
  assert.ok(error instanceof RateLimitedError, error);
  assert.ok(Date.now() - started < 1000);
});

test("opting in, the call waits out Retry-After and succeeds", async () => {
  await exhaust();
  const started = Date.now();
  const response = await anonymous({ rateLimited: 3 });
  assert.equal(response.status, 200);
  assert.ok(Date.now() - started >= 900, "waited for Retry-After");
});
