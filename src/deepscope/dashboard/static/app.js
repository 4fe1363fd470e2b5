// deepscope board: the page. Plain ES module, no build step; charts by plotly.js (window.Plotly, served locally).
//
// Safety rule for this file: every string that comes from the store (run names, tags, layer names, texts) is put
// into the page with textContent or as a plotly data/label string, never through innerHTML.
//
// Each view is one object in VIEWS with `mount(container)` (build its controls once) and `refresh()` (fetch and
// redraw; called on every poll while the view is shown): adding a view is one object here and one flag in
// /api/views.

const Plotly = window.Plotly;
const POLL_MS = 2000;
const MAX_POINTS = 2000;
// Characters of run names per /api/scalars/batch request: far below the request-line limits of HTTP servers.
const BATCH_QUERY = 6000;
const TOKEN = new URLSearchParams(window.location.search).get("token");
const COLORS = [
  "#1f77b4", "#e8590c", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
];
// TensorBoard's percentiles for distribution bands (in basis points of a normal: -inf, -1.5σ, -1σ, -0.5σ, 0, ...).
const PERCENTILES = [0, 6.68, 15.87, 30.85, 50, 69.15, 84.13, 93.32, 100];

// ---- plumbing ---------------------------------------------------------------------------------------------------

/** A URL with the page's token added (the server may require it on every request). */
function withToken(url) {
  if (!TOKEN) return url;
  const u = new URL(url, window.location.href);
  u.searchParams.set("token", TOKEN);
  return u.href;
}

/** GET api/<path> with query parameters (an array: the key repeated); the parsed JSON, or an Error with the
 * server's detail. */
async function api(path, params = {}) {
  const query = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) {
    if (Array.isArray(value)) for (const item of value) query.append(key, String(item));
    else if (value !== undefined && value !== null) query.set(key, String(value));
  }
  if (TOKEN) query.set("token", TOKEN);
  const headers = TOKEN ? { Authorization: `Bearer ${TOKEN}` } : {};
  const response = await fetch(`api/${path}?${query}`, { headers, cache: "no-store" });
  if (!response.ok) {
    let detail = response.statusText;
    try {
      detail = (await response.json()).detail || detail;
    } catch {
      // not JSON: keep the status text
    }
    throw new Error(`${path}: ${response.status} ${detail}`);
  }
  return response.json();
}

/** `names` cut into consecutive slices whose URL-encoded names add up to at most `size` characters each. */
function slices(names, size) {
  const out = [];
  let length = Infinity;
  for (const name of names) {
    const cost = encodeURIComponent(name).length + 6; // "&runs="
    if (length + cost > size) {
      out.push([]);
      length = 0;
    }
    out[out.length - 1].push(name);
    length += cost;
  }
  return out;
}

/** An element with attributes/properties and children (strings become text nodes: never parsed as HTML). */
function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === "class") node.className = value;
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (key in node) node[key] = value;
    else node.setAttribute(key, value);
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

/** A number from the API, where non-finite values come as strings; plotted as gaps (null). */
function num(value) {
  if (typeof value === "number") return value;
  return null;
}

/** Text for plotly, which reads trace names, labels and hover text as a small HTML dialect (<b>, <a href>,
 * &amp;): entities show every character as itself, so a run named "<b>x</b>" is drawn as typed. */
function plain(text) {
  return String(text).replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
}

function status(text, isError = false) {
  const node = document.getElementById("status");
  node.textContent = text;
  node.classList.toggle("error", isError);
}

function saveFile(name, text, type) {
  const url = URL.createObjectURL(new Blob([text], { type }));
  const link = el("a", { href: url, download: name });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}

function csvCell(value) {
  const text = value === null || value === undefined ? "" : String(value);
  // Quote always; a leading =,+,-,@ would be a formula in a spreadsheet, so such text gets a leading quote mark.
  const safe = /^[=+\-@\t\r]/.test(text) && Number.isNaN(Number(text)) ? `'${text}` : text;
  return `"${safe.replace(/"/g, '""')}"`;
}

function toCsv(header, rows) {
  return [header, ...rows].map((row) => row.map(csvCell).join(",")).join("\n") + "\n";
}

function fileName(...parts) {
  return parts.join("_").replace(/[^A-Za-z0-9._-]+/g, "-").replace(/^-+|-+$/g, "").slice(0, 120) || "chart";
}

