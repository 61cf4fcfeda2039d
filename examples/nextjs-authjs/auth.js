// Auth.js (@auth/core) with a secureFlows workspace as a custom OpenID Connect provider.
//
// The workspace's hosted login signs users in (authorization code with PKCE, state and nonce); Auth.js
// checks the ID token (issuer, audience, nonce, expiry) and keeps its own session cookie. Register a
// server application of the workspace with the redirect URI <site>/api/auth/callback/secureflows:
//
//   secureflows app create --workspace $WS --name site --kind server \
//     --redirect-uri https://site.example.com/api/auth/callback/secureflows \
//     --post-logout-uri https://site.example.com/
//
// and set SECUREFLOWS_ISSUER (https://id.example.com/w/<workspace>), SECUREFLOWS_CLIENT_ID,
// SECUREFLOWS_CLIENT_SECRET, AUTH_SECRET (`openssl rand -base64 33`) and AUTH_URL (the site's
// public address, https://site.example.com).
import { Auth } from "@auth/core";

/**
 * The secureFlows provider: Auth.js finds every endpoint through the issuer's discovery document and
 * checks the ID token's claims (iss, aud, exp, nonce). It does not check the ID token's signature: it
 * relies on the token coming straight from the token endpoint over TLS (OpenID Connect Core §3.1.3.7),
 * so the issuer must be https — plain http only on a loopback address (development, tests).
 */
export function secureFlows({ issuer, clientId, clientSecret }) {
  const url = new URL(issuer);
  const loopback = ["127.0.0.1", "[::1]", "localhost"].includes(url.hostname);
  if (url.protocol !== "https:" && !(url.protocol === "http:" && loopback)) {
    throw new Error("SECUREFLOWS_ISSUER must be an https URL (http only on a loopback address)");
  }
  return {
    id: "secureflows",
    name: "secureFlows",
    type: "oidc",
    issuer,
    clientId,
    clientSecret,
    checks: ["pkce", "state", "nonce"],
    authorization: { params: { scope: "openid email profile" } },
    profile(claims) {
      return { id: claims.sub, email: claims.email ?? null, name: claims.name ?? null };
    },
  };
}

/** The Auth.js configuration of the site. */
export function authConfig(env = process.env) {
  // The site's own address comes from AUTH_URL, never from the request's Host or X-Forwarded-Host.
  if (!env.AUTH_URL) throw new Error("AUTH_URL (the site's public address) is required");
  return {
    basePath: "/api/auth",
    secret: env.AUTH_SECRET,
    // Safe with AUTH_URL: handleAuth puts every request at the site's configured address first.
    trustHost: true,
    providers: [
      secureFlows({
        issuer: env.SECUREFLOWS_ISSUER,
        clientId: env.SECUREFLOWS_CLIENT_ID,
        clientSecret: env.SECUREFLOWS_CLIENT_SECRET,
      }),
    ],
    callbacks: {
      // The secureFlows user id (the ID token's `sub`) on the session, for the site's own records.
      jwt({ token, profile }) {
        if (profile?.sub) token.secureflowsUser = profile.sub;
        return token;
      },
      session({ session, token }) {
        if (token.secureflowsUser) session.user.id = token.secureflowsUser;
        return session;
      },
    },
  };
}

/**
 * Handles /api/auth/* (a Fetch API Request in, a Response out): what the Next.js route exports. The
 * site's public address comes from AUTH_URL (behind a proxy, Next.js may see another host), so the
 * redirect URI Auth.js sends is exactly the registered one.
 */
export function handleAuth(request, env = process.env) {
  const config = authConfig(env);
  return Auth(atSiteUrl(request, env.AUTH_URL), config);
}

function atSiteUrl(request, siteUrl) {
  const url = new URL(request.url);
  return new Request(new URL(url.pathname + url.search, siteUrl), request);
}
