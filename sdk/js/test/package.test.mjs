// The published package: what `npm pack` puts in it, both module formats, no runtime dependencies,
// and no way for the token to reach storage.

import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { readFileSync, readdirSync } from "node:fs";
import { createRequire } from "node:module";
import { join } from "node:path";
import { test } from "node:test";

const root = new URL("..", import.meta.url).pathname;
const manifest = JSON.parse(readFileSync(join(root, "package.json"), "utf8"));

test("npm pack holds the builds, their types, the README and the licence, and nothing else", () => {
  const npm = process.platform === "win32" ? "npm.cmd" : "npm";
  const [pack] = JSON.parse(execFileSync(npm, ["pack", "--dry-run", "--json", "--ignore-scripts"], { cwd: root, encoding: "utf8" }));
  const files = pack.files.map((f) => f.path).sort();
  for (const wanted of ["LICENSE", "README.md", "package.json", "dist/esm/index.js", "dist/esm/index.d.ts", "dist/cjs/index.js", "dist/cjs/index.d.ts", "dist/cjs/package.json"]) {
    assert.ok(files.includes(wanted), `${wanted} is packed`);
  }
  const stray = files.filter((f) => !/^(LICENSE|README\.md|package\.json|dist\/(esm|cjs)\/[a-z0-9]+\.(js|d\.ts)|dist\/cjs\/package\.json)$/.test(f));
  assert.deepEqual(stray, [], "no tests, sources or other files");
  assert.equal(pack.name, "secureflows-js");
});

test("no runtime dependencies", () => {
  assert.equal(manifest.dependencies, undefined);
  assert.equal(manifest.peerDependencies, undefined);
});

test("the ES module and CommonJS builds export the same API", async () => {
  const esm = await import("secureflows-js");
  const cjs = createRequire(import.meta.url)("secureflows-js");
  assert.deepEqual(Object.keys(cjs).sort(), Object.keys(esm).sort());
  for (const name of ["createClient", "verifySessionToken", "SecureFlowsError", "TokenExpiredError", "UnauthorizedError", "ForbiddenError", "ValueTooLargeError", "TooManySessionsError", "RateLimitedError", "ValidationError"]) {
    assert.equal(typeof esm[name], "function", name);
    assert.equal(typeof cjs[name], "function", name);
  }
  assert.ok(new esm.TokenExpiredError({ status: 410, type: "t", title: "x" }) instanceof esm.SecureFlowsError);
});

test("the token never reaches storage: the builds use no localStorage, cookies or IndexedDB", () => {
  for (const dir of ["dist/esm", "dist/cjs"]) {
    for (const file of readdirSync(join(root, dir)).filter((f) => f.endsWith(".js"))) {
      const code = readFileSync(join(root, dir, file), "utf8");
      for (const storage of ["localStorage", "document.cookie", "indexedDB"]) {
        assert.ok(!code.includes(storage), `${dir}/${file} mentions ${storage}`);
      }
    }
  }
  // sessionStorage holds only the sign-in in progress (state → verifier and where to return).
  const client = readFileSync(join(root, "dist/esm/client.js"), "utf8");
  const writes = [...client.matchAll(/\.setItem\(([^\n]*)\);/g)].map((m) => m[1]);
  assert.deepEqual(writes, ["this.#storagePrefix + state, JSON.stringify(pending)"]);
});

test("the public types use no any", () => {
  for (const file of readdirSync(join(root, "dist/esm")).filter((f) => f.endsWith(".d.ts"))) {
    const types = readFileSync(join(root, "dist/esm", file), "utf8");
    assert.ok(!/\bany\b/.test(types.replace(/\/\*[\s\S]*?\*\//g, "")), `${file} uses any`);
  }
});
