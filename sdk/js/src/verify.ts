/**
 * Verifying a session token in a back end (RFC 7515 JWS, RFC 7519 JWT, RFC 8725 best practices), with
 * WebCrypto only. The signing keys come from the workspace issuer's discovery document and JWKS; they
 * are cached, and an unknown `kid` refetches the set at most every 10 seconds.
 *
 * Revocation is visible only to the server: a back end that must see a signed-out session at once asks
 * the Session API instead (any call answers 401 `session-revoked`).
 */

import { decode } from "./base64url.js";
import { cached } from "./cache.js";
import type { CacheEntries } from "./cache.js";
import { discover, issuerDocument, normalizeIssuer } from "./discovery.js";
import { PROBLEM_TYPE_PREFIX, SecureFlowsError, TokenExpiredError, UnauthorizedError } from "./errors.js";
import { configurationError, globalFetch } from "./http.js";
import type { Fetch } from "./http.js";

/** The claims of a session token (docs/session-api.md). */
export interface SessionTokenClaims {
  /** The workspace issuer. */
  readonly iss: string;
  /** The user's id within the workspace. */
  readonly sub: string;
  /** The application's client id. */
  readonly aud: string | readonly string[];
  /** The workspace id. */
  readonly ws: string;
  /** `owner`, `admin`, `user` or `anon`. */
  readonly role: string;
  /** The login session. */
  readonly sid: string;
  /** The user's token revision. */
  readonly rev: number;
  readonly iat: number;
  readonly nbf?: number;
  readonly exp: number;
  readonly jti: string;
  readonly [claim: string]: unknown;
}

/** What `verifySessionToken` checks the token against. */
export interface VerifyOptions {
  /** The workspace issuer, e.g. `https://id.example.com/w/<workspace>`. */
  readonly issuer: string;
  /** The application's client id (or several): `aud` must name one. */
  readonly audience: string | readonly string[];
  /** Tolerated clock skew for `exp` and `nbf`, in seconds (default 5). */
  readonly clockTolerance?: number;
  /** The time to check against, in seconds since the epoch (default now). */
  readonly currentTime?: number;
  /** A `fetch` to use instead of the global one. */
  readonly fetch?: Fetch;
}

/** The token type of a session token (its `typ` header). */
export const SESSION_TOKEN_TYPE = "sf-session+jwt";

/** JWS algorithms and their WebCrypto parameters (RFC 7518 §3, RFC 8037). `none` and HMAC never. */
const ALGORITHMS: Record<string, { import: AlgorithmIdentifier | RsaHashedImportParams | EcKeyImportParams; verify: AlgorithmIdentifier | RsaPssParams | EcdsaParams; kty: string }> = {
  RS256: { import: { name: "RSASSA-PKCS1-v1_5", hash: "SHA-256" }, verify: { name: "RSASSA-PKCS1-v1_5" }, kty: "RSA" },
  RS384: { import: { name: "RSASSA-PKCS1-v1_5", hash: "SHA-384" }, verify: { name: "RSASSA-PKCS1-v1_5" }, kty: "RSA" },
  RS512: { import: { name: "RSASSA-PKCS1-v1_5", hash: "SHA-512" }, verify: { name: "RSASSA-PKCS1-v1_5" }, kty: "RSA" },
  PS256: { import: { name: "RSA-PSS", hash: "SHA-256" }, verify: { name: "RSA-PSS", saltLength: 32 } as RsaPssParams, kty: "RSA" },
  PS384: { import: { name: "RSA-PSS", hash: "SHA-384" }, verify: { name: "RSA-PSS", saltLength: 48 } as RsaPssParams, kty: "RSA" },
  PS512: { import: { name: "RSA-PSS", hash: "SHA-512" }, verify: { name: "RSA-PSS", saltLength: 64 } as RsaPssParams, kty: "RSA" },
  ES256: { import: { name: "ECDSA", namedCurve: "P-256" }, verify: { name: "ECDSA", hash: "SHA-256" } as EcdsaParams, kty: "EC" },
  ES384: { import: { name: "ECDSA", namedCurve: "P-384" }, verify: { name: "ECDSA", hash: "SHA-384" } as EcdsaParams, kty: "EC" },
  EdDSA: { import: { name: "Ed25519" }, verify: { name: "Ed25519" }, kty: "OKP" },
};

