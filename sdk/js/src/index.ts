/**
 * secureflows-js: the client of a secureFlows workspace for browser applications (and Node.js), and
 * session-token verification for back ends.
 *
 * ```ts
 * import { createClient } from "secureflows-js";
 * const sf = createClient({ issuer, clientId, redirectUri: location.origin + "/callback" });
 * if (location.pathname === "/callback") await sf.handleRedirectCallback();
 * if (!(await sf.isAuthenticated())) await sf.login();
 * await sf.set("profile.theme", { theme: "dark" });
 * ```
 */

export { createClient } from "./client.js";
export type {
  CallbackResult,
  ClientOptions,
  LoginOptions,
  SecureFlowsClient,
  SetOptions,
  SetResult,
  ValueInfo,
} from "./client.js";
export type { JsonValue, VaultValue } from "./values.js";
export type { Fetch, RetryOptions } from "./http.js";
export { SESSION_TOKEN_TYPE, verifySessionToken } from "./verify.js";
export type { SessionTokenClaims, VerifyOptions } from "./verify.js";
export {
  ForbiddenError,
  LoginError,
  NetworkError,
  NotAuthenticatedError,
  PROBLEM_TYPE_PREFIX,
  RateLimitedError,
  SecureFlowsError,
  TokenExpiredError,
  TooManyRequestsError,
  TooManySessionsError,
  UnauthorizedError,
  ValidationError,
  ValueTooLargeError,
} from "./errors.js";
export type { FieldProblem, ProblemDetails } from "./errors.js";
