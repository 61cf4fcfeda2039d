/** base64url without padding (RFC 4648 §5), as JOSE and PKCE use it. */

/** @internal */
export function encode(bytes: Uint8Array): string {
  let binary = "";
  for (const b of bytes) binary += String.fromCharCode(b);
  return btoa(binary).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

/** @internal Decodes, or throws a `TypeError` on anything but canonical base64url. */
export function decode(text: string): Uint8Array<ArrayBuffer> {
  if (!/^[A-Za-z0-9_-]*$/.test(text) || text.length % 4 === 1) throw new TypeError("not base64url");
  const binary = atob(text.replace(/-/g, "+").replace(/_/g, "/"));
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
  // Canonical only (RFC 4648 §3.5): unused trailing bits must be zero, so one value has one spelling.
  if (encode(bytes) !== text) throw new TypeError("not canonical base64url");
  return bytes;
}
