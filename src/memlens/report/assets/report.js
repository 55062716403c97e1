/* memlens report: draws a result's page data (memlens.report.html.page_data) with Chart.js.
   Used by the self-contained HTML report and by `memlens ui`. No network access. */
"use strict";
var MemlensReport = (function () {
  var COLORS = {
    parameters: "#4e79a7", buffers: "#76b7b2", inputs: "#edc948", activations: "#f28e2b",
    gradients: "#e15759", optimizer_state: "#59a14f", temporaries: "#bab0ac",
    kv_cache: "#b07aa1", allocator_slack: "#d4d4d4", framework_overhead: "#9c755f"
  };
  var PHASE_SHADES = {
    setup: "rgba(0,0,0,0.02)", forward: "rgba(78,121,167,0.07)", loss: "rgba(237,201,72,0.12)",
    backward: "rgba(225,87,89,0.07)", optimizer: "rgba(89,161,79,0.09)"
  };
  var charts = [];

  function fmtBytes(n) {
    var sign = n < 0 ? "-" : "";
    n = Math.abs(n);
    var units = [["TiB", Math.pow(1024, 4)], ["GiB", Math.pow(1024, 3)],
                 ["MiB", Math.pow(1024, 2)], ["KiB", 1024]];
    for (var i = 0; i < units.length; i++) {
      if (n >= units[i][1]) return sign + (n / units[i][1]).toFixed(2) + " " + units[i][0];
    }
    return sign + Math.round(n) + " B";
  }
  function label(s) { return String(s).replace(/_/g, " "); }

  function el(tag, attrs, children) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) {
      if (k === "text") node.textContent = attrs[k];
      else node.setAttribute(k, attrs[k]);
    });
    (children || []).forEach(function (c) {
      node.appendChild(typeof c === "string" ? document.createTextNode(c) : c);
    });
    return node;
  }
  function table(headers, rows, attrs) {
    var head = el("tr", {}, headers.map(function (h) { return el("th", { text: h }); }));
    var body = rows.map(function (r) {
      return el("tr", {}, r.map(function (c) {
        return c instanceof Node ? el("td", {}, [c]) : el("td", { text: c === null ? "" : String(c) });
      }));
    });
    return el("table", attrs || {}, [el("thead", {}, [head]), el("tbody", {}, body)]);
  }
  function section(root, title, id) {
    var s = el("section", id ? { id: id } : {}, [el("h2", { text: title })]);
    root.appendChild(s);
    return s;
  }
  function canvasIn(parent, height) {
    var box = el("div", { class: "chart", style: "height:" + height + "px" });
    var canvas = el("canvas");
    box.appendChild(canvas);
    parent.appendChild(box);
    return canvas;
  }
  /* ticks at round binary sizes: 1, 2, 5, 10, 20, 50, 100, 200, 500 KiB/MiB/GiB/TiB */
  function binaryTicks(axis) {
    var max = axis.max, unit = 1;
    while (unit * 1024 <= max) unit *= 1024;
    var steps = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000];
    var step = unit * steps[steps.length - 1];
    for (var i = 0; i < steps.length; i++) {
      if (max / (unit * steps[i]) <= 8) { step = unit * steps[i]; break; }
    }
    var ticks = [];
    for (var v = 0; v <= max; v += step) ticks.push({ value: v });
    axis.ticks = ticks;
  }
  function bytesAxis(title) {
    return { title: { display: !!title, text: title }, beginAtZero: true,
             afterBuildTicks: binaryTicks,
             ticks: { callback: function (v) { return fmtBytes(v).replace(/\.00 /, " "); } } };
  }

  /* -- header and verdict ------------------------------------------------------------ */
  function header(root, data) {
    var r = data.result;
    var device = typeof r.device === "string" ? r.device : r.device ? r.device.name :
      (r.at_max && r.at_max.device ? r.at_max.device.name : "");
    root.appendChild(el("h1", {}, ["memlens " + r.kind + ": ", el("code", { text: r.model || "" }),
      device ? " on " + device : ""]));
  }
  function verdict(root, est) {
    var cap = est.device ? est.device.capacity_bytes : null;
    var parts = [
      el("span", { class: "big" }, ["peak allocated ",
        el("strong", { id: "peak-bytes", "data-bytes": String(est.peak_bytes), text: fmtBytes(est.peak_bytes) })]),
      el("span", { class: "big" }, ["total on device ",
        el("strong", { id: "total-bytes", "data-bytes": String(est.total_bytes), text: fmtBytes(est.total_bytes) })])
    ];
    if (cap !== null) {
      var fits = est.fits;
      parts.push(el("span", { class: "big verdict " + (fits ? "fits" : "oom"), id: "verdict",
        text: (fits ? "fits: " + fmtBytes(est.free_bytes) + " free of " : "does not fit: short by " +
               fmtBytes(-est.free_bytes) + " of ") + fmtBytes(cap) }));
    }
    root.appendChild(el("p", { class: "summary" }, parts));
    var where = est.peak.module || "<root>";
    root.appendChild(el("p", { class: "muted" }, ["peak in " + est.peak.phase + " at ",
      el("code", { text: where }), " (", el("code", { text: est.peak.op }), ")"]));
  }

  /* -- timeline -------------------------------------------------------------------- */
  var phasePlugin = {
    id: "memlensPhases",
    beforeDatasetsDraw: function (chart) {
      var tl = chart.options.plugins.memlensPhases.timeline;
      var x = chart.scales.x, area = chart.chartArea, ctx = chart.ctx;
      ctx.save();
      tl.phases.forEach(function (p, i) {
        var end = i + 1 < tl.phases.length ? tl.phases[i + 1][0] : tl.events;
        var x0 = Math.max(x.getPixelForValue(p[0]), area.left);
        var x1 = Math.min(x.getPixelForValue(end), area.right);
        if (x1 <= x0) return;
        ctx.fillStyle = PHASE_SHADES[p[1]] || "rgba(0,0,0,0.04)";
        ctx.fillRect(x0, area.top, x1 - x0, area.bottom - area.top);
        ctx.strokeStyle = "rgba(0,0,0,0.25)";
        ctx.beginPath(); ctx.moveTo(x0, area.top); ctx.lineTo(x0, area.bottom); ctx.stroke();
        if (x1 - x0 > 40) {
          ctx.fillStyle = "#555"; ctx.font = "12px sans-serif";
          ctx.fillText(p[1], x0 + 4, area.top + 14);
        }
      });
      ctx.restore();
    },
    afterDatasetsDraw: function (chart) {
      var tl = chart.options.plugins.memlensPhases.timeline;
      var px = chart.scales.x.getPixelForValue(tl.peak.index);
      var py = chart.scales.y.getPixelForValue(tl.peak.bytes);
      var area = chart.chartArea, ctx = chart.ctx;
      ctx.save();
      ctx.strokeStyle = "#c00"; ctx.setLineDash([4, 3]);
      ctx.beginPath(); ctx.moveTo(px, area.top); ctx.lineTo(px, area.bottom); ctx.stroke();
      ctx.setLineDash([]); ctx.fillStyle = "#c00";
      ctx.beginPath(); ctx.arc(px, py, 4, 0, 2 * Math.PI); ctx.fill();
      var text = "peak " + fmtBytes(tl.peak.bytes) + ": " + (tl.peak.module || "<root>") +
        " " + tl.peak.op;
      ctx.font = "bold 12px sans-serif";
      var w = ctx.measureText(text).width;
      var tx = Math.min(Math.max(px - w / 2, area.left), area.right - w);
      ctx.fillStyle = "rgba(255,255,255,0.85)"; ctx.fillRect(tx - 2, area.top + 18, w + 4, 16);
      ctx.fillStyle = "#c00"; ctx.fillText(text, tx, area.top + 30);
      ctx.restore();
    }
  };

  function liveAt(tl, event) {
    return tl.blocks.filter(function (b) { return b[5] <= event && event < b[6]; })
      .sort(function (a, b) { return b[4] - a[4]; });
  }
  function phaseAt(tl, event) {
    var current = "setup";
    tl.phases.forEach(function (p) { if (p[0] <= event) current = p[1]; });
    return current;
  }
  function showLive(panel, tl, k) {
    var event = tl.index[k];
    var blocks = liveAt(tl, event);
    var total = 0;
    tl.stacks.forEach(function (s) { total += s[k]; });
    var shown = blocks.slice(0, 15);
    panel.innerHTML = "";
    panel.appendChild(el("p", {}, [el("strong", { text: "event " + event + " (" + phaseAt(tl, event) + ")" }),
      ": " + fmtBytes(total) + " allocated" +
      (tl.reserved ? ", " + fmtBytes(tl.reserved[k]) + " reserved" : "") +
      " in " + blocks.length + " live tensors; largest:"]));
    panel.appendChild(table(["category", "module", "tensor", "op", "bytes"], shown.map(function (b) {
      return [label(tl.categories[b[0]]), tl.names[b[1]] || "<root>", tl.names[b[3]],
              tl.names[b[2]], fmtBytes(b[4])];
    }), { class: "live" }));
    if (tl.omitted) {
      panel.appendChild(el("p", { class: "muted", text: "(the " + tl.omitted + " smallest tensors " +
        "of the step are not listed; their bytes are in the totals)" }));
    }
    var rest = blocks.slice(15).reduce(function (s, b) { return s + b[4]; }, 0);
    if (blocks.length > 15) {
      panel.appendChild(el("p", { class: "muted", text: "and " + (blocks.length - 15) +
        " more tensors, " + fmtBytes(rest) }));
    }
  }

  function timeline(root, tl, est) {
    var s = section(root, "Memory over the step", "timeline");
    s.appendChild(el("p", { class: "muted", text: "Allocated bytes by category after each " +
      "allocation or free (" + tl.events + " events, " + tl.index.length + " drawn: the highest " +
      "of each stretch, the peak always)" + (tl.reserved ? "; the line is reserved memory (" +
      tl.allocator + " allocator)" : "") + ". Hover to list the live tensors." }));
    var canvas = canvasIn(s, 380);
    var panel = el("div", { id: "live", class: "live-panel" });
    var datasets = tl.categories.map(function (c, j) {
      return { label: label(c), data: tl.index.map(function (x, k) { return { x: x, y: tl.stacks[j][k] }; }),
               backgroundColor: COLORS[c], borderColor: COLORS[c], borderWidth: 0.5,
               fill: j === 0 ? "origin" : "-1", pointRadius: 0, stack: "allocated" };
    });
    if (tl.reserved) {
      datasets.push({ label: "reserved", data: tl.index.map(function (x, k) { return { x: x, y: tl.reserved[k] }; }),
                      borderColor: "#222", borderDash: [5, 3], borderWidth: 1.2, fill: false,
                      pointRadius: 0, stack: "reserved" });
    }
    var chart = new Chart(canvas, {
      type: "line",
      data: { datasets: datasets },
      options: {
        animation: false, parsing: false, normalized: true, maintainAspectRatio: false,
        interaction: { mode: "index", intersect: false },
        scales: { x: { type: "linear", min: 0, max: tl.events, title: { display: true, text: "event" } },
                  y: Object.assign(bytesAxis("bytes"), { stacked: true }) },
        plugins: {
          memlensPhases: { timeline: tl },
          legend: { position: "bottom" },
          tooltip: { callbacks: { label: function (c) { return c.dataset.label + ": " + fmtBytes(c.parsed.y); },
                                  title: function (items) { return items.length ? "event " + items[0].parsed.x : ""; } } }
        },
        onHover: function (e, items) { if (items.length) showLive(panel, tl, items[0].index); }
      },
      plugins: [phasePlugin]
    });
    charts.push(chart);
    s.appendChild(panel);
    showLive(panel, tl, tl.index.indexOf(tl.peak.index));
  }

  /* -- tables and bars ------------------------------------------------------------- */
  function budget(root, est) {
    var s = section(root, "Budget at the peak", "budget");
    var rows = Object.keys(est.budget).filter(function (c) { return est.budget[c] > 0; })
      .map(function (c) {
        var swatch = el("span", { class: "swatch", style: "background:" + (COLORS[c] || "#ccc") });
        return [el("span", {}, [swatch, label(c)]), fmtBytes(est.budget[c]),
                (100 * est.budget[c] / est.total_bytes).toFixed(1) + " %"];
      });
    rows.push([el("strong", { text: "total" }), el("strong", { text: fmtBytes(est.total_bytes) }), "100.0 %"]);
    if (est.device) rows.push(["capacity (" + est.device.name + ")", fmtBytes(est.device.capacity_bytes), ""]);
    s.appendChild(table(["category", "bytes", "share"], rows, { class: "budget", id: "budget-table" }));
    var o = est.overhead;
    var notes = [o.context + ": " + fmtBytes(o.context_bytes)];
    Object.keys(o.workspaces).forEach(function (k) { notes.push(k + ": " + fmtBytes(o.workspaces[k])); });
    s.appendChild(el("p", { class: "muted", text: "framework overhead: " + notes.join(", ") }));
  }

  function modules(root, mods) {
    if (!mods || !mods.rows.length) return;
    var s = section(root, "By module", "modules");
    s.appendChild(el("p", { class: "muted", text: "Parameters and activations kept for backward " +
      "(alive when " + (mods.kept_at === "backward" ? "backward starts" : "memory peaks") +
      "), modules at depth " + mods.depth + "." }));
    var canvas = canvasIn(s, Math.max(160, 26 * mods.rows.length + 60));
    charts.push(new Chart(canvas, {
      type: "bar",
      data: { labels: mods.rows.map(function (r) { return r[0]; }),
              datasets: [{ label: "parameters", data: mods.rows.map(function (r) { return r[1]; }), backgroundColor: COLORS.parameters },
                         { label: "activations kept", data: mods.rows.map(function (r) { return r[2]; }), backgroundColor: COLORS.activations }] },
      options: { indexAxis: "y", animation: false, maintainAspectRatio: false,
                 scales: { x: Object.assign(bytesAxis(""), { stacked: true }), y: { stacked: true } },
                 plugins: { tooltip: { callbacks: { label: function (c) { return c.dataset.label + ": " + fmtBytes(c.parsed.x); } } } } }
    }));
  }

  function curve(root, cv, title) {
    var s = section(root, title, "batch-curve");
    var canvas = canvasIn(s, 300);
    var pts = cv.points.map(function (p) { return { x: p[0], y: p[1] }; });
    var xmax = Math.max.apply(null, cv.points.map(function (p) { return p[0]; }));
    var datasets = [{ label: "total on device", data: pts, borderColor: COLORS.parameters,
                      backgroundColor: COLORS.parameters, pointRadius: 3 }];
    if (cv.capacity_bytes) {
      datasets.push({ label: "capacity", data: [{ x: 0, y: cv.capacity_bytes }, { x: xmax, y: cv.capacity_bytes }],
                      borderColor: "#c00", borderDash: [6, 4], pointRadius: 0 });
    }
    if (cv.max_batch !== null && cv.max_batch !== undefined) {
      var at = cv.points.filter(function (p) { return p[0] === cv.max_batch; });
      if (at.length) {
        datasets.push({ label: "max batch " + cv.max_batch, data: [{ x: at[0][0], y: at[0][1] }],
                        borderColor: "#2a2", backgroundColor: "#2a2", pointRadius: 7, pointStyle: "star", showLine: false });
      }
      s.appendChild(el("p", { class: "summary" }, [el("span", { class: "big" }, ["max batch ",
        el("strong", { id: "max-batch", text: String(cv.max_batch) })])]));
    }
    charts.push(new Chart(canvas, {
      type: "line", data: { datasets: datasets },
      options: { animation: false, parsing: false, maintainAspectRatio: false,
                 scales: { x: { type: "linear", min: 0, max: xmax, title: { display: true, text: "batch size" } }, y: bytesAxis("bytes") },
                 plugins: { tooltip: { callbacks: { label: function (c) { return c.dataset.label + ": " + fmtBytes(c.parsed.y) + " at batch " + c.parsed.x; } } } } }
    }));
  }

  function strategies(root, fit) {
    var st = fit.strategies;
    if (!st) return;
    var s = section(root, "Ways to fit batch " + st.target_batch, "strategies");
    var rows = (st.fitting.length ? st.fitting : (st.closest ? [st.closest] : [])).map(function (o) {
      return [o.label, o.micro_batch + " x " + o.micro_steps, fmtBytes(o.total_bytes),
              o.fits ? "yes" : "no", o.risk, o.overhead, (100 * o.compute_overhead).toFixed(0) + " %"];
    });
    if (!st.fitting.length) s.appendChild(el("p", { text: "Nothing fits; the closest option:" }));
    s.appendChild(table(["option", "micro-batch x steps", "total", "fits", "risk", "overhead", "extra compute"], rows, { id: "strategy-table" }));
    if (st.unavailable.length) s.appendChild(el("p", { class: "muted", text: "not offered: " + st.unavailable.join("; ") }));
  }

  function sweepTable(root, r) {
    var s = section(root, "By batch size", "sweep");
    s.appendChild(table(["batch", "peak allocated", "peak reserved", "total", "fits"], r.estimates.map(function (e) {
      return [e.workload.batch, fmtBytes(e.peak_bytes), fmtBytes(e.reserved_peak_bytes), fmtBytes(e.total_bytes),
              e.fits === null ? "" : (e.fits ? "yes" : "no")];
    })));
  }

  function layers(root, r) {
    var rows = r.rows.filter(function (x) { return x.path; });
    var s = section(root, "Layers", "layers");
    var top = rows.slice().sort(function (a, b) { return (b.weight_bytes + b.saved_bytes) - (a.weight_bytes + a.saved_bytes); }).slice(0, 30);
    var canvas = canvasIn(s, Math.max(160, 22 * top.length + 60));
    charts.push(new Chart(canvas, {
      type: "bar",
      data: { labels: top.map(function (x) { return x.path; }),
              datasets: [{ label: "weights", data: top.map(function (x) { return x.weight_bytes; }), backgroundColor: COLORS.parameters },
                         { label: "saved for backward", data: top.map(function (x) { return x.saved_bytes; }), backgroundColor: COLORS.activations },
                         { label: "outputs", data: top.map(function (x) { return x.output_bytes; }), backgroundColor: COLORS.temporaries }] },
      options: { indexAxis: "y", animation: false, maintainAspectRatio: false,
                 scales: { x: bytesAxis("") },
                 plugins: { tooltip: { callbacks: { label: function (c) { return c.dataset.label + ": " + fmtBytes(c.parsed.x); } } } } }
    }));
    s.appendChild(table(["layer", "type", "params", "weights", "output", "saved", "MACs"], rows.map(function (x) {
      return [x.path, x.type, x.params.toLocaleString("en"), fmtBytes(x.weight_bytes), fmtBytes(x.output_bytes),
              fmtBytes(x.saved_bytes), x.macs.toLocaleString("en")];
    })));
  }

  function servePlan(root, r) {
    var parts = [
      el("span", { class: "big" }, ["KV cache ", el("strong", { id: "kv-bytes", "data-bytes": String(r.kv_available_bytes), text: fmtBytes(r.kv_available_bytes) })]),
      el("span", { class: "big" }, [el("strong", { id: "kv-blocks", text: r.num_blocks.toLocaleString("en") }), " blocks, ",
        el("strong", { text: r.cached_tokens.toLocaleString("en") }), " tokens"]),
      el("span", { class: "big verdict " + (r.fits ? "fits" : "oom"), id: "verdict",
        text: r.fits ? r.concurrency.toFixed(2) + " requests of " + r.max_model_len.toLocaleString("en") + " tokens at once"
                     : "does not serve one request of " + r.max_model_len.toLocaleString("en") + " tokens" })
    ];
    root.appendChild(el("p", { class: "summary" }, parts));
    var s = section(root, "One GPU's memory (tp " + r.tp + ")", "serve-split");
    var segments = [["weights", r.weights.total_bytes, COLORS.parameters], ["activation peak", r.activation_bytes, COLORS.activations],
                    ["KV cache", r.kv_available_bytes, COLORS.kv_cache], ["left by gpu_memory_utilization " + r.gpu_memory_utilization,
                    r.total_bytes - r.requested_bytes, COLORS.allocator_slack]];
    var canvas = canvasIn(s, 140);
    charts.push(new Chart(canvas, {
      type: "bar",
      data: { labels: [r.device], datasets: segments.map(function (g) { return { label: g[0], data: [g[1]], backgroundColor: g[2] }; }) },
      options: { indexAxis: "y", animation: false, maintainAspectRatio: false,
                 scales: { x: Object.assign(bytesAxis(""), { stacked: true, max: r.total_bytes }), y: { stacked: true } },
                 plugins: { legend: { position: "bottom" }, tooltip: { callbacks: { label: function (c) { return c.dataset.label + ": " + fmtBytes(c.parsed.x); } } } } }
    }));
    var rows = [["GPU memory", fmtBytes(r.total_bytes), r.device + " (" + r.arch + ")"],
                ["requested", fmtBytes(r.requested_bytes), "x gpu_memory_utilization " + r.gpu_memory_utilization],
                ["- weights", fmtBytes(r.weights.total_bytes), r.scheme_source]];
    r.activation_terms.forEach(function (t) { rows.push(["    " + t.name, fmtBytes(t.bytes), t.note]); });
    rows.push(["- activation peak", fmtBytes(r.activation_bytes), r.activation_method]);
    rows.push(["= KV cache memory", fmtBytes(r.kv_available_bytes), ""]);
    rows.push(["/ one block", fmtBytes(r.page_bytes), r.block_size + " tokens x " + r.kv_layers + " layers, " + r.kv_dtype]);
    rows.push(["= cache blocks", r.num_blocks.toLocaleString("en"), ""]);
    rows.push(["cached tokens", r.cached_tokens.toLocaleString("en"), ""]);
    rows.push(["largest context, one request", r.largest_context.toLocaleString("en"), ""]);
    r.outside_budget.forEach(function (t) { rows.push(["outside the budget: " + t.name, fmtBytes(t.bytes), t.note]); });
    s.appendChild(table(["term", "value", "how"], rows, { id: "serve-table" }));
    workload(root, { model: r.model, device: r.device, tp: r.tp, scheme: r.scheme, kv_dtype: r.kv_dtype,
                     block_size: r.block_size, max_model_len: r.max_model_len, max_num_batched_tokens: r.max_num_batched_tokens,
                     max_num_seqs: r.max_num_seqs, gpu_memory_utilization: r.gpu_memory_utilization, avg_len: r.avg_len,
                     concurrency_avg: r.concurrency_avg, min_tp: r.min_tp, target_concurrency: r.target_concurrency });
  }

  function workload(root, w) {
    var s = section(root, "Workload", "workload");
    s.appendChild(table(["option", "value"], Object.keys(w).map(function (k) {
      var v = w[k];
      return [k, v === null ? "—" : (typeof v === "object" ? JSON.stringify(v) : String(v))];
    }), { class: "kv" }));
  }
  function unknowns(root, list) {
    var s = section(root, "Assumptions and what is not modelled", "unknowns");
    if (!list.length) { s.appendChild(el("p", { text: "none" })); return; }
    s.appendChild(el("ul", {}, list.map(function (u) { return el("li", { text: u }); })));
  }

  function estimatePage(root, est, data) {
    verdict(root, est);
    if (data.timeline) timeline(root, data.timeline, est);
    budget(root, est);
    modules(root, data.modules);
  }

  function clear(root) {
    charts.forEach(function (c) { c.destroy(); });
    charts = [];
    root.innerHTML = "";
  }

  function render(root, data) {
    clear(root);
    var r = data.result;
    header(root, data);
    if (r.kind === "estimate") {
      estimatePage(root, r, data);
      workload(root, r.workload); unknowns(root, r.unknowns);
    } else if (r.kind === "fit") {
      curve(root, data.curve, "Total memory against batch size (the search's traces)");
      strategies(root, r);
      root.appendChild(el("h2", { text: "At the largest batch that fits (" + r.max_batch + ")" }));
      estimatePage(root, r.at_max, data);
      workload(root, r.at_max.workload); unknowns(root, r.at_max.unknowns);
    } else if (r.kind === "sweep") {
      curve(root, data.curve, "Total memory against batch size");
      sweepTable(root, r);
      if (r.estimates.length) {
        var e = r.estimates.filter(function (x) { return x.fits !== false; });
        e = e.length ? e[e.length - 1] : r.estimates[r.estimates.length - 1];
        root.appendChild(el("h2", { text: "Batch " + e.workload.batch }));
        estimatePage(root, e, data);
        workload(root, e.workload); unknowns(root, e.unknowns);
      }
    } else if (r.kind === "serve-plan") {
      servePlan(root, r);
      unknowns(root, r.unknowns);
    } else if (r.kind === "layers") {
      layers(root, r);
      workload(root, r.workload);
    } else {
      root.appendChild(el("pre", { text: JSON.stringify(r, null, 2) }));
    }
    root.appendChild(el("footer", { class: "muted", id: "version", text: "memlens " + data.version }));
  }

  return { render: render, clear: clear, fmtBytes: fmtBytes };
})();
