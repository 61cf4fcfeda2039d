/**
 * The browser (and Node.js) client of one application: the hosted login with authorization code and
 * PKCE (RFC 7636), the Session API with the `sessionToken` in memory only, and signing in again when
 * the token expires (410), once for all the calls and tabs that noticed.
 */

import { discover, normalizeIssuer } from "./discovery.js";
import type { IssuerMetadata } from "./discovery.js";
import { LoginError, NotAuthenticatedError, SecureFlowsError, TokenExpiredError, UnauthorizedError } from "./errors.js";
import { configurationError, globalFetch, request } from "./http.js";
import type { Fetch, RetryOptions } from "./http.js";
import { challengeOf, randomToken } from "./pkce.js";
import { RENEWAL_WAIT_MS, Tabs } from "./tabs.js";
import { decodeValue, encodeValue, keySegment } from "./values.js";
import type { VaultValue } from "./values.js";

/** How `createClient` is configured. */
export interface ClientOptions {
  /** The workspace issuer, e.g. `https://id.example.com/w/<workspace>`; its discovery document gives
   * the hosted login's endpoints and the Session API's address. */
  readonly issuer: string;
  /** The application's client id. */
  readonly clientId: string;
  /** Where the hosted login returns (registered with the application, exactly). */
  readonly redirectUri: string;
  /** Where sign-out returns (registered with the application, exactly). */
  readonly postLogoutRedirectUri?: string;
  /**
   * Called once when calls find the token expired (410). Without it, the browser signs in again by a
   * top-level redirect and comes back to the same address. With it, the failing calls reject with
   * `TokenExpiredError` — unless the callback gives the client a new token (`setSessionToken`), in
   * which case they are made again once.
   */
  readonly onExpired?: (error: TokenExpiredError) => void | Promise<void>;
  /** Opt in to retrying 429 `rate-limited` answers after their `Retry-After` (default: never). */
  readonly retry?: RetryOptions;
  /** A `fetch` to use instead of the global one. */
  readonly fetch?: Fetch;
}

/** Options of `login`. */
export interface LoginOptions {
  /** Where to come back to after signing in (same origin; default: the current address). */
  readonly returnTo?: string;
  /** `login` asks again even with a single sign-on session; `create` opens sign-up; `none` never
   * shows a page (and fails with `LoginError` `login_required` when there is no session). */
  readonly prompt?: "none" | "login" | "create" | "select_account";
  /** An e-mail address to fill in on the sign-in page. */
  readonly loginHint?: string;
}

/** What `handleRedirectCallback` answers. */
export interface CallbackResult {
  /** The address the sign-in started from (the browser is already showing it). */
  readonly returnTo: string;
}

/** Options of `set`. */
export interface SetOptions {
  /** The value's content type (default from the value: bytes, text or JSON). */
  readonly contentType?: string;
}

/** A stored value's description (the value itself is never listed). */
export interface ValueInfo {
  /** The key, or `null` for a value whose stored name failed its integrity check. */
  readonly key: string | null;
  /** Size in bytes. */
  readonly size: number;
  readonly createdAt: string;
  readonly updatedAt: string;
  /** When the value expires unless written again. */
  readonly expiresAt: string;
  /** True for a value the server could not read (listed last). */
  readonly unreadable?: boolean;
}

/** What `set` answers. */
export interface SetResult extends ValueInfo {
  readonly key: string;
  /** True when the key was new, false when a value was replaced. */
  readonly created: boolean;
}

/** The client `createClient` returns. */
export interface SecureFlowsClient {
  /** Sends the browser to the hosted login (a top-level navigation). */
  login(options?: LoginOptions): Promise<void>;
  /** Finishes a sign-in on the redirect URI: checks the answer, exchanges the code, and puts the
   * address the sign-in started from back in the address bar. */
  handleRedirectCallback(url?: string): Promise<CallbackResult>;
  /** Whether this tab (or another tab of the application) holds a token that has not run out. */
  isAuthenticated(): Promise<boolean>;
  /** A value as stored (JSON parsed, text as a string, bytes as `Uint8Array`), or `undefined`. */
  get<T = unknown>(key: string): Promise<T | undefined>;
  /** Stores a value (encrypted by the server) under `key`. */
  set(key: string, value: VaultValue, options?: SetOptions): Promise<SetResult>;
  /** Removes a value; false when there was none. */
  delete(key: string): Promise<boolean>;
  /** The caller's keys, sorted, without values. */
  list(): Promise<ValueInfo[]>;
  /** Signs the user out everywhere: every token of every application of the workspace stops working. */
  revokeAll(): Promise<void>;
  /** Signs out: in a browser a top-level navigation to the hosted login's sign-out (never fetch). */
  logout(): Promise<void>;
  /** Uses a token obtained elsewhere (tests, native shells); `null` forgets the token. */
  setSessionToken(token: string | null): void;
}

