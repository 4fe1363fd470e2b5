// deepscope board: the page. Plain ES module, no build step; charts by plotly.js (window.Plotly, served locally).
//
// Safety rule for this file: every string that comes from the store (run names, tags, layer names, texts) is put
// into the page with textContent or as a plotly data/label string, never through innerHTML.
//
// Each view is one object in VIEWS with `mount(container)` (build its controls once) and `refresh()` (fetch and
// redraw; called on every poll while the view is shown): adding a view is one object here and one flag in
// /api/views.

// index.html loads plotly.js beside this script, which starts its requests at once: api() hands an answer on (to be
// drawn) only once plotly is there, and the view's controls take no input until then.
let Plotly = window.Plotly;
const plotlyReady = Promise.resolve(window.plotlyLoaded).then(() => {
  Plotly = window.Plotly;
});
document.getElementById("view").inert = true;
plotlyReady.then(() => {
  document.getElementById("view").inert = false;
}, () => {});
const POLL_MS = 2000;
const MAX_POINTS = 2000;
// Scalars: points asked of the server per chart, shared by the runs overlaid in it (each run gets a power of two, so
// toggling one run seldom changes the others' requests). A chart is about 1,000 px wide, so more points only cost
// drawing time (one run gets MAX_POINTS, two per pixel; 100 overlaid runs 512 each, where 1,024 each drew 0.3 s
// slower and looked the same); the server's min/max downsampling keeps every spike, and zooming in asks again for
// the visible range.
const CHART_POINTS = 64000;
const MIN_POINTS = 64;
// Scalar lines are SVG: with CHART_POINTS bounding a chart, SVG draws in about a second even without a GPU, where
// WebGL (scattergl) in a browser without one rasterises in software and takes many times longer.
const LINE_TYPE = "scatter";
// Characters of run names per /api/scalars/batch request: far below the request-line limits of HTTP servers.
const BATCH_QUERY = 6000;
const TOKEN = new URLSearchParams(window.location.search).get("token");
const COLORS = [
  "#1f77b4", "#e8590c", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
];
// TensorBoard's percentiles for distribution bands (in basis points of a normal: -inf, -1.5σ, -1σ, -0.5σ, 0, ...).
const PERCENTILES = [0, 6.68, 15.87, 30.85, 50, 69.15, 84.13, 93.32, 100];

// ---- plumbing ---------------------------------------------------------------------------------------------------

// What a run's status means, for the badge beside its name; a finished run gets none.
const STATUS_TITLES = {
  running: "a process is writing this run now",
  interrupted: "stopped before its end: Ctrl-C, or its process ended without closing it",
  failed: "ended by an error (its message is under the tag run/error)",
  unreadable: "this run could not be read",
};

/** The badge of a run's status (`running`, `interrupted`, `failed`, ...), or null for a finished run. */
function statusBadge(run) {
  if (run.status === "finished") return null;
  const title = STATUS_TITLES[run.status] ?? run.status;
  return el("span", { class: `run-status status-${run.status}`, title: run.error ? `${title}: ${run.error}` : title },
    run.status);
}

/** A URL with the page's token added (the server may require it on every request). */
function withToken(url) {
  if (!TOKEN) return url;
  const u = new URL(url, window.location.href);
  u.searchParams.set("token", TOKEN);
  return u.href;
}

/** GET api/<path> with query parameters (an array: the key repeated); the parsed JSON, or an Error with the
 * server's detail. The request goes out at once; the answer is handed on once plotly.js is there, to be drawn. */
async function api(path, params = {}) {
  const answer = await get(path, params);
  await plotlyReady;
  return answer;
}

/** api() for answers that draw nothing (the run list, the views): not waiting for plotly.js. */
async function get(path, params = {}) {
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

/** An array the API sent as `{dtype: "<f8" | "<i8", base64}` (`encoding=base64`: little-endian bytes, cheap for
 * the server to make) as plain numbers, with non-finite floats as the strings "NaN", "Infinity", "-Infinity",
 * exactly as the JSON encoding sends them. */
function unpack(packed) {
  const bytes = base64Bytes(packed.base64);
  const view = new DataView(bytes.buffer); // explicit little-endian reads, whatever the machine's byte order
  const n = bytes.length / 8;
  const out = new Array(n);
  if (packed.dtype === "<i8") {
    for (let i = 0; i < n; i += 1) out[i] = Number(view.getBigInt64(8 * i, true));
  } else {
    for (let i = 0; i < n; i += 1) {
      const x = view.getFloat64(8 * i, true);
      out[i] = Number.isFinite(x) ? x : Number.isNaN(x) ? "NaN" : x > 0 ? "Infinity" : "-Infinity";
    }
  }
  return out;
}

/** The bytes of a base64 string (the browser's own decoder where it has one). */
function base64Bytes(text) {
  if (Uint8Array.fromBase64) return Uint8Array.fromBase64(text);
  const binary = atob(text);
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i += 1) bytes[i] = binary.charCodeAt(i);
  return bytes;
}

const LITTLE_ENDIAN = new Uint8Array(new Uint32Array([1]).buffer)[0] === 1;

const TYPED = {
  "<f4": [Float32Array, "getFloat32"],
  "<i4": [Int32Array, "getInt32"],
  "<u2": [Uint16Array, "getUint16"],
  "<u1": [Uint8Array, "getUint8"],
};

/** An array the API sent as `{dtype: "<f4" | "<i4" | "<u2" | "<u1", base64}` as the typed array of that dtype: on
 * a little-endian machine (nearly all) the bytes are used as they are, so a million 3D points cost one copy. */
function typed(packed) {
  const bytes = base64Bytes(packed.base64);
  const [Type, getter] = TYPED[packed.dtype];
  const size = Type.BYTES_PER_ELEMENT;
  if (LITTLE_ENDIAN) return new Type(bytes.buffer, bytes.byteOffset, bytes.length / size);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.length);
  const out = new Type(bytes.length / size);
  for (let i = 0; i < out.length; i += 1) out[i] = view[getter](size * i, true);
  return out;
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

/** Points to ask per run when `runs` runs are overlaid in one chart (see CHART_POINTS). */
function pointsPerRun(runs) {
  const share = 2 ** Math.floor(Math.log2(CHART_POINTS / Math.max(runs, 1)));
  return Math.max(MIN_POINTS, Math.min(MAX_POINTS, share));
}

/** Whether two answers for the same run, tag and range hold the same points (a live run that logged nothing new). */
function samePoints(a, b) {
  const n = a.steps.length;
  return a.range === b.range && a.total === b.total && n === b.steps.length
    && (n === 0 || (a.steps[n - 1] === b.steps[n - 1] && a.wall_times[n - 1] === b.wall_times[n - 1]));
}

