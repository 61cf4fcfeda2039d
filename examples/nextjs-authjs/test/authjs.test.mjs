// Auth.js (@auth/core) with a secureFlows workspace as its OpenID Connect provider, over real HTTP:
// the Next.js site built and started (`next build`, `next start`) on a loopback port, the real
// secureFlows binary as the provider, and the hosted login driven as a browser would.
//
// Auth.js 0.41 talks plain HTTP to the issuer (it passes oauth4webapi's allowInsecureRequests); in
// production the issuer is https.

import assert from "node:assert/strict";
import { execFileSync, spawn } from "node:child_process";
import { join } from "node:path";
import { after, before, test } from "node:test";

import { Browser, freePort, startServer } from "../../../sdk/js/test/support/server.mjs";

let provider;
let site;
let env;

const here = new URL("..", import.meta.url).pathname;
const next = join(here, "node_modules", "next", "dist", "bin", "next");

/** Builds the Next.js site and starts it (`next start`) on a loopback port with `env`. */
async function startSite(port, env) {
  execFileSync(process.execPath, [next, "build"], { cwd: here, env: { ...process.env, NEXT_TELEMETRY_DISABLED: "1" }, stdio: "ignore" });
  const child = spawn(process.execPath, [next, "start", "-p", String(port), "-H", "127.0.0.1"], {
    cwd: here,
    env: { ...process.env, ...env, NEXT_TELEMETRY_DISABLED: "1" },
    stdio: ["ignore", "ignore", "pipe"],
  });
  let stderr = "";
  child.stderr.on("data", (c) => {
    stderr += c;
  });
  const origin = `http://127.0.0.1:${port}`;
  for (let i = 0; ; i++) {
    try {
      if ((await fetch(`${origin}/api/auth/providers`)).ok) break;
    } catch {
      // starting
    }
    if (i > 600 || child.exitCode !== null) throw new Error(`next start failed: ${stderr}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  return {
    origin,
    stop: () => new Promise((resolve) => {
      child.once("exit", resolve);
      child.kill("SIGTERM");
    }),
  };
}

before(async () => {
  const port = await freePort();
  const origin = `http://127.0.0.1:${port}`;
  provider = await startServer({
    setup: async (cli) => {
      const ws = (await cli("workspace", "create", "--name", "Site", "--plan", "pro")).workspace_id;
      const app = await cli("app", "create", "--workspace", ws, "--name", "site", "--kind", "server",
        "--redirect-uri", `${origin}/api/auth/callback/secureflows`, "--post-logout-uri", `${origin}/`);
      return { ws, clientId: app.client_id, clientSecret: app.client_secret };
    },
  });
  env = {
    AUTH_SECRET: "a-test-secret-of-at-least-thirty-two-characters",
    AUTH_URL: origin,
    SECUREFLOWS_ISSUER: provider.issuerOf(provider.fixture.ws),
    SECUREFLOWS_CLIENT_ID: provider.fixture.clientId,
    SECUREFLOWS_CLIENT_SECRET: provider.fixture.clientSecret,
  };
  site = await startSite(port, env);
});

after(async () => {
  await site?.stop();
  await provider?.stop();
});

test("signing in to the site through the workspace's hosted login gives an Auth.js session", async () => {
  const browser = new Browser();
  const { csrfToken } = await (await browser.fetch(`${site.origin}/api/auth/csrf`)).json();
  let r = await browser.fetch(`${site.origin}/api/auth/signin/secureflows`, {
    method: "POST",
    headers: { "content-type": "application/x-www-form-urlencoded" },
    body: new URLSearchParams({ csrfToken, callbackUrl: `${site.origin}/` }),
  });
  assert.equal(r.status, 302, await r.text());
  const authorize = new URL(r.headers.get("location"));
  assert.equal(`${authorize.origin}${authorize.pathname}`, `${env.SECUREFLOWS_ISSUER}/authorize`);
  assert.equal(authorize.searchParams.get("code_challenge_method"), "S256");
  assert.ok(authorize.searchParams.get("nonce"), "Auth.js sends a nonce");

  const callback = await browser.signUp(authorize.href, "ada@example.com", "Kettle-Orbit-9-Lantern-Swim");
  assert.ok(callback.startsWith(`${site.origin}/api/auth/callback/secureflows?`), callback);
  r = await browser.fetch(callback);
  assert.equal(r.status, 302, await r.text());
  assert.equal(r.headers.get("location"), `${site.origin}/`, "no error: the ID token was accepted");

  const session = await (await browser.fetch(`${site.origin}/api/auth/session`)).json();
  assert.equal(session.user.email, "ada@example.com");
  assert.match(session.user.id, /\S/);
  const home = await (await browser.fetch(`${site.origin}/`)).text();
  assert.match(home, /Signed in as <!-- -->ada@example.com|Signed in as ada@example.com/);

  // Signing out of the site ends its session.
  const { csrfToken: again } = await (await browser.fetch(`${site.origin}/api/auth/csrf`)).json();
  r = await browser.fetch(`${site.origin}/api/auth/signout`, {
    method: "POST",
    headers: { "content-type": "application/x-www-form-urlencoded" },
    body: new URLSearchParams({ csrfToken: again }),
  });
  assert.equal(r.status, 302);
  const after = await (await browser.fetch(`${site.origin}/api/auth/session`)).json();
  assert.equal(after, null);
});

test("a callback that did not start at this site is refused", async () => {
  const browser = new Browser();
  const r = await browser.fetch(`${site.origin}/api/auth/callback/secureflows?code=forged&state=forged&iss=${encodeURIComponent(env.SECUREFLOWS_ISSUER)}`);
  assert.equal(r.status, 302);
  assert.match(r.headers.get("location"), /error=/);
  const session = await (await browser.fetch(`${site.origin}/api/auth/session`)).json();
  assert.equal(session, null);
});

test("the configuration refuses a plain-HTTP issuer off loopback, and a site without AUTH_URL", async () => {
  const { authConfig, secureFlows } = await import("../auth.js");
  assert.throws(() => secureFlows({ issuer: "http://id.example.com/w/x", clientId: "c", clientSecret: "s" }), /https/);
  assert.doesNotThrow(() => secureFlows({ issuer: "https://id.example.com/w/x", clientId: "c", clientSecret: "s" }));
  assert.throws(() => authConfig({ ...env, AUTH_URL: undefined }), /AUTH_URL/);
});
