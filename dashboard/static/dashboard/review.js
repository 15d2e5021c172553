/* Review grid (issue 13): keyboard first, fetch + update in place, focus stays with the reviewer.
   Arrows move; C / N set CTC / not CTC (an override asks a reason: its number, then Enter);
   Enter opens the cell large (each channel, heat map); F then Enter confirms the remaining calls
   (on a draw whose images differ from the validated ones F goes to the acknowledgement box first:
   Space ticks it, F again goes to the button); ? lists the keys. Without JavaScript each tile's own form posts and the page comes back to it. */
(function () {
  "use strict";
  var grid = document.querySelector("[data-review-grid]");
  if (!grid) return;
  document.documentElement.classList.add("js-review");
  var live = document.getElementById("review-live");
  var reasonDialog = document.getElementById("reason-dialog");
  var cellDialog = document.getElementById("cell-dialog");
  var keysDialog = document.getElementById("keys-dialog");
  var confirmForm = document.querySelector("[data-confirm-remaining]");
  var token = (document.querySelector("input[name=csrfmiddlewaretoken]") || {}).value || "";
  // images unlike the validated ones: confirming the remaining calls needs this box ticked (the server checks it too)
  var ack = confirmForm && confirmForm.querySelector("[data-acknowledge-shifted]");
  var ACK_FIRST = "These images differ from the validated ones: look at them, then tick the acknowledgement (Space) before confirming the remaining calls.";

  function tiles() { return Array.prototype.slice.call(grid.querySelectorAll("[data-cell]")); }
  function current() { return grid.querySelector("[data-cell][tabindex='0']") || tiles()[0]; }
  function say(text) { if (live) { live.textContent = ""; setTimeout(function () { live.textContent = text; }, 30); } }

  function focusTile(tile) {
    if (!tile) return;
    tiles().forEach(function (t) { t.tabIndex = -1; });
    tile.tabIndex = 0;
    tile.focus();
  }

  function columns() {
    var all = tiles();
    if (all.length < 2) return 1;
    var top = all[0].offsetTop, n = 0;
    while (n < all.length && all[n].offsetTop === top) n++;
    return Math.max(1, n);
  }

  function move(delta) {
    var all = tiles(), i = all.indexOf(current());
    var j = Math.min(all.length - 1, Math.max(0, i + delta));
    focusTile(all[j]);
  }

  function nextPending(from) {
    var all = tiles(), i = all.indexOf(from);
    for (var k = i + 1; k < all.length; k++) if (all[k].dataset.reviewed !== "1") return all[k];
    return all[Math.min(i + 1, all.length - 1)];
  }

  function post(url, data) {
    var body = new FormData();
    Object.keys(data).forEach(function (k) { body.append(k, data[k]); });
    return fetch(url, { method: "POST", body: body, credentials: "same-origin",
                        headers: { "X-CSRFToken": token, Accept: "application/json" } })
      .then(function (r) { return r.json().then(function (b) { return { ok: r.ok, body: b }; }); });
  }

  function label(call) { return call === "ctc" ? "CTC" : "Not CTC"; }

  function showSummary(s) {
    if (!s) return;
    var set = function (sel, v) { var el = document.querySelector(sel); if (el && v !== undefined) el.textContent = v; };
    set("[data-summary-status]", s.status_label);
    set("[data-summary-reviewed]", s.reviewed);
    set("[data-summary-analysed]", s.analysed);
    set("[data-summary-ctc]", s.ctc_count);
  }

  function updateRemaining() {
    if (!confirmForm) return;
    var ids = tiles().filter(function (t) { return t.dataset.reviewed !== "1"; }).map(function (t) { return t.dataset.id; });
    confirmForm.querySelector("[data-remaining]").value = ids.join(",");
    var count = confirmForm.querySelector("[data-remaining-count]");
    if (count) count.textContent = ids.length;
  }

  function markTile(tile, cell) {
    tile.dataset.reviewed = "1";
    tile.dataset.final = cell.final_call;
    tile.dataset.category = cell.category;
    tile.classList.add("tile-done");
    tile.classList.toggle("tile-override", !!cell.override);
    tile.classList.toggle("tile-ctc", cell.final_call === "ctc");
    var badge = tile.querySelector("[data-tile-call]");
    badge.textContent = label(cell.final_call);
    badge.className = "badge badge-" + cell.final_call;
    tile.querySelector("[data-tile-state]").textContent = cell.state_text || (cell.override ? "override" : "confirmed");
    tile.classList.remove("tile-adjudicate");
    tile.querySelector("[data-tile-category]").textContent = cell.category_label;
    var err = tile.querySelector(".tile-error"); if (err) err.remove();
    tile.setAttribute("aria-label", tile.dataset.source + ": " + label(cell.final_call) + ", " + cell.category_label + ", reviewed");
    updateRemaining();
  }

  function send(tile, call, reasonCode, reason, category) {
    var data = { call: call, reason_code: reasonCode || "", reason: reason || "", category: category || "" };
    if (tile.dataset.reviewed === "1") data.change = "1";
    return post(tile.dataset.url, data).then(function (res) {
      if (!res.ok) return res.body.error || "The review was not saved.";
      markTile(tile, res.body.cell);
      showSummary(res.body.summary);
      say(res.body.message);
      return null;
    });
  }

  // --- override: a reason from the short list (number keys), free text as "other" -------------
  var pending = null;
  function askReason(tile, call) {
    pending = { tile: tile, call: call };
    var form = reasonDialog.querySelector("form");
    form.reset();
    reasonDialog.querySelector("[data-reason-what]").textContent = tile.dataset.source + " → " + label(call);
    reasonDialog.querySelector("#reason-category").value = call === "ctc" ? "ctc" :
      (tile.dataset.category === "ctc" ? "leukocyte" : tile.dataset.category);
    var err = reasonDialog.querySelector("[data-reason-error]"); err.hidden = true;
    reasonDialog.showModal();
    reasonDialog.querySelector("input[type=radio]").focus();
  }
  if (reasonDialog) {
    var radios = function () { return Array.prototype.slice.call(reasonDialog.querySelectorAll("input[type=radio]")); };
    reasonDialog.addEventListener("keydown", function (ev) {
      if (ev.target.matches("input[type=text]")) return;
      var n = parseInt(ev.key, 10);
      if (n >= 1 && n <= radios().length) {
        ev.preventDefault();
        var r = radios()[n - 1]; r.checked = true; r.focus();
        if (r.value === "other") reasonDialog.querySelector("[data-reason-other]").focus();
      } else if (ev.key === "Enter" && !ev.target.matches("button, select")) {
        ev.preventDefault();
        reasonDialog.querySelector("[data-reason-ok]").click();
      }
    });
    reasonDialog.querySelector("form").addEventListener("submit", function (ev) {
      var submitter = ev.submitter;
      if (!pending || (submitter && submitter.value === "cancel")) { var t = pending && pending.tile; pending = null; if (t) setTimeout(function () { focusTile(t); }, 0); return; }
      ev.preventDefault();
      var form = ev.target, checked = form.querySelector("input[type=radio]:checked");
      var err = reasonDialog.querySelector("[data-reason-error]");
      var other = form.querySelector("[data-reason-other]").value.trim();
      if (!checked && !other) {
        err.textContent = "Choose a reason (press its number) or write one under “Other”: an override needs a reason.";
        err.hidden = false;
        reasonDialog.querySelector("input[type=radio]").focus();
        return;
      }
      var p = pending;
      send(p.tile, p.call, checked ? checked.value : "other", other, form.querySelector("#reason-category").value).then(function (msg) {
        if (msg) { err.textContent = msg; err.hidden = false; return; }
        pending = null;
        reasonDialog.close();
        focusTile(nextPending(p.tile));
      });
    });
    reasonDialog.addEventListener("cancel", function () { var t = pending && pending.tile; pending = null; if (t) setTimeout(function () { focusTile(t); }, 0); });
  }

  function review(tile, call) {
    if (!tile) return;
    if (grid.hasAttribute("data-readonly")) { say("Your role in this patient's care team does not review calls."); return; }
    if (call !== tile.dataset.call || (tile.dataset.reviewed === "1" && !tile.dataset.adjudicate)) { askReason(tile, call); return; }
    send(tile, call, "", "", "").then(function (msg) {
      if (msg) { say(msg); showTileError(tile, msg); return; }
      focusTile(nextPending(tile));
    });
  }

  function showTileError(tile, msg) {
    var p = tile.querySelector(".tile-error");
    if (!p) { p = document.createElement("p"); p.className = "tile-error"; p.setAttribute("role", "alert"); tile.appendChild(p); }
    p.textContent = msg;
  }

  // --- the cell large: each channel separately and the heat map ------------------------------
  function openCell(tile) {
    if (!tile || !cellDialog) return;
    var canvas = tile.querySelector("canvas");
    var names = (canvas.dataset.channels || "").split(",").filter(Boolean);
    var missing = (canvas.dataset.missing || "").split(",").filter(Boolean);
    var box = cellDialog.querySelector("[data-cell-channels]");
    box.innerHTML = "";
    cellDialog.querySelector("[data-cell-title]").textContent = tile.dataset.source + " · P(CTC) " + tile.dataset.prob + " · " + label(tile.dataset.final);
    var strip = new Image();
    strip.onload = function () {
      var w = Math.round(strip.naturalWidth / Math.max(1, names.length)), h = strip.naturalHeight;
      names.forEach(function (nm, i) {
        if (missing.indexOf(nm) >= 0) {
          // a channel the upload did not have: the model's input filled it with zeros, nothing to see
          var gap = document.createElement("figure"), note = document.createElement("div");
          note.className = "channel-missing"; note.textContent = nm + " not recorded";
          var gcap = document.createElement("figcaption"); gcap.textContent = nm + " not recorded";
          gap.appendChild(note); gap.appendChild(gcap); box.appendChild(gap);
          return;
        }
        var fig = document.createElement("figure"), c = document.createElement("canvas");
        c.width = w; c.height = h; c.className = "big-channel";
        c.getContext("2d").drawImage(strip, i * w, 0, w, h, 0, 0, w, h);
        c.setAttribute("role", "img"); c.setAttribute("aria-label", nm + " channel");
        var cap = document.createElement("figcaption"); cap.textContent = nm;
        fig.appendChild(c); fig.appendChild(cap); box.appendChild(fig);
      });
      if (canvas.dataset.heat) {
        var fig = document.createElement("figure"), img = document.createElement("img");
        img.src = canvas.dataset.heat; img.alt = "Heat map: where the image branch looked"; img.className = "big-channel";
        var cap = document.createElement("figcaption"); cap.textContent = "Heat map";
        fig.appendChild(img); fig.appendChild(cap); box.appendChild(fig);
      }
    };
    strip.src = canvas.dataset.strip;
    cellDialog.querySelector("[data-cell-category]").value = tile.dataset.category;
    cellDialog._tile = tile;
    cellDialog.showModal();
  }
  if (cellDialog) {
    cellDialog.addEventListener("close", function () {
      var tile = cellDialog._tile;
      if (cellDialog.returnValue === "category" && tile) {
        var cat = cellDialog.querySelector("[data-cell-category]").value;
        if (cat !== tile.dataset.category) {
          // A category correction keeps the call; on a reviewed cell it is a change (reason required).
          var call = tile.dataset.final;
          var needsReason = call !== tile.dataset.call || tile.dataset.reviewed === "1";
          if (needsReason) { askReason(tile, call); reasonDialog.querySelector("#reason-category").value = cat; return; }
          send(tile, call, "", "", cat).then(function (msg) { if (msg) showTileError(tile, msg); focusTile(tile); });
          return;
        }
      }
      if (tile) focusTile(tile);
    });
  }

  function anyOpen() { return document.querySelector("dialog[open]"); }

  grid.addEventListener("click", function (ev) {
    var tile = ev.target.closest("[data-cell]");
    if (tile && !ev.target.closest("a, details")) focusTile(tile);
  });

  document.addEventListener("keydown", function (ev) {
    if (anyOpen() || ev.ctrlKey || ev.metaKey || ev.altKey) return;
    var t = ev.target;
    if (t.matches && t.matches("input:not([type=checkbox]), textarea, select")) return;
    var inGrid = grid.contains(t);
    var key = ev.key;
    if (key === "?") { ev.preventDefault(); keysDialog.showModal(); return; }
    if ((key === "f" || key === "F") && confirmForm) { ev.preventDefault(); if (ack && !ack.checked) { ack.focus(); say(ACK_FIRST); } else { confirmForm.querySelector("button").focus(); } return; }
    if (!inGrid) return;
    var tile = t.closest("[data-cell]");
    if (key === "ArrowRight") { ev.preventDefault(); move(1); }
    else if (key === "ArrowLeft") { ev.preventDefault(); move(-1); }
    else if (key === "ArrowDown") { ev.preventDefault(); move(columns()); }
    else if (key === "ArrowUp") { ev.preventDefault(); move(-columns()); }
    else if (key === "Home") { ev.preventDefault(); focusTile(tiles()[0]); }
    else if (key === "End") { ev.preventDefault(); var a = tiles(); focusTile(a[a.length - 1]); }
    else if (key === "c" || key === "C") { ev.preventDefault(); review(tile, "ctc"); }
    else if (key === "n" || key === "N") { ev.preventDefault(); review(tile, "non_ctc"); }
    else if (key === "Enter" && tile === t) { ev.preventDefault(); openCell(tile); }
  });

  document.querySelectorAll("[data-review-toolbar] [data-act]").forEach(function (btn) {
    btn.addEventListener("click", function () {
      var act = btn.dataset.act, tile = current();
      if (act === "keys") keysDialog.showModal();
      else if (act === "open") openCell(tile);
      else review(tile, act);
    });
  });

  if (confirmForm) {
    confirmForm.addEventListener("submit", function (ev) {
      ev.preventDefault();
      if (ack && !ack.checked) { ack.focus(); say(ACK_FIRST); return; }
      updateRemaining();
      var btn = confirmForm.querySelector("button");
      btn.disabled = true;
      var data = { cells: confirmForm.querySelector("[data-remaining]").value };
      if (ack) data.acknowledge_shifted = "1";
      post(confirmForm.action, data).then(function (res) {
        btn.disabled = false;
        if (!res.ok) {
          if (res.body.code === "domain_shifted" && !ack) {
            // a shifted upload finished after this page was drawn: reload to show its warning and the box
            say((res.body.error || "Not saved.") + " Reloading to show these images' warning.");
            setTimeout(function () { location.reload(); }, 1500);
            return;
          }
          say(res.body.error || "Not saved.");
          return;
        }
        var done = {}; res.body.confirmed.forEach(function (id) { done[id] = true; });
        tiles().forEach(function (tile) {
          if (done[tile.dataset.id]) {
            markTile(tile, { final_call: tile.dataset.call, override: false, category: tile.dataset.category,
                             category_label: tile.querySelector("[data-tile-category]").textContent });
          }
        });
        showSummary(res.body.summary);
        say(res.body.message);
        var status = document.querySelector("[data-summary-status]");
        if (status) { status.tabIndex = -1; status.focus(); }
      });
    });
  }

  // Review mode starts on the first cell (the most uncertain) unless the URL names one.
  var target = location.hash && document.querySelector(location.hash + "[data-cell]");
  if (document.body.classList.contains("review-mode") || target) focusTile(target || tiles()[0]);
})();
