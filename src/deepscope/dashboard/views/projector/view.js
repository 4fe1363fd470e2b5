// Projector: an embedding's points in 2D or 3D, coloured, searched, with nearest neighbours.

let COLORS, PLOT_CONFIG, Plotly, api, baseLayout, el, fillSelect, report, runsHolding, sleep, state, status, typed,
  withToken;

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

/** The view's object for the page (app.js): `core` is the page's shared module, `entry` the view's registry line. */
export default function create(core, entry) {
  ({
    COLORS, PLOT_CONFIG, Plotly, api, baseLayout, el, fillSelect, report, runsHolding, sleep, state, status, typed,
    withToken
  } = core);
  return projector;
}
