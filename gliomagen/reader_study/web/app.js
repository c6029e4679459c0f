/* GliomaGen reader study page. Plain script (no modules, no network): it runs from file:// in any
 * current browser. The panel list comes from panels.js (window.READER_STUDY); answers live in
 * localStorage under the kit id until the reader exports them as CSV or JSON.
 * The export format is read by gliomagen/reader_study/score.py: keep the two in step. */
(function () {
  "use strict";

  var FORMAT = "gliomagen-reader-study-answers";
  var CSV_COLUMNS = ["kit_id", "reader", "panel_id", "position", "answer", "rating", "comment", "seconds", "answered_at"];
  var STUDY = window.READER_STUDY;
  var $ = function (id) { return document.getElementById(id); };

  if (!STUDY || !Array.isArray(STUDY.panels) || !STUDY.panels.length) {
    $("load-error").hidden = false;
    return;
  }

  var PANELS = STUDY.panels;
  var STORE_KEY = "gliomagen-reader-study:" + STUDY.kit_id;
  var storageOk = true;
  var state = loadState() || freshState();
  var shownAt = null; // when the current panel was shown (for the time spent per panel)

  function freshState() {
    return { reader: "", order: [], index: 0, view: "start", answers: {}, started_at: "", exported_at: "" };
  }

  // ------------------------------------------------------------------------------------- storage
  function loadState() {
    try {
      var raw = window.localStorage.getItem(STORE_KEY);
      if (!raw) return null;
      var s = JSON.parse(raw);
      if (!s || !Array.isArray(s.order) || s.order.length !== PANELS.length) return null;
      return s;
    } catch (err) {
      storageOk = false;
      return null;
    }
  }

  function save() {
    try {
      window.localStorage.setItem(STORE_KEY, JSON.stringify(state));
    } catch (err) {
      storageOk = false;
    }
    $("storage-warning").hidden = storageOk;
  }

  // ------------------------------------------------------------------ per-reader panel order
  // Each reader gets the panels in an own order (seeded by kit and name), so that order effects such as
  // fatigue or learning do not fall on the same panels for everyone; the order is stored with the answers.
  function hashString(text) {
    var h = 2166136261;
    for (var i = 0; i < text.length; i++) {
      h ^= text.charCodeAt(i);
      h = Math.imul(h, 16777619) >>> 0;
    }
    return h >>> 0;
  }

  function mulberry32(seed) {
    return function () {
      seed = (seed + 0x6d2b79f5) >>> 0;
      var t = seed;
      t = Math.imul(t ^ (t >>> 15), t | 1);
      t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
      return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
    };
  }

  function readerOrder(reader) {
    var rand = mulberry32(hashString(STUDY.kit_id + "|" + reader.trim().toLowerCase()));
    var order = PANELS.map(function (_, i) { return i; });
    for (var i = order.length - 1; i > 0; i--) {
      var j = Math.floor(rand() * (i + 1));
      var tmp = order[i]; order[i] = order[j]; order[j] = tmp;
    }
    return order;
  }

  // ------------------------------------------------------------------------------------- answers
  function currentPanel() { return PANELS[state.order[state.index]]; }

  function entry(panelId) {
    if (!state.answers[panelId]) {
      state.answers[panelId] = { answer: "", rating: null, comment: "", seconds: 0, answered_at: "" };
    }
    return state.answers[panelId];
  }

  function isDone(panelId) {
    var a = state.answers[panelId];
    return !!(a && a.answer && a.rating);
  }

  function answeredCount() {
    return PANELS.filter(function (p) { return isDone(p.id); }).length;
  }

  function firstMissing() {
    for (var pos = 0; pos < state.order.length; pos++) {
      if (!isDone(PANELS[state.order[pos]].id)) return pos;
    }
    return -1;
  }

  function flushTime() {
    if (shownAt === null || state.view !== "study") return;
    var e = entry(currentPanel().id);
    e.seconds = Math.round((e.seconds + (performance.now() - shownAt) / 1000) * 10) / 10;
    shownAt = performance.now();
  }

  function touch(e) { e.answered_at = new Date().toISOString(); }

  function setAnswer(value) {
    var e = entry(currentPanel().id);
    e.answer = value;
    touch(e);
    save();
    renderControls();
  }

  function setRating(value) {
    var e = entry(currentPanel().id);
    e.rating = value;
    touch(e);
    save();
    renderControls();
  }

  // ------------------------------------------------------------------------------------- navigation
  function go(index) {
    flushTime();
    state.index = Math.max(0, Math.min(PANELS.length - 1, index));
    state.view = "study";
    save();
    render();
  }

  function next() {
    var e = state.answers[currentPanel().id];
    if (!isDone(currentPanel().id)) {
      status(!e || !e.answer ? "Choose real or synthetic (R / S) before moving on." :
        "Give a realism rating (1-5) before moving on.");
      return;
    }
    if (state.index >= PANELS.length - 1) {
      finish();
    } else {
      go(state.index + 1);
    }
  }

  function back() {
    if (state.view === "done") { go(state.index); return; }
    if (state.index > 0) go(state.index - 1);
  }

  function finish() {
    flushTime();
    state.view = "done";
    save();
    render();
  }

  function start(reader) {
    state = freshState();
    state.reader = reader;
    state.order = readerOrder(reader);
    state.started_at = new Date().toISOString();
    state.view = "study";
    save();
    render();
  }

  // ------------------------------------------------------------------------------------- export
  function payload() {
    flushTime();
    return {
      format: FORMAT,
      version: 1,
      kit_id: STUDY.kit_id,
      reader: state.reader,
      exported_at: new Date().toISOString(),
      complete: answeredCount() === PANELS.length,
      n_panels: PANELS.length,
      answers: state.order.map(function (idx, pos) {
        var id = PANELS[idx].id;
        var a = state.answers[id] || {};
        return {
          panel_id: id,
          position: pos + 1,
          answer: a.answer || "",
          rating: a.rating || null,
          comment: a.comment || "",
          seconds: a.seconds || 0,
          answered_at: a.answered_at || ""
        };
      })
    };
  }

  function csvCell(value) {
    var text = value === null || value === undefined ? "" : String(value);
    return '"' + text.replace(/"/g, '""') + '"';
  }

  function toCsv(p) {
    var lines = [CSV_COLUMNS.map(csvCell).join(",")];
    p.answers.forEach(function (a) {
      var row = { kit_id: p.kit_id, reader: p.reader };
      Object.keys(a).forEach(function (k) { row[k] = a[k]; });
      lines.push(CSV_COLUMNS.map(function (c) { return csvCell(row[c]); }).join(","));
    });
    return lines.join("\r\n") + "\r\n";
  }

  function download(kind) {
    var p = payload();
    var text = kind === "json" ? JSON.stringify(p, null, 1) + "\n" : toCsv(p);
    var safe = state.reader.replace(/[^A-Za-z0-9_-]+/g, "_").replace(/^_+|_+$/g, "") || "reader";
    var name = "reader-study_" + STUDY.kit_id + "_" + safe + "." + kind;
    var blob = new Blob([text], { type: kind === "json" ? "application/json" : "text/csv" });
    var url = URL.createObjectURL(blob);
    var a = document.createElement("a");
    a.href = url;
    a.download = name;
    document.body.appendChild(a);
    a.click();
    a.remove();
    setTimeout(function () { URL.revokeObjectURL(url); }, 30000);
    state.exported_at = p.exported_at;
    save();
    $("export-status").textContent = "Saved " + name + " (look in your Downloads folder)" +
      (p.complete ? "." : " - note: " + (PANELS.length - answeredCount()) + " panel(s) still unanswered.");
  }

  // ------------------------------------------------------------------------------------- rendering
  function status(text) { $("status").textContent = text || ""; }

  function renderProgress() {
    var done = answeredCount();
    $("progress").hidden = state.view === "start";
    $("progress-text").textContent = done + " / " + PANELS.length + " answered";
    $("progress-fill").style.width = (100 * done / PANELS.length) + "%";
  }

  function renderPanel() {
    var panel = currentPanel();
    $("panel-number").textContent = "Panel " + (state.index + 1) + " of " + PANELS.length;
    $("panel-kind").textContent = panel.label;
    var box = $("images");
    box.textContent = "";
    box.className = "images " + (panel.images.length > 1 ? "grid4" : "single");
    panel.images.forEach(function (im) {
      var fig = document.createElement("figure");
      var img = document.createElement("img");
      img.src = im.src;
      img.alt = im.label + " slice";
      img.draggable = false;
      var cap = document.createElement("figcaption");
      cap.textContent = im.label;
      fig.appendChild(img);
      fig.appendChild(cap);
      box.appendChild(fig);
    });
    $("comment").value = (state.answers[panel.id] || {}).comment || "";
    shownAt = performance.now();
    status("");
    renderControls();
  }

  function renderControls() {
    var panel = currentPanel();
    var a = state.answers[panel.id] || {};
    document.querySelectorAll("button.choice").forEach(function (b) {
      b.setAttribute("aria-pressed", String(b.dataset.answer === a.answer));
    });
    document.querySelectorAll("button.rating").forEach(function (b) {
      b.setAttribute("aria-pressed", String(Number(b.dataset.rating) === a.rating));
    });
    $("back-button").disabled = state.index === 0;
    $("next-button").innerHTML = state.index === PANELS.length - 1 ? "Finish <kbd>&rarr;</kbd>" : "Next <kbd>&rarr;</kbd>";
    renderDots();
    renderProgress();
  }

  function renderDots() {
    var box = $("dots");
    if (box.children.length !== PANELS.length) {
      box.textContent = "";
      state.order.forEach(function (_, pos) {
        var b = document.createElement("button");
        b.type = "button";
        b.title = "Panel " + (pos + 1);
        b.addEventListener("click", function () { go(pos); });
        box.appendChild(b);
      });
    }
    Array.prototype.forEach.call(box.children, function (b, pos) {
      var a = state.answers[PANELS[state.order[pos]].id];
      b.className = (isDone(PANELS[state.order[pos]].id) ? "done" : a && (a.answer || a.rating) ? "partial" : "") +
        (pos === state.index && state.view === "study" ? " current" : "");
    });
  }

  function renderDone() {
    var done = answeredCount();
    var missing = PANELS.length - done;
    $("done-title").textContent = missing ? "Almost there" : "Thank you, " + state.reader + "!";
    $("done-text").textContent = missing
      ? "You answered " + done + " of " + PANELS.length + " panels; " + missing +
        " still need an answer and a rating. You can export now and continue later, but the organiser needs a complete file."
      : "You answered all " + PANELS.length + " panels. Export your answers and send the file to the organiser.";
    $("first-missing-button").hidden = !missing;
  }

  function render() {
    $("title").textContent = STUDY.title || "Reader study";
    document.title = STUDY.title || "Reader study";
    $("start-view").hidden = state.view !== "start";
    $("study-view").hidden = state.view !== "study";
    $("done-view").hidden = state.view !== "done";
    $("storage-warning").hidden = storageOk;
    if (state.view === "start") {
      $("n-panels").textContent = PANELS.length;
      $("convention").textContent = "Orientation: " + (STUDY.convention || "") + "; anterior is at the top.";
      $("reader-input").value = state.reader || "";
    } else if (state.view === "study") {
      renderPanel();
    } else {
      renderDone();
    }
    renderProgress();
  }

  function toggleHelp(show) {
    var help = $("help");
    help.hidden = show === undefined ? !help.hidden : !show;
  }

  // ------------------------------------------------------------------------------------- events
  function onKey(ev) {
    var t = ev.target;
    var typing = t && (t.tagName === "TEXTAREA" || t.tagName === "INPUT");
    if (ev.key === "Escape") {
      if (typing) t.blur();
      toggleHelp(false);
      return;
    }
    if (typing || ev.ctrlKey || ev.metaKey || ev.altKey) return;
    if (ev.key === "?") { toggleHelp(); ev.preventDefault(); return; }
    if (state.view === "done" && (ev.key === "ArrowLeft" || ev.key === "b" || ev.key === "B")) { back(); return; }
    if (state.view !== "study") return;
    var key = ev.key.length === 1 ? ev.key.toLowerCase() : ev.key;
    var handled = true;
    if (key === "r") setAnswer("real");
    else if (key === "s") setAnswer("synthetic");
    else if (key >= "1" && key <= "5" && key.length === 1) setRating(Number(key));
    else if (key === "ArrowRight" || key === "Enter" || key === "n") next();
    else if (key === "ArrowLeft" || key === "b" || key === "p") back();
    else if (key === "c") $("comment").focus();
    else handled = false;
    if (handled) ev.preventDefault();
  }

  function bind() {
    $("start-form").addEventListener("submit", function (ev) {
      ev.preventDefault();
      var reader = $("reader-input").value.trim();
      if (!reader) { $("reader-input").focus(); return; }
      start(reader);
    });
    document.querySelectorAll("button.choice").forEach(function (b) {
      b.addEventListener("click", function () { setAnswer(b.dataset.answer); });
    });
    document.querySelectorAll("button.rating").forEach(function (b) {
      b.addEventListener("click", function () { setRating(Number(b.dataset.rating)); });
    });
    $("comment").addEventListener("input", function () {
      var e = entry(currentPanel().id);
      e.comment = $("comment").value;
      save();
    });
    $("next-button").addEventListener("click", next);
    $("back-button").addEventListener("click", back);
    $("finish-button").addEventListener("click", finish);
    $("export-csv").addEventListener("click", function () { download("csv"); });
    $("export-json").addEventListener("click", function () { download("json"); });
    $("review-button").addEventListener("click", function () { go(0); });
    $("first-missing-button").addEventListener("click", function () {
      var pos = firstMissing();
      go(pos < 0 ? 0 : pos);
    });
    $("reset-button").addEventListener("click", function () {
      if (!window.confirm("Clear all answers of " + state.reader + " from this browser? Export them first.")) return;
      try { window.localStorage.removeItem(STORE_KEY); } catch (err) { /* nothing stored */ }
      state = freshState();
      render();
    });
    $("help-button").addEventListener("click", function () { toggleHelp(); });
    $("help-close").addEventListener("click", function () { toggleHelp(false); });
    document.addEventListener("keydown", onKey);
    document.addEventListener("visibilitychange", function () {
      // time spent with the page hidden is not reading time
      if (document.hidden) { flushTime(); save(); shownAt = null; } else if (state.view === "study") { shownAt = performance.now(); }
    });
    window.addEventListener("pagehide", function () { flushTime(); save(); });
  }

  bind();
  render();
})();
