/** Vault values on the wire: bytes, strings and JSON, each with its content type. */

import { ValidationError } from "./errors.js";

/** What `set` stores: bytes, a string, or anything JSON can carry. */
export type VaultValue = Uint8Array | ArrayBuffer | ArrayBufferView | Blob | string | JsonValue;

/** A JSON value. */
export type JsonValue = null | boolean | number | string | readonly JsonValue[] | { readonly [key: string]: JsonValue | undefined };

/** The rule the server applies to key names (docs/session-api.md), checked before anything is sent. */
const KEY = /^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$/;

/** @internal The key as a path segment, or a `ValidationError` for a key the server would refuse. */
export function keySegment(key: string): string {
  if (typeof key !== "string" || !KEY.test(key) || key.includes("..")) {
    throw new ValidationError({
      status: 400,
      type: "urn:secureflows:problem:malformed-request",
      title: "Malformed request",
      detail: "a key is 1 to 128 characters from A-Z a-z 0-9 . _ - :, starts with a letter or digit and never contains ..",
    });
  }
  return encodeURIComponent(key);
}

function essence(contentType: string): string {
  return (contentType.split(";")[0] ?? "").trim().toLowerCase();
}

/** @internal Whether a content type is JSON (`application/json` or `…+json`). */
export function isJson(contentType: string): boolean {
  const type = essence(contentType);
  return type === "application/json" || type.endsWith("+json");
}

/**
 * @internal The body and content type of a value. Bytes keep the given type (default
 * `application/octet-stream`); a string is text (`text/plain;charset=utf-8`) unless a type is given;
 * anything else, and any value with a JSON type, is JSON.
 */
export function encodeValue(value: VaultValue, contentType?: string): { body: BodyInit; type: string } {
  if (contentType !== undefined && (typeof contentType !== "string" || !/^[\x21-\x7e][\x20-\x7e]*$/.test(contentType))) {
    throw new TypeError("contentType must be a printable ASCII media type");
  }
  if (value instanceof ArrayBuffer) return { body: value, type: contentType ?? "application/octet-stream" };
  if (ArrayBuffer.isView(value)) {
    const bytes = new Uint8Array(value.buffer, value.byteOffset, value.byteLength);
    return { body: bytes.slice(), type: contentType ?? "application/octet-stream" };
  }
  if (typeof Blob !== "undefined" && value instanceof Blob) {
    return { body: value, type: contentType ?? (value.type || "application/octet-stream") };
  }
  if (typeof value === "string" && (contentType === undefined || !isJson(contentType))) {
    return { body: value, type: contentType ?? "text/plain;charset=utf-8" };
  }
  const json = JSON.stringify(value);
  if (json === undefined) throw new TypeError("the value cannot be stored: it is not bytes, a string or JSON");
  return { body: json, type: contentType ?? "application/json" };
}

/** @internal A stored value as what it was: JSON parsed, text as a string, anything else as bytes. */
export async function decodeValue(response: Response): Promise<unknown> {
  const type = response.headers.get("content-type") ?? "application/octet-stream";
  if (isJson(type)) {
    const text = await response.text();
    try {
      return JSON.parse(text) as unknown;
    } catch {
      throw new ValidationError({
        status: 0,
        type: "urn:secureflows-js:undecodable-value",
        title: "Undecodable value",
        detail: "the value was stored as JSON but does not parse",
      });
    }
  }
  if (essence(type).startsWith("text/")) return response.text();
  return new Uint8Array(await response.arrayBuffer());
}
