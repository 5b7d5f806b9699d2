// The status page's auto-refresh: the page reloads every 60 s unless the
// reader pauses it (WCAG 2.2.2); the choice is kept for the next pages.
// Without JavaScript the page simply does not refresh.
(function () {
  "use strict";
  var button = document.getElementById("refresh-toggle");
  var state = document.getElementById("refresh-state");
  if (!button || !state) {
    return;
  }
  var key = "touchline.refresh.paused";
  var timer = null;
  function paused() {
    try {
      return window.localStorage.getItem(key) === "1";
    } catch (e) {
      return false;
    }
  }
  function show() {
    var p = paused();
    button.textContent = p ? button.dataset.resume : button.dataset.pause;
    state.textContent = p ? state.dataset.paused : state.dataset.running;
    if (timer !== null) {
      window.clearTimeout(timer);
      timer = null;
    }
    if (!p) {
      timer = window.setTimeout(function () {
        window.location.reload();
      }, 60000);
    }
  }
  button.hidden = false;
  button.addEventListener("click", function () {
    try {
      window.localStorage.setItem(key, paused() ? "0" : "1");
    } catch (e) {
      // No storage: the pause lasts for this page only.
    }
    show();
  });
  show();
})();
