/** The workspace issuer's OpenID Provider metadata (OpenID Connect Discovery 1.0), cached. */

import { cached } from "./cache.js";
import type { CacheEntries } from "./cache.js";
import { PROBLEM_TYPE_PREFIX, SecureFlowsError } from "./errors.js";
import { configurationError, send } from "./http.js";
import type { Fetch } from "./http.js";

/** @internal What the SDK reads of the metadata. */
export interface IssuerMetadata {
  readonly issuer: string;
  readonly authorizationEndpoint: string;
  readonly jwksUri: string;
  /** The Session API's base URL (`…/api/v1`). */
  readonly sessionApi: string;
  /** Whether authorization answers carry `iss` (RFC 9207). */
  readonly issParameter: boolean;
}

const TTL_MS = 5 * 60 * 1000;
/** A failed fetch is remembered this long, so that a failing issuer is not asked on every call. */
const FAILURE_BACKOFF_MS = 2 * 1000;
const cache: CacheEntries<IssuerMetadata> = new Map();

/**
 * @internal A JSON document the issuer publishes (discovery, JWKS). Any answer but a 2xx JSON object is
 * a `SecureFlowsError` of its own (the issuer is unavailable or misconfigured) — never one of the
 * classes a token's verdict uses, whatever status the issuer answered.
 */
export async function issuerDocument(fetcher: Fetch, url: string, what: string): Promise<Record<string, unknown>> {
  const response = await send(fetcher, url, { headers: { accept: "application/json" } });
  const body: unknown = response.ok ? await response.json().catch(() => null) : null;
  if (body === null || typeof body !== "object" || Array.isArray(body)) {
    throw new SecureFlowsError({
      status: 503,
      type: `${PROBLEM_TYPE_PREFIX}service-unavailable`,
      title: "Issuer unavailable",
      detail: response.ok ? `the issuer's ${what} is not a JSON object` : `the issuer's ${what} answered ${response.status}`,
    });
  }
  return body as Record<string, unknown>;
}

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
  return cached(cache, issuer, { maxAgeMs: TTL_MS, failureBackoffMs: FAILURE_BACKOFF_MS }, () =>
    fetchMetadata(fetcher, issuer),
  );
}

async function fetchMetadata(fetcher: Fetch, issuer: string): Promise<IssuerMetadata> {
  const doc = await issuerDocument(fetcher, `${issuer}/.well-known/openid-configuration`, "discovery document");
  const field = (name: string): string => {
    const v = doc[name];
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
    // RFC 9207 §2.4: an issuer that says it sends `iss` with its answers must be held to it.
    issParameter: doc["authorization_response_iss_parameter_supported"] === true,
  };
}
