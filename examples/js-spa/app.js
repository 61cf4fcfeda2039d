// The example application: sign in through the hosted login, keep a note in the vault, and carry on
// when the session token expires (the SDK signs in again and comes back here).
import { createClient, SecureFlowsError } from "/sdk/index.js";

const $ = (id) => document.getElementById(id);
const config = await (await fetch("/config.json")).json();

const sf = createClient({
  issuer: config.issuer,
  clientId: config.clientId,
  redirectUri: `${location.origin}/callback`,
  postLogoutRedirectUri: `${location.origin}/`,
});

function show(error) {
  $("error").textContent = error instanceof SecureFlowsError ? `${error.title}${error.detail ? `: ${error.detail}` : ""}` : String(error);
}

async function load() {
  const note = await sf.get("note");
  $("saved").textContent = note === undefined ? "(nothing yet)" : note.text;
  if (note !== undefined && $("note").value === "") $("note").value = note.text;
}

async function render() {
  const signedIn = await sf.isAuthenticated();
  $("status").textContent = signedIn ? "Signed in." : "Not signed in.";
  $("signed-out-actions").hidden = signedIn;
  $("notes").hidden = !signedIn;
  if (signedIn) await load();
}

$("sign-in").addEventListener("click", () => sf.login().catch(show));
$("sign-out").addEventListener("click", () => sf.logout().catch(show));
$("load").addEventListener("click", () => load().catch(show));
$("note-form").addEventListener("submit", (event) => {
  event.preventDefault();
  sf.set("note", { text: $("note").value })
    .then(load)
    .catch(show);
});

try {
  if (location.pathname === "/callback") await sf.handleRedirectCallback();
  await render();
} catch (error) {
  show(error);
  $("status").textContent = "Not signed in.";
  $("signed-out-actions").hidden = false;
}