const JWKS_TTL_MS = 10 * 60 * 1000;
const REFETCH_INTERVAL_MS = 10 * 1000;

interface KeySet {
  readonly keys: readonly JsonWebKey[];
  readonly imported: Map<string, Promise<CryptoKey>>;
}

/** The key sets fetched or being fetched, by JWKS URI. */
const keySets: CacheEntries<KeySet> = new Map();

/** The error every verification failure but expiry throws: the same for each cause. */
function invalid(detail: string): UnauthorizedError {
  return new UnauthorizedError({
    status: 401,
    type: "urn:secureflows:problem:invalid-token",
    title: "Invalid token",
    detail,
  });
}

function parseJson(part: string, what: string): Record<string, unknown> {
  let value: unknown;
  try {
    value = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(decode(part)));
  } catch {
    throw invalid(`the ${what} is not base64url JSON`);
  }
  if (value === null || typeof value !== "object" || Array.isArray(value)) throw invalid(`the ${what} is not a JSON object`);
  return value as Record<string, unknown>;
}

async function loadKeySet(fetcher: Fetch, jwksUri: string): Promise<KeySet> {
  const body = await issuerDocument(fetcher, jwksUri, "JWKS");
  if (!Array.isArray(body["keys"])) {
    throw new SecureFlowsError({
      status: 503,
      type: `${PROBLEM_TYPE_PREFIX}service-unavailable`,
      title: "Issuer unavailable",
      detail: "the issuer's JWKS has no keys",
    });
  }
  return { keys: body["keys"] as JsonWebKey[], imported: new Map() };
}

/**
 * The key set of `jwksUri`: cached for ten minutes; `refresh` (an unknown `kid`) refetches it unless it
 * was fetched in the last 10 seconds; a failed fetch is retried no sooner than that either. However
 * many verifications arrive at once, at most one fetch is in flight per 10 seconds.
 */
function keySet(fetcher: Fetch, jwksUri: string, refresh: boolean): Promise<KeySet> {
  const ages = { maxAgeMs: refresh ? REFETCH_INTERVAL_MS : JWKS_TTL_MS, failureBackoffMs: REFETCH_INTERVAL_MS };
  return cached(keySets, jwksUri, ages, () => loadKeySet(fetcher, jwksUri));
}

/** The verification key for `kid` and `alg`: chosen by `kid`, and the key fixes the algorithm. */
async function verificationKey(fetcher: Fetch, jwksUri: string, kid: string, alg: string): Promise<CryptoKey> {
  let set = await keySet(fetcher, jwksUri, false);
  let jwk = set.keys.find((k) => (k as { kid?: unknown }).kid === kid);
  if (!jwk) {
    set = await keySet(fetcher, jwksUri, true);
    jwk = set.keys.find((k) => (k as { kid?: unknown }).kid === kid);
  }
  if (!jwk) throw invalid("no key of the issuer has this token's kid");
  const params = ALGORITHMS[alg];
  if (!params || jwk.kty !== params.kty) throw invalid("the token's algorithm does not fit the key");
  if (jwk.alg !== undefined && jwk.alg !== alg) throw invalid("the key is for another algorithm");
  if (jwk.use !== undefined && jwk.use !== "sig") throw invalid("the key is not a signing key");
  const id = `${kid}\u0000${alg}`;
  let imported = set.imported.get(id);
  if (!imported) {
    const { kty, n, e, crv, x, y } = jwk;
    const publicJwk: JsonWebKey = Object.fromEntries(
      Object.entries({ kty, n, e, crv, x, y }).filter(([, v]) => v !== undefined),
    );
    imported = crypto.subtle.importKey("jwk", publicJwk, params.import, false, ["verify"]);
    set.imported.set(id, imported);
    imported.catch(() => set.imported.delete(id));
  }
  try {
    return await imported;
  } catch {
    throw invalid("the issuer's key could not be imported");
  }
}