/** A sign-in in progress, kept in sessionStorage for the round trip only. */
interface PendingSignIn {
  readonly verifier: string;
  readonly returnTo: string;
  /** Started by the client itself because the token expired (not by the user). */
  readonly renewal?: boolean;
}

interface Browser {
  readonly location: Location;
  readonly history: History;
  readonly storage: Storage;
}

function browser(): Browser | null {
  const g = globalThis as { location?: Location; history?: History; sessionStorage?: Storage };
  if (!g.location || !g.history || !g.sessionStorage) return null;
  return { location: g.location, history: g.history, storage: g.sessionStorage };
}

function requireBrowser(what: string): Browser {
  const b = browser();
  if (!b) throw configurationError(`${what} needs a browser (location, history and sessionStorage)`);
  return b;
}

function loginError(detail: string, error?: string): LoginError {
  return new LoginError({ status: 0, type: "urn:secureflows-js:login", title: "Sign-in failed", detail, error });
}

interface RawValueInfo {
  key: string | null;
  size: number;
  created_at: string;
  updated_at: string;
  expires_at: string;
  unreadable?: boolean;
}

function valueInfo(raw: RawValueInfo): ValueInfo {
  const info = { key: raw.key, size: raw.size, createdAt: raw.created_at, updatedAt: raw.updated_at, expiresAt: raw.expires_at };
  return raw.unreadable ? { ...info, unreadable: true } : info;
}

class Client implements SecureFlowsClient {
  readonly #issuer: string;
  readonly #options: ClientOptions;
  readonly #fetch: Fetch;
  readonly #storagePrefix: string;
  readonly #tabs: Tabs | null;
  #token: string | null = null;
  #expiresAt: number | null = null;
  #renewal: { readonly expired: string; readonly done: Promise<void> } | null = null;
  /** When this page's token came from a renewal the client started, and when that token runs out. */
  #renewed: { readonly at: number; readonly expiresAt: number | null } | null = null;
  readonly #waiters = new Set<() => void>();

  constructor(options: ClientOptions) {
    if (!options || typeof options.clientId !== "string" || options.clientId === "") throw configurationError("clientId is required");
    if (typeof options.redirectUri !== "string" || !URL.canParse(options.redirectUri)) {
      throw configurationError("redirectUri must be an absolute URL");
    }
    this.#issuer = normalizeIssuer(options.issuer);
    this.#options = options;
    this.#fetch = options.fetch ?? globalFetch();
    this.#storagePrefix = `secureflows-js:${options.clientId}:signin:`;
    this.#tabs = browser()
      ? new Tabs(options.clientId, {
          onToken: (token, expiresAt) => this.#useToken(token, expiresAt),
          onSignedOut: () => this.#forget(),
          onRenewalFailed: () => this.#wakeWaiters(),
          currentToken: () => (this.#live() && this.#token ? { token: this.#token, expiresAt: this.#expiresAt } : null),
        })
      : null;
  }

  #metadata(): Promise<IssuerMetadata> {
    return discover(this.#fetch, this.#issuer);
  }

  #useToken(token: string, expiresAt: number | null): void {
    this.#token = token;
    this.#expiresAt = expiresAt;
    this.#wakeWaiters();
  }

  /** Wakes the calls waiting for a token (they look for themselves whether one came). */
  #wakeWaiters(): void {
    for (const wake of this.#waiters) wake();
    this.#waiters.clear();
  }

