// HParams: every run with a config as a row, its hyperparameters and a summary of chosen metrics as columns
// (sortable, filterable, CSV), the same as parallel coordinates, one metric against one hyperparameter, and the
// difference between two runs' configs.

let state;
let PLOT_CONFIG, Plotly, baseLayout, byName, chartCard, el, fillSelect, get, plain, plotlyReady, report, runColor,
  tableCard, urlState;

// What a metric column shows of a run's series: its final value, its lowest or its highest.
const AGGREGATES = { last: "final", min: "min", max: "max" };

/** A value of the table as text: numbers to 6 significant digits, the rest as they are. */
function shown(value) {
  if (value === null || value === undefined) return "";
  if (typeof value === "number") return Number.isInteger(value) ? String(value) : String(Number(value.toPrecision(6)));
  return String(value);
}

/** Compare two cells: numbers before text, numbers by value, text in natural order, blanks last. */
function compare(a, b) {
  const blank = (v) => v === null || v === undefined || v === "";
  if (blank(a) || blank(b)) return blank(a) - blank(b);
  if (typeof a === "number" && typeof b === "number") return a - b;
  if (typeof a === "number" || typeof b === "number") return typeof a === "number" ? -1 : 1;
  return byName(String(a), String(b));
}

/** A parallel-coordinates axis of `values` (one per run): numbers as they are, anything else as categories. */
function dimension(label, values) {
  const numeric = values.every((v) => v === null || typeof v === "number");
  if (numeric) return { label: plain(label), values: values.map((v) => (v === null ? NaN : v)) };
  const categories = [...new Set(values.map((v) => (v === null ? "" : String(v))))].sort(byName);
  const index = new Map(categories.map((c, i) => [c, i]));
  return {
    label: plain(label),
    values: values.map((v) => index.get(v === null ? "" : String(v))),
    tickvals: categories.map((_, i) => i),
    ticktext: categories.map((c) => plain(c || "—")),
  };
}

