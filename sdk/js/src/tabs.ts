/**
 * Coordination between the tabs of one application (same origin, same client id) so that a token
 * expiring in many tabs at once is renewed by one sign-in, and a tab opened later does not need a
 * sign-in of its own. The token travels between tabs in memory (BroadcastChannel), never through
 * storage. One tab leads a sign-in again under a Web Lock; the others wait for its token.
 */

import { randomToken } from "./pkce.js";

/** Messages between tabs. */
type Message =
  /** A new token from a completed sign-in (for every tab), or a reply to one tab's request (`to`). */
  | { readonly kind: "token"; readonly token: string; readonly expiresAt: number | null; readonly to?: string }
  | { readonly kind: "token-request"; readonly id: string }
  | { readonly kind: "renewing"; readonly until: number }
  | { readonly kind: "renewal-failed" }
  | { readonly kind: "signed-out" };

/** How long the other tabs wait for the leading tab's sign-in (it may ask for a password). */
export const RENEWAL_WAIT_MS = 5 * 60 * 1000;
/** How long a tab asks the others for a token before it concludes none has one. */
const ASK_MS = 150;

/** @internal What a tab knows of the others. */
export interface TabsListener {
  /** Another tab has a (new) token. */
  onToken(token: string, expiresAt: number | null): void;
  /** Another tab signed out (or was signed out everywhere). */
  onSignedOut(): void;
  /** The tab that was signing in again gave up (its calls failed): stop waiting for it. */
  onRenewalFailed(): void;
  /** The token this tab can share, if any. */
  currentToken(): { token: string; expiresAt: number | null } | null;
}

interface LockManagerLike {
  request(name: string, options: { ifAvailable?: boolean }, callback: (lock: unknown) => Promise<unknown>): Promise<unknown>;
}

/** @internal */
export class Tabs {
  private readonly channel: BroadcastChannel | null;
  private readonly lockName: string;
  private renewingUntil = 0;
  /** The id of this tab's open request for a token. */
  private asking: string | null = null;

  constructor(clientId: string, private readonly listener: TabsListener) {
    const name = `secureflows-js:${clientId}`;
    this.lockName = `${name}:renewal`;
    this.channel = typeof BroadcastChannel === "function" ? new BroadcastChannel(name) : null;
    if (this.channel) {
      this.channel.onmessage = (event: MessageEvent<unknown>) => this.receive(event.data);
      // In Node.js a channel would keep the process alive.
      (this.channel as unknown as { unref?: () => void }).unref?.();
    }
  }

  private receive(data: unknown): void {
    if (data === null || typeof data !== "object") return;
    const message = data as Message;
    switch (message.kind) {
      case "token": {
        if (typeof message.token !== "string" || message.token === "") break;
        // A reply is for the tab that asked, and only the first one counts.
        if (message.to !== undefined) {
          if (message.to !== this.asking) break;
          this.asking = null;
        }
        this.renewingUntil = 0;
        this.listener.onToken(message.token, typeof message.expiresAt === "number" ? message.expiresAt : null);
        break;
      }
      case "token-request": {
        const current = this.listener.currentToken();
        if (current && typeof message.id === "string") {
          this.post({ kind: "token", token: current.token, expiresAt: current.expiresAt, to: message.id });
        }
        break;
      }
      case "renewing":
        if (typeof message.until === "number") this.renewingUntil = Math.min(message.until, Date.now() + RENEWAL_WAIT_MS);
        break;
      case "renewal-failed":
        this.renewingUntil = 0;
        this.listener.onRenewalFailed();
        break;
      case "signed-out":
        this.listener.onSignedOut();
        break;
    }
  }

  private post(message: Message): void {
    this.channel?.postMessage(message);
  }

  /** Tells the other tabs about this tab's new token. */
  shareToken(token: string, expiresAt: number | null): void {
    this.post({ kind: "token", token, expiresAt });
  }

  /** Tells the other tabs that the user signed out. */
  signedOut(): void {
    this.post({ kind: "signed-out" });
  }

  /** Asks the other tabs for a token; true when one arrived (through `onToken`) in time. */
  async askForToken(has: () => boolean): Promise<boolean> {
    if (!this.channel) return false;
    const id = randomToken();
    this.asking = id;
    this.post({ kind: "token-request", id });
    const deadline = Date.now() + ASK_MS;
    while (Date.now() < deadline) {
      if (has()) return true;
      await new Promise((resolve) => setTimeout(resolve, 15));
    }
    return has();
  }

  /** Whether another tab announced that it is signing in again. */
  anotherTabRenewing(): boolean {
    return Date.now() < this.renewingUntil;
  }

  /**
   * Decides which tab signs in again. Under the renewal lock: when another tab already announced a
   * renewal (or `stale()` says a new token arrived), this tab waits; otherwise it announces its own and
   * runs `lead`, which navigates away, keeping the lock until the page unloads so that a tab asking
   * later sees the announcement first. Answers whether this tab leads.
   */
  async electLeader(stale: () => boolean, lead: () => Promise<void>): Promise<boolean> {
    const decide = (): boolean => {
      if (stale() || this.anotherTabRenewing()) return false;
      this.post({ kind: "renewing", until: Date.now() + RENEWAL_WAIT_MS });
      return true;
    };
    const locks = (globalThis.navigator as { locks?: LockManagerLike } | undefined)?.locks;
    if (!locks) {
      const leads = decide();
      if (leads) {
        await lead().catch((e: unknown) => {
          this.post({ kind: "renewal-failed" });
          throw e;
        });
      }
      return leads;
    }
    let leads = false;
    let led: Promise<void> | undefined;
    const granted = new Promise<void>((resolveGranted) => {
      locks.request(this.lockName, {}, async () => {
        leads = decide();
        resolveGranted();
        if (!leads) return;
        led = lead();
        led.catch(() => this.post({ kind: "renewal-failed" }));
        await led;
        // Hold the lock while the page navigates away; it is released when the page unloads (or, if
        // the navigation never happens, after the wait the other tabs give a renewal).
        await new Promise((resolve) => setTimeout(resolve, RENEWAL_WAIT_MS));
      }).catch(() => undefined); // a failed `lead` is reported through `led` below
    });
    await granted;
    if (led) await led;
    return leads;
  }
}
