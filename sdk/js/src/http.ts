/** HTTP: one place that sends a request and turns a problem answer (RFC 9457) into a typed error. */

import { NetworkError, PROBLEM_TYPE_PREFIX, RateLimitedError, SecureFlowsError, errorFor } from "./errors.js";
import type { FieldProblem } from "./errors.js";

/** The `fetch` the SDK uses (the global one unless the caller gives another). */
export type Fetch = (input: string, init?: RequestInit) => Promise<Response>;

/** Opting in to retries of 429 `rate-limited` answers. */
export interface RetryOptions {
  /** How many times a rate-limited call is tried again (default 0: never). */
  readonly rateLimited?: number;
  /** The longest `Retry-After` the SDK waits out, in seconds (default 60); a longer one is thrown. */
  readonly maxWaitSeconds?: number;
}

/** @internal */
export function globalFetch(): Fetch {
  if (typeof globalThis.fetch !== "function") {
    throw configurationError("no fetch: pass options.fetch, or run on Node.js 20+ or in a browser");
  }
  return (input, init) => globalThis.fetch(input, init);
}

/** @internal An error about how the SDK is used, not about an answer. */
export function configurationError(detail: string): SecureFlowsError {
  return new SecureFlowsError({ status: 0, type: "urn:secureflows-js:configuration", title: "Misconfigured", detail });
}

/** @internal `Retry-After` as seconds: delta-seconds or an HTTP date (RFC 9110 §10.2.3). */
export function retryAfterSeconds(value: string | null, now: number = Date.now()): number | undefined {
  if (value === null) return undefined;
  const trimmed = value.trim();
  if (/^\d+$/.test(trimmed)) return Number(trimmed);
  const at = Date.parse(trimmed);
  return Number.isNaN(at) ? undefined : Math.max(0, Math.ceil((at - now) / 1000));
}

/** @internal The typed error of a non-2xx answer; reads the body. */
export async function problemOf(response: Response): Promise<SecureFlowsError> {
  let body: Record<string, unknown> = {};
  const type = response.headers.get("content-type") ?? "";
  if (type.includes("json")) {
    try {
      const parsed: unknown = await response.json();
      if (parsed !== null && typeof parsed === "object") body = parsed as Record<string, unknown>;
    } catch {
      // an unreadable body: the status still says what happened
    }
  }
  const text = (key: string): string | undefined => {
    const v = body[key];
    return typeof v === "string" ? v : undefined;
  };
  const errors: FieldProblem[] = Array.isArray(body["errors"])
    ? (body["errors"] as unknown[]).flatMap((e) => {
        if (e === null || typeof e !== "object") return [];
        const { field, message } = e as Record<string, unknown>;
        return [{ field: typeof field === "string" ? field : "", message: typeof message === "string" ? message : "" }];
      })
    : [];
  return errorFor({
    status: response.status,
    type: text("type") ?? "about:blank",
    title: text("title") ?? (response.statusText || `HTTP ${response.status}`),
    detail: text("detail"),
    requestId: text("request_id") ?? response.headers.get("x-request-id") ?? undefined,
    errors,
    retryAfter: retryAfterSeconds(response.headers.get("retry-after")),
  });
}

/** @internal Sends a request; a failure to reach the server is a `NetworkError`. */
export async function send(fetcher: Fetch, url: string, init: RequestInit): Promise<Response> {
  try {
    return await fetcher(url, { ...init, credentials: "omit", redirect: "error", cache: "no-store" });
  } catch (cause) {
    throw new NetworkError(
      { status: 0, type: `${PROBLEM_TYPE_PREFIX}network`, title: "Network error", detail: `could not reach ${new URL(url).origin}` },
      { cause },
    );
  }
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * @internal Sends a request and answers the response when it is a success; a problem answer is
 * thrown as its typed error. 429 `rate-limited` is tried again only as `retry` allows, after the
 * server's `Retry-After`.
 */
export async function request(
  fetcher: Fetch,
  url: string,
  init: RequestInit,
  retry: RetryOptions = {},
): Promise<Response> {
  const attempts = Math.max(0, Math.floor(retry.rateLimited ?? 0));
  const maxWait = retry.maxWaitSeconds ?? 60;
  for (let attempt = 0; ; attempt++) {
    const response = await send(fetcher, url, init);
    if (response.ok) return response;
    const error = await problemOf(response);
    if (
      error instanceof RateLimitedError &&
      attempt < attempts &&
      error.retryAfter !== undefined &&
      error.retryAfter <= maxWait
    ) {
      await sleep(Math.max(error.retryAfter, 0) * 1000);
      continue;
    }
    throw error;
  }
}
