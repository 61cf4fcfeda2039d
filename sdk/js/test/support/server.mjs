// A real secureFlows server for the SDK's tests: the binary built by cargo, started on a fresh data
// directory and a free port, with workspaces and applications made by its own command line.
//
// The binary: SECUREFLOWS_BIN, else $CARGO_TARGET_DIR (or ~/.cache/secureflows-target)/debug/secureflows.
// PostgreSQL instead of SQLite: SECUREFLOWS_SDK_TEST_PG_URL (an admin URL; a database per server).

import { execFile, spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { createServer } from "node:net";
import { homedir, tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";

const run = promisify(execFile);

export function binary() {
  if (process.env.SECUREFLOWS_BIN) return process.env.SECUREFLOWS_BIN;
  const target = process.env.CARGO_TARGET_DIR ?? join(homedir(), ".cache", "secureflows-target");
  return join(target, "debug", "secureflows");
}

/** A free TCP port on the loopback interface. */
export function freePort() {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

/** TOML every test server shares: expiry is exact (no leeway), tokens may live one second, and the
 * tests' many anonymous sign-ins from one address are not throttled (unless a test asks). */
const baseConfig = (attemptsPerMinute) => `
[tokens]
leeway_secs = 0
min_ttl_secs = 1

[login]
attempts_per_minute = ${attemptsPerMinute}

[plans.free]
max_value_bytes = 1024
max_sessions_per_workspace = 3
max_sessions_per_user = 3
max_keys_per_user = 3
`;

/**
 * Starts a server. `config` is TOML appended to the shared configuration; `setup(cli)` runs before the
 * server starts and may create workspaces and applications; what it returns is `server.fixture`.
 */
export async function startServer({ config = "", setup = async () => ({}), attemptsPerMinute = 100000 } = {}) {
  const bin = binary();
  if (!existsSync(bin)) {
    throw new Error(`no secureflows binary at ${bin}: build it with \`cargo build -p secureflows\` or set SECUREFLOWS_BIN`);
  }
  const dir = await mkdtemp(join(tmpdir(), "secureflows-sdk-"));
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const configFile = join(dir, "config.toml");
  await writeFile(configFile, baseConfig(attemptsPerMinute) + config);
  const env = {
    ...process.env,
    SECUREFLOWS_CONFIG: configFile,
    SECUREFLOWS_DATA_DIR: join(dir, "data"),
    RUST_LOG: process.env.RUST_LOG ?? "warn",
  };
  delete env.SECUREFLOWS_DATABASE_URL;
  let database;
  const admin = process.env.SECUREFLOWS_SDK_TEST_PG_URL;
  if (admin) {
    database = `sf_sdk_${port}_${process.pid}`;
    await run("psql", [admin, "-q", "-c", `CREATE DATABASE ${database}`]);
    const u = new URL(admin);
    u.pathname = `/${database}`;
    env.SECUREFLOWS_DATABASE_URL = u.href;
  }
  const globalArgs = ["--listen", `127.0.0.1:${port}`];
  const cli = async (...args) => {
    const { stdout } = await run(bin, [...globalArgs, "--json", ...args], { env });
    return JSON.parse(stdout);
  };
  await run(bin, [...globalArgs, "migrate"], { env });
  const fixture = await setup(cli, url);

  const child = spawn(bin, [...globalArgs, "serve"], { env, stdio: ["ignore", "ignore", "pipe"] });
  let stderr = "";
  child.stderr.on("data", (chunk) => {
    stderr = (stderr + chunk).slice(-20000);
  });
  const exited = new Promise((resolve) => child.once("exit", resolve));
  const deadline = Date.now() + 30000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`the server exited: ${stderr}`);
    try {
      if ((await fetch(`${url}/healthz`)).ok) break;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) throw new Error(`the server did not start: ${stderr}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  return {
    url,
    fixture,
    cli,
    issuerOf: (workspace) => `${url}/w/${workspace}`,
    async stop() {
      child.kill("SIGTERM");
      await exited;
      if (database) await run("psql", [admin, "-q", "-c", `DROP DATABASE IF EXISTS ${database} WITH (FORCE)`]);
      await rm(dir, { recursive: true, force: true });
    },
  };
}

/** An anonymous session of an application that allows them (a real token, without a browser). */
export async function anonymousToken(server, clientId) {
  const response = await fetch(`${server.url}/api/v1/auth/anonymous`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ client_id: clientId }),
  });
  if (!response.ok) throw new Error(`anonymous sign-in: ${response.status} ${await response.text()}`);
  return (await response.json()).sessionToken;
}

/** A minimal cookie jar for driving the hosted login over HTTP as a browser would. */
export class Browser {
  cookies = new Map();

  async fetch(url, init = {}) {
    const headers = new Headers(init.headers);
    if (this.cookies.size) headers.set("cookie", [...this.cookies].map(([k, v]) => `${k}=${v}`).join("; "));
    const response = await fetch(url, { ...init, headers, redirect: "manual" });
    for (const line of response.headers.getSetCookie()) {
      const [pair] = line.split(";");
      const eq = pair.indexOf("=");
      const name = pair.slice(0, eq).trim();
      const value = pair.slice(eq + 1).trim();
      if (value === "" || /max-age=0/i.test(line)) this.cookies.delete(name);
      else this.cookies.set(name, value);
    }
    return response;
  }

  /** Follows the hosted login from an authorization URL through sign-up; answers the redirect back. */
  async signUp(authorizeUrl, email, password) {
    let r = await this.fetch(authorizeUrl);
    if (r.status !== 303) throw new Error(`authorize: ${r.status} ${await r.text()}`);
    const login = new URL(r.headers.get("location"), authorizeUrl);
    const signup = new URL(login.href.replace("/login?", "/signup?"));
    const page = await (await this.fetch(signup.href)).text();
    const csrf = page.match(/name="csrf" value="([^"]+)"/)?.[1];
    const flow = page.match(/name="flow" value="([^"]+)"/)?.[1];
    if (!csrf || !flow) throw new Error("the sign-up page has no form");
    r = await this.fetch(`${signup.origin}${signup.pathname}`, {
      method: "POST",
      headers: { "content-type": "application/x-www-form-urlencoded", origin: signup.origin },
      body: new URLSearchParams({ csrf, flow, email, password }),
    });
    if (r.status !== 303) throw new Error(`sign-up: ${r.status} ${await r.text()}`);
    return r.headers.get("location");
  }
}