/** A chart card: title, PNG/SVG/CSV buttons, and a plotly div. `csv()` returns [header, rows] at click time. */
function chartCard(title, note, csv) {
  const plot = el("div", { class: "plot" });
  const name = () => fileName(title);
  const card = el(
    "div",
    { class: "card" },
    el(
      "div",
      { class: "card-head" },
      el("span", { class: "title" }, title),
      el("span", { class: "note" }, note || ""),
      el(
        "span",
        { class: "tools" },
        el("button", {
          type: "button",
          title: "download the chart as PNG",
          onclick: () => Plotly.downloadImage(plot, { format: "png", filename: name(), scale: 2 }),
        }, "PNG"),
        el("button", {
          type: "button",
          title: "download the chart as SVG",
          onclick: () => Plotly.downloadImage(plot, { format: "svg", filename: name() }),
        }, "SVG"),
        el("button", {
          type: "button",
          title: "download the chart's data as CSV",
          class: "csv",
          onclick: () => {
            const [header, rows] = csv();
            saveFile(`${name()}.csv`, toCsv(header, rows), "text/csv");
          },
        }, "CSV"),
      ),
    ),
    plot,
  );
  return { card, plot, noteNode: card.querySelector(".note") };
}

const PLOT_CONFIG = {
  responsive: true,
  displaylogo: false,
  toImageButtonOptions: { format: "png", scale: 2 },
};

function baseLayout(extra = {}) {
  return {
    margin: { l: 55, r: 15, t: 10, b: 40 },
    showlegend: true,
    legend: { orientation: "h", y: -0.2, font: { size: 11 } },
    hovermode: "closest",
    font: { size: 11 },
    ...extra,
  };
}

/** Run names matching a filter: a regular expression when it is one, else a plain substring. */
function matcher(filter) {
  if (!filter) return () => true;
  try {
    const re = new RegExp(filter, "i");
    return (name) => re.test(name);
  } catch {
    const lower = filter.toLowerCase();
    return (name) => name.toLowerCase().includes(lower);
  }
}

function runColor(name) {
  const index = state.runs.findIndex((run) => run.name === name);
  return COLORS[(index < 0 ? 0 : index) % COLORS.length];
}

function tagsOf(kind, runs = state.runs) {
  const tags = new Set();
  for (const run of runs) {
    for (const [tag, k] of Object.entries(run.tags)) if (k === kind) tags.add(tag);
  }
  return [...tags].sort();
}

function runsWith(kind, tag) {
  return state.runs.filter((run) => run.tags[tag] === kind);
}

/** Fill a <select> with options, keeping the current choice when it is still there. */
function fillSelect(select, values, preferred) {
  const current = select.value || preferred;
  const same = select.options.length === values.length && values.every((v, i) => select.options[i].value === v);
  if (!same) select.replaceChildren(...values.map((value) => el("option", { value }, value)));
  if (values.includes(current)) select.value = current;
  else if (preferred !== undefined && values.includes(preferred)) select.value = preferred;
  return select.value;
}

// ---- scalars ----------------------------------------------------------------------------------------------------

/** TensorBoard's debiased exponential moving average; non-finite values pass through unsmoothed. */
function ema(values, weight) {
  let last = 0;
  let count = 0;
  return values.map((value) => {
    if (value === null || !Number.isFinite(value)) return value;
    last = last * weight + (1 - weight) * value;
    count += 1;
    return weight > 0 ? last / (1 - weight ** count) : value;
  });
}

