/* Chart settings shared by the HTML reports and the live web view: every chart is a uPlot chart (vendor/uplot).
 *
 * A score chart: the score (and optional raw score) over x, the threshold as a dashed red step line, spans (labelled
 * anomalies, events) shaded as a filled step series on a hidden 0..1 scale, and marked points (the frames a report
 * shows). A ROC chart: TPR over FPR with the chance diagonal.
 */
(function (global) {
  "use strict";

  const COLOURS = {
    score: "#2f6fd0",
    raw: "rgba(120,130,145,0.8)",
    threshold: "#d62728",
    shade: "rgba(214,39,40,0.16)",
    mark: "#f59f00",
    chance: "#9aa5b1",
  };

  const CAP = 4; // a threshold above CAP × the highest score is off the chart

  /* The cap of a drawn chart: CAP × its highest score (every y series but the threshold). */
  function capOf(u) {
    let hi = -Infinity;
    u.series.forEach((s, i) => {
      if (i === 0 || s.scale !== "y" || s.dash) return;
      for (const v of u.data[i]) if (v !== null && v !== undefined && isFinite(v)) hi = Math.max(hi, v);
    });
    return Math.max(hi, 1) * CAP;
  }

  function theme(dark) {
    return dark
      ? { axis: "#aeb9c7", grid: "rgba(255,255,255,0.07)", ticks: "rgba(255,255,255,0.15)" }
      : { axis: "#3b4452", grid: "rgba(0,0,0,0.07)", ticks: "rgba(0,0,0,0.2)" };
  }

  /* 1 where x lies in one of the [x0, x1] spans, else 0 (the shading series). */
  function shadeValues(x, spans) {
    const out = new Array(x.length).fill(0);
    if (!spans || !spans.length) return out;
    for (let i = 0; i < x.length; i++) {
      for (const s of spans) {
        if (x[i] >= s[0] && x[i] <= s[1]) { out[i] = 1; break; }
      }
    }
    return out;
  }

  /* The score values at the marked x positions (nearest point), null elsewhere. */
  function markValues(x, values, marks) {
    const out = new Array(x.length).fill(null);
    if (!marks || !marks.length || !x.length) return out;
    for (const m of marks) {
      let best = 0;
      for (let i = 1; i < x.length; i++) if (Math.abs(x[i] - m) < Math.abs(x[best] - m)) best = i;
      out[best] = values[best];
    }
    return out;
  }

  /* Clock times (HH:MM:SS, the viewer's time zone) for an axis of unix seconds. */
  function clockValues(u, splits) {
    return splits.map((v) => new Date(v * 1000).toLocaleTimeString([], { hour12: false }));
  }

  function axes(spec, t) {
    const common = { stroke: t.axis, grid: { stroke: t.grid, width: 1 }, ticks: { stroke: t.ticks, width: 1 } };
    const x = Object.assign({ label: spec.x_label || "", labelSize: spec.x_label ? 20 : 0 }, common);
    if (spec.time) {  // whole seconds and up: a live timeline never labels two ticks with one clock time
      x.values = clockValues;
      x.incrs = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600];
      x.space = 70;
    }
    return [
      x,
      Object.assign({ label: spec.y_label || "", labelSize: spec.y_label ? 20 : 0, size: 46 }, common),
      { scale: "shade", show: false },
    ];
  }

  /* uPlot options and data for a score chart.
   * spec: {x, series: [{label, values, kind}], shade: [[x0, x1]] or shadeFlags: [0|1 per x], shade_label, marks,
   *        x_label, y_label, time}
   * opts: {width, height, dark, legend, title, yMin, compact} */
  function scoreChartConfig(spec, opts) {
    const t = theme(!!opts.dark);
    const series = [spec.time ? { label: spec.x_name || spec.x_label || "time",
      value: (u, v) => (v === null ? "–" : new Date(v * 1000).toLocaleTimeString([], { hour12: false })) }
      : { label: spec.x_name || spec.x_label || "x" }];
    const data = [spec.x];
    const shade = spec.shadeFlags || shadeValues(spec.x, spec.shade);
    series.push({
      label: spec.shade_label || "event", scale: "shade", stroke: "transparent", width: 0, fill: COLOURS.shade,
      paths: uPlot.paths.stepped({ align: 1 }), points: { show: false }, value: (u, v) => (v ? "yes" : "–"),
    });
    data.push(shade);
    let scoreValues = null;
    const thresholdLabel = ((spec.series || []).find((s) => s.kind === "threshold") || {}).label;
    // A threshold far above every score (a level set out of reach on purpose) is drawn at the chart's cap and left
    // out of its y range: a dashed line millions of pixels long would also take the browser seconds to draw.
    let hiScore = -Infinity;
    for (const s of spec.series || []) {
      if ((s.kind || "score") === "threshold") continue;
      for (const v of s.values) if (v !== null && v !== undefined && isFinite(v)) hiScore = Math.max(hiScore, v);
    }
    const cap = Math.max(hiScore, 1) * CAP;
    for (const s of spec.series || []) {
      const kind = s.kind || "score";
      const base = { label: s.label, points: { show: false }, spanGaps: false };
      let values = s.values;
      if (kind === "threshold") {
        values = values.map((v) => (v !== null && v !== undefined && v > cap ? cap : v));
        Object.assign(base, { stroke: COLOURS.threshold, width: 1.5, dash: [6, 4],
          paths: uPlot.paths.stepped({ align: 1 }),
          value: (u, v) => (v === null || v === undefined ? "–" : v >= capOf(u) ? "above the chart" : v.toFixed(2)) });
      } else if (kind === "raw") {
        Object.assign(base, { stroke: COLOURS.raw, width: 1 });
      } else {
        Object.assign(base, { stroke: COLOURS.score, width: 1.6 });
        scoreValues = scoreValues || s.values;
      }
      series.push(base);
      data.push(values);
    }
    if (spec.marks && spec.marks.length && scoreValues) {
      series.push({ label: spec.marks_label || "shown below", stroke: COLOURS.mark, fill: COLOURS.mark, width: 0,
        paths: () => null, points: { show: true, size: 9, stroke: COLOURS.mark, fill: COLOURS.mark } });
      data.push(markValues(spec.x, scoreValues, spec.marks));
    }
    // The y range follows the score; a threshold far above every score (a level set out of reach on purpose)
    // would flatten the curve, so it is left off the chart (the legend still gives its value).
    const yRange = (u) => {
      let lo = Infinity, hi = -Infinity, thr = -Infinity;
      u.series.forEach((s, i) => {
        if (i === 0 || s.scale !== "y") return;
        for (const v of u.data[i]) {
          if (v === null || v === undefined || !isFinite(v)) continue;
          if (s.label === thresholdLabel) thr = Math.max(thr, v);
          else { lo = Math.min(lo, v); hi = Math.max(hi, v); }
        }
      });
      if (lo === Infinity) { lo = 0; hi = 1; }
      if (thr > -Infinity && thr < Math.max(hi, 1) * CAP) hi = Math.max(hi, thr);
      if (opts.yMin !== undefined) lo = Math.min(lo, opts.yMin);
      const pad = (hi - lo) * 0.06 || 1;
      return [lo === opts.yMin ? lo : lo - pad, hi + pad];
    };
    const options = {
      title: opts.title || undefined,
      width: opts.width, height: opts.height,
      legend: { show: opts.legend !== false, live: true },
      cursor: { drag: { x: true, y: false } },
      scales: { x: { time: !!spec.time }, shade: { range: [0, 1] }, y: { range: yRange } },
      axes: axes(spec, t),
      series: series,
    };
    if (opts.compact) {  // a sparkline: no axes, no legend, the plot fills the box
      options.axes = options.axes.map((a) => Object.assign({}, a, { show: false }));
      options.legend = { show: false };
      options.padding = [4, 2, 2, 2];
      options.cursor = { show: false };
    }
    return { opts: options, data: data };
  }

  function scoreChart(el, spec, opts) {
    const cfg = scoreChartConfig(spec, opts);
    return new uPlot(cfg.opts, cfg.data, el);
  }

  /* A ROC chart: roc = {fpr, tpr, auc} */
  function rocChart(el, roc, opts) {
    const t = theme(!!opts.dark);
    const common = { stroke: t.axis, grid: { stroke: t.grid, width: 1 }, ticks: { stroke: t.ticks, width: 1 } };
    const chance = roc.fpr.map((v) => v);
    return new uPlot({
      width: opts.width, height: opts.height,
      legend: { show: true },
      scales: { x: { time: false, range: [0, 1] }, y: { range: [0, 1.01] } },
      axes: [Object.assign({ label: "false positive rate (normal frames flagged)", labelSize: 20 }, common),
             Object.assign({ label: "true positive rate (anomalous frames found)", labelSize: 20, size: 46 }, common)],
      series: [
        { label: "FPR" },
        { label: "M²S²L (AUC " + roc.auc.toFixed(3) + ")", stroke: COLOURS.score, width: 2, points: { show: false } },
        { label: "chance", stroke: COLOURS.chance, width: 1, dash: [4, 4], points: { show: false } },
      ],
    }, [roc.fpr, roc.tpr, chance], el);
  }

  global.M2S2LCharts = { COLOURS, shadeValues, markValues, scoreChartConfig, scoreChart, rocChart };
})(window);
