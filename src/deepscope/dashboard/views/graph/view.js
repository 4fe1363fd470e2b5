// Graph: the module hierarchy, parameters by module (icicle), and the op graph.

let COLORS, PLOT_CONFIG, Plotly, api, baseLayout, chartCard, el, fillSelect, plain, report, state;

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

/** The view's object for the page (app.js): `core` is the page's shared module, `entry` the view's registry line. */
export default function create(core, entry) {
  ({ COLORS, PLOT_CONFIG, Plotly, api, baseLayout, chartCard, el, fillSelect, plain, report, state } = core);
  return graph;
}
