// Scalars: one chart per scalar tag, the shown runs overlaid; the custom-scalars layouts above them.

let byName, get, noteUnreadable, saveFile, settled, urlState, withToken;
let COLORS, PLOT_CONFIG, Plotly, api, baseLayout, chartCard, el, fade, matcher, num, plain, reactLines, report,
  runColor, slices, state, statusBadge, tagsOf, unpack;

// Points asked of the server per chart, shared by the runs overlaid in it: each run gets a power of two between
// `min_points` and `max_points`, so toggling one run seldom changes the others' requests. The numbers are the view's
// conventions, served by Python (views/scalars/data.py says why these), whose server warms what this page asks first.
let CHART_POINTS, MIN_POINTS, MAX_POINTS;
// Runs a chart overlays before it is a sweep's chart. A sweep's chart (of 100 runs, say) names no run in its own
// legend: a legend taller than its plot, over its axis title, that cost a fifth of each draw; their names and colours
// are in the run list, and its cursor table names the runs at the step (those nearest the pointer when they do not
// all fit), as TensorBoard has them. Its lines are painted on one canvas and its cursor table is the page's own
// (core.reactLines: plotly's SVG draw and raster of 100 runs' lines was most of a first visit), and its smoothed
// lines are 1 px wide, as its raw ones: a hundred 2 px lines over each other are a band, not lines.
const SWEEP_RUNS = 12;
// Scalar lines are SVG (a sweep's on one canvas): with CHART_POINTS bounding a chart, they draw in under a second
// even without a GPU, where WebGL (scattergl) in a browser without one rasterises in software and takes many times
// longer.
const LINE_TYPE = "scatter";
// Characters of run names per /api/scalars/batch request: far below the request-line limits of HTTP servers.
const BATCH_QUERY = 6000;
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

/** TensorBoard's "ignore outliers": the y range [5th, 95th percentile] of the traces' finite values, widened by
 * a tenth of its span on each side (in log10 units on a log axis); null for fewer than two values. */