const scalars = {
  title: "Scalars",
  series: new Map(), // `${run}\u0000${tag}` -> API answer (the same object while its points are unchanged)
  traces: new WeakMap(), // API answer -> {key, traces} last drawn from it, reused while the x axis and smoothing stay
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
    this.layouts = el("div", { class: "layouts" }); // the custom-scalars charts, above the per-tag ones
    this.layoutCharts = new Map(); // `${category}\u0000${title}` -> {card, plot, noteNode, chart}
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
      el("div", { class: "content" }, this.layouts, this.grid),
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
            statusBadge(run),
          ),
        ),
    );
  },

  async refresh() {
    this.updateRunList();
    const runs = this.visibleRuns();
    const overlaid = new Map(); // tag -> how many of the shown runs have it (they share the chart's points)
    for (const run of runs) {
      for (const [tag, kind] of Object.entries(run.tags)) {
        if (kind === "scalar") overlaid.set(tag, (overlaid.get(tag) || 0) + 1);
      }
    }
    const request = (tag) => {
      const zoom = this.zoom.get(tag) || {};
      const points = pointsPerRun(overlaid.get(tag));
      return { start: zoom.start, end: zoom.end, points, range: `${zoom.start}:${zoom.end}:${points}` };
    };
    const wanted = new Map(); // tag -> names of the runs to fetch it for
    for (const run of runs) {
      for (const [tag, kind] of Object.entries(run.tags)) {
        if (kind !== "scalar") continue;
        const cached = this.series.get(`${run.name}\u0000${tag}`);
        // A run no writer holds any more cannot change: fetched once per range, not on every poll.
        if (cached && cached.range === request(tag).range && run.status !== "running") continue;
        if (!wanted.has(tag)) wanted.set(tag, []);
        wanted.get(tag).push(run.name);
      }
    }
    // One request per tag for all its runs (in slices, to keep URLs short), not one per run and tag.
    const jobs = [];
    for (const [tag, names] of wanted) {
      const { start, end, points, range } = request(tag);
      for (const slice of slices(names, BATCH_QUERY)) {
        const params = { tag, runs: slice, start, end, max_points: points, encoding: "base64" };
        jobs.push(
          api("scalars/batch", params).then((answer) => {
            for (const series of answer.series) {
              const arrays = { steps: 0, values: 0, epochs: 0, wall_times: 0 };
              for (const name of Object.keys(arrays)) arrays[name] = unpack(series[name]);
              const key = `${series.run}\u0000${tag}`;
              const fresh = { ...series, ...arrays, range };
              const old = this.series.get(key);
              // Nothing new (a live run between two writes): keep the old answer, so draw() leaves its chart be.
              if (!old || !samePoints(old, fresh)) this.series.set(key, fresh);
            }
          }),
        );
      }
    }
    const layout = state.runs.some((run) => Object.values(run.tags).includes("custom_scalars"))
      ? api("custom_scalars") : Promise.resolve({ categories: [] });
    [this.layoutAnswer] = await Promise.all([layout, ...jobs]);
    this.draw();
  },

  /** TensorBoard's custom scalars: per category a heading and its charts, each overlaying the tags the server
   * matched in the shown runs (a multiline chart), or one tag with a band between two others (a margin chart).
   * Drawn from the series the per-tag charts fetched; smoothing and x axis as there. */
  drawLayouts(answer = this.layoutAnswer || { categories: [] }) {
    const runs = this.visibleRuns();
    const mode = this.xAxis.value;
    const weight = Number(this.smoothing.value);
    const wanted = new Set();
    const nodes = [];
    const toDraw = [];
    for (const { category, charts } of answer.categories) {
      nodes.push(el("h3", {}, category));
      const grid = el("div", { class: "grid" });
      nodes.push(grid);
      for (const chart of charts) {
        const key = `${category}\u0000${chart.title}`;
        wanted.add(key);
        let drawn = this.layoutCharts.get(key);
        if (!drawn) {
          drawn = chartCard(chart.title, "", () => this.layoutCsv(drawn.chart));
          drawn.card.dataset.layout = chart.type;
          this.layoutCharts.set(key, drawn);
        }
        drawn.chart = chart;
        grid.append(drawn.card);
        toDraw.push(drawn);
      }
    }
    this.layouts.replaceChildren(...nodes); // the same chart cards, moved into fresh category sections
    for (const drawn of toDraw) {
      const { chart } = drawn;
      const traces = this.layoutTraces(chart, runs, mode, weight);
      drawn.noteNode.textContent = chart.type === "margin" ? chart.tags.join(" · ") : chart.tags.join(" | ");
      const layout = baseLayout({
        uirevision: `${mode}|${this.logY.checked}`,
        xaxis: { title: { text: { step: "step", epoch: "epoch", relative: "seconds", wall: "" }[mode] },
          type: mode === "wall" ? "date" : "linear" },
        yaxis: { type: this.logY.checked ? "log" : "linear" },
      });
      Plotly.react(drawn.plot, traces, layout, PLOT_CONFIG);
    }
    for (const [key, drawn] of this.layoutCharts) {
      if (!wanted.has(key)) {
        Plotly.purge(drawn.plot);
        this.layoutCharts.delete(key);
      }
    }
  },

  layoutTraces(chart, runs, mode, weight) {
    const traces = [];
    const shown = runs.filter((run) => chart.runs[run.name]);
    shown.forEach((run, r) => {
      const series = chart.runs[run.name].map((tag) => this.series.get(`${run.name}\u0000${tag}`));
      if (series.some((answer) => !answer)) return; // not fetched yet: drawn on the next refresh
      const smooth = (answer) => {
        const raw = answer.values.map(num);
        return weight > 0 ? ema(raw, weight) : raw;
      };
      const suffix = shown.length > 1 ? ` (${plain(run.name)})` : "";
      if (chart.type === "margin") {
        const [value, lower, upper] = series;
        const color = runColor(run.name);
        const common = { type: LINE_TYPE, mode: "lines", legendgroup: run.name };
        traces.push(
          { ...common, x: this.x(lower, mode), y: smooth(lower), line: { width: 0, color }, showlegend: false,
            hoverinfo: "skip" },
          { ...common, x: this.x(upper, mode), y: smooth(upper), line: { width: 0, color }, fill: "tonexty",
            fillcolor: fade(color, 0.2), name: `${plain(chart.tags[1])} – ${plain(chart.tags[2])}${suffix}` },
          { ...common, x: this.x(value, mode), y: smooth(value), line: { width: 2, color },
            name: `${plain(chart.tags[0])}${suffix}` },
        );
        return;
      }
      series.forEach((answer, t) => {
        const color = COLORS[(r * series.length + t) % COLORS.length];
        traces.push({ type: LINE_TYPE, mode: "lines", x: this.x(answer, mode), y: smooth(answer),
          name: `${plain(answer.tag)}${suffix}`, line: { width: 2, color } });
      });
    });
    return traces;
  },

  layoutCsv(chart) {
    const rows = [];
    for (const run of this.visibleRuns()) {
      for (const tag of chart.runs[run.name] || []) {
        const answer = this.series.get(`${run.name}\u0000${tag}`);
        if (answer) answer.steps.forEach((step, i) => rows.push([run.name, tag, step, answer.values[i]]));
      }
    }
    return [["run", "tag", "step", "value"], rows];
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
      const shownRuns = runs.filter((run) => run.tags[tag] === "scalar" && this.series.has(`${run.name}\u0000${tag}`));
      const answers = shownRuns.map((run) => this.series.get(`${run.name}\u0000${tag}`));
      // Keeps the user's zoom across redraws; a new value (axis mode changed) resets it.
      const uirevision = `${mode}|${this.logY.checked}|${this.zoomKey(tag)}`;
      // A run's colour is its place among all runs, which a new run can shift.
      const colors = shownRuns.map((run) => runColor(run.name));
      const drawn = `${uirevision}|${weight}|${colors.join()}`;
      // The periodic refresh with nothing new (same runs, same answers, same settings): the chart stays as it is.
      const last = chart.drawn;
      if (last && last.key === drawn && last.answers.length === answers.length
          && last.answers.every((answer, i) => answer === answers[i])) continue;
      chart.drawn = { key: drawn, answers };
      const traces = [];
      let total = 0;
      let shown = 0;
      shownRuns.forEach((run, i) => {
        const answer = answers[i];
        total += answer.total;
        shown += answer.steps.length;
        traces.push(...this.runTraces(run.name, answer, mode, weight, colors[i]));
      });
      chart.noteNode.textContent = shown < total ? `${shown} of ${total} points` : `${total} points`;
      const layout = baseLayout({
        uirevision,
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
    this.drawLayouts();
  },

  /** A run's lines in a chart: its raw points and, with smoothing on, their EMA. The same trace objects as last time
   * while the answer, x axis, smoothing and colour are unchanged, so Plotly.react sees only the runs that changed. */
  runTraces(name, answer, mode, weight, color) {
    const key = `${mode}|${weight}|${color}`;
    const cached = this.traces.get(answer);
    if (cached && cached.key === key) return cached.traces;
    const x = this.x(answer, mode);
    const raw = answer.values.map(num);
    const common = { x, name: plain(name), meta: name, legendgroup: name, type: LINE_TYPE, mode: "lines" };
    const traces = [{
      ...common,
      y: raw,
      showlegend: weight === 0,
      line: { color, width: 1 },
      opacity: weight > 0 ? 0.25 : 1,
      hoverinfo: weight > 0 ? "skip" : "x+y+name",
    }];
    if (weight > 0) traces.push({ ...common, y: ema(raw, weight), line: { color, width: 2 }, opacity: 1 });
    this.traces.set(answer, { key, traces });
    return traces;
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

// run.watch(model) tags its histograms "<kind>/<parameter or module name>"; the picker groups them by that prefix,
// and every other histogram tag (logged by hand) under "other".
const HISTOGRAM_GROUPS = [["weight/", "weights"], ["bias/", "biases"], ["gradient/", "gradients"],
  ["activation/", "activations"]];
// Numbers inside names compare as numbers: "2.weight" before "10.weight", "layer1.2" before "layer1.10".
const NAME_ORDER = new Intl.Collator(undefined, { numeric: true });

/** Histogram tags as the picker's groups, `[{label, options: [{value: tag, text}]}]`: weights, biases, gradients,
 * activations, other (empty ones left out); an option reads as the layer's name, its group saying the kind.
 * The store lists tags by name, not in the order the model holds them, so inside a group names are ordered with
 * their numbers compared as numbers: the model's order for numbered containers (nn.Sequential, nn.ModuleList,
 * ResNet's layer1.0, layer1.1 ...). */
function histogramGroups(tags) {
  const groups = new Map([...HISTOGRAM_GROUPS.map(([, label]) => [label, []]), ["other", []]]);
  for (const tag of tags) {
    const found = HISTOGRAM_GROUPS.find(([prefix]) => tag.startsWith(prefix) && tag.length > prefix.length);
    groups.get(found ? found[1] : "other").push({ value: tag, text: found ? tag.slice(found[0].length) : tag });
  }
  return [...groups]
    .filter(([, options]) => options.length)
    .map(([label, options]) => ({ label, options: options.sort((a, b) => NAME_ORDER.compare(a.text, b.text)) }));
}

/** Fill a <select> with one <optgroup> per group, keeping the current choice when it is still there. */
function fillGroupedSelect(select, groups) {
  const current = select.value;
  const shape = (list) => JSON.stringify(list.map((g) => [g.label, g.options.map((o) => o.value)]));
  const shown = [...select.querySelectorAll("optgroup")].map((g) => ({
    label: g.label, options: [...g.querySelectorAll("option")] }));
  if (shape(shown) !== shape(groups)) {
    select.replaceChildren(...groups.map((group) => el("optgroup", { label: group.label },
      group.options.map((option) => el("option", { value: option.value, title: option.value }, option.text)))));
  }
  if (groups.some((g) => g.options.some((o) => o.value === current))) select.value = current;
  return select.value;
}

/** A step-window input's bound: a whole step, or undefined (no bound) when empty. */
function stepBound(input) {
  const step = input.valueAsNumber; // NaN when empty (or not a number, which a number input does not take)
  return Number.isFinite(step) ? Math.round(step) : undefined;
}

/** "12 of 40 steps in 100–200, 1200 in all": what a chart shows of the histograms its window holds. */
function stepsShown(answer, start, end) {
  let text = `${answer.points.length} of ${answer.total} steps`;
  if (start !== undefined || end !== undefined) {
    text += ` in ${start ?? answer.points[0]?.step ?? "…"}–${end ?? answer.points.at(-1)?.step ?? "…"}, ` +
      `${answer.tag_total} in all`;
  }
  if (answer.downsampled) text += " (evenly spaced: narrow the window to see every step)";
  return text;
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
    // The step window: the server sends at most its default number of histograms (evenly spaced) per window, so
    // a narrower window shows every step of a part of a long run.
    const bound = (placeholder, title) => el("input", { type: "number", step: 1, placeholder, title,
      onchange: () => this.refresh().catch(report) });
    this.from = bound("first", "the first step shown; empty: from the first step logged");
    this.to = bound("last", "the last step shown; empty: up to the last step logged");
    const allSteps = el("button", { type: "button", onclick: () => {
      this.from.value = "";
      this.to.value = "";
      this.refresh().catch(report);
    } }, "all steps");
    this.info = el("p", { class: "note" });
    this.pair = el("div", { class: "side-by-side" });
    this.charts = [];
    container.append(
      el(
        "aside",
        {},
        el("label", {}, "Histogram (kind / layer)", this.tag),
        el("label", {}, "Left run", this.left),
        el("label", {}, "Right run", this.right),
        el("label", {}, "View", this.mode),
        el("div", { class: "step-window" }, el("label", {}, "From step", this.from),
          el("label", {}, "To step", this.to), allSteps),
        this.info,
      ),
      el("div", { class: "content" }, this.pair),
    );
  },

  async refresh() {
    const tag = fillGroupedSelect(this.tag, histogramGroups(tagsOf("histogram")));
    if (!tag) return;
    const names = runsWith("histogram", tag).map((run) => run.name);
    const left = fillSelect(this.left, names, names[0]);
    const right = fillSelect(this.right, ["(none)", ...names], names[1] || "(none)");
    const chosen = [left, right].filter((name) => name && name !== "(none)");
    const start = stepBound(this.from);
    const end = stepBound(this.to);
    const span = `${start ?? ""}:${end ?? ""}`;
    // Answers may arrive out of order (a poll, then a new window typed): only the latest call draws.
    const ticket = (this.ticket = (this.ticket ?? 0) + 1);
    this.cache ??= new Map();
    const answers = await Promise.all(chosen.map(async (run) => {
      const key = `${run}\u0000${tag}\u0000${span}`;
      const status = state.runs.find((r) => r.name === run)?.status;
      // A run no writer holds any more cannot change: fetched once, not on every poll.
      if (this.cache.has(key) && status !== "running") return this.cache.get(key);
      const answer = await api("histograms", { run, tag, start, end });
      this.cache.set(key, answer);
      // Each window tried is a new key: keep the latest few (a Map iterates oldest first).
      while (this.cache.size > 16) this.cache.delete(this.cache.keys().next().value);
      return answer;
    }));
    if (ticket !== this.ticket) return;
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
      chart.noteNode.textContent = `${answer.tag} · ${stepsShown(answer, start, end)}`;
      // A new window is a new view: plotly keeps a user's zoom only while the revision stays the same.
      const revision = `${answer.run}|${tag}|${span}`;
      if (this.mode.value === "bands") {
        Plotly.react(chart.plot, bands(answer), baseLayout({ uirevision: `bands|${revision}`,
          xaxis: { title: { text: "step" } }, yaxis: { title: { text: "value" } } }), PLOT_CONFIG);
      } else {
        const { traces, tickvals, ticktext } = ridgelines(answer);
        Plotly.react(chart.plot, traces, baseLayout({ uirevision: `ridges|${revision}`, showlegend: false,
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

/** A simple layered (Sugiyama-style) layout of a directed graph: each node in the layer of its longest path from
 * a source, ordered inside its layer by the mean position of its predecessors (one downward sweep), centred.
 * Returns x, y per node (in the order of `names`) and the number of layers. */
function layered(names, edges) {
  const index = new Map(names.map((name, i) => [name, i]));
  const preds = names.map(() => []);
  const succs = names.map(() => []);
  for (const [source, target] of edges) {
    const a = index.get(source);
    const b = index.get(target);
    if (a === undefined || b === undefined || a === b) continue;
    preds[b].push(a);
    succs[a].push(b);
  }
  // Kahn's order; nodes left on a cycle (not expected from a traced graph) keep layer 0.
  const layer = names.map(() => 0);
  const waiting = preds.map((p) => p.length);
  const queue = names.map((_, i) => i).filter((i) => waiting[i] === 0);
  for (let head = 0; head < queue.length; head += 1) {
    const a = queue[head];
    for (const b of succs[a]) {
      layer[b] = Math.max(layer[b], layer[a] + 1);
      waiting[b] -= 1;
      if (waiting[b] === 0) queue.push(b);
    }
  }
  const layers = Math.max(0, ...layer) + 1;
  const rows = Array.from({ length: layers }, () => []);
  names.forEach((_, i) => rows[layer[i]].push(i));
  const x = names.map(() => 0);
  for (const row of rows) {
    const key = (i) => (preds[i].length ? preds[i].reduce((s, p) => s + x[p], 0) / preds[i].length : i);
    row.sort((a, b) => key(a) - key(b) || a - b);
    row.forEach((i, k) => { x[i] = k - (row.length - 1) / 2; });
  }
  return { x, y: layer.map((l) => -l), layers };
}

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
    this.opsChart = chartCard("op graph", "", () => this.opsCsv());
    this.opsChart.card.dataset.chart = "ops";
    container.append(
      el("aside", {}, el("label", {}, "Run", this.run), el("label", {}, "Graph", this.tag), this.summary),
      el(
        "div",
        { class: "content" },
        el("div", { class: "card" }, el("div", { class: "card-head" },
          el("span", { class: "title" }, "module hierarchy")), this.tree),
        el("div", { style: "height:1rem" }),
        this.chart.card,
        el("div", { style: "height:1rem" }),
        this.opsChart.card,
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
    this.drawOps(ops, answer.ops_method);
  },

  /** The op-level graph as a node-link diagram, data flowing downwards (see `layered`). */
  drawOps(ops, method) {
    this.ops = ops;
    const card = this.opsChart;
    card.card.hidden = !ops || !ops.nodes.length;
    if (card.card.hidden) {
      Plotly.purge(card.plot);
      return;
    }
    const { x, y, layers } = layered(ops.nodes.map((n) => n.name), ops.edges);
    const index = new Map(ops.nodes.map((n, i) => [n.name, i]));
    const ex = [];
    const ey = [];
    for (const [source, target] of ops.edges) {
      const a = index.get(source);
      const b = index.get(target);
      if (a === undefined || b === undefined) continue;
      ex.push(x[a], x[b], null);
      ey.push(y[a], y[b], null);
    }
    const kinds = [...new Set(ops.nodes.map((n) => n.op))];
    const label = (n) => (n.op === "call_module" ? n.target : String(n.target).split(".").pop());
    const traces = [{ x: ex, y: ey, mode: "lines", type: "scatter", line: { color: "#afb8c1", width: 1 },
      hoverinfo: "skip", showlegend: false }];
    for (const [k, kind] of kinds.entries()) {
      const chosen = ops.nodes.map((n, i) => [n, i]).filter(([n]) => n.op === kind);
      traces.push({
        x: chosen.map(([, i]) => x[i]),
        y: chosen.map(([, i]) => y[i]),
        mode: "markers+text",
        type: "scatter",
        name: plain(kind),
        marker: { size: 11, color: COLORS[k % COLORS.length], line: { color: "#fff", width: 1 } },
        text: chosen.map(([n]) => plain(label(n))),
        textposition: "middle right",
        textfont: { size: 10 },
        customdata: chosen.map(([n]) => plain(`${n.name} (${n.op}: ${n.target})${n.shape ? ` → [${n.shape}]` : ""}`)),
        hovertemplate: "%{customdata}<extra></extra>",
      });
    }
    card.noteNode.textContent = `${ops.nodes.length} nodes · ${ops.edges.length} edges · ${method}`;
    // About 24 px per layer, so that labels do not overlap; the layout's height (not only the div's) makes
    // plotly resize when another graph is chosen.
    const height = Math.min(4000, Math.max(320, 24 * layers + 90));
    card.plot.style.height = `${height}px`;
    const hidden = { visible: false, zeroline: false, showgrid: false };
    // A fixed scale per unit of x: a chain with a side branch stays narrow instead of spanning the card.
    const xaxis = { ...hidden, range: [Math.min(...x) - 2, Math.max(...x) + 4] };
    Plotly.react(card.plot, traces, baseLayout({ height, xaxis, yaxis: { ...hidden, range: [-layers, 1] },
      margin: { l: 10, r: 10, t: 10, b: 10 }, legend: { orientation: "h", y: 1.0, yanchor: "bottom" } }),
    PLOT_CONFIG);
  },

  opsCsv() {
    const ops = this.ops || { nodes: [], edges: [] };
    const inputs = new Map();
    for (const [source, target] of ops.edges) inputs.set(target, [...(inputs.get(target) || []), source]);
    return [["name", "op", "target", "shape", "inputs"], ops.nodes.map((n) => [n.name, n.op, n.target,
      n.shape ? n.shape.join("x") : "", (inputs.get(n.name) || []).join(" ")])];
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

/** The kinds the Images tab shows: pictures (PNG), clips (animated GIF, shown as an image) and sounds (WAV). */
const MEDIA_KINDS = ["image", "video", "audio"];

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
      for (const [tag, kind] of Object.entries(run.tags)) {
        // features/ pictures have their own tab
        if (MEDIA_KINDS.includes(kind) && !(kind === "image" && isFeature(tag))) wanted.push([run.name, tag]);
      }
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
        // A sound plays in the browser's own player; a clip is an animated GIF, which an <img> plays.
        const media = answer.kind === "audio"
          ? el("audio", { controls: true, preload: "metadata", title: `${tag} of ${run}` })
          : el("img", { alt: `${tag} of ${run}` });
        const label = el("span", { class: "note" });
        const slider = el("input", { type: "range", min: 0, max: 0, step: 1, value: 0 });
        const head = el("div", { class: "card-head" }, el("span", { class: "title" }, `${run} · ${tag}`), label);
        const node = el("div", { class: "card", dataset: { kind: answer.kind } }, head, media, slider);
        card = { media, label, slider, node, kind: answer.kind };
        card.follow = true; // the slider follows the newest record until the user moves it
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
    if (card.media.getAttribute("src") !== src) card.media.src = src;
    const place = `${Number(card.slider.value) + 1} of ${card.points.length}`;
    if (card.kind === "audio") {
      const channels = point.channels === 1 ? "mono" : `${point.channels} channels`;
      card.label.textContent = `step ${point.step} · ${point.seconds.toFixed(2)} s · ${point.sample_rate} Hz`
        + ` · ${channels} · ${place}`;
      return;
    }
    card.media.title = point.caption || "";
    const clip = card.kind === "video" ? ` · ${point.frames} frames at ${point.fps} fps` : "";
    card.label.textContent = `step ${point.step} · ${point.width}×${point.height}${clip} · ${place}`;
  },
};

// ---- features ---------------------------------------------------------------------------------------------------

/** What units learned, per layer: the pictures logged under `features/<layer>/<what>` (filters, maximisations,
 * top patches, ...), each beside its scalars (the filters' noise), with one slider over the logged steps
 * (checkpoints): each picture shows its last step at or before the one chosen. Pixels come from /api/images. */
/** An image tag of the Features tab: `features/<layer>/<what>` (the API's `_feature`). */
function isFeature(tag) {
  return /^features\/[^/]+\/./.test(tag);
}

const features = {
  title: "Features",
  mount(container) {
    const again = () => this.refresh().catch(report);
    this.run = el("select", { onchange: again });
    this.layer = el("select", { onchange: again });
    this.slider = el("input", { type: "range", class: "checkpoint", min: 0, max: 0, step: 1, value: 0, oninput: () => {
      this.follow = Number(this.slider.value) === this.steps.length - 1;
      this.show();
    } });
    this.stepLabel = el("span", { class: "note" });
    this.grid = el("div", { class: "grid features" });
    this.cards = new Map();
    this.steps = [];
    this.follow = true; // the slider follows the newest step until the user moves it
    container.append(
      el("aside", {}, el("label", {}, "Run", this.run), el("label", {}, "Layer", this.layer),
        el("label", {}, "Step (checkpoint)", this.slider, this.stepLabel)),
      el("div", { class: "content" }, this.grid),
    );
  },

  async refresh() {
    const names = state.runs.filter((run) => Object.entries(run.tags)
      .some(([tag, kind]) => kind === "image" && isFeature(tag))).map((run) => run.name);
    const run = fillSelect(this.run, names, names[0]);
    if (!run) return;
    const answer = await api("features", { run });
    const layer = fillSelect(this.layer, answer.layers.map((l) => l.layer), answer.layers[0]?.layer);
    const kinds = answer.layers.find((l) => l.layer === layer)?.kinds ?? [];
    const pictures = await Promise.all(kinds.map((kind) => api("images", { run, tag: kind.tag })));
    const wanted = new Set(kinds.map((kind) => kind.tag));
    for (const [tag, card] of this.cards) {
      if (!wanted.has(tag)) {
        card.node.remove();
        this.cards.delete(tag);
      }
    }
    kinds.forEach((kind, i) => {
      let card = this.cards.get(kind.tag);
      if (!card) {
        card = { img: el("img", { alt: kind.tag }), label: el("span", { class: "note" }) };
        card.caption = el("p", { class: "note" });
        const head = el("div", { class: "card-head" }, el("span", { class: "title" }, kind.what), card.label);
        card.node = el("div", { class: "card", dataset: { what: kind.what } }, head, card.img, card.caption);
        this.cards.set(kind.tag, card);
      }
      this.grid.append(card.node); // in the order of the answer
      card.kind = kind;
      card.points = pictures[i].points;
    });
    const steps = [...new Set(kinds.flatMap((kind) => kind.steps))].sort((a, b) => a - b);
    const chosen = this.steps[Number(this.slider.value)];
    this.steps = steps;
    this.slider.max = Math.max(0, steps.length - 1);
    this.slider.value = this.follow || !steps.includes(chosen) ? this.slider.max : steps.indexOf(chosen);
    this.show();
  },

  show() {
    const step = this.steps[Number(this.slider.value)];
    const position = `${Number(this.slider.value) + 1} of ${this.steps.length}`;
    this.stepLabel.textContent = step === undefined ? "" : `step ${step} · ${position}`;
    for (const card of this.cards.values()) {
      const at = card.points.filter((p) => p.step <= step);
      const point = at[at.length - 1] ?? card.points[0];
      if (!point) continue;
      const src = withToken(point.url);
      if (card.img.getAttribute("src") !== src) card.img.src = src;
      card.img.title = point.caption || "";
      const values = Object.entries(card.kind.scalars).map(([name, series]) => {
        const index = series.steps.lastIndexOf(point.step);
        const value = index < 0 ? null : num(series.values[index]);
        return value === null ? null : `${name} ${value.toFixed(3)}`;
      }).filter(Boolean);
      card.label.textContent = [`step ${point.step}`, ...values].join(" · ");
      card.caption.textContent = point.caption || "";
    }
  },
};

// ---- explanations -----------------------------------------------------------------------------------------------

/** Runs holding a tag of one of `kinds`, and the select of their tags of those kinds. */
function runsHolding(kinds) {
  return state.runs.filter((run) => Object.values(run.tags).some((k) => kinds.includes(k))).map((run) => run.name);
}

function tagsIn(runName, kind) {
  const run = state.runs.find((r) => r.name === runName);
  return run ? Object.entries(run.tags).filter(([, k]) => k === kind).map(([tag]) => tag).sort() : [];
}

/** Fill a step <select> (newest last); keeps the user's choice, else follows the newest step. */
function fillSteps(select, steps) {
  const values = steps.map(String);
  const follow = !select.value || select.value === select.options[select.options.length - 1]?.value;
  fillSelect(select, values, values[values.length - 1]);
  if (follow) select.value = values[values.length - 1] ?? "";
  return select.value === "" ? undefined : Number(select.value);
}

/** Empty a step <select> when the run or tag it lists steps of has changed (their steps differ). */
function forgetSteps(view, select, key) {
  if (view.stepsOf !== key) select.replaceChildren();
  view.stepsOf = key;
}

const explanations = {
  title: "Explanations",
  mount(container) {
    const again = () => this.refresh().catch(report);
    this.run = el("select", { onchange: again });
    this.tag = el("select", { onchange: again });
    this.step = el("select", { onchange: again });
    this.show = el("select", { onchange: again }, el("option", { value: "overlay" }, "heatmap over input"),
      el("option", { value: "heatmap" }, "heatmap alone"));
    this.wrongOnly = el("input", { type: "checkbox", onchange: () => this.draw() });
    this.info = el("p", { class: "note" });
    this.advice = el("p", { class: "advice" });
    this.gallery = el("div", { class: "gallery" });
    container.append(
      el("aside", {}, el("label", {}, "Run", this.run), el("label", {}, "Explanations", this.tag),
        el("label", {}, "Step", this.step), el("label", {}, "Show", this.show),
        el("label", { class: "inline" }, this.wrongOnly, "misclassified only"), this.info),
      el("div", { class: "content" }, this.advice, this.gallery),
    );
  },

  async refresh() {
    const run = fillSelect(this.run, runsHolding(["explanation"]));
    if (!run) return;
    const tag = fillSelect(this.tag, tagsIn(run, "explanation"));
    forgetSteps(this, this.step, `${run}\u0000${tag}`);
    const step = this.step.value === "" ? undefined : Number(this.step.value);
    let answer = await api("explanations", { run, tag, step });
    const chosen = fillSteps(this.step, answer.steps);
    if (chosen !== answer.step) answer = await api("explanations", { run, tag, step: chosen });
    const key = `${run}\u0000${tag}\u0000${answer.step}\u0000${this.show.value}`;
    this.answer = answer;
    if (this.shown !== key) {
      this.shown = key;
      this.draw();
    }
  },

  draw() {
    const answer = this.answer;
    if (!answer) return;
    this.advice.textContent = answer.advice;
    const known = answer.items.some((item) => item.correct !== null);
    this.wrongOnly.disabled = !known;
    const items = answer.items.filter((item) => !this.wrongOnly.checked || item.correct === false);
    this.info.textContent = `${answer.items.length} inputs · ${answer.methods.length} methods`
      + (known ? ` · ${answer.misclassified} misclassified` : " · no labels or predictions logged");
    const source = answer.source; // a sample of a data set explained by ds.explain_dataset: where every item is
    if (source) {
      const wrong = source.misclassified === null ? "" : `, ${source.misclassified} misclassified`;
      this.info.textContent += ` · a sample of ${source.items} items${wrong}; all of them in ${source.path}`;
    }
    const picture = (url, alt) => el("img", { src: withToken(url), alt, title: alt });
    const head = el("div", { class: "gallery-row head" }, el("span", {}, "input"),
      answer.methods.map((method) => el("span", {}, method)));
    const rows = items.map((item) => el(
      "div",
      { class: `gallery-row ${item.correct === false ? "wrong" : item.correct ? "right" : ""}`,
        dataset: { index: String(item.index) } },
      el("figure", {}, picture(item.input, `input ${item.index}`), el("figcaption", {},
        el("div", {}, `label: ${item.label ?? "?"}`), el("div", { class: "prediction" },
          `predicted: ${item.prediction ?? "?"}`, item.correct === false ? " ✗" : item.correct ? " ✓" : ""))),
      item.maps.map((map) => el("figure", {}, picture(map[this.show.value], `${map.method} of input ${item.index}`),
        el("figcaption", {}, `${map.method} · ${map.target}: ${typeof map.score === "number"
          ? map.score.toFixed(3) : map.score}`))),
    ));
    this.gallery.style.setProperty("--columns", String(1 + answer.methods.length));
    this.gallery.replaceChildren(head, ...rows);
    if (!rows.length) this.gallery.append(el("p", { class: "empty" }, "No misclassified inputs in this set."));
  },
};

// ---- evaluation -------------------------------------------------------------------------------------------------

const evaluation = {
  title: "Evaluation",
  mount(container) {
    const again = () => this.refresh().catch(report);
    this.run = el("select", { onchange: again });
    this.matrixTag = el("select", { onchange: again });
    this.step = el("select", { onchange: again });
    this.normalize = el("input", { type: "checkbox", onchange: () => this.drawMatrix() });
    this.curveTag = el("select", { onchange: again });
    this.matrix = chartCard("confusion matrix", "", () => this.matrixCsv());
    this.roc = chartCard("ROC", "", () => this.curveCsv());
    this.pr = chartCard("precision–recall", "", () => this.curveCsv());
    this.scores = chartCard("score distributions", "", () => this.scoreCsv());
    for (const [name, chart] of Object.entries({ matrix: this.matrix, roc: this.roc, pr: this.pr,
      scores: this.scores })) chart.card.dataset.chart = name;
    this.matrix.plot.classList.add("square");
    this.trust = trustCharts(again);
    container.append(
      el("aside", {}, el("label", {}, "Run", this.run), el("label", {}, "Confusion matrix", this.matrixTag),
        el("label", {}, "Step", this.step), el("label", { class: "inline" }, this.normalize, "row-normalised"),
        el("label", {}, "Score distribution of", this.curveTag), this.trust.controls),
      el("div", { class: "content" }, el("div", { class: "grid" }, this.matrix.card, this.roc.card, this.pr.card,
        this.scores.card, ...this.trust.cards)),
    );
  },

  async refresh() {
    const run = fillSelect(this.run, runsHolding(["confusion_matrix", "pr_curve", ...TRUST_KINDS]));
    if (!run) return;
    const matrixTags = tagsIn(run, "confusion_matrix");
    const curveTags = tagsIn(run, "pr_curve");
    const matrixTag = fillSelect(this.matrixTag, matrixTags);
    const curveTag = fillSelect(this.curveTag, curveTags);
    this.matrix.card.hidden = !matrixTags.length;
    for (const chart of [this.roc, this.pr, this.scores]) chart.card.hidden = !curveTags.length;
    const jobs = [];
    if (matrixTag) {
      forgetSteps(this, this.step, `${run}\u0000${matrixTag}`);
      const step = this.step.value === "" ? undefined : Number(this.step.value);
      jobs.push(api("confusion_matrix", { run, tag: matrixTag, step }).then(async (answer) => {
        const chosen = fillSteps(this.step, answer.steps);
        this.matrixAnswer = chosen === answer.step ? answer
          : await api("confusion_matrix", { run, tag: matrixTag, step: chosen });
        this.drawMatrix();
      }));
    }
    // Every curve of the run (one per class for one-vs-rest reports), each at its newest step.
    jobs.push(Promise.all(curveTags.map((tag) => api("pr_curve", { run, tag }))).then((curves) => {
      this.curves = curves;
      this.drawCurves(curveTag);
    }));
    jobs.push(this.trust.refresh(run));
    await Promise.all(jobs);
  },

  drawMatrix() {
    const answer = this.matrixAnswer;
    if (!answer) return;
    const normalized = this.normalize.checked;
    const z = normalized ? answer.normalized : answer.counts;
    const names = answer.classes.map((c) => plain(c));
    const k = names.length;
    this.matrix.noteNode.textContent = `step ${answer.step} · accuracy ${answer.accuracy.toFixed(3)} · `
      + `${answer.total} samples`;
    Plotly.react(this.matrix.plot, [{
      type: "heatmap",
      z,
      x: names,
      y: names,
      colorscale: "Blues",
      reversescale: true, // plotly's Blues runs dark to light: the most frequent cell darkest, as matplotlib's
      zmin: 0,
      zmax: normalized ? 1 : Math.max(1, ...answer.counts.flat()),
      texttemplate: k <= 30 ? (normalized ? "%{z:.2f}" : "%{z}") : "",
      hovertemplate: "true %{y}<br>predicted %{x}<br>%{z}<extra></extra>",
    }], baseLayout({
      showlegend: false,
      margin: { l: 90, r: 10, t: 10, b: 80 },
      xaxis: { title: { text: "predicted" }, type: "category", tickangle: -45 },
      yaxis: { title: { text: "true" }, type: "category", autorange: "reversed" },
    }), PLOT_CONFIG);
  },

  drawCurves(selected) {
    const curves = this.curves || [];
    if (!curves.length) return;
    const color = (i) => COLORS[i % COLORS.length];
    const line = (i) => ({ color: color(i), width: 1.8 });
    const roc = curves.map((c, i) => ({
      x: c.fpr.map(num), y: c.tpr.map(num), type: "scatter", mode: "lines+markers", marker: { size: 3 },
      line: line(i), name: plain(`${c.tag} (AUC ${typeof c.auc === "number" ? c.auc.toFixed(3) : c.auc})`),
      customdata: c.thresholds, hovertemplate: "FPR %{x:.3f}, TPR %{y:.3f}<br>threshold %{customdata:.3g}",
    }));
    roc.push({ x: [0, 1], y: [0, 1], type: "scatter", mode: "lines", line: { color: "#afb8c1", dash: "dot", width: 1 },
      hoverinfo: "skip", showlegend: false });
    const pr = curves.map((c, i) => ({
      x: c.recall.map(num), y: c.precision.map(num), type: "scatter", mode: "lines+markers", marker: { size: 3 },
      line: { ...line(i), shape: "hv" }, name: plain(c.tag), customdata: c.thresholds,
      hovertemplate: "recall %{x:.3f}, precision %{y:.3f}<br>threshold %{customdata:.3g}",
    }));
    const unit = { range: [-0.02, 1.02] };
    // Legends inside the corner each curve leaves empty: ROC's lower right, PR's lower left.
    const inside = (x) => ({ x, y: 0.02, xanchor: x ? "right" : "left", yanchor: "bottom", orientation: "v",
      bgcolor: "rgba(255,255,255,0.8)", font: { size: 10 } });
    Plotly.react(this.roc.plot, roc, baseLayout({ legend: inside(1), xaxis: { ...unit, title: { text:
      "false positive rate" } }, yaxis: { ...unit, title: { text: "true positive rate" } } }), PLOT_CONFIG);
    Plotly.react(this.pr.plot, pr, baseLayout({ legend: inside(0), xaxis: { ...unit, title: { text: "recall" } },
      yaxis: { ...unit, title: { text: "precision" } } }), PLOT_CONFIG);
    this.roc.noteNode.textContent = `${curves.length} curve${curves.length > 1 ? "s" : ""}`;
    const c = curves.find((curve) => curve.tag === selected) || curves[0];
    this.selected = c;
    const t = c.thresholds.map(num);
    // The bin between a threshold and the next one, drawn at its centre with its width.
    const widths = t.map((v, i) => (i + 1 < t.length ? t[i + 1] - v : i > 0 ? v - t[i - 1] : 1));
    const centres = t.map((v, i) => v + widths[i] / 2);
    // Each class as the fraction of its own samples per bin: a rare positive class stays visible.
    const bars = [["negatives", c.negatives, "#1f77b4"], ["positives", c.positives, "#e8590c"]].map(
      ([name, counts, fill]) => {
        const y = counts.map(num);
        const total = y.reduce((sum, v) => sum + (v || 0), 0) || 1;
        return { type: "bar", x: centres, y: y.map((v) => (v === null ? null : v / total)), customdata: y,
          width: widths, name: `${name} (${total})`, opacity: 0.6, marker: { color: fill },
          hovertemplate: "score %{x:.3g}: %{customdata} samples (%{y:.1%})<extra></extra>" };
      });
    this.scores.card.querySelector(".title").textContent = `score distributions · ${c.tag}`;
    this.scores.noteNode.textContent = `step ${c.step}`;
    Plotly.react(this.scores.plot, bars, baseLayout({ barmode: "overlay", bargap: 0,
      xaxis: { title: { text: "score" } }, yaxis: { title: { text: "fraction of the class" } } }), PLOT_CONFIG);
  },

  matrixCsv() {
    const a = this.matrixAnswer;
    if (!a) return [["true", "predicted", "count", "row_fraction"], []];
    const rows = [];
    a.classes.forEach((t, i) => a.classes.forEach((p, j) => rows.push([t, p, a.counts[i][j], a.normalized[i][j]])));
    return [["true", "predicted", "count", "row_fraction"], rows];
  },

  curveCsv() {
    const rows = [];
    for (const c of this.curves || []) {
      c.thresholds.forEach((t, i) => rows.push([c.tag, c.step, t, c.tp[i], c.fp[i], c.tn[i], c.fn[i], c.precision[i],
        c.recall[i], c.fpr[i]]));
    }
    return [["tag", "step", "threshold", "tp", "fp", "tn", "fn", "precision", "recall", "fpr"], rows];
  },

  scoreCsv() {
    const c = this.selected;
    if (!c) return [["threshold", "positives", "negatives"], []];
    return [["threshold", "positives", "negatives"], c.thresholds.map((t, i) => [t, c.positives[i], c.negatives[i]])];
  },
};

// ---- evaluation: can the explanations be trusted? --------------------------------------------------------------

// The kinds `run.log_sanity_check`, `run.log_method_comparison` and `run.log_faithfulness` store.
const TRUST_KINDS = ["sanity_check", "method_comparison", "faithfulness"];
const SIMILARITY = { spearman: "Spearman rank correlation", spearman_abs: "Spearman (absolute values)", ssim: "SSIM",
  hog: "HOG similarity (Pearson)" };
const METRIC_HEADERS = { deletion: "deletion AUC", insertion: "insertion AUC",
  sanity: "rank corr., mean over the randomisation cascade" };

/** `hex` ("#rrggbb") as an rgba() colour of opacity `alpha`: the mean ± std bands. */
function fade(hex, alpha) {
  const [r, g, b] = [1, 3, 5].map((i) => parseInt(hex.slice(i, i + 2), 16));
  return `rgba(${r},${g},${b},${alpha})`;
}

/** A mean line with its mean ± std band: the band's upper edge, its lower edge filled up to it, then the line. */
function banded(x, mean, std, color, name, extra = {}) {
  const m = mean.map(num);
  const s = std.map(num);
  const edge = (sign) => m.map((v, i) => (v === null || s[i] === null ? null : v + sign * s[i]));
  const band = { x, type: "scatter", mode: "lines", line: { width: 0 }, hoverinfo: "skip", showlegend: false,
    legendgroup: name, meta: "band" };
  return [
    { ...band, y: edge(1) },
    { ...band, y: edge(-1), fill: "tonexty", fillcolor: fade(color, 0.15) },
    { x, y: m, customdata: s, type: "scatter", mode: "lines+markers", marker: { size: 4 }, name: plain(name),
      legendgroup: name, line: { color, width: 1.8, ...(extra.line || {}) }, meta: "mean",
      hovertemplate: "%{y:.3f} ± %{customdata:.3f}", ...extra.trace },
  ];
}

/** The sanity-check curves, the method comparison table and the faithfulness curves of a run, for the Evaluation
 * tab: `controls` go into its aside, `cards` into its grid, `refresh(run)` fetches and draws what the run has. */
function trustCharts(again) {
  const view = {};
  view.sanityTag = el("select", { onchange: again });
  view.metric = el("select", { onchange: again, dataset: { control: "similarity" } });
  view.tableTag = el("select", { onchange: again });
  view.sanityLabels = [el("label", {}, "Sanity check", view.sanityTag), el("label", {}, "Similarity", view.metric)];
  view.tableLabel = el("label", {}, "Method comparison", view.tableTag);
  view.controls = [...view.sanityLabels, view.tableLabel];
  view.sanity = chartCard("sanity check", "", () => sanityCsv(view.sanityAnswer));
  view.faith = chartCard("faithfulness", "", () => faithCsv(view.faithAnswers || []));
  view.table = tableCard("method comparison", () => comparisonCsv(view.tableAnswer));
  view.sanity.card.dataset.chart = "sanity";
  view.faith.card.dataset.chart = "faithfulness";
  view.table.card.dataset.chart = "comparison";
  view.cards = [view.sanity.card, view.table.card, view.faith.card];
  for (const card of view.cards) card.querySelector(".title").classList.add("whole"); // fixed titles: no mid-word breaks
  view.sort = null; // [column, ascending] once the user clicks a header; the stored order (best first) before

  view.refresh = async (run) => {
    const sanityTags = tagsIn(run, "sanity_check");
    const tableTags = tagsIn(run, "method_comparison");
    const faithTags = tagsIn(run, "faithfulness");
    view.sanity.card.hidden = !sanityTags.length;
    view.table.card.hidden = !tableTags.length;
    view.faith.card.hidden = !faithTags.length;
    for (const label of view.sanityLabels) label.hidden = !sanityTags.length;
    view.tableLabel.hidden = !tableTags.length;
    const sanityTag = fillSelect(view.sanityTag, sanityTags);
    const tableTag = fillSelect(view.tableTag, tableTags);
    const jobs = [];
    if (sanityTag) {
      jobs.push(api("sanity_check", { run, tag: sanityTag }).then((answer) => {
        view.sanityAnswer = answer;
        drawSanity(view, answer);
      }));
    }
    if (tableTag) {
      jobs.push(api("method_comparison", { run, tag: tableTag }).then((answer) => {
        view.tableAnswer = answer;
        drawComparison(view, answer);
      }));
    }
    jobs.push(Promise.all(faithTags.map((tag) => api("faithfulness", { run, tag }))).then((answers) => {
      view.faithAnswers = answers;
      if (answers.length) drawFaithfulness(view, answers);
    }));
    await Promise.all(jobs);
  };
  return view;
}

/** A card holding a table (no plotly): title, note, CSV button, and the table's container. */
function tableCard(title, csv) {
  const body = el("div", { class: "table-wrap" });
  const card = el("div", { class: "card" }, el("div", { class: "card-head" }, el("span", { class: "title" }, title),
    el("span", { class: "note" }), el("span", { class: "tools" }, el("button", {
      type: "button", title: "download the table as CSV", class: "csv",
      onclick: () => {
        const [header, rows] = csv();
        saveFile(`${fileName(title)}.csv`, toCsv(header, rows), "text/csv");
      },
    }, "CSV"))), body);
  return { card, body, noteNode: card.querySelector(".note") };
}

function drawSanity(view, answer) {
  const metric = fillSelect(view.metric, answer.metrics, "spearman");
  const x = answer.stages.map((_, i) => i);
  const traces = answer.methods.flatMap((method, i) => {
    const curve = answer.curves[method][metric];
    return banded(x, curve.mean, curve.std, COLORS[i % COLORS.length], method);
  });
  const changed = { cascading: "layers randomised (cumulative, output first)", independent: "layer randomised",
    data: "model trained on" }[answer.mode] || answer.mode;
  view.sanity.noteNode.textContent = `${answer.tag} · ${answer.mode} · step ${answer.step} · mean ± std of `
    + `${answer.inputs} inputs`;
  Plotly.react(view.sanity.plot, traces, baseLayout({
    margin: { l: 55, r: 15, t: 10, b: 90 },
    xaxis: { title: { text: changed }, tickvals: x, ticktext: answer.stages.map(plain), tickangle: -40 },
    yaxis: { title: { text: SIMILARITY[metric] || plain(metric) }, range: [-1.05, 1.05], zeroline: true },
  }), PLOT_CONFIG);
}

function drawFaithfulness(view, answers) {
  const traces = [];
  let index = 0;
  for (const answer of answers) {
    for (const curve of answer.curves) {
      const auc = typeof curve.auc === "number" ? curve.auc.toFixed(3) : curve.auc;
      const name = `${curve.method} · ${answer.metric} (AUC ${auc})${answers.length > 1 ? ` · ${answer.tag}` : ""}`;
      traces.push(...banded(answer.fractions, curve.mean, curve.std, COLORS[index % COLORS.length], name,
        { line: { dash: answer.metric === "insertion" ? "dash" : "solid" } }));
      index += 1;
    }
  }
  const measured = answers.every((a) => a.probability) ? "target probability" : "target score";
  view.faith.noteNode.textContent = `mean ± std of ${[...new Set(answers.map((a) => a.inputs))].join(", ")} inputs`
    + " · more faithful: lower deletion AUC, higher insertion AUC";
  Plotly.react(view.faith.plot, traces, baseLayout({
    xaxis: { title: { text: "fraction of the input removed (deletion) or inserted (insertion)" }, range: [0, 1] },
    yaxis: { title: { text: measured } },
  }), PLOT_CONFIG);
}

/** The comparison table: best first as stored, or sorted by the column clicked (again: the other way); methods
 * that failed stay last, with the reason. */
function drawComparison(view, answer) {
  const key = JSON.stringify([answer, view.sort]);
  if (view.tableShown === key) return;
  view.tableShown = key;
  const rows = answer.rows.slice();
  if (view.sort) {
    const [column, ascending] = view.sort;
    const value = (row) => (column === "method" ? row.method : row.values[column]);
    rows.sort((a, b) => {
      if ((a.error === null) !== (b.error === null)) return a.error === null ? -1 : 1;
      const [p, q] = [value(a), value(b)];
      if (p === q) return 0;
      if (p === null || q === null) return p === null ? 1 : -1;
      return (p < q ? -1 : 1) * (ascending ? 1 : -1);
    });
  }
  const click = (column, ascending) => () => {
    const same = view.sort && view.sort[0] === column;
    view.sort = [column, same ? !view.sort[1] : ascending];
    drawComparison(view, answer);
  };
  const sorted = view.sort ? view.sort[0] : answer.sort_by;
  const head = el("tr", {}, el("th", { onclick: click("method", true), dataset: { column: "method" } }, "method"),
    answer.metrics.map((m) => el("th", { onclick: click(m, answer.lower_is_better[m]), dataset: { column: m },
      class: m === sorted ? "sorted" : "", title: "click to sort" },
    `${METRIC_HEADERS[m] || m} ${answer.lower_is_better[m] ? "↓" : "↑"}`)), el("th", {}, "note"));
  const cell = (row, m) => {
    const v = row.values[m];
    const s = row.std[m];
    if (v === null) return el("td", {}, "—");
    return el("td", { dataset: { value: String(v) } }, typeof v === "number" ? v.toFixed(3) : String(v),
      typeof s === "number" ? el("span", { class: "spread" }, ` ± ${s.toFixed(3)}`) : "");
  };
  const body = rows.map((row) => el("tr", { class: row.error === null ? "" : "failed", dataset: { method: row.method } },
    el("td", {}, row.method), answer.metrics.map((m) => cell(row, m)),
    el("td", { class: "reason" }, row.error === null ? "" : `failed: ${row.error}`)));
  const failed = answer.rows.filter((row) => row.error !== null).length;
  view.table.noteNode.textContent = `${answer.tag} · step ${answer.step} · ranked by ${answer.sort_by}`
    + (failed ? ` · ${failed} failed` : "");
  view.table.body.replaceChildren(el("table", { class: "comparison" }, el("thead", {}, head), el("tbody", {}, body)));
}

function sanityCsv(answer) {
  const header = ["method", "metric", "stage", "mean", "std"];
  if (!answer) return [header, []];
  const rows = [];
  for (const method of answer.methods) {
    for (const metric of answer.metrics) {
      const curve = answer.curves[method][metric];
      answer.stages.forEach((stage, i) => rows.push([method, metric, stage, curve.mean[i], curve.std[i]]));
    }
  }
  return [header, rows];
}

function faithCsv(answers) {
  const rows = [];
  for (const a of answers) {
    for (const c of a.curves) a.fractions.forEach((f, i) => rows.push([a.tag, a.metric, c.method, f, c.mean[i], c.std[i]]));
  }
  return [["tag", "metric", "method", "fraction", "mean", "std"], rows];
}

function comparisonCsv(answer) {
  if (!answer) return [["method"], []];
  const header = ["method", ...answer.metrics.flatMap((m) => [m, `${m}_std`]), "error"];
  return [header, answer.rows.map((r) => [r.method, ...answer.metrics.flatMap((m) => [r.values[m], r.std[m]]),
    r.error ?? ""])];
}

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

// ---- projector --------------------------------------------------------------------------------------------------

const PROJECTION_POLL_MS = 500;
const LEGEND_ENTRIES = 20;
// A colour column with at most this many values is drawn as one trace per value (a legend's worth of colours).
const LAYERED_VALUES = 20;
const CAUTION = "t-SNE and UMAP keep neighbourhoods, not global geometry: distances between clusters mean little.";

/** A discrete plotly colour scale for codes 0..k-1 (used with cmin = -0.5, cmax = k - 0.5): one band per code. */
function codeScale(k) {
  const scale = [];
  for (let i = 0; i < k; i += 1) {
    const color = COLORS[i % COLORS.length];
    scale.push([i / k, color], [(i + 1) / k, color]);
  }
  return scale;
}

/** The indices where `keep(i)` holds, as an Int32Array. */
function where(n, keep) {
  const out = [];
  for (let i = 0; i < n; i += 1) if (keep(i)) out.push(i);
  return Int32Array.from(out);
}

/** The indices of each code 0..k-1 in `codes`, in order: one counting pass and one filling pass. */
function groups(codes, k) {
  const counts = new Int32Array(k);
  for (let i = 0; i < codes.length; i += 1) counts[codes[i]] += 1;
  const out = Array.from(counts, (count) => new Int32Array(count));
  const filled = new Int32Array(k);
  for (let i = 0; i < codes.length; i += 1) {
    const code = codes[i];
    out[code][filled[code]] = i;
    filled[code] += 1;
  }
  return out;
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

const projector = {
  title: "Projector",
  columns: [],
  mount(container) {
    const again = () => this.refresh().catch(report);
    this.run = el("select", { onchange: again });
    this.tag = el("select", { onchange: again });
    this.name = el("select", { onchange: again });
    this.color = el("select", { onchange: () => this.draw() });
    this.search = el("input", { type: "text", placeholder: "label text", oninput: () => this.draw() });
    const repick = () => this.pick(this.picked).catch(report);
    this.k = el("input", { type: "number", min: 1, max: 1000, value: 10, onchange: repick });
    this.metric = el("select", { onchange: repick },
      el("option", { value: "cosine" }, "cosine"), el("option", { value: "euclidean" }, "euclidean"));
    this.info = el("p", { class: "note" });
    this.progress = el("progress", { hidden: true, max: 1 });
    this.found = el("p", { class: "note" });
    this.legend = el("div", { class: "legend" });
    this.plot = el("div", { class: "plot projector-plot" });
    this.hover = el("div", { class: "hover-card", hidden: true });
    this.nearest = el("div", { class: "neighbors" });
    container.append(
      el("aside", {}, el("label", {}, "Run", this.run), el("label", {}, "Embedding", this.tag),
        el("label", {}, "Projection", this.name), this.progress, this.info, el("label", {}, "Colour by", this.color),
        this.legend, el("label", {}, "Search labels", this.search), this.found,
        el("label", {}, "Neighbours (k, in the original space)", this.k), el("label", {}, "Distance", this.metric)),
      el("div", { class: "content projector" }, el("div", { class: "projector-stage" }, this.plot, this.hover),
        this.nearest),
    );
  },

  async refresh() {
    const run = fillSelect(this.run, runsHolding(["embedding"]));
    if (!run) return;
    const listed = `${run}\u0000${JSON.stringify(state.runs.find((r) => r.name === run)?.tags)}`;
    if (this.listed !== listed) { // the embeddings of a run change only when its tags do
      this.list = (await api("embeddings", { run })).embeddings;
      this.listed = listed;
    }
    const tag = fillSelect(this.tag, this.list.map((e) => e.tag));
    const entry = this.list.find((e) => e.tag === tag);
    if (!entry) return;
    const stored = new Set(entry.stored);
    if (this.namesOf !== `${run}\u0000${tag}`) { // another embedding: start from what is stored, else from PCA
      this.namesOf = `${run}\u0000${tag}`;
      this.name.replaceChildren();
    }
    fillSelect(this.name, entry.projections, entry.stored[0] || "pca-2d");
    for (const option of this.name.options) {
      option.textContent = `${option.value}${stored.has(option.value) ? " (stored)" : ""}`;
    }
    const key = `${run}\u0000${tag}\u0000${entry.step}`;
    if (this.labelsOf !== key) { // fetched while the points are: load() waits for both
      this.labelsOf = key;
      this.picked = null;
      this.neighbours = null;
      this.nearest.replaceChildren(el("p", { class: "note" }, "Click a point to list its nearest neighbours."));
      this.labelsReady = api("embedding/labels", { run, tag, step: entry.step }).then((answer) => {
        if (this.labelsOf !== key) return;
        this.columns = answer.columns.map((c) => ({ name: c.name, values: c.values, codes: typed(c.codes) }));
        const names = this.columns.map((c) => c.name);
        fillSelect(this.color, [...names, "none"], names.includes("label") ? "label" : names[0] || "none");
      });
    }
    const wanted = `${key}\u0000${this.name.value}`;
    if (this.shown !== wanted && this.loading !== wanted) {
      this.load({ run, tag, step: entry.step, name: this.name.value, entry }, wanted).catch(report);
    }
  },

  /** Fetch a projection's points; while the server computes it, show how long it has been at it. */
  async load(target, wanted) {
    this.loading = wanted;
    const params = { run: target.run, tag: target.tag, name: target.name, step: target.step };
    try {
      let answer = await api("projection", params);
      while (answer.status === "queued" || answer.status === "running") {
        this.progress.hidden = false;
        // t-SNE says how far it is; UMAP does not, and its bar stays indeterminate.
        const known = typeof answer.progress === "number";
        if (known) this.progress.value = answer.progress;
        else this.progress.removeAttribute("value");
        const done = known && answer.status === "running" ? ` ${Math.round(100 * answer.progress)} %,` : "";
        this.info.textContent = `${target.name}: ${answer.status} on the server,${done}`
          + ` ${answer.seconds.toFixed(0)} s (${target.entry.n.toLocaleString()} points)`;
        await sleep(PROJECTION_POLL_MS);
        if (this.loading !== wanted) return; // another projection was chosen meanwhile
        answer = await api("projection/status", params);
        if (answer.status === "done") answer = await api("projection", params);
      }
      await this.labelsReady;
      if (this.loading !== wanted) return;
      this.progress.hidden = true;
      this.shown = wanted;
      if (answer.status === "failed") {
        this.info.textContent = `${target.name} could not be computed: ${answer.error}`;
        return;
      }
      const points = typed(answer.points);
      // t-SNE / UMAP of a big embedding project a sample: its points go to their items, the others stay NaN
      // (not drawn), so colours, hovers and neighbours keep using every point's own index.
      const sample = answer.sample ? typed(answer.sample.indices) : null;
      const count = sample ? sample.length : answer.n;
      const axes = [];
      for (let a = 0; a < answer.dim; a += 1) {
        const axis = new Float32Array(answer.n);
        if (sample) axis.fill(NaN);
        for (let j = 0; j < count; j += 1) axis[sample ? sample[j] : j] = points[j * answer.dim + a];
        axes.push(axis);
      }
      this.target = target;
      this.axes = axes;
      const how = answer.stored ? "stored with the run" : `computed on the server in ${answer.seconds.toFixed(1)} s`;
      const shown = sample ? `a random sample of ${count.toLocaleString()} of ${answer.n.toLocaleString()} points`
        : `${answer.n.toLocaleString()} points`;
      this.info.textContent = `${shown} · ${target.entry.d} dimensions · ${how}`
        + (/^(tsne|umap)/.test(target.name) ? `. ${CAUTION}` : "");
      this.draw();
    } finally {
      if (this.loading === wanted) this.loading = null;
    }
  },

  /** One marker trace of the points `indices` (all points when null), in 2D (WebGL) or 3D. */
  trace(indices, marker) {
    const pick = (axis) => {
      if (!indices) return axis;
      const out = new Float32Array(indices.length);
      for (let j = 0; j < indices.length; j += 1) out[j] = axis[indices[j]];
      return out;
    };
    const [x, y, z] = this.axes.map(pick);
    const common = { mode: "markers", hoverinfo: "none", marker, showlegend: false };
    return this.axes.length === 3 ? { type: "scatter3d", x, y, z, ...common } : { type: "scattergl", x, y, ...common };
  },

  draw() {
    if (!this.axes) return;
    const n = this.axes[0].length;
    const column = this.columns.find((c) => c.name === this.color.value);
    const size = this.axes.length === 3 ? (n > 100000 ? 1.5 : 3) : n > 100000 ? 2 : n > 10000 ? 3 : 6;
    // Layers, each [point indices (null: all), marker, role], so a hover or click maps back to a point. A column
    // with few values is one uniformly coloured trace per value: far cheaper for plotly than a colour per point.
    this.layers = [];
    if (!column) {
      this.layers.push([null, { size, color: COLORS[0] }, "points"]);
    } else if (column.values.length <= LAYERED_VALUES) {
      column.groups ??= groups(column.codes, column.values.length);
      column.groups.forEach((indices, code) => {
        if (indices.length) this.layers.push([indices, { size, color: COLORS[code % COLORS.length] }, "points"]);
      });
    } else {
      const k = column.values.length;
      this.layers.push([null, { size, color: column.codes, colorscale: codeScale(k), cmin: -0.5, cmax: k - 0.5 },
        "points"]);
    }
    const text = this.search.value.trim().toLowerCase();
    if (text) {
      const hits = this.columns.map((c) => new Set(c.values.flatMap((v, code) => (
        v.toLowerCase().includes(text) ? [code] : []))));
      const matches = where(n, (i) => this.columns.some((c, j) => hits[j].has(c.codes[i])));
      this.layers.push([matches, { size: size + 6, symbol: "circle-open", color: "#000000" }, "matches"]);
      this.found.textContent = `${matches.length.toLocaleString()} points match`;
    } else {
      this.found.textContent = "";
    }
    if (this.neighbours) {
      const { index, indices } = this.neighbours;
      this.layers.push([Int32Array.from(indices), { size: size + 6, symbol: "diamond", color: "#000000" },
        "neighbours"]);
      this.layers.push([Int32Array.of(index), { size: size + 12, symbol: "x", color: "#cf222e" }, "query"]);
    }
    const traces = this.layers.map(([indices, marker, role]) => ({ ...this.trace(indices, marker), meta: role }));
    const layout = baseLayout({ showlegend: false, margin: { l: 40, r: 10, t: 10, b: 30 }, uirevision: this.shown });
    if (this.axes.length === 3) layout.scene = { aspectmode: "data" };
    Plotly.react(this.plot, traces, layout, PLOT_CONFIG).then(() => this.listen());
    this.drawLegend(column);
  },

  drawLegend(column) {
    if (!column) {
      this.legend.replaceChildren();
      return;
    }
    const counts = new Array(column.values.length).fill(0);
    for (const code of column.codes) counts[code] += 1;
    const order = counts.map((_, code) => code).sort((a, b) => counts[b] - counts[a]);
    const rows = order.slice(0, LEGEND_ENTRIES).map((code) => el("div", { class: "legend-row" },
      el("span", { class: "swatch", style: `background:${COLORS[code % COLORS.length]}` }),
      el("span", {}, column.values[code]), el("span", { class: "count" }, counts[code].toLocaleString())));
    const more = order.length - LEGEND_ENTRIES;
    if (more > 0) rows.push(el("div", { class: "note" }, `and ${more} more values`));
    this.legend.replaceChildren(...rows);
  },

  /** The point under a plotly event: its index in the embedding. */
  pointOf(event) {
    const point = event && event.points && event.points[0];
    if (!point) return null;
    const i = point.pointNumber ?? point.pointIndex;
    const indices = this.layers[point.curveNumber][0];
    return indices ? indices[i] : i;
  },

  listen() {
    if (this.listening) return;
    this.listening = true;
    this.plot.on("plotly_hover", (event) => this.showHover(this.pointOf(event)));
    this.plot.on("plotly_unhover", () => { this.hover.hidden = true; });
    this.plot.on("plotly_click", (event) => this.pick(this.pointOf(event)).catch(report));
  },

  /** A point's thumbnail (when the embedding has them) and its labels, as elements. */
  describe(index, extra) {
    const { run, tag, step, entry } = this.target;
    const image = entry.thumbnails
      ? el("img", { src: withToken(`api/thumbnail?${new URLSearchParams({ run, tag, step, index })}`),
        alt: `point ${index}` })
      : null;
    const lines = this.columns.map((c) => el("div", {}, `${c.name}: ${c.values[c.codes[index]]}`));
    return [image, el("div", { class: "point-text" }, el("div", { class: "title" }, `#${index}`), lines, extra)];
  },

  showHover(index) {
    if (index === null || index === undefined) return;
    this.hover.replaceChildren(...this.describe(index));
    this.hover.hidden = false;
  },

  /** Highlight the k nearest neighbours of point `index` in the original feature space, and list them. */
  async pick(index) {
    if (index === null || index === undefined || !this.target) return;
    this.picked = index;
    const { run, tag, step } = this.target;
    const k = Math.max(1, Math.min(Number(this.k.value) || 10, this.axes[0].length - 1));
    const answer = await api("neighbors", { run, tag, step, index, k, metric: this.metric.value });
    if (this.picked !== index) return;
    this.neighbours = answer;
    this.nearest.replaceChildren(
      el("div", { class: "title" }, `Nearest to #${index}`),
      el("div", { class: "note" }, `${answer.metric} distance in the ${this.target.entry.d}-dimensional features`),
      el("div", { class: "neighbor query" }, this.describe(index)),
      ...answer.indices.map((i, rank) => el("div", { class: "neighbor", dataset: { index: String(i) },
        onclick: () => this.pick(i).catch(report) },
      this.describe(i, el("div", { class: "note" }, `${rank + 1}. distance ${Number(answer.distances[rank])
        .toFixed(4)}`)))),
    );
    this.draw();
  },
};

// ---- the page ---------------------------------------------------------------------------------------------------

const VIEWS = { scalars, distributions, graph, images, features, explanations, evaluation, text: texts, projector };
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
    [state.runs, state.views] = await Promise.all([get("runs"), get("views")]);
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
// Polling repeats once plotly is there: before, the first poll's requests are still waiting to be drawn.
plotlyReady.then(() => setInterval(poll, POLL_MS), () => {});
