/* CTC Monitor page behaviour: Plotly figures, cell thumbnails, the upload progress bar.
   No inline scripts (the production CSP allows scripts from this origin only). */
(function () {
  "use strict";

  // --- Plotly figures: <div data-figure="ID"> + <script type="application/json" id="ID"> ---
  // Privacy: nothing may offer to send patient data to Plotly's cloud ("Share chart" /
  // "Edit in Chart Studio"), and no link out to plot.ly. Keyboard users: only the buttons
  // people use (zoom, reset the axes, download a PNG) remain in the modebar, shown on hover.
  var CLOUD_BUTTONS = ["sendDataToCloud", "sendChartToCloud", "editInChartStudio"];
  var REMOVED_BUTTONS = CLOUD_BUTTONS.concat([
    "lasso2d", "select2d", "pan2d", "zoomIn2d", "zoomOut2d", "autoScale2d",
    "hoverClosestCartesian", "hoverCompareCartesian", "toggleSpikelines", "toggleHover",
    "hoverClosestGl2d", "hoverClosestPie", "resetViews", "resetViewMapbox"
  ]);

  function plotConfig() {
    return {
      responsive: true,
      displaylogo: false,
      displayModeBar: "hover",
      showLink: false,
      showSendToCloud: false,
      showEditInChartStudio: false,
      plotlyServerURL: "",
      linkText: "",
      modeBarButtonsToRemove: REMOVED_BUTTONS.slice(),
      toImageButtonOptions: { format: "png", filename: "ctc-monitor-chart" }
    };
  }
  window.ctcPlotConfig = plotConfig;

  function drawFigures() {
    if (!window.Plotly) return;
    document.querySelectorAll("[data-figure]").forEach(function (el) {
      var src = document.getElementById(el.dataset.figure);
      if (!src) return;
      var fig = JSON.parse(src.textContent);
      var config = plotConfig();
      if (el.dataset.static) config.staticPlot = false;
      Plotly.newPlot(el, fig.data, fig.layout, config).then(function () {
        el.dataset.ready = "1";
      });
      // A point whose customdata starts with a URL opens it (draws on the timeline, the swimmer plot).
      el.on("plotly_click", function (ev) {
        var pt = ev && ev.points && ev.points[0];
        if (!pt || pt.customdata === undefined) return;
        var target = Array.isArray(pt.customdata) ? pt.customdata[0] : pt.customdata;
        if (typeof target === "string" && target.charAt(0) === "/") window.location.assign(target);
        else if (typeof target === "number") {
          var card = document.getElementById("cell-" + target);
          if (card) { card.scrollIntoView({ behavior: "smooth", block: "center" }); card.focus && card.focus(); }
        }
      });
    });
  }

  // --- Selects that apply at once when picked with the mouse (or Enter) ---
  // WCAG 3.2.2 (On Input): arrowing through a closed select fires "change" on every step;
  // a keyboard change therefore waits for Enter or the form's Apply button.
  var NAV_KEYS = ["ArrowUp", "ArrowDown", "ArrowLeft", "ArrowRight", "Home", "End", "PageUp", "PageDown"];

  function submitForm(form) {
    var page = form.querySelector("input[name=page]");
    if (page) page.remove();
    form.submit();
  }

  function syncEnabled(sel) {
    var target = sel.dataset.enables && document.getElementById(sel.dataset.enables);
    if (!target) return;
    var on = sel.value === sel.dataset.enablesValue;
    target.disabled = !on;
    if (on) target.removeAttribute("aria-describedby");
  }

  function autosubmit() {
    document.querySelectorAll("select[data-autosubmit]").forEach(function (sel) {
      var keyed = false;
      sel.addEventListener("keydown", function (ev) {
        if (ev.key === "Enter") { ev.preventDefault(); submitForm(sel.form); return; }
        if (NAV_KEYS.indexOf(ev.key) >= 0 || (ev.key && ev.key.length === 1 && ev.key !== " ")) keyed = true;
      });
      sel.addEventListener("pointerdown", function () { keyed = false; });
      sel.addEventListener("change", function () {
        syncEnabled(sel);
        if (keyed) { keyed = false; sel.form.classList.add("pending"); return; }
        submitForm(sel.form);
      });
      syncEnabled(sel);
    });
    document.querySelectorAll("[data-print]").forEach(function (btn) {
      btn.addEventListener("click", function () { window.print(); });
    });
  }

  // --- Cell thumbnails: false colour composed from the PNG strip (one grey tile per channel) ---
  // data-channels names every tile of the strip; data-missing the tiles of channels the upload did not
  // record (a 3-channel upload's AF, zeros in the model's input): left out of the colour and the toggles.
  var COLOURS = {
    DAPI: [60, 110, 255], HOECHST: [60, 110, 255],
    CK: [40, 230, 80], PANCK: [40, 230, 80], EPCAM: [40, 230, 80],
    CD45: [255, 60, 50],
    AF: [160, 160, 160]
  };
  var EXTRA = [[240, 60, 240], [250, 210, 40], [40, 220, 230], [255, 150, 40]];
  var state = { off: {}, heat: false };

  function colourOf(name, i) {
    var key = (name || "").toUpperCase().replace(/[^A-Z0-9]/g, "");
    return COLOURS[key] || EXTRA[i % EXTRA.length];
  }

  function loadImage(src) {
    return new Promise(function (resolve, reject) {
      if (!src) { resolve(null); return; }
      var img = new Image();
      img.onload = function () { resolve(img); };
      img.onerror = reject;
      img.src = src;
    });
  }

  function pixels(img) {
    var c = document.createElement("canvas");
    c.width = img.naturalWidth; c.height = img.naturalHeight;
    var ctx = c.getContext("2d");
    ctx.drawImage(img, 0, 0);
    return ctx.getImageData(0, 0, c.width, c.height).data;
  }

  function render(canvas) {
    var cache = canvas._cells;
    if (!cache) return;
    var names = cache.names, n = names.length, w = cache.w, h = cache.h, strip = cache.strip;
    canvas.width = w; canvas.height = h;
    var ctx = canvas.getContext("2d");
    var out = ctx.createImageData(w, h);
    var stripW = w * n;
    for (var y = 0; y < h; y++) {
      for (var x = 0; x < w; x++) {
        var r = 0, g = 0, b = 0;
        for (var c = 0; c < n; c++) {
          if (cache.missing[c] || state.off[names[c].toUpperCase()]) continue;
          var v = strip[(y * stripW + c * w + x) * 4] / 255;
          var col = cache.colours[c];
          r += v * col[0]; g += v * col[1]; b += v * col[2];
        }
        var o = (y * w + x) * 4;
        if (state.heat && cache.heat) {
          var hv = cache.heat[(y * w + x) * 4] / 255;
          var a = 0.65 * hv;
          r = r * (1 - a) + 255 * a; g = g * (1 - a) + 200 * hv * a; b = b * (1 - a);
        }
        out.data[o] = Math.min(255, r); out.data[o + 1] = Math.min(255, g); out.data[o + 2] = Math.min(255, b);
        out.data[o + 3] = 255;
      }
    }
    ctx.putImageData(out, 0, 0);
  }

  function setupThumbnails() {
    var canvases = Array.prototype.slice.call(document.querySelectorAll("canvas[data-strip]"));
    var seen = [];
    canvases.forEach(function (canvas) {
      var names = (canvas.dataset.channels || "").split(",").filter(Boolean);
      var missing = (canvas.dataset.missing || "").split(",").filter(Boolean);
      names.forEach(function (nm) { if (seen.indexOf(nm) < 0 && missing.indexOf(nm) < 0) seen.push(nm); });
      Promise.all([loadImage(canvas.dataset.strip), loadImage(canvas.dataset.heat)]).then(function (imgs) {
        var strip = imgs[0], heat = imgs[1];
        if (!strip || !names.length) return;
        var w = Math.round(strip.naturalWidth / names.length), h = strip.naturalHeight;
        canvas._cells = {
          names: names, w: w, h: h, strip: pixels(strip),
          heat: heat && heat.naturalWidth === w ? pixels(heat) : null,
          colours: names.map(colourOf),
          missing: names.map(function (nm) { return missing.indexOf(nm) >= 0; })
        };
        render(canvas);
      }).catch(function () { canvas.setAttribute("aria-label", "Thumbnail could not be decoded"); });
    });
    document.querySelectorAll("[data-channel-list]").forEach(function (list) {
      seen.forEach(function (nm, i) {
        var label = document.createElement("label");
        label.className = "check";
        var box = document.createElement("input");
        box.type = "checkbox"; box.checked = true; box.dataset.channel = nm.toUpperCase();
        var sw = document.createElement("span");
        sw.className = "swatch"; sw.setAttribute("aria-hidden", "true");
        var col = colourOf(nm, i);
        sw.style.background = "rgb(" + col.join(",") + ")";
        label.appendChild(box); label.appendChild(sw); label.appendChild(document.createTextNode(nm));
        list.appendChild(label);
        box.addEventListener("change", function () {
          state.off[box.dataset.channel] = !box.checked;
          canvases.forEach(render);
        });
      });
    });
    document.querySelectorAll("[data-heatmap-toggle]").forEach(function (box) {
      box.addEventListener("change", function () { state.heat = box.checked; canvases.forEach(render); });
    });
  }

  // --- Upload: POST with fetch, then poll the status endpoint and move the bar ---
  function setupUpload() {
    var form = document.querySelector("form[data-upload-form]");
    var box = document.getElementById("upload-progress");
    var errorBox = document.getElementById("upload-error");
    if (!box) return;
    var bar = document.getElementById("upload-bar");
    var text = box.querySelector("[data-progress-text]");
    var pct = box.querySelector("[data-progress-pct]");

    function showError(msg) {
      errorBox.textContent = msg;
      errorBox.hidden = false;
    }

    function poll(url) {
      box.hidden = false;
      fetch(url, { headers: { Accept: "application/json" }, credentials: "same-origin" })
        .then(function (r) { return r.json(); })
        .then(function (s) {
          bar.value = s.progress;
          pct.textContent = s.progress + "%";
          text.textContent = s.status_label + (s.stage && s.status === "running" ? ": " + s.stage : "") + "…";
          box.dataset.status = s.status;
          if (s.status === "done") {
            text.textContent = "Done: " + (s.events || 0) + " cells analysed. Loading results…";
            bar.value = 100; pct.textContent = "100%";
            setTimeout(function () { window.location.assign(s.draw_url + "#gallery"); window.location.reload(); }, 600);
          } else if (s.status === "failed") {
            box.hidden = true;
            showError("The analysis failed: " + (s.error || "unknown error") + " Check the files and channel names, then upload again.");
            if (form) form.querySelector("button[type=submit]").disabled = false;
          } else {
            setTimeout(function () { poll(url); }, 800);
          }
        })
        .catch(function () { setTimeout(function () { poll(url); }, 2000); });
    }

    if (box.dataset.statusUrl) poll(box.dataset.statusUrl);
    if (!form) return;
    form.addEventListener("submit", function (ev) {
      ev.preventDefault();
      errorBox.hidden = true;
      var button = form.querySelector("button[type=submit]");
      button.disabled = true;
      box.hidden = false; bar.value = 0; pct.textContent = "0%"; text.textContent = "Uploading…";
      var token = form.querySelector("input[name=csrfmiddlewaretoken]").value;
      fetch(form.action, { method: "POST", body: new FormData(form), headers: { "X-CSRFToken": token, Accept: "application/json" }, credentials: "same-origin" })
        .then(function (r) { return r.json().then(function (body) { return { ok: r.ok, body: body }; }); })
        .then(function (res) {
          if (!res.ok) {
            box.hidden = true; button.disabled = false;
            showError(res.body.error || "The upload was not accepted.");
            if (res.body.duplicate) {  // issue 13: the same files again need an explicit confirmation
              var dup = form.querySelector("[data-duplicate-confirm]");
              if (dup) { dup.hidden = false; dup.querySelector("input").focus(); }
            }
            return;
          }
          text.textContent = "Queued…";
          poll(res.body.status_url);
        })
        .catch(function () {
          box.hidden = true; button.disabled = false;
          showError("The upload did not reach the server. Check the connection and try again.");
        });
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    autosubmit();
    drawFigures();
    setupThumbnails();
    setupUpload();
  });
})();