const scalars = {
  title: "Scalars",
  series: new Map(), // `${run}\u0000${tag}` -> API answer
  zoom: new Map(), // tag -> {start, end} in steps, while zoomed in
  charts: new Map(), // tag -> {card, plot, noteNode}

  mount(container) {
    this.filter = el("input", {
      type: "text",
      placeholder: "name or regex",
      oninput: () => {
        this.updateRunList();
        this.draw(true);
      },
    });
    this.runList = el("div", { class: "runlist" });
    this.smoothing = el("input", { type: "range", min: 0, max: 0.99, step: 0.01, value: 0.6 });
    this.smoothingValue = el("span", {}, "0.60");
    this.smoothing.addEventListener("input", () => {
      this.smoothingValue.textContent = Number(this.smoothing.value).toFixed(2);
      this.draw();
    });
    this.xAxis = el(
      "select",
      { onchange: () => this.draw(true) },
      el("option", { value: "step" }, "step"),
      el("option", { value: "epoch" }, "epoch"),
      el("option", { value: "relative" }, "relative time (s)"),
      el("option", { value: "wall" }, "wall time"),
    );
    this.logY = el("input", { type: "checkbox", onchange: () => this.draw(true) });
    this.grid = el("div", { class: "grid" });
    this.selected = new Set();
    this.known = new Set();
    container.append(
      el(
        "aside",
        {},
        el("label", {}, "Runs (filter)", this.filter),
        this.runList,
        el("label", {}, el("span", {}, "Smoothing ", this.smoothingValue), this.smoothing),
        el("label", {}, "X axis", this.xAxis),
        el("label", { class: "inline" }, this.logY, "log y"),
      ),
      el("div", { class: "content" }, this.grid),
    );
  },

  visibleRuns() {
    const match = matcher(this.filter.value);
    return state.runs.filter((run) => this.selected.has(run.name) && match(run.name));
  },

  updateRunList() {
    const match = matcher(this.filter.value);
    const runs = state.runs.filter((run) => Object.values(run.tags).includes("scalar"));
    for (const run of runs) {
      if (!this.known.has(run.name)) {
        this.known.add(run.name);
        this.selected.add(run.name); // new runs start shown
      }
    }
    this.runList.replaceChildren(
      ...runs
        .filter((run) => match(run.name))
        .map((run) =>
          el(
            "label",
            { title: run.name },
            el("input", {
              type: "checkbox",
              checked: this.selected.has(run.name),
              onchange: (event) => {
                if (event.target.checked) this.selected.add(run.name);
                else this.selected.delete(run.name);
                this.refresh();
              },
            }),
            el("span", { class: "swatch", style: `background:${runColor(run.name)}` }),
            el("span", { class: "run-name" }, run.name),
          ),
        ),
    );
  },

  async refresh() {
    this.updateRunList();
    const runs = this.visibleRuns();
    const wanted = new Map(); // tag -> names of the runs to fetch it for
    for (const run of runs) {
      for (const [tag, kind] of Object.entries(run.tags)) {
        if (kind !== "scalar") continue;
        const zoom = this.zoom.get(tag) || {};
        const cached = this.series.get(`${run.name}\u0000${tag}`);
        // A run no writer holds any more cannot change: fetched once per range, not on every poll.
        if (cached && cached.range === `${zoom.start}:${zoom.end}` && run.status !== "running") continue;
        if (!wanted.has(tag)) wanted.set(tag, []);
        wanted.get(tag).push(run.name);
      }
    }
    // One request per tag for all its runs (in slices, to keep URLs short), not one per run and tag.
    const jobs = [];
    for (const [tag, names] of wanted) {
      const zoom = this.zoom.get(tag) || {};
      const range = `${zoom.start}:${zoom.end}`;
      for (const slice of slices(names, BATCH_QUERY)) {
        const params = { tag, runs: slice, start: zoom.start, end: zoom.end, max_points: MAX_POINTS };
        jobs.push(
          api("scalars/batch", params).then((answer) => {
            for (const series of answer.series) this.series.set(`${series.run}\u0000${tag}`, { ...series, range });
          }),
        );
      }
    }
    await Promise.all(jobs);
    this.draw();
  },

  x(answer, mode) {
    if (mode === "step") return answer.steps;
    if (mode === "epoch") return answer.epochs.map((e) => (e < 0 ? null : e));
    if (mode === "wall") return answer.wall_times.map((t) => new Date(t * 1000).toISOString());
    const first = answer.wall_times.length ? answer.wall_times[0] : 0;
    return answer.wall_times.map((t) => t - first);
  },

  draw(resetZoom = false) {
    const runs = this.visibleRuns();
    const tags = tagsOf("scalar", runs);
    const mode = this.xAxis.value;
    const weight = Number(this.smoothing.value);
    if (resetZoom) this.zoom.clear();
    for (const [tag, chart] of this.charts) {
      if (!tags.includes(tag)) {
        Plotly.purge(chart.plot);
        chart.card.remove();
        this.charts.delete(tag);
      }
    }
    for (const tag of tags) {
      let chart = this.charts.get(tag);
      if (!chart) {
        chart = chartCard(tag, "", () => this.csv(tag));
        chart.card.dataset.tag = tag;
        this.charts.set(tag, chart);
        this.grid.append(chart.card);
      }
      const traces = [];
      let total = 0;
      let shown = 0;
      // SVG lines draw crisply and need no WebGL; beyond ~20k points in one chart WebGL stays fast where SVG lags.
      const points = runs.reduce((n, run) => n + (this.series.get(`${run.name}\u0000${tag}`)?.steps.length || 0), 0);
      const type = points > 20000 ? "scattergl" : "scatter";
      for (const run of runs) {
        const answer = this.series.get(`${run.name}\u0000${tag}`);
        if (!answer || run.tags[tag] !== "scalar") continue;
        total += answer.total;
        shown += answer.steps.length;
        const x = this.x(answer, mode);
        const raw = answer.values.map(num);
        const color = runColor(run.name);
        traces.push({
          x,
          y: raw,
          name: plain(run.name),
          meta: run.name,
          legendgroup: run.name,
          showlegend: weight === 0,
          type,
          mode: "lines",
          line: { color, width: 1 },
          opacity: weight > 0 ? 0.25 : 1,
          hoverinfo: weight > 0 ? "skip" : "x+y+name",
        });
        if (weight > 0) {
          traces.push({
            x,
            y: ema(raw, weight),
            name: plain(run.name),
            meta: run.name,
            legendgroup: run.name,
            type,
            mode: "lines",
            line: { color, width: 2 },
            opacity: 1,
          });
        }
      }
      chart.noteNode.textContent = shown < total ? `${shown} of ${total} points` : `${total} points`;
      const layout = baseLayout({
        // Keeps the user's zoom across redraws; a new value (axis mode changed) resets it.
        uirevision: `${mode}|${this.logY.checked}|${this.zoomKey(tag)}`,
        xaxis: { title: { text: { step: "step", epoch: "epoch", relative: "seconds", wall: "" }[mode] },
          type: mode === "wall" ? "date" : "linear" },
        yaxis: { type: this.logY.checked ? "log" : "linear" },
      });
      Plotly.react(chart.plot, traces, layout, PLOT_CONFIG);
      if (!chart.plot.dataset.listening) {
        chart.plot.dataset.listening = "1";
        chart.plot.on("plotly_relayout", (event) => this.zoomed(tag, event));
      }
    }
    if (!tags.length) this.grid.replaceChildren(el("p", { class: "empty" }, "No scalars in the selected runs."));
    else this.grid.querySelector(":scope > p.empty")?.remove();
  },

  zoomKey(tag) {
    return this.zoom.has(tag) ? "zoomed" : "full";
  },

  /** Zoomed in: ask the server again for that step range, so its downsampling refines; zoomed out: whole series. */
  zoomed(tag, event) {
    if (event["xaxis.autorange"] || event.autosize) {
      if (this.zoom.delete(tag)) this.refresh().catch(report);
      return;
    }
    const range = event["xaxis.range"] || [event["xaxis.range[0]"], event["xaxis.range[1]"]];
    const [low, high] = range;
    if (low === undefined || high === undefined) return;
    const mode = this.xAxis.value;
    let start;
    let end;
    if (mode === "step") {
      start = Math.floor(Number(low));
      end = Math.ceil(Number(high));
    } else {
      // A time or epoch range: the steps whose points fall inside it, from the data already shown.
      const toX = (v) => (mode === "wall" ? new Date(v).getTime() / 1000 : Number(v));
      const [a, b] = [toX(low), toX(high)];
      for (const run of this.visibleRuns()) {
        const answer = this.series.get(`${run.name}\u0000${tag}`);
        if (!answer) continue;
        const first = answer.wall_times[0] || 0;
        answer.steps.forEach((step, i) => {
          const t = mode === "wall" ? answer.wall_times[i]
            : mode === "epoch" ? (answer.epochs[i] < 0 ? NaN : answer.epochs[i])
              : answer.wall_times[i] - first;
          if (t >= a && t <= b) {
            start = start === undefined ? step : Math.min(start, step);
            end = end === undefined ? step : Math.max(end, step);
          }
        });
      }
      if (start === undefined) return;
    }
    this.zoom.set(tag, { start, end });
    this.refresh().catch(report);
  },

  csv(tag) {
    const rows = [];
    for (const run of this.visibleRuns()) {
      const answer = this.series.get(`${run.name}\u0000${tag}`);
      if (!answer) continue;
      answer.steps.forEach((step, i) => {
        const epoch = answer.epochs[i] < 0 ? "" : answer.epochs[i];
        rows.push([run.name, tag, step, epoch, answer.wall_times[i], answer.values[i]]);
      });
    }
    return [["run", "tag", "step", "epoch", "wall_time", "value"], rows];
  },
};

