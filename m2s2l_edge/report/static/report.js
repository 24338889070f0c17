/* Renders the report document embedded in the page (m2s2l_edge/report/html.py) with uPlot charts.
 * Text from the data is always set with textContent: a video or camera name is never read as HTML. */
(function () {
  "use strict";
  const data = JSON.parse(document.getElementById("report-data").textContent);
  const root = document.getElementById("report");
  const charts = [];

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }

  function fmt(v) {
    if (v === null || v === undefined) return "–";
    if (typeof v === "number") return Number.isInteger(v) ? String(v) : (Math.abs(v) >= 100 ? v.toFixed(1) : v.toFixed(3));
    return String(v);
  }

  function chips(rows) {
    const box = el("div", "chips");
    for (const [k, v] of rows || []) {
      const chip = el("span", "chip");
      chip.append(el("span", "k", k), el("span", "v", fmt(v)));
      box.append(chip);
    }
    return box;
  }

  function facts(rows) {
    const table = el("table", "facts");
    for (const [k, v] of rows || []) {
      const tr = el("tr");
      tr.append(el("th", null, k), el("td", null, fmt(v)));
      table.append(tr);
    }
    return table;
  }

  function notes(list, parent) {
    for (const n of list || []) parent.append(el("p", "note", n));
  }

  function chartBox(parent, height, make, maxWidth) {
    const box = el("div", "chart");
    parent.append(box);
    const limit = maxWidth || Infinity;
    const width = Math.min(limit, Math.max(320, box.clientWidth || parent.clientWidth || 800));
    const chart = make(box, width, height);
    charts.push({ box, chart, limit });
    return chart;
  }

  function frameRow(frame) {
    const fig = el("figure", "frame");
    const strip = el("div", "strip");
    for (const img of frame.images || []) {
      const cell = el("div", "shot");
      const image = el("img");
      image.src = img.src;
      image.alt = img.label + " — " + frame.caption;
      image.loading = "eager";
      cell.append(image, el("span", "label", img.label));
      strip.append(cell);
    }
    fig.append(strip, el("figcaption", null, frame.caption));
    return fig;
  }

  function eventsTable(events) {
    const table = el("table", "events");
    const head = el("tr");
    for (const h of ["", "kind", "start", "duration", "peak score", "id"]) head.append(el("th", null, h));
    table.append(head);
    for (const ev of events) {
      const tr = el("tr", "kind-" + ev.kind);
      const shot = el("td", "thumb");
      if (ev.snapshot) {
        const img = el("img");
        img.src = ev.snapshot;
        img.alt = "snapshot of " + ev.id;
        shot.append(img);
      }
      tr.append(shot, el("td", "kind", ev.kind), el("td", null, ev.start),
        el("td", null, ev.duration_s === null || ev.duration_s === undefined ? "–" : ev.duration_s.toFixed(1) + " s"),
        el("td", null, fmt(ev.peak_score)), el("td", "id", ev.id));
      table.append(tr);
    }
    return table;
  }

  function render() {
    const header = el("header");
    header.append(el("h1", null, data.title));
    if (data.subtitle) header.append(el("p", "subtitle", data.subtitle));
    root.append(header);
    const top = el("section", "overview");
    if (data.facts && data.facts.length) top.append(facts(data.facts));
    if (data.roc) {
      const roc = el("div", "roc");
      roc.append(el("h2", null, data.roc.title || "Frame-level ROC"));
      top.append(roc);
      chartBox(roc, 380, (box, w, h) => M2S2LCharts.rocChart(box, data.roc, { width: w, height: h }), 520);
    }
    root.append(top);
    notes(data.notes, root);

    const nav = el("nav", "toc");
    if ((data.sections || []).length > 1) {
      for (const [i, s] of data.sections.entries()) {
        const a = el("a", null, s.name);
        a.href = "#section-" + i;
        nav.append(a);
      }
      root.append(nav);
    }
    for (const [i, s] of (data.sections || []).entries()) {
      const sec = el("section", "item");
      sec.id = "section-" + i;
      sec.append(el("h2", null, s.name));
      if (s.facts && s.facts.length) sec.append(chips(s.facts));
      notes(s.notes, sec);
      if (s.chart && s.chart.x && s.chart.x.length) {
        chartBox(sec, 230, (box, w, h) => M2S2LCharts.scoreChart(box, s.chart, { width: w, height: h }));
      }
      if (s.frames && s.frames.length) {
        sec.append(el("h3", null, s.frames_title || "Frames"));
        const grid = el("div", "frames");
        for (const f of s.frames) grid.append(frameRow(f));
        sec.append(grid);
      }
      if (s.events && s.events.length) {
        sec.append(el("h3", null, s.events_title || "Events"));
        sec.append(eventsTable(s.events));
      }
      root.append(sec);
    }
    const foot = el("footer", null, data.footer || "");
    root.append(foot);
  }

  render();
  window.addEventListener("resize", () => {
    for (const { box, chart, limit } of charts) {
      const w = Math.min(limit, Math.max(320, box.clientWidth));
      if (Math.abs(w - chart.width) > 8) chart.setSize({ width: w, height: chart.height });
    }
  });
})();