function audienceMatches(aud: unknown, expected: string | readonly string[]): boolean {
  const wanted = typeof expected === "string" ? [expected] : expected;
  if (typeof aud === "string") return wanted.includes(aud);
  return Array.isArray(aud) && aud.some((a) => typeof a === "string" && wanted.includes(a));
}

/**
 * Verifies a session token and answers its claims: the signature with the issuer's published key
 * chosen by `kid` (the key fixes the algorithm), `typ` (`sf-session+jwt`), `iss`, `aud`, `exp` and
 * `nbf` with a small tolerance. An expired token throws `TokenExpiredError` (answer 410: the data is
 * intact, sign in again); a token that does not verify throws `UnauthorizedError` (answer 401); when
 * the issuer's keys cannot be had, another `SecureFlowsError` (answer 503: nobody's token is judged).
 */
export async function verifySessionToken(token: string, options: VerifyOptions): Promise<SessionTokenClaims> {
  const issuer = normalizeIssuer(options.issuer);
  const fetcher = options.fetch ?? globalFetch();
  const tolerance = options.clockTolerance ?? 5;
  // A tolerance of NaN or Infinity would accept every expired token.
  if (!Number.isFinite(tolerance) || tolerance < 0) throw configurationError("clockTolerance must be a finite number of seconds, at least 0");
  if (options.currentTime !== undefined && !Number.isFinite(options.currentTime)) {
    throw configurationError("currentTime must be a finite number of seconds since the epoch");
  }
  if (typeof token !== "string") throw invalid("the token is not a string");
  const parts = token.split(".");
  if (parts.length !== 3) throw invalid("the token is not a compact JWS");
  const [headerPart = "", payloadPart = "", signaturePart = ""] = parts;
  const header = parseJson(headerPart, "header");
  const { alg, kid, typ, crit } = header;
  // RFC 8725 §3.1: the algorithm must be one we expect; `none` and HMAC are never accepted.
  if (typeof alg !== "string" || !Object.hasOwn(ALGORITHMS, alg)) throw invalid("the token's algorithm is not accepted");
  // RFC 8725 §3.11: explicit typing keeps other JWTs of the issuer (ID tokens, console tokens) out.
  if (typeof typ !== "string" || typ.toLowerCase() !== SESSION_TOKEN_TYPE) throw invalid("the token is not a session token");
  if (typeof kid !== "string") throw invalid("the token names no key");
  // RFC 7515 §4.1.11: an extension we do not understand must be refused.
  if (crit !== undefined) throw invalid("the token has critical extensions");

  const metadata = await discover(fetcher, issuer);
  const key = await verificationKey(fetcher, metadata.jwksUri, kid, alg);
  let signature: Uint8Array<ArrayBuffer>;
  try {
    signature = decode(signaturePart);
  } catch {
    throw invalid("the signature is not base64url");
  }
  const signed = new TextEncoder().encode(`${headerPart}.${payloadPart}`);
  const params = ALGORITHMS[alg];
  if (!params || !(await crypto.subtle.verify(params.verify, key, signature, signed))) {
    throw invalid("the signature does not verify");
  }

  const claims = parseJson(payloadPart, "payload");
  if (claims["iss"] !== issuer) throw invalid("the token is from another issuer");
  if (!audienceMatches(claims["aud"], options.audience)) throw invalid("the token is for another audience");
  if (typeof claims["sub"] !== "string" || claims["sub"] === "") throw invalid("the token has no subject");
  const now = options.currentTime ?? Math.floor(Date.now() / 1000);
  const exp = claims["exp"];
  const nbf = claims["nbf"];
  if (typeof exp !== "number") throw invalid("the token has no expiry");
  if (nbf !== undefined && (typeof nbf !== "number" || now + tolerance < nbf)) throw invalid("the token is not valid yet");
  if (now - tolerance >= exp) {
    throw new TokenExpiredError({
      status: 410,
      type: "urn:secureflows:problem:token-expired",
      title: "Token expired",
      detail: "sign in again; the data is intact",
    });
  }
  return claims as unknown as SessionTokenClaims;
}
