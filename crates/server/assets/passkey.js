// Passkey ceremonies (WebAuthn) for the hosted pages. A form marked data-passkey="sign_in",
// "second_factor" or "register" stays hidden unless the browser supports WebAuthn. Its button asks the
// server for options (the server keeps the ceremony's state), lets the browser create or use a
// credential, puts the answer into the form's "credential" field and submits the form, so that the
// result is an ordinary page or redirect. Nothing secret is kept here.
//
// On the sign-in page the passkeys also appear in the browser's autofill (conditional mediation): the
// e-mail field says autocomplete="username webauthn", and a conditional request waits for the person
// to pick a passkey from its suggestions. The button stays for browsers without it; pressing it ends the
// waiting request first (a browser runs one request at a time).
(function () {
  "use strict";
  if (!window.PublicKeyCredential || !navigator.credentials) return;

  function toBytes(b64url) {
    var b64 = b64url.replace(/-/g, "+").replace(/_/g, "/");
    while (b64.length % 4) b64 += "=";
    var raw = atob(b64);
    var bytes = new Uint8Array(raw.length);
    for (var i = 0; i < raw.length; i++) bytes[i] = raw.charCodeAt(i);
    return bytes.buffer;
  }

  function toB64url(buffer) {
    var bytes = new Uint8Array(buffer);
    var raw = "";
    for (var i = 0; i < bytes.length; i++) raw += String.fromCharCode(bytes[i]);
    return btoa(raw).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }

  function decodeList(list) {
    return (list || []).map(function (c) {
      var copy = Object.assign({}, c);
      copy.id = toBytes(c.id);
      return copy;
    });
  }

  function creationOptions(options) {
    var pk = Object.assign({}, options.publicKey);
    pk.challenge = toBytes(pk.challenge);
    pk.user = Object.assign({}, pk.user, { id: toBytes(pk.user.id) });
    pk.excludeCredentials = decodeList(pk.excludeCredentials);
    return { publicKey: pk };
  }

  function requestOptions(options) {
    var pk = Object.assign({}, options.publicKey);
    pk.challenge = toBytes(pk.challenge);
    pk.allowCredentials = decodeList(pk.allowCredentials);
    return { publicKey: pk };
  }

  function registration(cred) {
    return {
      id: cred.id,
      rawId: toB64url(cred.rawId),
      type: cred.type,
      response: {
        attestationObject: toB64url(cred.response.attestationObject),
        clientDataJSON: toB64url(cred.response.clientDataJSON)
      }
    };
  }

  function assertion(cred) {
    var r = cred.response;
    return {
      id: cred.id,
      rawId: toB64url(cred.rawId),
      type: cred.type,
      response: {
        authenticatorData: toB64url(r.authenticatorData),
        clientDataJSON: toB64url(r.clientDataJSON),
        signature: toB64url(r.signature),
        userHandle: r.userHandle ? toB64url(r.userHandle) : null
      }
    };
  }

  // The ceremony's options from the server.
  // A form marked data-options-send="form" (the console's first run) sends all its fields.
  function fetchOptions(form, purpose) {
    var body = form.getAttribute("data-options-send") === "form"
      ? new URLSearchParams(new FormData(form))
      : new URLSearchParams();
    body.set("csrf", form.elements.csrf.value);
    body.set("purpose", purpose);
    return fetch(form.getAttribute("data-options"), {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/x-www-form-urlencoded" },
      body: body.toString()
    }).then(function (response) {
      return response.json().then(function (json) {
        if (!response.ok) throw new Error(json.error || "The passkey request failed.");
        return json;
      });
    });
  }

  // The waiting autofill request, if any.
  var waiting = null;

  function offerInAutofill(form) {
    var field = document.querySelector("input[autocomplete~=webauthn]");
    if (!field || !PublicKeyCredential.isConditionalMediationAvailable) return;
    PublicKeyCredential.isConditionalMediationAvailable().then(function (available) {
      if (!available) return;
      var controller = new AbortController();
      waiting = controller;
      return fetchOptions(form, "sign_in")
        .then(function (options) {
          var request = requestOptions(options);
          request.mediation = "conditional";
          request.signal = controller.signal;
          form.setAttribute("data-autofill", "waiting");
          return navigator.credentials.get(request);
        })
        .then(function (cred) {
          if (!cred) return;
          form.elements.credential.value = JSON.stringify(assertion(cred));
          form.submit();
        });
    }).catch(function () {
      // Ended by the button, or the browser declined: the button remains.
      form.removeAttribute("data-autofill");
    });
  }

  function run(form, button) {
    var purpose = form.getAttribute("data-passkey");
    if (waiting) {
      waiting.abort();
      waiting = null;
    }
    var error = form.querySelector("[data-passkey-error]");
    var show = function (message) {
      button.disabled = false;
      if (error) {
        error.textContent = message;
        error.hidden = false;
      }
    };
    button.disabled = true;
    if (error) error.hidden = true;
    fetchOptions(form, purpose)
      .then(function (options) {
        if (purpose === "register" || purpose === "enrol") {
          return navigator.credentials.create(creationOptions(options)).then(registration);
        }
        return navigator.credentials.get(requestOptions(options)).then(assertion);
      })
      .then(function (answer) {
        form.elements.credential.value = JSON.stringify(answer);
        form.submit();
      })
      .catch(function (e) {
        if (e && e.name === "NotAllowedError") {
          show("The passkey request was cancelled or timed out.");
        } else {
          show((e && e.message) || "The passkey request failed.");
        }
      });
  }

  var forms = document.querySelectorAll("form[data-passkey]");
  for (var i = 0; i < forms.length; i++) {
    (function (form) {
      var button = form.querySelector("button[type=button]");
      if (!button) return;
      form.hidden = false;
      button.addEventListener("click", function () {
        run(form, button);
      });
      if (form.getAttribute("data-passkey") === "sign_in") offerInAutofill(form);
    })(forms[i]);
  }
})();