// ---- distributions ----------------------------------------------------------------------------------------------

/** The value below which `q` percent of a histogram's mass lies (uniform bins, linear inside a bin). */
function percentile(point, counts, cumulative, q) {
  const total = cumulative[cumulative.length - 1];
  const low = num(point.low);
  const high = num(point.high);
  if (!total || low === null || high === null) return null;
  const width = (high - low) / counts.length;
  const target = (q / 100) * total;
  let i = cumulative.findIndex((c) => c >= target);
  if (i < 0) i = counts.length - 1;
  // The extremes are the first and last non-empty bins' edges, not the whole range.
  if (q === 0) i = counts.findIndex((c) => c > 0);
  const before = i > 0 ? cumulative[i - 1] : 0;
  const inside = counts[i] > 0 ? (target - before) / counts[i] : 0;
  return low + width * (i + Math.min(Math.max(inside, 0), 1));
}

function bands(answer) {
  const steps = answer.points.map((p) => p.step);
  const lines = PERCENTILES.map(() => []);
  for (const point of answer.points) {
    const counts = point.counts.map(Number);
    const cumulative = [];
    counts.reduce((sum, c, i) => (cumulative[i] = sum + c), 0);
    PERCENTILES.forEach((q, k) => lines[k].push(percentile(point, counts, cumulative, q)));
  }
  const traces = [];
  const n = PERCENTILES.length;
  // Nested bands, outermost first: each pair is (lower line, upper line filled down to it).
  for (let k = 0; k < (n - 1) / 2; k += 1) {
    const shade = 0.12 + 0.12 * k;
    traces.push({ x: steps, y: lines[k], mode: "lines", line: { width: 0, color: "#e8590c" }, showlegend: false,
      hoverinfo: "skip", type: "scatter" });
    traces.push({
      x: steps, y: lines[n - 1 - k], mode: "lines", line: { width: 0, color: "#e8590c" }, fill: "tonexty",
      fillcolor: `rgba(232,89,12,${shade})`, name: `${PERCENTILES[k]}–${PERCENTILES[n - 1 - k]}%`,
      hoverinfo: "skip", type: "scatter", showlegend: false,
    });
  }
  traces.push({ x: steps, y: lines[(n - 1) / 2], mode: "lines", line: { color: "#b23c00", width: 1.5 },
    name: "median", type: "scatter" });
  return traces;
}

