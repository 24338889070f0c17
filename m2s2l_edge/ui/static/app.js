/* The web view of a running watch: camera tiles (live frame with the error map, score timeline, health,
 * threshold), the events list, the region editor. Data: GET /api/state once, then server-sent events from
 * /api/stream. Every text that comes from the watch is set with textContent, never as HTML. */
(function () {
  "use strict";

  const WINDOW_S = 60; // seconds of score timeline shown
  const MAX_POINTS = 1500; // points kept per timeline
  const FRAME_EVERY_MS = 250; // at most 4 pictures a second per camera
  const CHART_EVERY_MS = 450; // timelines redrawn about twice a second
  const MAX_EVENTS = 200;

  const state = { cameras: new Map(), events: new Map(), filter: "all", config: null, media: false, run: {} };

  // ------------------------------------------------------------------ helpers

  const $ = (sel, root) => (root || document).querySelector(sel);
  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }
  function svgEl(tag, attrs) {
    const e = document.createElementNS("http://www.w3.org/2000/svg", tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
    return e;
  }
  const fmt = (v, d) => (v === null || v === undefined || Number.isNaN(v) ? "–" : Number(v).toFixed(d === undefined ? 2 : d));
  const enc = encodeURIComponent;
  function clock(iso) {
    if (!iso) return "";
    const d = new Date(iso);
    return isNaN(d) ? iso : d.toLocaleTimeString([], { hour12: false });
  }
  async function post(url, body) {
    const r = await fetch(url, { method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body) });
    let data = {};
    try { data = await r.json(); } catch (e) { data = { error: r.statusText }; }
    if (!r.ok) throw new Error(data.error || r.statusText);
    return data;
  }
  /* Write only what changed: a page left open for hours should cost the browser as little as the data allows. */
  function setText(node, text) {
    if (node.textContent !== text) node.textContent = text;
  }
  function setClass(node, cls) {
    if (node.className !== cls) node.className = cls;
  }
  function say(node, text, kind) {
    node.textContent = text || "";
    node.className = node.className.replace(/ ?(ok|bad)\b/g, "") + (kind ? " " + kind : "");
  }

  // ------------------------------------------------------------------ camera tiles

  function makeTile(info) {
    const node = $("#tile-template").content.firstElementChild.cloneNode(true);
    node.dataset.camera = info.id;
    node.id = "tile-" + info.id;
    $(".name", node).textContent = info.id;
    $("#cameras").append(node);
    const cam = {
      id: info.id, node, chart: null, x: [], score: [], raw: [], thr: [], open: [],
      seq: 0, shownSeq: 0, fetching: false, lastFetch: 0, settings: info.settings || {}, health: info.health || null,
      verdict: info.verdict, online: info.online, statusReason: info.status_reason || "", faults: new Map(),
      frameSize: null, inputDirty: false,
    };
    state.cameras.set(info.id, cam);
    for (const p of info.points || []) addPoint(cam, p);
    makeChart(cam);
    wireControls(cam);
    applySettings(cam, cam.settings);
    renderHealth(cam);
    renderVerdict(cam, info.verdict);
    return cam;
  }

  function addPoint(cam, p) {
    // p: [frame, stream_time, wall_time, score, raw_score, threshold, open]
    cam.x.push(p[2]); cam.score.push(p[3]); cam.raw.push(p[4]); cam.thr.push(p[5]); cam.open.push(p[6]);
  }

  function trim(cam) {
    const last = cam.x.length ? cam.x[cam.x.length - 1] : 0;
    let cut = 0;
    while (cut < cam.x.length && (cam.x[cut] < last - WINDOW_S || cam.x.length - cut > MAX_POINTS)) cut++;
    if (cut) for (const k of ["x", "score", "raw", "thr", "open"]) cam[k].splice(0, cut);
  }

  function chartSpec(cam) {
    return { x: cam.x, time: true, x_label: "", x_name: "time", y_label: "score",
      series: [{ label: "score", values: cam.score, kind: "score" },
               { label: "threshold", values: cam.thr, kind: "threshold" }],
      shadeFlags: cam.open, shade_label: "event open" };
  }

  function makeChart(cam) {
    const box = $(".timeline", cam.node);
    const cfg = M2S2LCharts.scoreChartConfig(chartSpec(cam),
      { width: Math.max(280, box.clientWidth), height: 150, dark: true, legend: true, yMin: 0 });
    cam.chart = new uPlot(cfg.opts, cfg.data, box);
  }

  function redraw(cam) {
    if (!cam.chart) return;
    const cfg = M2S2LCharts.scoreChartConfig(chartSpec(cam), { width: cam.chart.width, height: 150, dark: true });
    cam.chart.setData(cfg.data);
  }

  function renderVerdict(cam, v) {
    cam.verdict = v || cam.verdict;
    v = cam.verdict;
    const badge = $(".state", cam.node);
    let text = "starting", cls = "starting";
    const faults = [...cam.faults.values()];
    if (cam.online === false && /end of (stream|input)|stopped/.test(cam.statusReason || "")) {
      text = "ended"; cls = "ended";
    } else if (cam.online === false) { text = "offline"; cls = "offline"; }
    else if (v && v.event_open) { text = "anomaly"; cls = "alarm"; }
    else if (faults.length) { text = "fault: " + faults.map((f) => f.kind.replace("_", " ")).join(", "); cls = "fault"; }
    else if (cam.settings && cam.settings.calibrated === false && v) { text = "calibrating"; cls = "calibrating"; }
    else if (v) { text = "normal"; cls = "normal"; }
    setText(badge, text);
    setClass(badge, "state badge " + cls);
    cam.node.classList.toggle("alarm", cls === "alarm");
    if (v) {
      setText($(".score", cam.node), fmt(v.score));
      setText($(".thr", cam.node), v.threshold === null ? "calibrating" : fmt(v.threshold));
      $(".score", cam.node).classList.toggle("over", v.threshold !== null && v.score !== null && v.score >= v.threshold);
      setText($(".frame-no", cam.node), "frame " + v.frame);
      cam.node.dataset.frame = v.frame;
      cam.seq = v.seq;
    }
  }

  function renderHealth(cam) {
    const ul = $(".health", cam.node);
    const h = cam.health;
    const key = JSON.stringify(h);
    if (key === cam.healthShown) return;
    cam.healthShown = key;
    ul.replaceChildren();
    if (!h) { ul.append(el("li", "muted", "health: waiting for the watch to start")); return; }
    const item = (label, value, title, cls) => {
      const li = el("li", cls);
      li.append(el("span", "k", label), el("span", "v", value));
      if (title) li.title = title;
      ul.append(li);
    };
    item("", h.online ? "online" : "offline", h.last_error || "", h.online ? "on" : "off");
    item("capture", fmt(h.capture_fps, 1) + " fps", "frames read per second (last 10 s)");
    item("scored", fmt(h.processed_fps, 1) + " fps", "frames scored per second (last 10 s)");
    item("dropped", String(h.dropped_frames + (h.dropped_clips ? " (" + h.dropped_clips + " clips)" : "")),
      "frames a live capture discarded to stay current");
    item("latency p50/p95", fmt(h.latency_p50_ms, 0) + " / " + fmt(h.latency_p95_ms, 0) + " ms",
      "capture to decision, over the last 2048 frames");
    if (h.reconnects) item("reconnects", String(h.reconnects));
    item("calibration", h.threshold === null ? "in progress" : h.calibration_warning ? "done ⚠" : "done",
      (h.calibration || "") + (h.calibration_warning ? "\nwarning: " + h.calibration_warning : ""),
      h.calibration_warning ? "warn" : "");
    $(".source", cam.node).textContent = h.source;
    $(".source", cam.node).title = h.threshold_source ? "threshold from " + h.threshold_source : "";
  }

  function applySettings(cam, s) {
    if (!s) return;
    cam.settings = s;
    const input = $(".threshold", cam.node);
    if (!cam.inputDirty && document.activeElement !== input) input.value = s.threshold === null ? "" : String(+s.threshold.toFixed(3));
    input.disabled = s.threshold === null && !s.calibrated;
    input.title = s.threshold_source ? "now: " + s.threshold_source : "";
    $(".save-threshold", cam.node).disabled = !state.config;
    $(".save-threshold", cam.node).title = state.config ? "write this threshold into " + state.config
      : "start the watch with --config cameras.yaml to save settings";
    if (s.frame_size) cam.frameSize = s.frame_size;
    drawRoiOverlay(cam);
  }

  function drawRoiOverlay(cam) {
    const svg = $(".rois-overlay", cam.node);
    svg.replaceChildren();
    const size = cam.frameSize;
    const rois = (cam.settings && cam.settings.rois) || [];
    if (!size || !rois.length) return;
    svg.setAttribute("viewBox", "0 0 " + size[0] + " " + size[1]);
    for (const poly of rois) {
      svg.append(svgEl("polygon", { points: poly.map((p) => p.join(",")).join(" "), class: "roi",
        "vector-effect": "non-scaling-stroke" }));
    }
  }

  function wireControls(cam) {
    const form = $(".controls", cam.node);
    const input = $(".threshold", cam.node);
    const msg = $(".msg", cam.node);
    // Once touched, the box keeps what the operator typed until it is applied, saved or reset: the periodic
    // settings refresh must not overwrite a value being edited.
    for (const type of ["focus", "input", "change", "keydown"]) input.addEventListener(type, () => { cam.inputDirty = true; });
    const value = () => {
      const v = Number(input.value);
      if (!input.value.trim() || !Number.isFinite(v) || v <= 0) throw new Error("give a number above 0");
      return v;
    };
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      try {
        const v = value();
        const r = await post("/api/cameras/" + enc(cam.id) + "/threshold", { threshold: v });
        cam.inputDirty = false;
        say(msg, "threshold " + fmt(v) + " in force from the next frame (this run)", "ok");
        applySettings(cam, Object.assign({}, r.settings, { threshold: v }));
      } catch (e) { say(msg, e.message, "bad"); }
    });
    $(".reset-threshold", cam.node).addEventListener("click", async () => {
      try {
        await post("/api/cameras/" + enc(cam.id) + "/threshold", { threshold: null });
        cam.inputDirty = false;
        say(msg, "back to the threshold the watch started with", "ok");
      } catch (e) { say(msg, e.message, "bad"); }
    });
    $(".save-threshold", cam.node).addEventListener("click", async () => {
      try {
        const v = value();
        const r = await post("/api/cameras/" + enc(cam.id) + "/save", { threshold: v });
        cam.inputDirty = false;
        say(msg, "threshold " + fmt(v) + " saved to " + r.saved + " and in force", "ok");
      } catch (e) { say(msg, e.message, "bad"); }
    });
    $(".edit-rois", cam.node).addEventListener("click", () => openEditor(cam));
  }

  function maybeFetchFrame(cam) {
    const now = performance.now();
    if (cam.fetching || cam.seq <= cam.shownSeq || now - cam.lastFetch < FRAME_EVERY_MS || document.hidden) return;
    cam.fetching = true;
    cam.lastFetch = now;
    fetch("/api/cameras/" + enc(cam.id) + "/frame.jpg?after=" + cam.shownSeq, { cache: "no-store" })
      .then(async (r) => {
        if (r.status !== 200) return;
        const seq = +r.headers.get("x-seq");
        const blob = await r.blob();
        const img = $(".live", cam.node);
        const old = img.dataset.url;
        const url = URL.createObjectURL(blob);
        img.onload = () => {
          if (old) URL.revokeObjectURL(old);
          cam.node.classList.add("has-frame");
        };
        img.dataset.url = url;
        img.dataset.seq = String(seq);
        img.src = url;
        cam.shownSeq = seq;
      })
      .catch(() => {})
      .finally(() => { cam.fetching = false; });
  }

  // ------------------------------------------------------------------ events

  const FAULT_KINDS = new Set(["frozen", "black", "saturated", "signal_lost"]);
  const FAULT_TEXT = { frozen: "the picture stopped changing", black: "black picture", saturated: "washed-out picture",
    signal_lost: "no signal" };

  function handleMessage(m) {
    if (m.type === "status") {
      const cam = state.cameras.get(m.camera);
      if (cam) { cam.online = !!m.online; cam.statusReason = m.reason || ""; renderVerdict(cam); }
      return;
    }
    if (m.type !== "event") return;
    const cam = state.cameras.get(m.camera);
    if (cam && FAULT_KINDS.has(m.kind)) {
      if (m.state === "end") cam.faults.delete(m.id); else cam.faults.set(m.id, m);
      renderVerdict(cam);
    }
    upsertEvent(m);
  }

  function upsertEvent(m) {
    let entry = state.events.get(m.id);
    if (!entry) {
      entry = { msg: m, node: makeEventNode(m), chart: null, curveAt: 0 };
      state.events.set(m.id, entry);
      $("#events").prepend(entry.node);
      while (state.events.size > MAX_EVENTS) {
        const [oldId, old] = state.events.entries().next().value;
        old.node.remove();
        state.events.delete(oldId);
      }
    }
    entry.msg = m;
    renderEvent(entry);
    $("#no-events").hidden = state.events.size > 0;
    renderCounts();
  }

  function makeEventNode(m) {
    const li = el("li", "event");
    li.dataset.id = m.id;
    li.dataset.kind = FAULT_KINDS.has(m.kind) ? "fault" : "anomaly";
    const shot = el("div", "shot");
    li.append(shot);
    const body = el("div", "body");
    const l1 = el("div", "line1");
    l1.append(el("span", "kind badge"), el("span", "cam"), el("time"), el("span", "live-tag", "open"));
    const l2 = el("div", "line2");
    const spark = el("div", "spark");
    body.append(l1, l2, spark);
    li.append(body);
    applyFilter(li);
    return li;
  }

  function renderEvent(entry) {
    const m = entry.msg, li = entry.node;
    const fault = FAULT_KINDS.has(m.kind);
    li.className = "event " + (fault ? "fault" : "anomaly") + (m.state === "end" ? " ended" : " open");
    li.dataset.camera = m.camera;
    li.dataset.firstFrame = m.first ? m.first.frame : "";
    applyFilter(li);
    const badge = $(".kind", li);
    badge.textContent = m.kind.replace("_", " ");
    badge.className = "kind badge " + (fault ? "fault" : "alarm");
    $(".cam", li).textContent = m.camera;
    const t = $("time", li);
    t.textContent = clock(m.first && m.first.wall_time);
    t.dateTime = (m.first && m.first.wall_time) || "";
    const l2 = $(".line2", li);
    l2.replaceChildren();
    const parts = [];
    if (m.peak && m.peak.score !== null && m.peak.score !== undefined) parts.push("peak " + fmt(m.peak.score));
    if (m.duration_s !== null && m.duration_s !== undefined) parts.push(fmt(m.duration_s, 1) + " s");
    if (m.first && m.last) parts.push("frames " + m.first.frame + "–" + m.last.frame);
    if (m.detail && m.detail.reason) parts.push(m.detail.reason);
    l2.append(el("span", null, parts.join(" · ")));
    if (m.clip_url) {
      const a = el("a", "clip", "clip ⤓");
      a.href = m.clip_url;
      a.download = "";
      a.title = "download the event's clip (MP4)";
      l2.append(a);
    }
    const shot = $(".shot", li);
    if (m.snapshot_url) {
      let img = $("img", shot);
      if (!img) {
        img = el("img", "thumb");
        img.alt = "snapshot at the event's peak, error map over it";
        shot.replaceChildren(img);
      }
      const src = m.snapshot_url + "?v=" + m.seq;
      if (img.getAttribute("src") !== src) img.src = src;
      img.onclick = () => window.open(m.snapshot_url, "_blank");
    } else if (!$(".placeholder", shot)) {
      shot.replaceChildren(el("span", "placeholder", FAULT_TEXT[m.kind] || "no snapshot"));
    }
    if (!fault) {
      const now = performance.now();
      if (m.state === "end" || now - entry.curveAt > 2000) {
        entry.curveAt = now;
        loadCurve(entry);
      }
    }
  }

  async function loadCurve(entry) {
    const m = entry.msg;
    let pts;
    try {
      const r = await fetch("/api/events/" + enc(m.id) + "/curve", { cache: "no-store" });
      if (!r.ok) return;
      pts = (await r.json()).points;
    } catch (e) { return; }
    if (!pts || pts.length < 2) return;
    const t0 = m.first.stream_time;
    const x = pts.map((p) => +(p[1] - t0).toFixed(3));
    const spec = { x, time: false, series: [{ label: "score", values: pts.map((p) => p[3]), kind: "score" },
      { label: "threshold", values: pts.map((p) => p[5]), kind: "threshold" }],
      shadeFlags: pts.map((p) => p[6]), shade_label: "event" };
    const box = $(".spark", entry.node);
    const cfg = M2S2LCharts.scoreChartConfig(spec, { width: Math.max(200, box.clientWidth), height: 70, dark: true,
      legend: false, compact: true, yMin: 0 });
    if (entry.chart) entry.chart.destroy();
    box.replaceChildren();
    entry.chart = new uPlot(cfg.opts, cfg.data, box);
  }

  function applyFilter(li) {
    li.hidden = state.filter !== "all" && li.dataset.kind !== state.filter;
  }

  function renderCounts() {
    let anomalies = 0, faults = 0, open = 0;
    for (const { msg } of state.events.values()) {
      if (FAULT_KINDS.has(msg.kind)) faults++; else anomalies++;
      if (msg.state !== "end") open++;
    }
    const box = $("#counts");
    box.replaceChildren(el("span", "c-anomaly", anomalies + " anomal" + (anomalies === 1 ? "y" : "ies")),
      el("span", "c-fault", faults + " fault" + (faults === 1 ? "" : "s")),
      el("span", "c-open", open + " open"));
  }

  for (const b of document.querySelectorAll(".filters button")) {
    b.addEventListener("click", () => {
      state.filter = b.dataset.filter;
      for (const o of document.querySelectorAll(".filters button")) o.classList.toggle("on", o === b);
      for (const { node } of state.events.values()) applyFilter(node);
    });
  }

  // ------------------------------------------------------------------ region editor

  const editor = { cam: null, rois: [], drawing: null, selected: -1, drag: null };
  const dlg = $("#roi-editor");
  const stage = $(".stage", dlg);
  const esvg = $("svg.editor", dlg);

  function openEditor(cam) {
    editor.cam = cam;
    editor.rois = ((cam.settings && cam.settings.rois) || []).map((p) => p.map((q) => q.slice()));
    editor.drawing = null;
    editor.selected = -1;
    $(".cam", dlg).textContent = cam.id;
    say($(".msg", dlg), "");
    $(".save-rois", dlg).disabled = !state.config;
    $(".save-rois", dlg).title = state.config ? "write these regions into " + state.config + " and use them"
      : "start the watch with --config cameras.yaml to save regions";
    const img = $("img.still", dlg);
    img.onload = () => {
      const size = cam.frameSize || [img.naturalWidth, img.naturalHeight];
      esvg.setAttribute("viewBox", "0 0 " + size[0] + " " + size[1]);
      drawEditor();
    };
    img.src = "/api/cameras/" + enc(cam.id) + "/frame.jpg?overlay=0&t=" + Date.now();
    dlg.hidden = false;
    document.body.classList.add("modal-open");
  }

  function closeEditor() {
    dlg.hidden = true;
    document.body.classList.remove("modal-open");
    editor.cam = null;
  }

  function toFrame(ev) {
    const pt = esvg.createSVGPoint();
    pt.x = ev.clientX; pt.y = ev.clientY;
    const p = pt.matrixTransform(esvg.getScreenCTM().inverse());
    const size = editor.cam.frameSize || [1, 1];
    return [Math.round(Math.min(Math.max(p.x, 0), size[0]) * 10) / 10, Math.round(Math.min(Math.max(p.y, 0), size[1]) * 10) / 10];
  }

  function screenScale() {
    const m = esvg.getScreenCTM();
    return m ? m.a : 1; // screen pixels per frame pixel
  }

  function drawEditor() {
    esvg.replaceChildren();
    const r = 6 / screenScale();
    editor.rois.forEach((poly, i) => {
      const g = svgEl("g", { class: "roi-group" + (i === editor.selected ? " selected" : "") });
      const shape = svgEl("polygon", { points: poly.map((p) => p.join(",")).join(" "), class: "roi",
        "data-index": String(i), "vector-effect": "non-scaling-stroke" });
      shape.addEventListener("pointerdown", (ev) => {
        if (editor.drawing) return;
        ev.stopPropagation();
        editor.selected = i;
        $(".delete-roi", dlg).disabled = false;
        drawEditor();
      });
      g.append(shape);
      poly.forEach((p, j) => {
        const c = svgEl("circle", { cx: p[0], cy: p[1], r: r, class: "handle" });
        c.addEventListener("pointerdown", (ev) => {
          if (editor.drawing) return;
          ev.stopPropagation();
          editor.selected = i;
          editor.drag = { i, j };
          esvg.setPointerCapture(ev.pointerId);
        });
        g.append(c);
      });
      esvg.append(g);
    });
    if (editor.drawing) {
      const pts = editor.drawing;
      esvg.append(svgEl("polyline", { points: pts.map((p) => p.join(",")).join(" "), class: "drawing",
        "vector-effect": "non-scaling-stroke" }));
      pts.forEach((p, j) => esvg.append(svgEl("circle", { cx: p[0], cy: p[1], r: j === 0 ? r * 1.6 : r,
        class: "handle" + (j === 0 ? " first" : "") })));
    }
    $(".delete-roi", dlg).disabled = editor.selected < 0;
    stage.classList.toggle("drawing", !!editor.drawing);
  }

  function finishDrawing() {
    if (!editor.drawing) return;
    if (editor.drawing.length >= 3) {
      editor.rois.push(editor.drawing);
      editor.selected = editor.rois.length - 1;
      say($(".msg", dlg), editor.rois.length + " region" + (editor.rois.length === 1 ? "" : "s") + " (not saved yet)");
    } else {
      say($(".msg", dlg), "a region needs at least 3 corners", "bad");
    }
    editor.drawing = null;
    drawEditor();
  }

  esvg.addEventListener("pointerdown", (ev) => {
    if (!editor.cam) return;
    if (!editor.drawing) {
      editor.selected = -1;
      drawEditor();
      return;
    }
    const p = toFrame(ev);
    const pts = editor.drawing;
    if (pts.length >= 3) {
      const first = pts[0];
      const d = Math.hypot(first[0] - p[0], first[1] - p[1]) * screenScale();
      if (d <= 12) { finishDrawing(); return; }
    }
    pts.push(p);
    drawEditor();
  });
  esvg.addEventListener("pointermove", (ev) => {
    if (!editor.drag) return;
    const p = toFrame(ev);
    editor.rois[editor.drag.i][editor.drag.j] = p;
    drawEditor();
  });
  esvg.addEventListener("pointerup", () => { editor.drag = null; });
  document.addEventListener("keydown", (ev) => {
    if (dlg.hidden) return;
    if (ev.key === "Enter") { ev.preventDefault(); finishDrawing(); }
    else if (ev.key === "Escape") {
      if (editor.drawing) { editor.drawing = null; drawEditor(); } else closeEditor();
    } else if ((ev.key === "Delete" || ev.key === "Backspace") && editor.selected >= 0 && !editor.drawing) {
      editor.rois.splice(editor.selected, 1);
      editor.selected = -1;
      drawEditor();
    }
  });
  $(".new-roi", dlg).addEventListener("click", () => {
    editor.drawing = [];
    editor.selected = -1;
    say($(".msg", dlg), "click the corners of the new region");
    drawEditor();
  });
  $(".delete-roi", dlg).addEventListener("click", () => {
    if (editor.selected < 0) return;
    editor.rois.splice(editor.selected, 1);
    editor.selected = -1;
    drawEditor();
  });
  $(".clear-rois", dlg).addEventListener("click", () => {
    editor.rois = []; editor.drawing = null; editor.selected = -1;
    say($(".msg", dlg), "no regions: the whole frame raises events (not saved yet)");
    drawEditor();
  });
  $(".close", dlg).addEventListener("click", closeEditor);
  async function sendRois(save) {
    if (editor.drawing && editor.drawing.length >= 3) finishDrawing();
    const cam = editor.cam;
    const msg = $(".msg", dlg);
    try {
      const r = await post("/api/cameras/" + enc(cam.id) + (save ? "/save" : "/rois"), { rois: editor.rois });
      applySettings(cam, Object.assign({}, r.settings, { rois: editor.rois }));
      say(msg, save ? "saved to " + r.saved + " and in force" : "in force until the watch ends", "ok");
      dlg.dataset.saved = save ? "1" : "0";
    } catch (e) { say(msg, e.message, "bad"); }
  }
  $(".apply-rois", dlg).addEventListener("click", () => sendRois(false));
  $(".save-rois", dlg).addEventListener("click", () => sendRois(true));

  // ------------------------------------------------------------------ the stream

  function setConn(text, cls) {
    const c = $("#conn");
    $(".text", c).textContent = text;
    c.className = "conn " + cls;
  }

  function renderRun(run) {
    const box = $("#run");
    box.replaceChildren();
    if (!run || !run.model) return;
    const m = run.model;
    const bits = [["model", m.preset || "?"], ["score", m.score], ["backend", run.backend],
      ["input", m.clip_len + " × " + m.image_size.join("×")]];
    if (run.replay) bits.push(["replay", "as fast as possible"]);
    for (const [k, v] of bits) {
      const s = el("span", "chip");
      s.append(el("span", "k", k), el("span", "v", v));
      box.append(s);
    }
  }

  function onTick(data) {
    const now = performance.now();
    for (const [id, pts] of Object.entries(data.points || {})) {
      const cam = state.cameras.get(id);
      if (!cam) continue;
      for (const p of pts) addPoint(cam, p);
      trim(cam);
      cam.stale = true;
    }
    for (const cam of state.cameras.values()) {  // the timelines move twice a second: smooth enough, half the work
      if (cam.stale && now - (cam.drawnAt || 0) >= CHART_EVERY_MS && !document.hidden) {
        redraw(cam);
        cam.stale = false;
        cam.drawnAt = now;
      }
    }
    for (const m of data.messages || []) handleMessage(m);
    for (const [id, v] of Object.entries(data.verdicts || {})) {
      const cam = state.cameras.get(id);
      if (cam && v) { renderVerdict(cam, v); maybeFetchFrame(cam); }
    }
    if (data.health) {
      for (const [id, h] of Object.entries(data.health)) {
        const cam = state.cameras.get(id);
        if (cam) { cam.health = h; if (h.online !== undefined && cam.online === null) cam.online = h.online; renderHealth(cam); }
      }
    }
    if (data.settings) for (const [id, s] of Object.entries(data.settings)) {
      const cam = state.cameras.get(id);
      if (cam) applySettings(cam, s);
    }
    if (data.run && data.run.model) renderRun(data.run);
  }

  async function start() {
    let s;
    try {
      const r = await fetch("/api/state", { cache: "no-store" });
      if (!r.ok) throw new Error(await r.text());
      s = await r.json();
    } catch (e) {
      setConn("cannot reach the watch: " + e.message, "down");
      setTimeout(start, 2000);
      return;
    }
    state.config = s.config;
    state.media = s.media;
    renderRun(s.run);
    for (const c of s.cameras) makeTile(c);
    for (const m of s.events) upsertEvent(m);
    $("#no-events").hidden = state.events.size > 0;
    renderCounts();
    const es = new EventSource("/api/stream?after=" + s.seq);
    es.onopen = () => setConn("live", "up");
    es.onerror = () => setConn(es.readyState === EventSource.CLOSED ? "disconnected: the watch has stopped" :
      "reconnecting…", "down");
    es.onmessage = (ev) => {
      try { onTick(JSON.parse(ev.data)); } catch (e) { console.error(e); }
    };
    window.addEventListener("resize", () => {
      for (const cam of state.cameras.values()) {
        const w = Math.max(280, $(".timeline", cam.node).clientWidth);
        if (cam.chart && Math.abs(w - cam.chart.width) > 8) cam.chart.setSize({ width: w, height: 150 });
      }
    });
  }

  start();
})();
