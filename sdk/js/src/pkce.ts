/** Proof Key for Code Exchange (RFC 7636) and the random values of a sign-in. */

import { encode } from "./base64url.js";

/** @internal 256 random bits, base64url: a PKCE verifier (§4.1: 43 characters) or a state. */
export function randomToken(): string {
  return encode(crypto.getRandomValues(new Uint8Array(32)));
}

/** @internal The S256 challenge of a verifier (§4.2). */
export async function challengeOf(verifier: string): Promise<string> {
  const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(verifier));
  return encode(new Uint8Array(digest));
}