/** Offset histograms (ridgeline): one curve per step, later steps lower, at most `limit` steps. */
function ridgelines(answer, limit = 30) {
  const points = answer.points;
  const every = Math.max(1, Math.ceil(points.length / limit));
  const chosen = points.filter((_, i) => i % every === 0 || i === points.length - 1);
  const traces = [];
  const peak = Math.max(1, ...chosen.map((p) => Math.max(...p.counts.map(Number))));
  chosen.forEach((point, k) => {
    const low = num(point.low);
    const high = num(point.high);
    if (low === null || high === null) return;
    const n = point.counts.length;
    const width = (high - low) / n;
    const x = point.counts.map((_, i) => low + width * (i + 0.5));
    const offset = chosen.length - 1 - k;
    const color = `hsl(${20 + 200 * (k / Math.max(1, chosen.length - 1))}, 70%, 45%)`;
    traces.push({ x, y: x.map(() => offset), mode: "lines", line: { width: 0 }, hoverinfo: "skip",
      showlegend: false, type: "scatter" });
    traces.push({
      x, y: point.counts.map((c) => offset + (1.8 * Number(c)) / peak), mode: "lines", fill: "tonexty",
      line: { color, width: 1 }, fillcolor: "rgba(255,255,255,0.85)", name: `step ${point.step}`,
      showlegend: false, type: "scatter",
    });
  });
  const tickvals = chosen.map((_, k) => chosen.length - 1 - k);
  return { traces, tickvals, ticktext: chosen.map((p) => String(p.step)) };
}

