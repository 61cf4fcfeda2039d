// Serves the example single-page application and the SDK's ES module build on one origin.
//
//   node examples/js-spa/serve.mjs --issuer http://127.0.0.1:8080/w/<workspace> --client-id <client id> [--port 3000]
//
// Register the application first (see README.md): its redirect URI is <origin>/callback, its
// post-logout URI <origin>/ and its allowed origin <origin>. The SDK must be built (npm run build in
// sdk/js).

import { readFile } from "node:fs/promises";
import { createServer } from "node:http";
import { dirname, join, normalize } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { parseArgs } from "node:util";

const here = dirname(fileURLToPath(import.meta.url));
const sdk = join(here, "..", "..", "sdk", "js", "dist", "esm");

const TYPES = { ".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8", ".json": "application/json" };

/** Starts the example's server; answers its origin and a way to stop it. */
export async function serve({ issuer, clientId, port = 3000, host = "127.0.0.1" }) {
  const api = new URL(issuer).origin;
  const server = createServer(async (req, res) => {
    const path = new URL(req.url, "http://x").pathname;
    let file;
    if (path === "/" || path === "/callback") file = join(here, "index.html");
    else if (path === "/app.js") file = join(here, "app.js");
    else if (path.startsWith("/sdk/") && /^\/sdk\/[a-z0-9]+\.js$/.test(path)) file = normalize(join(sdk, path.slice(5)));
    if (path === "/config.json") {
      res.writeHead(200, { "content-type": TYPES[".json"], "cache-control": "no-store" });
      res.end(JSON.stringify({ issuer, clientId }));
      return;
    }
    if (!file) {
      res.writeHead(404, { "content-type": "text/plain" }).end("not found");
      return;
    }
    try {
      const body = await readFile(file);
      res.writeHead(200, {
        "content-type": TYPES[file.slice(file.lastIndexOf("."))] ?? "application/octet-stream",
        "cache-control": "no-store",
        // The page runs only its own scripts and talks only to itself and the secureFlows server.
        "content-security-policy": `default-src 'none'; script-src 'self'; connect-src 'self' ${api}; style-src 'self' 'unsafe-inline'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'`,
        "referrer-policy": "no-referrer",
        "x-content-type-options": "nosniff",
      });
      res.end(body);
    } catch {
      res.writeHead(404, { "content-type": "text/plain" }).end("not found (is the SDK built? npm run build in sdk/js)");
    }
  });
  await new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, host, resolve);
  });
  const origin = `http://${host}:${server.address().port}`;
  return { origin, close: () => new Promise((resolve) => server.close(resolve)) };
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? "").href) {
  const { values } = parseArgs({
    options: { issuer: { type: "string" }, "client-id": { type: "string" }, port: { type: "string", default: "3000" } },
  });
  if (!values.issuer || !values["client-id"]) {
    console.error("usage: node examples/js-spa/serve.mjs --issuer <workspace issuer> --client-id <client id> [--port 3000]");
    process.exit(2);
  }
  const { origin } = await serve({ issuer: values.issuer, clientId: values["client-id"], port: Number(values.port) });
  console.log(`The example is at ${origin}/ (Ctrl-C stops it).`);
}
