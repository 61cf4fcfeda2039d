// Live password strength estimate for the forms that choose a password (sign-up, reset, invitation,
// the account page). Advisory only: the server enforces the
// workspace's policy and the breached-password check. Runs locally; the password never leaves the page
// except in the form submission itself.
(function () {
  "use strict";
  var input = document.querySelector("input[data-strength]") || document.getElementById("password");
  var meter = document.getElementById("strength");
  var text = document.getElementById("strength-text");
  var email = document.getElementById("email");
  if (!input || !meter || !text) return;
  var common = ["password", "123456", "qwerty", "letmein", "welcome", "admin", "iloveyou", "monkey", "dragon"];
  var labels = ["Very weak", "Weak", "Fair", "Strong", "Very strong"];
  function estimate(pw) {
    if (!pw) return 0;
    var lower = pw.toLowerCase();
    for (var i = 0; i < common.length; i++) if (lower.indexOf(common[i]) !== -1) return 0;
    var local = email && email.value ? email.value.split("@")[0].toLowerCase() : "";
    if (local.length >= 4 && lower.indexOf(local) !== -1) return 0;
    var pool = 0;
    if (/[a-z]/.test(pw)) pool += 26;
    if (/[A-Z]/.test(pw)) pool += 26;
    if (/[0-9]/.test(pw)) pool += 10;
    if (/[^a-zA-Z0-9]/.test(pw)) pool += 33;
    var unique = new Set(pw.split("")).size;
    var bits = Math.log2(Math.max(pool, 2)) * Math.min(pw.length, unique * 2);
    if (bits < 28) return 0;
    if (bits < 36) return 1;
    if (bits < 60) return 2;
    if (bits < 80) return 3;
    return 4;
  }
  function update() {
    var score = estimate(input.value);
    meter.value = score;
    text.textContent = input.value ? "Strength: " + labels[score] : "";
    meter.setAttribute("data-score", String(score));
  }
  input.addEventListener("input", update);
  if (email) email.addEventListener("input", update);
})();
