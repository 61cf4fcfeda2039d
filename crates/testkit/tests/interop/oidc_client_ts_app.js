// A browser application of a secureFlows workspace written with oidc-client-ts (no secureFlows code):
// authorization code + PKCE, user info, renewal by a top-level redirect with prompt=none (browser
// applications get no refresh token), the vault with the access token, and RP-initiated sign-out.
const manager = new oidc.UserManager({
  authority: "__ISSUER__",
  client_id: "__CLIENT_ID__",
  redirect_uri: location.origin + "/cb",
  post_logout_redirect_uri: location.origin + "/bye",
  response_type: "code",
  scope: "openid email",
  loadUserInfo: true,
  automaticSilentRenew: false,
  monitorSession: false,
  userStore: new oidc.WebStorageStateStore({ store: window.sessionStorage }),
});
const say = (id, text) => { document.getElementById(id).textContent = text; };

function show(user) {
  say("email", user.profile.email || "");
  say("refresh", user.refresh_token ? "refresh token" : "no refresh token");
  say("token", user.access_token);
  say("status", "signed in");
}

(async () => {
  try {
    if (location.pathname === "/cb") {
      const user = await manager.signinRedirectCallback();
      history.replaceState(null, "", "/");
      show(user);
      return;
    }
    if (location.pathname === "/bye") {
      await manager.removeUser();
      say("status", "signed out");
      return;
    }
    const user = await manager.getUser();
    if (user) { show(user); } else { say("status", "not signed in"); }
  } catch (e) {
    say("status", "error: " + (e.error || e.message));
  }
})();

document.getElementById("sign-in").onclick = () => manager.signinRedirect();
document.getElementById("renew").onclick = () => manager.signinRedirect({ prompt: "none" });
document.getElementById("sign-out").onclick = () => manager.signoutRedirect();
document.getElementById("vault").onclick = async () => {
  const user = await manager.getUser();
  const response = await fetch("__BASE__/api/v1/sessions/set/greeting", {
    method: "POST",
    headers: { authorization: "Bearer " + user.access_token, "content-type": "text/plain" },
    body: "hello",
  });
  say("vault-result", "vault " + response.status);
};
