/** The workspace issuer's OpenID Provider metadata (OpenID Connect Discovery 1.0), cached. */

import { configurationError, request } from "./http.js";
import type { Fetch } from "./http.js";

/** @internal What the SDK reads of the metadata. */
export interface IssuerMetadata {
  readonly issuer: string;
  readonly authorizationEndpoint: string;
  readonly jwksUri: string;
  /** The Session API's base URL (`…/api/v1`). */
  readonly sessionApi: string;
}

const TTL_MS = 5 * 60 * 1000;
const cache = new Map<string, { at: number; metadata: Promise<IssuerMetadata> }>();

/** @internal The issuer without a trailing slash: the form the server's `iss` has. */
export function normalizeIssuer(issuer: string): string {
  let url: URL;
  try {
    url = new URL(issuer);
  } catch {
    throw configurationError("issuer must be an absolute URL, e.g. https://id.example.com/w/<workspace>");
  }
  if (url.protocol !== "https:" && url.protocol !== "http:") throw configurationError("issuer must be an http(s) URL");
  if (url.search || url.hash) throw configurationError("issuer must have no query or fragment");
  return issuer.replace(/\/+$/, "");
}

/** @internal The metadata of `issuer` (fetched at most every five minutes per issuer). */
export function discover(fetcher: Fetch, issuer: string): Promise<IssuerMetadata> {
  const hit = cache.get(issuer);
  if (hit && Date.now() - hit.at < TTL_MS) return hit.metadata;
  const metadata = fetchMetadata(fetcher, issuer);
  cache.set(issuer, { at: Date.now(), metadata });
  metadata.catch(() => {
    if (cache.get(issuer)?.metadata === metadata) cache.delete(issuer);
  });
  return metadata;
}

async function fetchMetadata(fetcher: Fetch, issuer: string): Promise<IssuerMetadata> {
  const response = await request(fetcher, `${issuer}/.well-known/openid-configuration`, {
    headers: { accept: "application/json" },
  });
  const doc: unknown = await response.json().catch(() => null);
  if (doc === null || typeof doc !== "object") throw configurationError("the issuer's discovery document is not JSON");
  const field = (name: string): string => {
    const v = (doc as Record<string, unknown>)[name];
    if (typeof v !== "string" || v === "") throw configurationError(`the issuer's discovery document has no ${name}`);
    return v;
  };
  // Discovery §4.3: the issuer in the document must be exactly the one asked for.
  if (field("issuer") !== issuer) throw configurationError("the discovery document names another issuer");
  return {
    issuer,
    authorizationEndpoint: field("authorization_endpoint"),
    jwksUri: field("jwks_uri"),
    sessionApi: field("secureflows_session_api").replace(/\/+$/, ""),
  };
}
