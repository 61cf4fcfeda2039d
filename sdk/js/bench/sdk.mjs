// The cost of secureflows-js: Session API calls through the SDK beside the same calls made with bare
// fetch, and beside a bare HTTP endpoint of the same server (GET /healthz), all measured in one run
// against the real server; and verifySessionToken beside a bare WebCrypto signature check.
//
//   node sdk/js/bench/sdk.mjs [--duration 10] [--concurrency 16]
//
// The server binary comes from SECUREFLOWS_BIN (scripts/bench --sdk passes the release build).

import { parseArgs } from "node:util";

import { createClient, verifySessionToken } from "secureflows-js";
import { anonymousToken, startServer } from "../test/support/server.mjs";

const { values } = parseArgs({
  options: { duration: { type: "string", default: "10" }, concurrency: { type: "string", default: "16" } },
});
const seconds = Number(values.duration);
const concurrency = Number(values.concurrency);

/** Runs `op` from `concurrency` workers for the duration; answers throughput and latency percentiles. */
async function measure(name, op, workers = concurrency) {
  const latencies = [];
  let errors = 0;
  const warmUntil = performance.now() + 1000;
  while (performance.now() < warmUntil) await op();
  const end = performance.now() + seconds * 1000;
  await Promise.all(
    Array.from({ length: workers }, async () => {
      while (performance.now() < end) {
        const started = performance.now();
        try {
          await op();
        } catch {
          errors++;
        }
        latencies.push(performance.now() - started);
      }
    }),
  );
  latencies.sort((a, b) => a - b);
  const at = (q) => latencies[Math.min(latencies.length - 1, Math.floor(q * latencies.length))];
  const row = {
    name,
    "ops/s": Math.round(latencies.length / seconds),
    "p50 ms": at(0.5).toFixed(3),
    "p99 ms": at(0.99).toFixed(3),
    "p99.9 ms": at(0.999).toFixed(3),
    errors,
  };
  console.log(JSON.stringify(row));
  return row;
}

const server = await startServer({
  setup: async (cli) => {
    const ws = (await cli("workspace", "create", "--name", "Bench", "--plan", "pro")).workspace_id;
    const app = await cli("app", "create", "--workspace", ws, "--name", "bench", "--kind", "browser",
      "--redirect-uri", "http://127.0.0.1:9/callback", "--allow-anonymous", "--token-ttl", "1h");
    return { ws, clientId: app.client_id };
  },
});
try {
  const issuer = server.issuerOf(server.fixture.ws);
  const token = await anonymousToken(server, server.fixture.clientId);
  const sf = createClient({ issuer, clientId: server.fixture.clientId, redirectUri: "http://127.0.0.1:9/callback" });
  sf.setSessionToken(token);
  const value = { text: "x".repeat(1000) };
  await sf.set("bench", value);
  const auth = { authorization: `Bearer ${token}` };
  const api = `${server.url}/api/v1`;

  console.log(`secureflows-js benchmark: ${seconds} s per row, ${concurrency} concurrent callers, Node ${process.version}`);
  const rows = [];
  rows.push(await measure("baseline: GET /healthz (bare fetch)", async () => {
    const r = await fetch(`${server.url}/healthz`);
    await r.arrayBuffer();
  }));
  rows.push(await measure("GET value, bare fetch", async () => {
    const r = await fetch(`${api}/sessions/get/bench`, { headers: auth });
    if (!r.ok) throw new Error(String(r.status));
    await r.json();
  }));
  rows.push(await measure("GET value, sf.get", () => sf.get("bench")));
  rows.push(await measure("SET value, bare fetch", async () => {
    const r = await fetch(`${api}/sessions/set/bench`, {
      method: "POST",
      headers: { ...auth, "content-type": "application/json" },
      body: JSON.stringify(value),
    });
    if (!r.ok) throw new Error(String(r.status));
    await r.json();
  }));
  rows.push(await measure("SET value, sf.set", () => sf.set("bench", value)));

  // Verification: the SDK (parse, cached key, claims) beside WebCrypto alone on the same signature.
  const [h, p, s] = token.split(".");
  const jwks = await (await fetch(`${server.url}/.well-known/jwks.json`)).json();
  const kid = JSON.parse(Buffer.from(h, "base64url")).kid;
  const jwk = jwks.keys.find((k) => k.kid === kid);
  const alg = jwk.kty === "OKP" ? { name: "Ed25519" } : { name: "RSASSA-PKCS1-v1_5", hash: "SHA-256" };
  const key = await crypto.subtle.importKey("jwk", { kty: jwk.kty, n: jwk.n, e: jwk.e, crv: jwk.crv, x: jwk.x }, alg, false, ["verify"]);
  const signed = new TextEncoder().encode(`${h}.${p}`);
  const signature = Buffer.from(s, "base64url");
  rows.push(await measure("baseline: crypto.subtle.verify", async () => {
    if (!(await crypto.subtle.verify(alg, key, signature, signed))) throw new Error("bad");
  }, 1));
  rows.push(await measure("verifySessionToken", () => verifySessionToken(token, { issuer, audience: server.fixture.clientId }), 1));
  console.table(rows);
} finally {
  await server.stop();
}
