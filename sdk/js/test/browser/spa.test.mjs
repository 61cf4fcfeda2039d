// The example application (examples/js-spa) in Debian's Chromium against a real server: sign up
// through the hosted login, store a value, let the token expire, sign in again without a word from the
// user and find the value, two tabs expiring together sign in once, and sign out by redirect.
//
// Chromium: SECUREFLOWS_TEST_CHROMIUM, else /usr/bin/chromium. Missing, the test is skipped loudly
// (SECUREFLOWS_REQUIRE_EXTERNAL=1 makes that a failure).

import assert from "node:assert/strict";
import { existsSync, mkdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";

import puppeteer from "puppeteer-core";

import { serve } from "../../../../examples/js-spa/serve.mjs";
import { freePort, startServer } from "../support/server.mjs";

const chromium = process.env.SECUREFLOWS_TEST_CHROMIUM ?? "/usr/bin/chromium";
const available = existsSync(chromium);
if (!available) {
  const message = `Chromium not found at ${chromium}: the browser test of secureflows-js is SKIPPED`;
  if (process.env.SECUREFLOWS_REQUIRE_EXTERNAL === "1") throw new Error(message);
  console.error(message);
}

const TOKEN_TTL_SECS = 8;
const EMAIL = "nora@example.com";
const PASSWORD = "Kettle-Orbit-9-Lantern-Swim";

let server;
let spa;
let browser;
let authorizations = 0;

before(async () => {
  if (!available) return;
  const port = await freePort();
  const origin = `http://127.0.0.1:${port}`;
  server = await startServer({
    setup: async (cli) => {
      const ws = (await cli("workspace", "create", "--name", "Notes", "--plan", "pro")).workspace_id;
      const app = await cli("app", "create", "--workspace", ws, "--name", "Notes", "--kind", "browser",
        "--redirect-uri", `${origin}/callback`, "--post-logout-uri", `${origin}/`, "--allow-origin", origin,
        "--token-ttl", `${TOKEN_TTL_SECS}s`);
      return { ws, clientId: app.client_id };
    },
  });
  spa = await serve({ issuer: server.issuerOf(server.fixture.ws), clientId: server.fixture.clientId, port });
  browser = await puppeteer.launch({
    executablePath: chromium,
    headless: true,
    args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-dev-shm-usage"],
  });
});

after(async () => {
  await browser?.close();
  await spa?.close();
  await server?.stop();
});

/** A new tab that counts the hosted login's authorization requests. */
async function tab() {
  const page = await browser.newPage();
  await page.setViewport({ width: 1280, height: 800 });
  page.on("request", (r) => {
    if (r.isNavigationRequest() && new URL(r.url()).pathname.endsWith("/authorize")) authorizations++;
  });
  return page;
}

/** Waits until `fn` (run in the page) is true, across the page's navigations. */
async function eventually(page, fn, what, arg = null, ms = 20000) {
  if (process.env.SECUREFLOWS_SDK_TEST_TRACE) console.error(`waiting for ${what}`);
  const deadline = Date.now() + ms;
  let last;
  while (Date.now() < deadline) {
    try {
      if (await page.evaluate(fn, arg)) return;
    } catch (e) {
      last = e; // the page is navigating
    }
    await sleep(50);
  }
  const text = await page.evaluate(() => document.body?.innerText ?? "").catch(() => "");
  throw new Error(`timed out waiting for ${what} at ${page.url()}: ${text.slice(0, 500)} ${last ?? ""}`);
}

/** Presses a button of the page, also in a tab in the background (where puppeteer's click waits for
 * an animation frame that never comes). */
async function press(page, id) {
  await eventually(page, (id) => document.getElementById(id) !== null && !document.getElementById(id).closest("[hidden]"), `#${id}`, id);
  await page.evaluate((id) => document.getElementById(id).click(), id);
}

const state = (page) =>
  page.evaluate(() => ({
    status: document.getElementById("status")?.textContent,
    saved: document.getElementById("saved")?.textContent,
    error: document.getElementById("error")?.textContent,
    path: location.pathname + location.search,
  }));

async function screenshots(page, name) {
  const out = process.env.SECUREFLOWS_TEST_OUTPUT;
  if (!out) return;
  const dir = join(out, "screenshots", "js-spa");
  mkdirSync(dir, { recursive: true });
  await page.screenshot({ path: join(dir, `${name}-desktop.png`), fullPage: true });
  // Width only: changing isMobile makes puppeteer reload the page, which forgets the in-memory token.
  await page.setViewport({ width: 390, height: 844 });
  await page.screenshot({ path: join(dir, `${name}-phone.png`), fullPage: true });
  await page.setViewport({ width: 1280, height: 800 });
}

async function accessibility(page) {
  const axe = process.env.SECUREFLOWS_TEST_AXE;
  if (!axe) return;
  await page.evaluate(readFileSync(axe, "utf8"));
  const violations = await page.evaluate(async () => {
    const result = await globalThis.axe.run(document, { resultTypes: ["violations"] });
    return result.violations.filter((v) => v.impact === "serious" || v.impact === "critical").map((v) => v.id);
  });
  assert.deepEqual(violations, [], "no serious accessibility violation");
}

/** In the page: signed in, showing `expected` as the stored note. */
const settled = (expected) =>
  document.getElementById("status")?.textContent === "Signed in." &&
  document.getElementById("saved")?.textContent === expected;

test("sign in, store, expire, sign in again seamlessly, two tabs renew once, sign out", { skip: !available, timeout: 180000 }, async () => {
  const a = await tab();
  await a.goto(`${spa.origin}/`);
  await eventually(a, () => document.getElementById("status")?.textContent === "Not signed in.", "the signed-out page");
  await screenshots(a, "signed-out");
  await accessibility(a);

  // Sign up on the hosted login and come back signed in.
  await Promise.all([a.waitForNavigation(), a.click("#sign-in")]);
  assert.match(a.url(), /\/w\/[^/]+\/login\?/);
  await Promise.all([a.waitForNavigation(), a.click("#to-signup")]);
  await a.type("#email", EMAIL);
  await a.type("#password", PASSWORD);
  await a.click("#sign-up");
  await eventually(a, settled, "signed in", "(nothing yet)");
  const signedInAt = Date.now();
  assert.equal((await state(a)).path, "/", "back where the sign-in started, without code or state");
  assert.equal(authorizations, 1);

  await a.type("#note", "buy more lumber");
  await press(a, "save");
  await eventually(a, settled, "the saved note", "buy more lumber");
  await screenshots(a, "signed-in");
  await accessibility(a);

  // Nothing of the session is stored: no cookie on the application's origin, nothing in storage.
  const stored = await a.evaluate(() => ({
    cookies: document.cookie,
    local: localStorage.length,
    session: Object.keys(sessionStorage),
  }));
  assert.deepEqual(stored, { cookies: "", local: 0, session: [] });

  // The token expires; the next call gets 410, and the SDK signs in again through single sign-on and
  // comes back: the data is intact.
  await sleep(Math.max(0, signedInAt + TOKEN_TTL_SECS * 1000 + 500 - Date.now()));
  const before = authorizations;
  await a.evaluate(() => {
    document.getElementById("saved").textContent = "(reloading)";
  });
  await press(a, "load");
  await eventually(a, settled, "the note after signing in again", "buy more lumber");
  assert.equal(authorizations, before + 1, "one sign-in again");
  assert.equal((await state(a)).path, "/");
  const renewedAt = Date.now();

  // A second tab shares the first tab's token (in memory, through BroadcastChannel): no sign-in.
  const b = await tab();
  await b.goto(`${spa.origin}/`);
  await eventually(b, settled, "the second tab signed in", "buy more lumber");
  assert.equal(authorizations, before + 1, "the second tab did not sign in");

  // Both tabs find the token expired at once: one of them signs in again, the other waits for it.
  await sleep(Math.max(0, renewedAt + TOKEN_TTL_SECS * 1000 + 500 - Date.now()));
  const beforeBoth = authorizations;
  for (const page of [a, b]) {
    await page.evaluate(() => {
      document.getElementById("saved").textContent = "(reloading)";
    });
  }
  await Promise.all([press(a, "load"), press(b, "load")]);
  await eventually(a, settled, "tab A after the shared renewal", "buy more lumber");
  await eventually(b, settled, "tab B after the shared renewal", "buy more lumber");
  await sleep(1000);
  assert.equal(authorizations, beforeBoth + 1, "two tabs expiring together sign in once");

  // And both work with the new token.
  await b.$eval("#note", (el) => {
    el.value = "call the inspector";
  });
  await press(b, "save");
  await eventually(b, settled, "tab B saves", "call the inspector");
  await press(a, "load");
  await eventually(a, settled, "tab A reads tab B's note", "call the inspector");

  // Sign-out is a top-level navigation to the hosted login's sign-out, which confirms and returns.
  await a.bringToFront();
  await Promise.all([a.waitForNavigation(), a.click("#sign-out")]);
  assert.match(a.url(), /\/w\/[^/]+\/logout/);
  await Promise.all([a.waitForNavigation(), a.click("#confirm-logout")]);
  await eventually(a, () => document.getElementById("status")?.textContent === "Not signed in.", "signed out");
  assert.equal(new URL(a.url()).pathname, "/");
  // The other tab forgot its token too.
  await press(b, "load");
  await eventually(b, () => /Not signed in/.test(document.getElementById("error")?.textContent ?? ""), "tab B signed out");
  // The single sign-on session is over: signing in asks for the password again.
  await Promise.all([a.waitForNavigation(), a.click("#sign-in")]);
  assert.match(a.url(), /\/w\/[^/]+\/login\?/);
});
