// Distributions: a histogram tag over steps (percentile bands or offset histograms), two runs side by side.

let PLOT_CONFIG, Plotly, api, baseLayout, chartCard, el, fillSelect, num, report, runsWith, state, status, tagsOf,
  typed;

// TensorBoard's percentiles for distribution bands (in basis points of a normal: -inf, -1.5σ, -1σ, -0.5σ, 0, ...).
const PERCENTILES = [0, 6.68, 15.87, 30.85, 50, 69.15, 84.13, 93.32, 100];
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

// run.watch(model) tags its histograms "<kind>/<parameter or module name>"; the picker groups them by that prefix
// (the server's registry says which: [[prefix, label], ...]), and every other histogram tag under "other".
let HISTOGRAM_GROUPS = [];
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

/** The view's object for the page (app.js): `core` is the page's shared module, `entry` the view's registry line. */
export default function create(core, entry) {
  ({
    PLOT_CONFIG, Plotly, api, baseLayout, chartCard, el, fillSelect, num, report, runsWith, state, status, tagsOf,
    typed
  } = core);
  HISTOGRAM_GROUPS = entry.conventions.groups;
  return distributions;
}