const distributions = {
  title: "Distributions",
  mount(container) {
    this.tag = el("select", { onchange: () => this.refresh().catch(report) });
    this.left = el("select", { onchange: () => this.refresh().catch(report) });
    this.right = el("select", { onchange: () => this.refresh().catch(report) });
    this.mode = el(
      "select",
      { onchange: () => this.refresh().catch(report) },
      el("option", { value: "bands" }, "percentile bands"),
      el("option", { value: "ridges" }, "offset histograms"),
    );
    this.info = el("p", { class: "note" });
    this.pair = el("div", { class: "side-by-side" });
    this.charts = [];
    container.append(
      el(
        "aside",
        {},
        el("label", {}, "Histogram (layer / kind)", this.tag),
        el("label", {}, "Left run", this.left),
        el("label", {}, "Right run", this.right),
        el("label", {}, "View", this.mode),
        this.info,
      ),
      el("div", { class: "content" }, this.pair),
    );
  },

  async refresh() {
    const tag = fillSelect(this.tag, tagsOf("histogram"));
    if (!tag) return;
    const names = runsWith("histogram", tag).map((run) => run.name);
    const left = fillSelect(this.left, names, names[0]);
    const right = fillSelect(this.right, ["(none)", ...names], names[1] || "(none)");
    const chosen = [left, right].filter((name) => name && name !== "(none)");
    this.cache ??= new Map();
    const answers = await Promise.all(chosen.map(async (run) => {
      const key = `${run}\u0000${tag}`;
      const status = state.runs.find((r) => r.name === run)?.status;
      // A run no writer holds any more cannot change: fetched once, not on every poll.
      if (this.cache.has(key) && status !== "running") return this.cache.get(key);
      const answer = await api("histograms", { run, tag });
      this.cache.set(key, answer);
      return answer;
    }));
    while (this.charts.length > answers.length) {
      const chart = this.charts.pop();
      Plotly.purge(chart.plot);
      chart.card.remove();
    }
    answers.forEach((answer, i) => {
      if (!this.charts[i]) {
        const chart = chartCard("", "", () => this.csv(i));
        this.charts.push(chart);
        this.pair.append(chart.card);
      }
      const chart = this.charts[i];
      chart.answer = answer;
      chart.card.querySelector(".title").textContent = answer.run;
      chart.noteNode.textContent = `${answer.tag} · ${answer.points.length} steps`;
      if (this.mode.value === "bands") {
        Plotly.react(chart.plot, bands(answer), baseLayout({ uirevision: `bands|${answer.run}|${tag}`,
          xaxis: { title: { text: "step" } }, yaxis: { title: { text: "value" } } }), PLOT_CONFIG);
      } else {
        const { traces, tickvals, ticktext } = ridgelines(answer);
        Plotly.react(chart.plot, traces, baseLayout({ uirevision: `ridges|${answer.run}|${tag}`, showlegend: false,
          xaxis: { title: { text: "value" } }, yaxis: { title: { text: "step" }, tickvals, ticktext } }),
        PLOT_CONFIG);
      }
    });
    const first = answers[0];
    this.info.textContent = first ? `layer: ${first.layer || "—"} · kind: ${first.kind || "—"}` : "";
  },

  csv(i) {
    const answer = this.charts[i].answer;
    const rows = [];
    for (const point of answer.points) {
      const n = point.counts.length;
      const low = num(point.low);
      const width = (num(point.high) - low) / n;
      point.counts.forEach((count, b) => rows.push([answer.run, answer.tag, point.step, low + width * b,
        low + width * (b + 1), count]));
    }
    return [["run", "tag", "step", "bin_low", "bin_high", "count"], rows];
  },
};

// ---- graph ------------------------------------------------------------------------------------------------------

function formatCount(n) {
  if (n >= 1e6) return `${(n / 1e6).toFixed(2)}M`;
  if (n >= 1e3) return `${(n / 1e3).toFixed(1)}k`;
  return String(n);
}

