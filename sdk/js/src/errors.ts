/**
 * Errors are classes, one per contract status of the Session API (docs/session-api.md), each carrying
 * the RFC 9457 problem the server answered: `status`, `type`, `title`, `detail` and `requestId`.
 * Tell them apart with `instanceof`, never by parsing messages.
 */

/** The prefix of every problem type the server sends. */
export const PROBLEM_TYPE_PREFIX = "urn:secureflows:problem:";

/** A field the server refused, from a 422 `validation-failed` problem. */
export interface FieldProblem {
  readonly field: string;
  readonly message: string;
}

/** The parts of an RFC 9457 problem the SDK reads. */
export interface ProblemDetails {
  readonly status: number;
  readonly type: string;
  readonly title: string;
  readonly detail?: string | undefined;
  readonly requestId?: string | undefined;
  readonly errors?: readonly FieldProblem[] | undefined;
  readonly retryAfter?: number | undefined;
}

/** Every error of the SDK. `status` is 0 when no HTTP answer was involved. */
export class SecureFlowsError extends Error {
  /** HTTP status, or 0 when the error did not come from an answer (network, configuration). */
  readonly status: number;
  /** The problem type, e.g. `urn:secureflows:problem:token-expired`. */
  readonly type: string;
  /** The problem's short, stable summary. */
  readonly title: string;
  /** This occurrence's explanation, safe to show. */
  readonly detail: string | undefined;
  /** The server's request id (quote it when asking for help). */
  readonly requestId: string | undefined;

  constructor(problem: ProblemDetails, options?: { cause?: unknown }) {
    super(problem.detail ? `${problem.title}: ${problem.detail}` : problem.title, options);
    this.name = new.target.name;
    this.status = problem.status;
    this.type = problem.type;
    this.title = problem.title;
    this.detail = problem.detail;
    this.requestId = problem.requestId;
  }

  /** The problem type's slug, e.g. `token-expired` (the whole type when it is not one of ours). */
  get slug(): string {
    return this.type.startsWith(PROBLEM_TYPE_PREFIX) ? this.type.slice(PROBLEM_TYPE_PREFIX.length) : this.type;
  }
}

/** 410: the token expired. The data is intact; signing in again renews access. */
export class TokenExpiredError extends SecureFlowsError {}

/**
 * 401: the token is invalid (`invalid-token`) or its session was ended (`session-revoked`: signed out,
 * signed out everywhere, or the account was locked). Signing in again is the only way on.
 */
export class UnauthorizedError extends SecureFlowsError {
  /** True when the session was ended rather than the token being unusable. */
  get revoked(): boolean {
    return this.slug === "session-revoked";
  }
}

/** 403: not allowed — wrong token kind, an origin the application does not allow, a quota reached. */
export class ForbiddenError extends SecureFlowsError {}

/** 413: the value is larger than the workspace's plan allows (or than any request may be). */
export class ValueTooLargeError extends SecureFlowsError {}

/** A 429 answer, with the server's `Retry-After` in seconds. */
export class TooManyRequestsError extends SecureFlowsError {
  /** Seconds to wait before trying again (from `Retry-After`), when the server said. */
  readonly retryAfter: number | undefined;

  constructor(problem: ProblemDetails, options?: { cause?: unknown }) {
    super(problem, options);
    this.retryAfter = problem.retryAfter;
  }
}

/** 429 `too-many-sessions`: the plan's concurrent-session limit is reached (sign-in refused). */
export class TooManySessionsError extends TooManyRequestsError {}

/** 429 `rate-limited`: too many requests; retried only when the client opted in. */
export class RateLimitedError extends TooManyRequestsError {}

/** 400, 415 or 422: the request was malformed or a value broke a rule (`errors` names the fields). */
export class ValidationError extends SecureFlowsError {
  /** The fields the server refused (422), if any. */
  readonly errors: readonly FieldProblem[];

  constructor(problem: ProblemDetails, options?: { cause?: unknown }) {
    super(problem, options);
    this.errors = problem.errors ?? [];
  }
}

/** The request did not reach the server, or its answer could not be read. */
export class NetworkError extends SecureFlowsError {}

/**
 * Signing in did not complete: the hosted login answered with an OAuth error (`error`, e.g.
 * `access_denied`), or the answer did not match a sign-in this browser started (state mismatch, a
 * mixed-up issuer). Start again with `login()`.
 */
export class LoginError extends SecureFlowsError {
  /** The OAuth `error` code when the hosted login sent one. */
  readonly error: string | undefined;

  constructor(problem: ProblemDetails & { error?: string | undefined }, options?: { cause?: unknown }) {
    super(problem, options);
    this.error = problem.error;
  }
}

/** A Session API call was made before a session token was obtained. */
export class NotAuthenticatedError extends SecureFlowsError {}

/** The error class of an answer. */
export function errorFor(problem: ProblemDetails): SecureFlowsError {
  const slug = problem.type.startsWith(PROBLEM_TYPE_PREFIX) ? problem.type.slice(PROBLEM_TYPE_PREFIX.length) : "";
  switch (problem.status) {
    case 410:
      // Only the server's own expiry: a 410 from anything else (a proxy) must not start a sign-in.
      return slug === "token-expired" ? new TokenExpiredError(problem) : new SecureFlowsError(problem);
    case 401:
      return new UnauthorizedError(problem);
    case 403:
      return new ForbiddenError(problem);
    case 413:
      return new ValueTooLargeError(problem);
    case 429:
      return slug === "too-many-sessions" ? new TooManySessionsError(problem) : new RateLimitedError(problem);
    case 400:
    case 415:
    case 422:
      return new ValidationError(problem);
    default:
      return new SecureFlowsError(problem);
  }
}