function inliers(traces, log) {
  const values = [];
  for (const trace of traces) {
    for (const y of trace.y) {
      const v = typeof y === "number" ? y : NaN;
      if (Number.isFinite(v) && (!log || v > 0)) values.push(log ? Math.log10(v) : v);
    }
  }
  if (values.length < 2) return null;
  values.sort((a, b) => a - b);
  const at = (q) => {
    const i = q * (values.length - 1);
    const low = Math.floor(i);
    return values[low] + (values[Math.min(low + 1, values.length - 1)] - values[low]) * (i - low);
  };
  const [low, high] = [at(0.05), at(0.95)];
  const pad = (high - low) * 0.1 || Math.abs(high) * 0.1 || 1;
  return [low - pad, high + pad];
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
  // Live push: one EventSource on /api/events for the shown runs a writer holds; while it is open, their new points
  // are fetched when the server says they changed, not on every poll (the poll remains while it is not open).
  live: { source: null, key: "", names: new Set(), open: false, epoch: 0, events: 0, pulling: null,
    pending: new Set(), missed: new Set() },

  mount(container) {
    this.container = container;
    // What the URL says (a reload or a shared link shows the same): filters, hidden runs, smoothing, axes.
    this.filter = el("input", {
      type: "text",
      placeholder: "name or regex",
      value: urlState.read("runs") ?? "",
      oninput: () => {
        urlState.write("runs", this.filter.value);
        this.updateRunList();
        this.draw(true);
      },
    });
    this.tagFilter = el("input", {
      type: "text",
      placeholder: "tag regex, e.g. loss|acc",
      value: urlState.read("tags") ?? "",
      oninput: () => {
        urlState.write("tags", this.tagFilter.value);
        this.draw();
      },
    });
    this.runList = el("div", { class: "runlist" });
    const smoothing = Number(urlState.read("smoothing") ?? 0.6);
    this.smoothing = el("input", { type: "range", min: 0, max: 0.99, step: 0.01,
      value: Number.isFinite(smoothing) ? Math.min(Math.max(smoothing, 0), 0.99) : 0.6 });
    this.smoothingValue = el("span", {}, Number(this.smoothing.value).toFixed(2));
    this.smoothing.addEventListener("input", () => {
      this.smoothingValue.textContent = Number(this.smoothing.value).toFixed(2);
      urlState.write("smoothing", this.smoothing.value);
      this.draw();
    });
    this.xAxis = el(
      "select",
      { onchange: () => {
        urlState.write("x", this.xAxis.value === "step" ? null : this.xAxis.value);
        this.draw(true);
      } },
      el("option", { value: "step" }, "step"),
      el("option", { value: "epoch" }, "epoch"),
      el("option", { value: "relative" }, "relative time (s)"),
      el("option", { value: "wall" }, "wall time"),
    );
    if ([...this.xAxis.options].some((o) => o.value === urlState.read("x"))) this.xAxis.value = urlState.read("x");
    this.logY = el("input", { type: "checkbox", checked: urlState.read("logy") === "1", onchange: () => {
      urlState.write("logy", this.logY.checked ? "1" : null);
      this.draw(true);
    } });
    // Ignore outliers (TensorBoard's): each chart's y range from the 5th to the 95th percentile of its values,
    // widened, so one spike does not flatten the rest.
    this.outliers = el("input", { type: "checkbox", checked: urlState.read("outliers") === "1", onchange: () => {
      urlState.write("outliers", this.outliers.checked ? "1" : null);
      this.draw();
    } });
    // Pinned charts: a copy of each pinned tag's chart in a section above all others (in the URL: pin=<tag>).
    this.pins = new Set(urlState.readAll("pin"));
    this.pinnedCharts = new Map(); // tag -> {card, plot, noteNode}
    this.pinned = el("div", { class: "grid pinned" });
    this.pinnedSection = el("section", { class: "pinned-section", hidden: true },
      el("h3", {}, "Pinned"), this.pinned);
    this.layouts = el("div", { class: "layouts" }); // the custom-scalars charts, above the per-tag ones
    this.layoutCharts = new Map(); // `${category}\u0000${title}` -> {card, plot, noteNode, chart}
    this.mountLayoutEditor();
    // Per-tag charts in collapsible sections, one per tag prefix (the part before the first "/").
    this.grid = el("div", { class: "grid tag-groups" }); // a block of sections, not itself a grid of cards
    this.groups = new Map(); // prefix -> {node: <details>, grid, count}
    this.selected = new Set();
    this.known = new Set();
    this.hidden = new Set(urlState.readAll("off")); // runs the user unticked (new runs start shown)
    container.append(
      el(
        "aside",
        {},
        el("label", {}, "Runs (filter)", this.filter),
        this.runList,
        el("label", {}, "Tags (filter)", this.tagFilter),
        el("label", {}, el("span", {}, "Smoothing ", this.smoothingValue), this.smoothing),
        el("label", {}, "X axis", this.xAxis),
        el("label", { class: "inline" }, this.logY, "log y"),
        el("label", { class: "inline" }, this.outliers, "ignore outliers"),
      ),
      el("div", { class: "content" }, this.pinnedSection, this.layoutBar, this.layoutEditor, this.layouts, this.grid),
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
        if (!this.hidden.has(run.name)) this.selected.add(run.name); // new runs start shown
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
                if (event.target.checked) this.hidden.delete(run.name);
                else this.hidden.add(run.name);
                urlState.write("off", [...this.hidden].sort(byName));
                this.refresh().catch(report);
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
    this.overlaid = overlaid;
    this.watch(runs);
    if (this.live.missed.size) {
      const missed = [...this.live.missed];
      this.live.missed.clear();
      await this.pull(missed);
    }
    const request = (tag) => this.request(tag);
    const wanted = new Map(); // tag -> names of the runs to fetch it for
    const statusOf = new Map(runs.map((run) => [run.name, run.status]));
    for (const run of runs) {
      for (const [tag, kind] of Object.entries(run.tags)) {
        if (kind !== "scalar") continue;
        const cached = this.series.get(`${run.name}\u0000${tag}`);
        // A run no writer holds any more cannot change: fetched once per range, not on every poll; but once more
        // after its writer let go (fetched while it ran, the answer may miss the last points, flushed at close).
        const settledRun = run.status !== "running" && cached?.status === run.status;
        // A running run the live stream watches: its new points come with its events (see pull()), once it was
        // fetched after the stream opened (what was written before that is in that fetch).
        const pushed = this.live.open && this.live.names.has(run.name) && cached?.status === run.status
          && cached?.epoch === this.live.epoch;
        if (cached && cached.range === request(tag).range && (settledRun || pushed)) continue;
        if (!wanted.has(tag)) wanted.set(tag, []);
        wanted.get(tag).push(run.name);
      }
    }
    // One request per tag for all its runs (in slices, to keep URLs short), not one per run and tag.
    const jobs = [];
    const epoch = this.live.open ? this.live.epoch : -1; // asked while the live stream is open: what it had
    for (const [tag, names] of wanted) {
      const { start, end, points, range } = request(tag);
      for (const slice of slices(names, BATCH_QUERY)) {
        const params = { tag, runs: slice, start, end, max_points: points, encoding: "base64" };
        // A run the server cannot read comes back in answer.unreadable (named above the view), the others drawn;
        // a failed request (a run removed meanwhile) leaves the other requests' charts drawn too.
        jobs.push(
          settled(api("scalars/batch", params), `${tag} of ${slice.length} runs`).then((answer) => {
            noteUnreadable(answer);
            for (const series of answer?.series || []) {
              const arrays = { steps: 0, values: 0, epochs: 0, wall_times: 0 };
              for (const name of Object.keys(arrays)) arrays[name] = unpack(series[name]);
              const key = `${series.run}\u0000${tag}`;
              const fresh = { ...series, ...arrays, range, status: statusOf.get(series.run), epoch };
              const old = this.series.get(key);
              // Nothing new (a live run between two writes): keep the old answer, so draw() leaves its chart be.
              if (!old || !samePoints(old, fresh)) this.series.set(key, fresh);
              else Object.assign(old, { status: fresh.status, epoch });
            }
          }),
        );
      }
    }
    // An answer about a layout edited since it was asked (two edits in a row, answered out of order) is dropped.
    const version = this.layoutVersion;
    const [layout] = await Promise.all([this.askLayout(), ...jobs]);
    if (version === this.layoutVersion) this.layoutAnswer = layout;
    this.draw();
  },

  /** What to ask the server for a tag's chart: its zoomed range, and the points per run. */
  request(tag) {
    const zoom = this.zoom.get(tag) || {};
    const points = pointsPerRun(this.overlaid?.get(tag));
    return { start: zoom.start, end: zoom.end, points, range: `${zoom.start}:${zoom.end}:${points}` };
  },

  /** Opens (or moves) the live stream onto the shown runs that a writer holds; closes it when there are none. */
  watch(runs) {
    const live = this.live;
    const names = runs.filter((run) => run.status === "running" && Object.values(run.tags).includes("scalar"))
      .map((run) => run.name).sort(byName);
    const key = names.join("\u0000");
    if (key === live.key && (live.source || !names.length)) return;
    live.source?.close();
    Object.assign(live, { source: null, key, names: new Set(names), open: false });
    this.container.dataset.live = "off";
    if (!names.length || typeof EventSource === "undefined") return;
    const query = new URLSearchParams();
    for (const name of names) query.append("runs", name);
    const source = new EventSource(withToken(new URL(`api/events?${query}`, document.baseURI).href));
    live.source = source;
    // Ready: the server took the runs' tokens. What they logged before is fetched once more by the next poll (a new
    // epoch), then only on their events.
    source.addEventListener("ready", () => {
      live.open = true;
      live.epoch += 1;
      this.container.dataset.live = "open";
    });
    source.addEventListener("points", (message) => {
      live.events += 1;
      this.container.dataset.liveEvents = `${live.events}`;
      this.pull(JSON.parse(message.data).runs);
    });
    // Lost (the browser tries again by itself): the poll fetches the running runs meanwhile.
    source.addEventListener("error", () => {
      live.open = false;
      this.container.dataset.live = "off";
    });
  },

  /** The new points of `names` (runs the live stream says changed), fetched one pull at a time, and drawn. */
  pull(names) {
    const live = this.live;
    // Another tab shown: drawn when this one is shown again (refresh() pulls what was missed).
    const target = state.active === "scalars" ? live.pending : live.missed;
    for (const name of names) target.add(name);
    if (live.pulling || !live.pending.size) return live.pulling;
    live.pulling = (async () => {
      try {
        while (live.pending.size) {
          const wanted = [...live.pending];
          live.pending.clear();
          const shown = new Map(this.visibleRuns().map((run) => [run.name, run]));
          const jobs = [];
          for (const name of wanted) {
            const run = shown.get(name);
            if (!run) continue;
            for (const [tag, kind] of Object.entries(run.tags)) {
              if (kind === "scalar") jobs.push(this.pullSeries(run, tag).catch(report));
            }
          }
          await Promise.all(jobs);
          this.draw();
        }
      } finally {
        live.pulling = null;
      }
    })();
    return live.pulling;
  },

  /** One run's tag after a live event: only the points after the last one held, appended, while the series is
   * whole (not downsampled, not zoomed) and stays within its share of points; else the whole series again. */
  async pullSeries(run, tag) {
    const key = `${run.name}\u0000${tag}`;
    const { start, end, points, range } = this.request(tag);
    const old = this.series.get(key);
    const decode = (series) => {
      const arrays = { steps: 0, values: 0, epochs: 0, wall_times: 0 };
      for (const name of Object.keys(arrays)) arrays[name] = unpack(series[name]);
      return { ...series, ...arrays, range, status: run.status, epoch: this.live.open ? this.live.epoch : -1 };
    };
    const ask = (from) => api("scalars/batch", { tag, runs: [run.name], start: from, end, max_points: points,
      encoding: "base64" });
    if (old && old.range === range && !old.downsampled && start === undefined && end === undefined
        && old.steps.length) {
      const answer = await ask(old.steps[old.steps.length - 1] + 1);
      const series = answer.series?.[0];
      if (!series) return;
      const fresh = decode(series);
      if (!fresh.steps.length) return; // nothing after the last point (a rewrite of an earlier step waits a poll)
      if (!fresh.downsampled && old.steps.length + fresh.steps.length <= points) {
        const joined = { ...old, total: old.total + fresh.total, status: run.status };  // keeps its epoch
        for (const name of ["steps", "values", "epochs", "wall_times"]) joined[name] = old[name].concat(fresh[name]);
        this.series.set(key, joined);
        return;
      }
    }
    const answer = await ask(start);
    noteUnreadable(answer);
    const series = answer.series?.[0];
    if (series) this.series.set(key, decode(series));
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
          drawn.errorNode = el("p", { class: "layout-error", hidden: true });
          drawn.plot.before(drawn.errorNode);
          this.layoutCharts.set(key, drawn);
        }
        drawn.chart = chart;
        drawn.card.dataset.layout = chart.type;
        grid.append(drawn.card);
        toDraw.push(drawn);
      }
    }
    this.layouts.replaceChildren(...nodes); // the same chart cards, moved into fresh category sections
    for (const drawn of toDraw) {
      const { chart } = drawn;
      // A regex that does not compile: its chart says why (the server's words) and draws nothing; the others draw.
      drawn.card.classList.toggle("failed", Boolean(chart.error));
      drawn.errorNode.textContent = chart.error ? `cannot draw: ${chart.error}` : "";
      drawn.errorNode.hidden = !chart.error;
      drawn.noteNode.textContent = chart.type === "margin" ? chart.tags.join(" · ") : chart.tags.join(" | ");
      drawn.plot.hidden = Boolean(chart.error);
      if (chart.error) continue;
      const traces = this.layoutTraces(chart, runs, mode, weight);
      const layout = baseLayout({
        uirevision: `${mode}|${this.logY.checked}`,
        // The legend above the plot: a chart of many tags and runs has a tall one, which below would cover the
        // x axis title.
        legend: { orientation: "h", x: 0, xanchor: "left", y: 1.02, yanchor: "bottom", font: { size: 11 },
          traceorder: "normal" },
        margin: { l: 60, r: 15, t: 10, b: 10 },
        xaxis: { title: { text: { step: "step", epoch: "epoch", relative: "seconds", wall: "" }[mode] },
          type: mode === "wall" ? "date" : "linear", automargin: true },
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
    this.layoutNote.textContent = this.layoutError ?? "";
    this.layoutNote.hidden = !this.layoutError;
    this.layoutReset.hidden = !this.edited;
    this.layoutBar.querySelector(".source").textContent = this.edited ? "custom charts (edited here, in the URL)"
      : answer.categories.length ? "custom charts (the runs' layout)" : "custom charts";
    this.markRows(answer);
  },

  // ---- the custom-scalars layout, edited in the page ---------------------------------------------------------

  /** The bar above the custom charts (edit, download and import the layout, back to the runs') and the editor:
   * one row per chart (category, title, kind, one tag regex per line). An edited layout lives in the URL
   * (`layout=` its JSON, the dict `run.add_custom_scalars` takes), so a reload or a shared link draws it. */
  mountLayoutEditor() {
    this.edited = null;
    this.layoutVersion = 0;
    const asked = urlState.read("layout");
    if (asked) {
      try {
        this.edited = JSON.parse(asked);
      } catch (error) {
        this.layoutError = `the layout in the URL is not JSON (${error.message}): the runs' layout is drawn`;
      }
    }
    const button = (text, title, onclick, dataset = {}) => el("button", { type: "button", title, onclick, dataset },
      text);
    this.layoutNote = el("span", { class: "layout-error", hidden: true });
    this.layoutReset = button("use the runs' layout", "forget the edits: draw the layouts the runs logged",
      () => this.setLayout(null), { action: "reset" });
    const file = el("input", { type: "file", accept: ".json,application/json", hidden: true,
      onchange: () => this.importLayout(file) });
    this.layoutBar = el("div", { class: "toolbar layout-bar" },
      el("span", { class: "source" }, "custom charts"),
      button("edit", "add, change or remove custom charts", () => this.toggleEditor(), { action: "edit" }),
      button("JSON", "download the layout as JSON (what run.add_custom_scalars takes)",
        () => saveFile("custom_scalars.json", `${JSON.stringify(this.layoutAnswer?.layout ?? {}, null, 2)}\n`,
          "application/json"), { action: "download" }),
      button("import", "draw a layout from a JSON file", () => file.click(), { action: "import" }),
      file, this.layoutReset, this.layoutNote);
    this.layoutRows = el("div", { class: "layout-rows" });
    this.layoutEditor = el("div", { class: "layout-editor", hidden: true }, this.layoutRows,
      button("add chart", "a new chart of the tags some regexes find", () => this.addChart(), { action: "add" }));
  },

  /** The layout drawn, asked of the server (which matches the regexes in every run): the edited one, else the
   * runs'. A layout the server refuses (its shape) is named above the charts; the per-tag charts draw anyway. */
  async askLayout() {
    const logged = state.runs.some((run) => Object.values(run.tags).includes("custom_scalars"));
    const empty = this.edited && !Object.keys(this.edited).length; // every chart removed: none drawn
    if ((!this.edited && !logged) || empty) return { layout: this.edited ?? {}, categories: [] };
    try {
      const answer = await api("custom_scalars", this.edited ? { layout: JSON.stringify(this.edited) } : {});
      if (this.edited) this.layoutError = null;
      return answer;
    } catch (error) {
      this.layoutError = String(error.message || error);
      return { layout: this.edited ?? {}, categories: [] };
    }
  },

  /** Draw `layout` (null: the runs' own), kept in the URL, and redraw. */
  setLayout(layout) {
    this.edited = layout;
    this.layoutVersion += 1;
    this.layoutError = null;
    urlState.write("layout", layout ? JSON.stringify(layout) : null);
    if (!layout) this.fillRows(null);
    this.refresh().catch(report);
  },

  toggleEditor() {
    this.layoutEditor.hidden = !this.layoutEditor.hidden;
    if (!this.layoutEditor.hidden) this.fillRows(this.edited ?? this.layoutAnswer?.layout ?? {});
  },

  /** The editor's rows, one per chart of `layout` (null: none shown until the editor opens again). */
  fillRows(layout) {
    if (!layout) {
      this.layoutEditor.hidden = true;
      this.layoutRows.replaceChildren();
      return;
    }
    const rows = [];
    for (const [category, charts] of Object.entries(layout)) {
      for (const [title, [kind, tags]] of Object.entries(charts)) rows.push(this.chartRow(category, title, kind, tags));
    }
    this.layoutRows.replaceChildren(...rows);
  },

  chartRow(category, title, kind, tags) {
    const changed = () => this.fromRows();
    const field = (name, value, placeholder) => el("input", { type: "text", value, placeholder, onchange: changed,
      dataset: { field: name } });
    const type = el("select", { onchange: changed, dataset: { field: "kind" } },
      el("option", { value: "Multiline" }, "lines"), el("option", { value: "Margin" }, "band (value, lower, upper)"));
    type.value = kind === "Margin" ? "Margin" : "Multiline";
    const regexes = el("textarea", { rows: Math.max(1, tags.length), value: tags.join("\n"), onchange: changed,
      placeholder: "one tag regex per line", dataset: { field: "tags" } });
    regexes.addEventListener("input", () => {
      regexes.rows = Math.max(1, regexes.value.split("\n").length);
    });
    const row = el("div", { class: "layout-row" }, field("category", category, "category"),
      field("title", title, "chart title"), type, regexes,
      el("button", { type: "button", title: "remove this chart", dataset: { action: "remove" }, onclick: () => {
        row.remove();
        this.fromRows();
      } }, "remove"),
      el("span", { class: "layout-error", hidden: true }));
    row.dataset.key = `${category}\u0000${title}`;
    return row;
  },

  addChart() {
    const taken = new Set([...this.layoutRows.querySelectorAll("[data-field=title]")].map((input) => input.value));
    let n = taken.size + 1;
    while (taken.has(`chart ${n}`)) n += 1;
    const row = this.chartRow("custom", `chart ${n}`, "Multiline", []);
    this.layoutRows.append(row);
    row.querySelector("textarea").focus();
  },

  /** The layout the rows say, drawn; a margin chart without its three tags waits, saying so in its row. */
  fromRows() {
    const layout = {};
    for (const row of this.layoutRows.children) {
      const value = (name) => row.querySelector(`[data-field=${name}]`).value;
      const category = value("category").trim() || "custom";
      const title = value("title").trim() || "untitled";
      const kind = value("kind");
      const tags = value("tags").split("\n").map((tag) => tag.trim()).filter(Boolean);
      const error = row.querySelector(".layout-error");
      row.dataset.key = `${category}\u0000${title}`;
      error.hidden = !(kind === "Margin" && tags.length !== 3);
      error.textContent = error.hidden ? "" : `a band names 3 tags (value, lower, upper), not ${tags.length}`;
      if (!error.hidden) continue;
      layout[category] ??= {};
      layout[category][title] = [kind, tags];
    }
    this.setLayout(layout);
  },

  /** Each row of a chart the server could not draw says why (a regex that does not compile). */
  markRows(answer) {
    const errors = new Map();
    for (const { category, charts } of answer.categories) {
      for (const chart of charts) errors.set(`${category}\u0000${chart.title}`, chart.error);
    }
    for (const row of this.layoutRows.children) {
      const error = row.querySelector(".layout-error");
      const why = errors.get(row.dataset.key);
      if (why) {
        error.textContent = why;
        error.hidden = false;
      } else if (errors.has(row.dataset.key)) {
        error.hidden = true;
      }
    }
  },

  /** A layout from a JSON file: drawn once the server takes it, else its error named above the charts. */
  async importLayout(input) {
    const [file] = input.files;
    input.value = "";
    if (!file) return;
    try {
      const layout = JSON.parse(await file.text());
      await get("custom_scalars", { layout: JSON.stringify(layout) }); // its shape checked before it is kept
      this.setLayout(layout);
      if (!this.layoutEditor.hidden) this.fillRows(layout);
    } catch (error) {
      this.layoutError = `${file.name}: ${error.message || error}`;
      this.drawLayouts();
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

  /** The group of a tag: its prefix before the first "/", or "" for a tag without one. */
  groupOf(tag) {
    const slash = tag.indexOf("/");
    return slash > 0 ? tag.slice(0, slash) : "";
  },

  /** The collapsible section of a prefix, made on first use; charts are redrawn at their size when it opens. */
  group(prefix) {
    let group = this.groups.get(prefix);
    if (!group) {
      const count = el("span", { class: "count" });
      const grid = el("div", { class: "grid" });
      const node = el("details", { class: "tag-group", open: true, dataset: { group: prefix } },
        el("summary", {}, prefix || "(no prefix)", count), grid);
      // A section is made open: its toggle event (queued at creation) resizes nothing; one that was closed and opens
      // again redraws its charts at their size (the window may have been resized meanwhile).
      let closed = false;
      node.addEventListener("toggle", () => {
        if (!node.open) closed = true;
        else if (closed) {
          closed = false;
          for (const plot of grid.querySelectorAll(".js-plotly-plot")) Plotly.Plots.resize(plot);
        }
      });
      group = { node, grid, count };
      this.groups.set(prefix, group);
    }
    return group;
  },

  /** Sections and charts in natural order (grad_norm/2 before grad_norm/10), a new chart at its place. */
  arrange(tags) {
    const byGroup = new Map();
    for (const tag of tags) {
      const prefix = this.groupOf(tag);
      if (!byGroup.has(prefix)) byGroup.set(prefix, []);
      byGroup.get(prefix).push(tag);
    }
    const prefixes = [...byGroup.keys()].sort((a, b) => (a === "") - (b === "") || byName(a, b));
    for (const [prefix, group] of this.groups) {
      if (!byGroup.has(prefix)) {
        group.node.remove();
        this.groups.delete(prefix);
      }
    }
    const sections = prefixes.map((prefix) => this.group(prefix).node);
    if (sections.some((node, i) => this.grid.children[i] !== node) || this.grid.children.length !== sections.length) {
      this.grid.replaceChildren(...sections);
    }
    for (const prefix of prefixes) {
      const group = this.group(prefix);
      const cards = byGroup.get(prefix).map((tag) => this.charts.get(tag).card);
      group.count.textContent = `${cards.length}`;
      if (cards.some((card, i) => group.grid.children[i] !== card) || group.grid.children.length !== cards.length) {
        group.grid.replaceChildren(...cards);
      }
    }
  },

  draw(resetZoom = false) {
    const runs = this.visibleRuns();
    const tagMatch = matcher(this.tagFilter.value);
    const tags = tagsOf("scalar", runs).filter(tagMatch);
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
        chart = this.card(tag);
        chart.card.dataset.tag = tag;
        this.charts.set(tag, chart);
      }
    }
    if (!tags.length) {
      this.groups.clear();
      const why = this.tagFilter.value ? "No scalar tag matches the tag filter." : "No scalars in the selected runs.";
      this.grid.replaceChildren(el("p", { class: "empty" }, why));
    } else {
      this.grid.querySelector(":scope > p.empty")?.remove();
      this.arrange(tags);
    }
    // Drawn once the cards are in the page: plotly sizes a chart from its div, so one drawn while detached is drawn at
    // its default size first and redrawn whole when resized.
    for (const tag of tags) this.drawChart(tag, this.charts.get(tag), runs, mode, weight);
    this.drawPinned(runs, mode, weight);
    this.drawLayouts();
  },

  /** A chart card for a tag: the core's card with the downloads, and a pin. */
  card(tag) {
    const chart = chartCard(tag, "", () => this.csv(tag), () => this.json(tag));
    const pin = el("button", { type: "button", class: "pin", title: "pin this chart above the others",
      onclick: () => this.pin(tag, !this.pins.has(tag)) }, "pin");
    chart.card.querySelector(".tools").prepend(pin);
    chart.pinButton = pin;
    return chart;
  },

  pin(tag, on) {
    if (on) this.pins.add(tag);
    else this.pins.delete(tag);
    urlState.write("pin", [...this.pins].sort(byName));
    this.draw();
  },

  /** The pinned copies, in natural order, whatever the tag filter; a pin whose tag no shown run has waits. */
  drawPinned(runs, mode, weight) {
    const present = new Set(tagsOf("scalar", runs));
    const tags = [...this.pins].filter((tag) => present.has(tag)).sort(byName);
    for (const [tag, chart] of this.pinnedCharts) {
      if (!tags.includes(tag)) {
        Plotly.purge(chart.plot);
        chart.card.remove();
        this.pinnedCharts.delete(tag);
      }
    }
    for (const [tag, chart] of this.charts) chart.pinButton.classList.toggle("active", this.pins.has(tag));
    const cards = tags.map((tag) => {
      let chart = this.pinnedCharts.get(tag);
      if (!chart) {
        chart = this.card(tag);
        chart.card.dataset.pinned = tag;
        chart.pinButton.textContent = "unpin";
        chart.pinButton.title = "unpin this chart";
        this.pinnedCharts.set(tag, chart);
      }
      return chart.card;
    });
    if (cards.some((card, i) => this.pinned.children[i] !== card) || this.pinned.children.length !== cards.length) {
      this.pinned.replaceChildren(...cards);
    }
    this.pinnedSection.hidden = !cards.length;
    for (const tag of tags) this.drawChart(tag, this.pinnedCharts.get(tag), runs, mode, weight);
  },

  /** One tag's chart: the shown runs' lines, redrawn only when its answers or the settings changed. */
  drawChart(tag, chart, runs, mode, weight) {
    const shownRuns = runs.filter((run) => run.tags[tag] === "scalar" && this.series.has(`${run.name}\u0000${tag}`));
    const answers = shownRuns.map((run) => this.series.get(`${run.name}\u0000${tag}`));
    const outliers = this.outliers.checked;
    // Keeps the user's zoom across redraws; a new value (axis mode changed) resets it.
    const uirevision = `${mode}|${this.logY.checked}|${outliers}|${this.zoomKey(tag)}`;
    // A run's colour comes from its name (core.runColor): a new run recolours nothing.
    const colors = shownRuns.map((run) => runColor(run.name));
    const sweep = shownRuns.length > SWEEP_RUNS;
    const width = sweep ? 1 : 2;
    const drawn = `${uirevision}|${weight}|${colors.join()}`; // the colours' count says the lines' width
    // The periodic refresh with nothing new (same runs, same answers, same settings): the chart stays as it is.
    const last = chart.drawn;
    if (last && last.key === drawn && last.answers.length === answers.length
        && last.answers.every((answer, i) => answer === answers[i])) return;
    chart.drawn = { key: drawn, answers };
    const traces = [];
    let total = 0;
    let shown = 0;
    shownRuns.forEach((run, i) => {
      const answer = answers[i];
      total += answer.total;
      shown += answer.steps.length;
      traces.push(...this.runTraces(run.name, answer, mode, weight, colors[i], width));
    });
    chart.noteNode.textContent = shown < total ? `${shown} of ${total} points` : `${total} points`;
    const yaxis = { type: this.logY.checked ? "log" : "linear" };
    const range = outliers ? inliers(traces, this.logY.checked) : null;
    if (range) Object.assign(yaxis, { range, autorange: false });
    const layout = baseLayout({
      uirevision,
      showlegend: !sweep,
      // The cursor table: hovering a step lists every run's value there (the smoothed one with smoothing on).
      hovermode: "x unified",
      xaxis: { title: { text: { step: "step", epoch: "epoch", relative: "seconds", wall: "" }[mode] },
        type: mode === "wall" ? "date" : "linear" },
      yaxis,
    });
    // Plotly keeps the objects it is given: a pinned copy gets its own trace objects. A sweep's lines are drawn on
    // one canvas (core.reactLines), not as a SVG path each.
    reactLines(chart.plot, chart.card.dataset.pinned ? traces.map((t) => ({ ...t })) : traces, layout, PLOT_CONFIG,
      sweep && LINE_TYPE === "scatter");
    if (!chart.plot.dataset.listening) {
      chart.plot.dataset.listening = "1";
      chart.plot.on("plotly_relayout", (event) => this.zoomed(tag, event));
    }
  },

  /** A run's lines in a chart: its raw points and, with smoothing on, their EMA (`width` px wide). The same trace
   * objects as last time while the answer, x axis, smoothing, colour and width are unchanged, so Plotly.react sees
   * only the runs that changed. */
  runTraces(name, answer, mode, weight, color, width) {
    const key = `${mode}|${weight}|${color}|${width}`;
    const cached = this.traces.get(answer);
    if (cached && cached.key === key) return cached.traces;
    const x = this.x(answer, mode);
    const raw = answer.values.map(num);
    // A series of one point (a test accuracy, an epoch's loss) has no line to draw: it is a marker.
    const lone = answer.steps.length === 1;
    const common = { x, name: plain(name), meta: name, legendgroup: name, type: LINE_TYPE,
      mode: lone ? "lines+markers" : "lines", marker: { size: 7, color } };
    const traces = [{
      ...common,
      y: raw,
      showlegend: weight === 0,
      line: { color, width: 1 },
      opacity: weight > 0 ? 0.25 : 1,
      hoverinfo: weight > 0 ? "skip" : "x+y+name",
    }];
    if (weight > 0) traces.push({ ...common, y: ema(raw, weight), line: { color, width }, opacity: 1 });
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

  /** Every point of a tag in the shown runs (not only the drawn ones): asked again of the server at full
   * resolution, over the zoomed range if zoomed in. `[{run, steps, values, epochs, wall_times, total}]`. */
  async fullSeries(tag) {
    const names = this.visibleRuns().filter((run) => run.tags[tag] === "scalar").map((run) => run.name);
    const zoom = this.zoom.get(tag) || {};
    const out = [];
    for (const slice of slices(names, BATCH_QUERY)) {
      // How many points the runs hold, from what was fetched (`total`); all of them are asked for.
      const most = Math.max(4, ...slice.map((name) => this.series.get(`${name}\u0000${tag}`)?.total ?? 0));
      const answer = await get("scalars/batch", { tag, runs: slice, start: zoom.start, end: zoom.end,
        max_points: Math.min(most, 1_000_000), encoding: "base64" });
      for (const series of answer.series) {
        out.push({ run: series.run, steps: unpack(series.steps), values: unpack(series.values),
          epochs: unpack(series.epochs), wall_times: unpack(series.wall_times), total: series.total });
      }
    }
    return out;
  },

  async csv(tag) {
    const rows = [];
    for (const answer of await this.fullSeries(tag)) {
      answer.steps.forEach((step, i) => {
        const epoch = answer.epochs[i] < 0 ? "" : answer.epochs[i];
        rows.push([answer.run, tag, step, epoch, answer.wall_times[i], answer.values[i]]);
      });
    }
    return [["run", "tag", "step", "epoch", "wall_time", "value"], rows];
  },

  async json(tag) {
    const series = await this.fullSeries(tag);
    return { tag, series: series.map((s) => ({ ...s, epochs: s.epochs.map((e) => (e < 0 ? null : e)) })) };
  },
};

/** The view's object for the page (app.js): `core` is the page's shared module, `entry` the view's registry line. */
export default function create(core, entry) {
  ({ chart_points: CHART_POINTS, min_points: MIN_POINTS, max_points: MAX_POINTS } = entry.conventions);
  ({
    COLORS, PLOT_CONFIG, Plotly, api, baseLayout, chartCard, el, fade, matcher, num, plain, reactLines, report,
    runColor, slices, state, statusBadge, tagsOf, unpack
  } = core);
  ({ byName, get, noteUnreadable, saveFile, settled, urlState, withToken } = core);
  return scalars;
}