  #forget(): void {
    this.#token = null;
    this.#expiresAt = null;
  }

  #live(): boolean {
    return this.#token !== null && (this.#expiresAt === null || Date.now() < this.#expiresAt);
  }

  /** Waits until a token other than `old` is in place, or `ms` pass; answers whether one came. */
  #tokenOtherThan(old: string | null, ms: number): Promise<boolean> {
    if (this.#token !== null && this.#token !== old) return Promise.resolve(true);
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.#waiters.delete(wake);
        resolve(false);
      }, ms);
      const wake = (): void => {
        clearTimeout(timer);
        resolve(this.#token !== null && this.#token !== old);
      };
      this.#waiters.add(wake);
    });
  }

  async login(options: LoginOptions = {}): Promise<void> {
    return this.#signIn(options, false);
  }

  async #signIn(options: LoginOptions, renewal: boolean): Promise<void> {
    const { location, storage } = requireBrowser("login()");
    const returnTo = new URL(options.returnTo ?? location.href, location.href);
    if (returnTo.origin !== location.origin) throw configurationError("returnTo must be on this origin");
    const metadata = await this.#metadata();
    const state = randomToken();
    const verifier = randomToken();
    const pending: PendingSignIn = renewal ? { verifier, returnTo: returnTo.href, renewal } : { verifier, returnTo: returnTo.href };
    storage.setItem(this.#storagePrefix + state, JSON.stringify(pending));
    const url = new URL(metadata.authorizationEndpoint);
    const params: Record<string, string> = {
      response_type: "code",
      client_id: this.#options.clientId,
      redirect_uri: this.#options.redirectUri,
      scope: "openid",
      state,
      code_challenge: await challengeOf(verifier),
      code_challenge_method: "S256",
    };
    if (options.prompt) params["prompt"] = options.prompt;
    if (options.loginHint) params["login_hint"] = options.loginHint;
    url.search = new URLSearchParams(params).toString();
    location.assign(url.href);
  }

  async handleRedirectCallback(url?: string): Promise<CallbackResult> {
    const { location, history, storage } = requireBrowser("handleRedirectCallback()");
    const answer = new URL(url ?? location.href, location.href);
    const params = answer.searchParams;
    const state = params.get("state");
    let pending: PendingSignIn | null = null;
    if (state) {
      const raw = storage.getItem(this.#storagePrefix + state);
      if (raw) {
        try {
          pending = JSON.parse(raw) as PendingSignIn;
        } catch {
          pending = null;
        }
      }
    }
    // The verifier and state are used once: every sign-in this tab started is over now.
    for (let i = storage.length - 1; i >= 0; i--) {
      const key = storage.key(i);
      if (key?.startsWith(this.#storagePrefix)) storage.removeItem(key);
    }
    const returnTo = pending && URL.canParse(pending.returnTo) && new URL(pending.returnTo).origin === location.origin
      ? pending.returnTo
      : new URL("/", location.href).href;
    history.replaceState(history.state, "", returnTo);

    const error = params.get("error");
    if (!state || !pending) throw loginError("this answer does not belong to a sign-in started in this tab", error ?? undefined);
    // RFC 9207 §2.4: the answer must come from our issuer (no mix-up with another one).
    const metadata = await this.#metadata();
    const iss = params.get("iss");
    if (iss !== null ? iss !== this.#issuer : metadata.issParameter) {
      throw loginError("the answer does not come from this issuer");
    }
    if (error) throw loginError(params.get("error_description") ?? error, error);
    const code = params.get("code");
    if (!code) throw loginError("the answer carries no code");

    const response = await request(this.#fetch, `${metadata.sessionApi}/auth/callback`, {
      method: "POST",
      headers: { "content-type": "application/json", accept: "application/json" },
      body: JSON.stringify({
        code,
        code_verifier: pending.verifier,
        client_id: this.#options.clientId,
        redirect_uri: this.#options.redirectUri,
      }),
    });
    const body = (await response.json()) as { sessionToken?: unknown; expiresIn?: unknown };
    if (typeof body.sessionToken !== "string") throw loginError("the server answered no session token");
    const expiresAt = typeof body.expiresIn === "number" ? Date.now() + body.expiresIn * 1000 : null;
    if (pending.renewal === true) this.#renewed = { at: Date.now(), expiresAt };
    this.#useToken(body.sessionToken, expiresAt);
    this.#tabs?.shareToken(body.sessionToken, expiresAt);
    return { returnTo };
  }

  async isAuthenticated(): Promise<boolean> {
    if (this.#live()) return true;
    if (this.#tabs) return this.#tabs.askForToken(() => this.#live());
    return false;
  }

  setSessionToken(token: string | null): void {
    if (token === null) {
      this.#forget();
      return;
    }
    if (typeof token !== "string" || token === "") throw configurationError("the session token must be a non-empty string");
    this.#useToken(token, null);
  }

  /** The token to send: this tab's, another tab's, or the one a sign-in in another tab brings. */
  async #currentToken(): Promise<string> {
    if (this.#token) return this.#token;
    if (this.#tabs) {
      if (this.#tabs.anotherTabRenewing()) await this.#tokenOtherThan(null, RENEWAL_WAIT_MS);
      else await this.#tabs.askForToken(() => this.#token !== null);
      if (this.#token) return this.#token;
    }
    throw new NotAuthenticatedError({
      status: 0,
      type: "urn:secureflows-js:not-signed-in",
      title: "Not signed in",
      detail: "call login() (or setSessionToken) first",
    });
  }

  /**
   * After a 410 with `expired`: one renewal for every call made with that token (and, in a browser,
   * for every tab), however far apart their answers arrive.
   */
  #renew(expired: string, error: TokenExpiredError): Promise<void> {
    if (this.#token === expired) this.#forget();
    if (this.#renewal?.expired === expired) return this.#renewal.done;
    if (this.#token !== null) return Promise.resolve();
    const done = this.#runRenewal(expired, error);
    this.#renewal = { expired, done };
    return done;
  }

  async #runRenewal(expired: string, error: TokenExpiredError): Promise<void> {
    const onExpired = this.#options.onExpired;
    if (onExpired) {
      await onExpired(error);
      if (this.#token === null || this.#token === expired) throw error;
      return;
    }
    const tabs = this.#tabs;
    const b = browser();
    if (!tabs || !b) throw error;
    // A token from a renewal that is refused as expired before half its lifetime has passed means the
    // server will refuse the next one too (clocks apart): signing in again would loop. Give up instead.
    const renewed = this.#renewed;
    if (renewed) {
      const lifetime = renewed.expiresAt === null ? 60_000 : renewed.expiresAt - renewed.at;
      if (Date.now() - renewed.at < lifetime / 2) throw error;
    }
    await tabs.electLeader(
      () => this.#token !== null,
      () => this.#signIn({ returnTo: b.location.href }, true),
    );
    // The leading tab is navigating away; the others wait for its token.
    if (!(await this.#tokenOtherThan(expired, RENEWAL_WAIT_MS))) throw error;
  }

  /** A Session API call with the token; a 410 renews the token and the call is made again once. */
  async #call(method: string, path: string, init: { body?: BodyInit; type?: string } = {}): Promise<Response> {
    const metadata = await this.#metadata();
    for (let renewed = false; ; renewed = true) {
      const token = await this.#currentToken();
      const headers: Record<string, string> = { authorization: `Bearer ${token}` };
      if (init.type) headers["content-type"] = init.type;
      try {
        return await request(
          this.#fetch,
          metadata.sessionApi + path,
          init.body === undefined ? { method, headers } : { method, headers, body: init.body },
          this.#options.retry,
        );
      } catch (e) {
        if (e instanceof TokenExpiredError && !renewed) {
          await this.#renew(token, e);
          continue;
        }
        if (e instanceof UnauthorizedError && this.#token === token) this.#forget();
        throw e;
      }
    }
  }

  async get<T = unknown>(key: string): Promise<T | undefined> {
    const path = `/sessions/get/${keySegment(key)}`;
    try {
      const response = await this.#call("GET", path);
      return (await decodeValue(response)) as T;
    } catch (e) {
      if (e instanceof SecureFlowsError && e.status === 404 && e.slug === "not-found") return undefined;
      throw e;
    }
  }

  async set(key: string, value: VaultValue, options: SetOptions = {}): Promise<SetResult> {
    const path = `/sessions/set/${keySegment(key)}`;
    const { body, type } = encodeValue(value, options.contentType);
    const response = await this.#call("POST", path, { body, type });
    const raw = (await response.json()) as RawValueInfo & { key: string };
    return { ...valueInfo(raw), key: raw.key, created: response.status === 201 };
  }

  async delete(key: string): Promise<boolean> {
    const path = `/sessions/delete/${keySegment(key)}`;
    try {
      await this.#call("DELETE", path);
      return true;
    } catch (e) {
      if (e instanceof SecureFlowsError && e.status === 404 && e.slug === "not-found") return false;
      throw e;
    }
  }

  async list(): Promise<ValueInfo[]> {
    const response = await this.#call("GET", "/sessions");
    const body = (await response.json()) as { keys?: RawValueInfo[] };
    return (body.keys ?? []).map(valueInfo);
  }

  async revokeAll(): Promise<void> {
    await this.#call("POST", "/sessions/revoke");
    this.#forget();
    this.#tabs?.signedOut();
  }

  async logout(): Promise<void> {
    const b = browser();
    const token = this.#token;
    this.#forget();
    this.#tabs?.signedOut();
    const metadata = await this.#metadata();
    if (!b) {
      // No browser to navigate: end this login session directly (POST /auth/logout).
      if (token) {
        await request(this.#fetch, `${metadata.sessionApi}/auth/logout`, {
          method: "POST",
          headers: { authorization: `Bearer ${token}` },
        });
      }
      return;
    }
    const url = new URL(`${metadata.sessionApi}/auth/logout`);
    url.searchParams.set("client_id", this.#options.clientId);
    if (this.#options.postLogoutRedirectUri) url.searchParams.set("post_logout_redirect_uri", this.#options.postLogoutRedirectUri);
    b.location.assign(url.href);
  }
}

/** A client of one application of a workspace. Creating it sends nothing. */
export function createClient(options: ClientOptions): SecureFlowsClient {
  return new Client(options);
}
