// Asks before a destructive action: a form with data-confirm="question" submits only when the person
// confirms. Without JavaScript the form submits as it is (every such action can be undone or redone:
// sign in again, set the factor up again).
(function () {
  "use strict";
  document.addEventListener("submit", function (event) {
    var form = event.target;
    var question = form && form.getAttribute && form.getAttribute("data-confirm");
    if (question && !window.confirm(question)) event.preventDefault();
  });
})();