const graph = {
  title: "Graph",
  mount(container) {
    this.run = el("select", { onchange: () => { this.shown = null; this.refresh().catch(report); } });
    this.tag = el("select", { onchange: () => { this.shown = null; this.refresh().catch(report); } });
    this.summary = el("div", { class: "note" });
    this.tree = el("div", { class: "tree" });
    this.chart = chartCard("parameters by module", "click a block to zoom in", () => this.csv());
    container.append(
      el("aside", {}, el("label", {}, "Run", this.run), el("label", {}, "Graph", this.tag), this.summary),
      el(
        "div",
        { class: "content" },
        el("div", { class: "card" }, el("div", { class: "card-head" },
          el("span", { class: "title" }, "module hierarchy")), this.tree),
        el("div", { style: "height:1rem" }),
        this.chart.card,
      ),
    );
  },

  async refresh() {
    const names = state.runs.filter((run) => Object.values(run.tags).includes("graph")).map((run) => run.name);
    const run = fillSelect(this.run, names, names[0]);
    if (!run) return;
    const graphTags = Object.entries(state.runs.find((r) => r.name === run).tags)
      .filter(([, kind]) => kind === "graph").map(([tag]) => tag);
    const tag = fillSelect(this.tag, graphTags, graphTags.includes("model") ? "model" : graphTags[0]);
    const key = `${run}\u0000${tag}`;
    if (this.shown === key) return; // a graph does not change while a run trains
    const answer = await api("graph", { run, tag });
    this.shown = key;
    this.modules = answer.modules;
    this.drawTree(answer.modules);
    const ops = answer.ops;
    this.summary.replaceChildren(
      el("p", {}, `${answer.modules.length} modules`),
      el("p", {}, ops ? `op graph: ${ops.nodes.length} nodes, ${ops.edges.length} edges (${answer.ops_method})`
        : `op graph: ${answer.ops_method}`),
    );
    const ids = answer.modules.map((m) => (m.name === "" ? "(model)" : m.name));
    Plotly.react(
      this.chart.plot,
      [{
        type: "icicle",
        ids,
        labels: answer.modules.map((m) => plain(`${m.name === "" ? "(model)" : m.name.split(".").pop()}: ${m.type}`)),
        customdata: answer.modules.map((m) => plain(m.name === "" ? "(model)" : m.name)),
        parents: answer.modules.map((m) => (m.parent === null ? "" : m.parent === "" ? "(model)" : m.parent)),
        values: answer.modules.map((m) => m.params),
        branchvalues: "total",
        hovertemplate: "%{customdata}<br>%{value} parameters<extra></extra>",
      }],
      baseLayout({ margin: { l: 5, r: 5, t: 5, b: 5 } }),
      PLOT_CONFIG,
    );
  },

  drawTree(modules) {
    const children = new Map();
    for (const m of modules) {
      if (m.parent === null) continue;
      if (!children.has(m.parent)) children.set(m.parent, []);
      children.get(m.parent).push(m);
    }
    const line = (m) => [
      el("span", { class: "name" }, m.name === "" ? "(model)" : m.name.split(".").pop()),
      " ",
      el("span", { class: "type" }, m.type),
      " ",
      el("span", { class: "params" }, `${formatCount(m.params)} params`),
      m.shape ? [" ", el("span", { class: "shape" }, `→ [${m.shape.join(", ")}]`)] : null,
    ];
    const node = (m, depth) => {
      const kids = children.get(m.name) || [];
      if (!kids.length) return el("div", { class: "leaf", dataset: { module: m.name } }, line(m));
      return el("details", { open: depth < 2, dataset: { module: m.name } }, el("summary", {}, line(m)),
        kids.map((k) => node(k, depth + 1)));
    };
    this.tree.replaceChildren(...modules.filter((m) => m.parent === null).map((m) => node(m, 0)));
  },

  csv() {
    return [["name", "type", "parent", "params", "shape"],
      (this.modules || []).map((m) => [m.name, m.type, m.parent, m.params, m.shape ? m.shape.join("x") : ""])];
  },
};

// ---- images -----------------------------------------------------------------------------------------------------

