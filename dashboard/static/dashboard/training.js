/* Lab-model training progress on the Models page (issue 13): a static file, so the production CSP allows it. */
(function () {  // progress of running trainings: poll, then reload once to show the comparison
  document.querySelectorAll("[data-training]").forEach(function (box) {
    if (box.dataset.status !== "queued" && box.dataset.status !== "running") return;
    var bar = box.querySelector("[data-training-bar]"), stage = box.querySelector("[data-training-stage]");
    (function poll() {
      fetch(box.dataset.statusUrl, { credentials: "same-origin" }).then(function (r) { return r.json(); }).then(function (s) {
        if (bar) bar.value = s.progress;
        if (stage) stage.textContent = s.status + (s.stage ? ": " + s.stage : "");
        if (s.status === "done" || s.status === "failed") { window.location.reload(); return; }
        setTimeout(poll, 1500);
      }).catch(function () { setTimeout(poll, 3000); });
    })();
  });
})();