const hparams = {
  title: "HParams",
  mount(container) {
    const again = () => this.refresh().catch(report);
    this.metricList = el("div", { class: "metric-list" });
    this.filter = el("input", { type: "text", placeholder: "run or value regex", value: urlState.read("hp_filter") ?? "",
      oninput: () => {
        urlState.write("hp_filter", this.filter.value);
        this.draw();
      } });
    this.aggregate = el("select", { onchange: () => {
      urlState.write("hp_agg", this.aggregate.value === "last" ? null : this.aggregate.value);
      this.draw();
    } }, Object.entries(AGGREGATES).map(([value, text]) => el("option", { value }, text)));
    if (AGGREGATES[urlState.read("hp_agg")]) this.aggregate.value = urlState.read("hp_agg");
    this.colorBy = el("select", { onchange: () => this.draw() });
    this.scatterX = el("select", { onchange: () => this.draw() });
    this.scatterY = el("select", { onchange: () => this.draw() });
    this.diffA = el("select", { onchange: () => this.compareRuns().catch(report) });
    this.diffB = el("select", { onchange: () => this.compareRuns().catch(report) });
    const sort = (urlState.read("hp_sort") || "").split(":");
    this.sort = sort[0] ? [sort.slice(0, -1).join(":") || sort[0], sort.at(-1) !== "desc"] : null;
    this.parallel = chartCard("parallel coordinates", "", () => this.csv(), () => this.visibleRows());
    this.parallel.card.dataset.chart = "parcoords";
    this.table = tableCard("runs × hyperparameters", () => this.csv());
    this.table.card.dataset.chart = "hparams-table";
    this.scatter = chartCard("metric against hyperparameter", "", () => this.csv(), () => this.visibleRows());
    this.scatter.card.dataset.chart = "scatter";
    this.diff = tableCard("config difference", () => this.diffCsv());
    this.diff.card.dataset.chart = "config-diff";
    container.append(
      el("aside", {}, el("label", {}, "Filter (run or value)", this.filter), el("label", {}, "Metrics"),
        this.metricList, el("label", {}, "Metric value", this.aggregate), el("label", {}, "Colour by", this.colorBy),
        el("label", {}, "Scatter: hyperparameter", this.scatterX), el("label", {}, "Scatter: metric", this.scatterY),
        el("label", {}, "Compare the config of", this.diffA), el("label", {}, "with", this.diffB)),
      el("div", { class: "content" }, el("div", { class: "grid" }, this.parallel.card, this.scatter.card),
        el("div", { style: "height:1rem" }), this.table.card, el("div", { style: "height:1rem" }), this.diff.card),
    );
  },

  /** The metrics ticked (or, before the first answer, those in the URL; none: the server's choice). */
  chosen() {
    if (!this.answer) return urlState.readAll("hp_metrics");
    return [...this.metricList.querySelectorAll("input:checked")].map((box) => box.value);
  },

  /** Ask for the table at once, as the page opens on this view (before the runs and the views come back). */
  prefetch() {
    if (!this.answer && !this.pending) this.pending = get("hparams", { metrics: this.chosen() });
  },

  async refresh() {
    const metrics = this.chosen();
    // A poll with the same runs, none of them being written, and the same metrics: nothing can have changed.
    const runs = state.runs.map((run) => [run.name, run.status, Object.keys(run.tags).length]);
    const listed = JSON.stringify([metrics, runs]);
    if (listed === this.listed && !state.runs.some((run) => run.status === "running")) return;
    // The table needs no plotly.js: drawn as soon as the answer is here (the charts wait for plotly in draw()).
    const pending = this.pending;
    this.pending = null;
    const answer = await (pending ?? get("hparams", { metrics })).catch((error) => {
      if (!pending) throw error;
      return get("hparams", { metrics }); // the early request failed: ask again, as a poll would
    });
    this.listed = listed;
    const key = JSON.stringify(answer);
    if (key === this.answerKey) return; // nothing new since the last poll
    this.answerKey = key;
    this.answer = answer;
    const boxes = answer.metrics.map((metric) => el("label", { class: "inline", title: metric },
      el("input", { type: "checkbox", value: metric, checked: answer.chosen.includes(metric), onchange: () => {
        urlState.write("hp_metrics", this.chosen());
        this.refresh().catch(report);
      } }), metric));
    this.metricList.replaceChildren(...boxes);
    fillSelect(this.colorBy, answer.chosen, answer.chosen[0]);
    fillSelect(this.scatterY, answer.chosen, answer.chosen[0]);
    fillSelect(this.scatterX, answer.hparams, answer.hparams[0]);
    const names = answer.runs.map((run) => run.name);
    fillSelect(this.diffA, names, urlState.read("hp_a") ?? names[0]);
    fillSelect(this.diffB, names, urlState.read("hp_b") ?? names[1] ?? names[0]);
    this.draw();
    await this.compareRuns();
  },

  /** A run's value in a column: `["config", name]` or `["metric", tag]` (with the aggregate chosen). */
  value(run, column) {
    if (column === "run") return run.name;
    const [kind, name] = column;
    if (kind === "config") return run.config[name] ?? null;
    const summary = run.metrics[name];
    const v = summary ? summary[this.aggregate.value] : null;
    return typeof v === "number" ? v : v === null || v === undefined ? null : v;
  },

  /** The runs the filter keeps: its regex (else substring) found in the run's name or one of its values. */
  visibleRows() {
    if (!this.answer) return [];
    const text = this.filter.value.trim();
    if (!text) return this.answer.runs;
    let test;
    try {
      const re = new RegExp(text, "i");
      test = (s) => re.test(s);
    } catch {
      test = (s) => s.toLowerCase().includes(text.toLowerCase());
    }
    return this.answer.runs.filter((run) => test(run.name) || Object.entries(run.config)
      .some(([name, v]) => test(`${name}=${v}`) || test(String(v))));
  },

  columns() {
    const { hparams: names, chosen } = this.answer;
    return [...names.map((name) => ["config", name]), ...chosen.map((tag) => ["metric", tag])];
  },

  header(column) {
    return column === "run" ? "run" : column[0] === "config" ? column[1]
      : `${column[1]} (${AGGREGATES[this.aggregate.value]})`;
  },

  draw() {
    const answer = this.answer;
    if (!answer) return;
    let rows = this.visibleRows().slice();
    const columns = ["run", ...this.columns()];
    if (this.sort) {
      const [id, ascending] = this.sort;
      const column = columns.find((c) => this.columnId(c) === id);
      if (column) rows.sort((a, b) => compare(this.value(a, column), this.value(b, column)) * (ascending ? 1 : -1));
    }
    this.rows = rows;
    this.drawTable(rows, columns);
    const filtered = rows.length < answer.runs.length ? ` (${rows.length} shown)` : "";
    this.table.noteNode.textContent = `${answer.runs.length} runs${filtered} · ${answer.hparams.length} hyperparameters`;
    // The charts once plotly.js is there and the table has been painted: the scatter, then the parallel coordinates
    // (WebGL, slow to start without a GPU: a second or more in a software renderer), each in a task of its own, so
    // the table shows first. Only the latest draw's charts are drawn.
    const drawing = (this.drawing = (this.drawing ?? 0) + 1);
    const later = (then) => requestAnimationFrame(() => requestAnimationFrame(() => setTimeout(() => {
      if (drawing === this.drawing) then();
    }, 0)));
    plotlyReady.then(() => later(() => {
      this.drawScatter(this.rows);
      later(() => this.drawParallel(this.rows));
    }), () => {});
  },

  columnId(column) {
    return column === "run" ? "run" : `${column[0]}:${column[1]}`;
  },

  drawTable(rows, columns) {
    const sortedId = this.sort ? this.sort[0] : null;
    const head = el("tr", {}, columns.map((column) => {
      const id = this.columnId(column);
      const arrow = id === sortedId ? (this.sort[1] ? " ↑" : " ↓") : "";
      return el("th", { dataset: { column: id }, class: id === sortedId ? "sorted" : "", title: "click to sort",
        onclick: () => {
          this.sort = [id, this.sort && this.sort[0] === id ? !this.sort[1] : true];
          urlState.write("hp_sort", `${id}:${this.sort[1] ? "asc" : "desc"}`);
          this.draw();
        } }, this.header(column) + arrow);
    }));
    const body = rows.map((run) => el("tr", { dataset: { run: run.name } }, columns.map((column) => {
      const v = this.value(run, column);
      return el("td", { class: typeof v === "number" ? "number" : "" }, column === "run"
        ? [el("span", { class: "swatch", style: `background:${runColor(run.name)};display:inline-block` }), " ",
          run.name]
        : shown(v));
    })));
    this.table.body.classList.add("hparams-wrap");
    this.table.body.replaceChildren(el("table", { class: "hparams" }, el("thead", {}, head), el("tbody", {}, body)));
  },

  drawParallel(rows) {
    const chart = this.parallel;
    const columns = this.columns();
    if (!rows.length || !columns.length) {
      Plotly.purge(chart.plot);
      chart.noteNode.textContent = "no run to draw";
      return;
    }
    const dimensions = columns.map((column) => dimension(this.header(column), rows.map((r) => this.value(r, column))));
    const colour = this.colorBy.value ? rows.map((r) => this.value(r, ["metric", this.colorBy.value])) : null;
    const line = colour && colour.some((v) => typeof v === "number")
      ? { color: colour.map((v) => (typeof v === "number" ? v : NaN)), colorscale: "Viridis", showscale: true,
        colorbar: { title: { text: plain(this.colorBy.value), side: "right" }, thickness: 12 } }
      : { color: "#e8590c" };
    chart.noteNode.textContent = `${rows.length} runs · drag along an axis to select a range`;
    Plotly.react(chart.plot, [{ type: "parcoords", dimensions, line }],
      baseLayout({ margin: { l: 70, r: 70, t: 40, b: 20 }, showlegend: false }), PLOT_CONFIG);
  },

  drawScatter(rows) {
    const chart = this.scatter;
    const x = this.scatterX.value;
    const y = this.scatterY.value;
    if (!x || !y || !rows.length) {
      Plotly.purge(chart.plot);
      chart.noteNode.textContent = x && y ? "no run to draw" : "choose a metric to summarise";
      return;
    }
    const xs = rows.map((r) => this.value(r, ["config", x]));
    const categorical = xs.some((v) => v !== null && typeof v !== "number");
    chart.card.querySelector(".title").textContent = `${y} against ${x}`;
    chart.noteNode.textContent = `${AGGREGATES[this.aggregate.value]} value, one point per run`;
    Plotly.react(chart.plot, [{
      type: "scatter", mode: "markers", x: xs.map((v) => (categorical && v !== null ? String(v) : v)),
      y: rows.map((r) => this.value(r, ["metric", y])), text: rows.map((r) => plain(r.name)),
      marker: { size: 9, color: rows.map((r) => runColor(r.name)) },
      hovertemplate: "%{text}<br>%{x} → %{y}<extra></extra>",
    }], baseLayout({ showlegend: false, xaxis: { title: { text: plain(x) }, type: categorical ? "category" : "-" },
      yaxis: { title: { text: plain(`${y} (${AGGREGATES[this.aggregate.value]})`) } } }), PLOT_CONFIG);
  },

  csv() {
    const columns = ["run", ...(this.answer ? this.columns() : [])];
    const rows = (this.rows || []).map((run) => columns.map((column) => this.value(run, column)));
    // Every summary of each metric, not only the one shown.
    const metrics = this.answer ? this.answer.chosen : [];
    const extra = metrics.flatMap((tag) => ["min", "max", "last", "step"].map((what) => `${tag} (${what})`));
    const full = (this.rows || []).map((run, i) => [...rows[i], ...metrics.flatMap((tag) => {
      const s = run.metrics[tag];
      return s ? [s.min, s.max, s.last, s.step] : ["", "", "", ""];
    })]);
    return [[...columns.map((c) => this.header(c)), ...extra], full];
  },

  /** The config difference of the two runs chosen: only the names whose values differ (or one run lacks). */
  async compareRuns() {
    const [a, b] = [this.diffA.value, this.diffB.value];
    urlState.write("hp_a", a);
    urlState.write("hp_b", b);
    if (!a || !b) return;
    const answer = await get("hparams/diff", { a, b });
    if (this.diffA.value !== a || this.diffB.value !== b) return;
    this.diffAnswer = answer;
    const head = el("tr", {}, el("th", {}, "name"), el("th", {}, a), el("th", {}, b));
    const body = answer.rows.map((row) => el("tr", { dataset: { name: row.name } }, el("td", {}, row.name),
      row.values.map((v, i) => el("td", { class: "value" }, row.only !== null && row.only !== i ? "(not set)"
        : shown(v)))));
    this.diff.noteNode.textContent = a === b ? "the same run twice"
      : `${answer.rows.length} differ · ${answer.same} equal`;
    this.diff.body.replaceChildren(el("table", { class: "hparams diff" }, el("thead", {}, head),
      el("tbody", {}, body)));
  },

  diffCsv() {
    const answer = this.diffAnswer;
    if (!answer) return [["name"], []];
    return [["name", ...answer.runs], answer.rows.map((row) => [row.name, ...row.values])];
  },
};

/** The view's object for the page (app.js): `core` is the page's shared module, `entry` the view's registry line. */
export default function create(core, entry) {
  ({
    PLOT_CONFIG, Plotly, baseLayout, byName, chartCard, el, fillSelect, get, plain, plotlyReady, report, runColor,
    tableCard, urlState,
  } = core);
  ({ state } = core);
  return hparams;
}