const images = {
  title: "Images",
  mount(container) {
    this.filter = el("input", { type: "text", placeholder: "name or regex", oninput: () => this.refresh() });
    this.grid = el("div", { class: "grid images" });
    this.cards = new Map();
    container.append(
      el("aside", {}, el("label", {}, "Runs (filter)", this.filter)),
      el("div", { class: "content" }, this.grid),
    );
  },

  async refresh() {
    const match = matcher(this.filter.value);
    const wanted = [];
    for (const run of state.runs) {
      if (!match(run.name)) continue;
      for (const [tag, kind] of Object.entries(run.tags)) if (kind === "image") wanted.push([run.name, tag]);
    }
    const keys = new Set(wanted.map(([run, tag]) => `${run}\u0000${tag}`));
    for (const [key, card] of this.cards) {
      if (!keys.has(key)) {
        card.node.remove();
        this.cards.delete(key);
      }
    }
    await Promise.all(wanted.map(async ([run, tag]) => {
      const answer = await api("images", { run, tag });
      const key = `${run}\u0000${tag}`;
      let card = this.cards.get(key);
      if (!card) {
        const img = el("img", { alt: `${tag} of ${run}` });
        const label = el("span", { class: "note" });
        const slider = el("input", { type: "range", min: 0, max: 0, step: 1, value: 0 });
        card = { img, label, slider, node: el("div", { class: "card" },
          el("div", { class: "card-head" }, el("span", { class: "title" }, `${run} · ${tag}`), label), img, slider) };
        card.follow = true; // the slider follows the newest image until the user moves it
        slider.addEventListener("input", () => {
          card.follow = Number(slider.value) === card.points.length - 1;
          this.show(card);
        });
        this.cards.set(key, card);
        this.grid.append(card.node);
      }
      card.points = answer.points;
      card.slider.max = Math.max(0, answer.points.length - 1);
      if (card.follow) card.slider.value = card.slider.max;
      this.show(card);
    }));
  },

  show(card) {
    const point = card.points[Number(card.slider.value)];
    if (!point) return;
    const src = withToken(point.url);
    if (card.img.getAttribute("src") !== src) card.img.src = src;
    card.img.title = point.caption || "";
    card.label.textContent = `step ${point.step} · ${point.width}×${point.height} · ${Number(card.slider.value) + 1}`
      + ` of ${card.points.length}`;
  },
};

// ---- text -------------------------------------------------------------------------------------------------------

const texts = {
  title: "Text",
  mount(container) {
    this.list = el("div", { class: "texts" });
    container.append(el("div", { class: "content" }, this.list));
  },

  async refresh() {
    const wanted = [];
    for (const run of state.runs) {
      for (const [tag, kind] of Object.entries(run.tags)) if (kind === "text") wanted.push([run.name, tag]);
    }
    const answers = await Promise.all(wanted.map(([run, tag]) => api("text", { run, tag })));
    this.list.replaceChildren(...answers.map((answer, i) => el(
      "div",
      { class: "card" },
      el("div", { class: "card-head" }, el("span", { class: "title" }, `${wanted[i][0]} · ${wanted[i][1]}`)),
      answer.points.map((point) => el("div", {}, el("span", { class: "step" }, `step ${point.step}`),
        el("pre", {}, point.text))),
    )));
  },
};

// ---- the page ---------------------------------------------------------------------------------------------------

const VIEWS = { scalars, distributions, graph, images, text: texts };
const state = { runs: [], views: {}, active: null, mounted: new Map(), busy: false };

function report(error) {
  status(String(error.message || error), true);
}

function select(name) {
  state.active = name;
  for (const button of document.querySelectorAll("#tabs button")) {
    button.classList.toggle("active", button.dataset.view === name);
  }
  const main = document.getElementById("view");
  if (!state.mounted.has(name)) {
    const container = el("div", { class: "view", dataset: { view: name } });
    container.style.display = "contents";
    VIEWS[name].mount(container);
    state.mounted.set(name, container);
    main.append(container);
  }
  for (const [key, container] of state.mounted) container.style.display = key === name ? "contents" : "none";
  const query = new URLSearchParams(window.location.search);
  query.set("view", name);
  history.replaceState(null, "", `?${query}`);
  VIEWS[name].refresh().then(() => status(`updated ${new Date().toLocaleTimeString()}`), report);
}

function drawTabs() {
  const nav = document.getElementById("tabs");
  const available = Object.keys(VIEWS).filter((name) => state.views[name]);
  const current = [...nav.children].map((b) => b.dataset.view);
  if (current.join() !== available.join()) {
    nav.replaceChildren(...available.map((name) => el("button", {
      type: "button",
      dataset: { view: name },
      class: name === state.active ? "active" : "",
      onclick: () => select(name),
    }, VIEWS[name].title)));
  }
  document.getElementById("empty").hidden = available.length > 0;
  return available;
}

async function poll() {
  if (state.busy) return;
  state.busy = true;
  try {
    [state.runs, state.views] = await Promise.all([api("runs"), api("views")]);
    const available = drawTabs();
    if (!state.active || !available.includes(state.active)) {
      const asked = new URLSearchParams(window.location.search).get("view");
      if (available.length) select(available.includes(asked) ? asked : available[0]);
    } else {
      await VIEWS[state.active].refresh();
    }
    status(`${state.runs.length} runs · updated ${new Date().toLocaleTimeString()}`);
  } catch (error) {
    report(error);
  } finally {
    state.busy = false;
  }
}

poll();
setInterval(poll, POLL_MS);
