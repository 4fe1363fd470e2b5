// Evaluation: confusion matrix, ROC / PR, score distributions, and whether explanations can be trusted.

let COLORS, PLOT_CONFIG, Plotly, api, baseLayout, chartCard, el, fade, fillSelect, fillSteps, forgetSteps,
  noteUnreadable, num, plain, report, runsHolding, tableCard, tagsIn;

// ---- evaluation -------------------------------------------------------------------------------------------------

/** baseLayout for a chart whose text must all show: the margins grow to fit the tick labels and axis titles
 * (plotly's automargin: long class or layer names, rotated), and the legend sits above the plot, where it meets
 * neither the x axis title nor the tick labels (below, it would be drawn over them). */
function fitted(extra = {}) {
  const outside = extra.legend === undefined;
  return baseLayout({
    ...extra,
    margin: { l: 10, r: 15, t: 10, b: 10, ...(extra.margin || {}) },
    legend: outside ? { orientation: "h", x: 0, xanchor: "left", y: 1.02, yanchor: "bottom", font: { size: 11 } }
      : extra.legend,
    xaxis: { automargin: true, ...(extra.xaxis || {}) },
    yaxis: { automargin: true, ...(extra.yaxis || {}) },
  });
}

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
      jobs.push(api("confusion_matrix", { run, tag: matrixTag, step }).then(noteUnreadable).then(async (answer) => {
        const chosen = fillSteps(this.step, answer.steps);
        this.matrixAnswer = chosen === answer.step ? answer
          : await api("confusion_matrix", { run, tag: matrixTag, step: chosen });
        this.drawMatrix();
      }));
    }
    // Every curve of the run (one per class for one-vs-rest reports), each at its newest step.
    jobs.push(Promise.all(curveTags.map((tag) => api("pr_curve", { run, tag }))).then((curves) => {
      curves.forEach(noteUnreadable); // a damaged record is named above the view; the last readable one is drawn
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
    }], fitted({
      showlegend: false,
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
    Plotly.react(this.roc.plot, roc, fitted({ legend: inside(1), xaxis: { ...unit, title: { text:
      "false positive rate" } }, yaxis: { ...unit, title: { text: "true positive rate" } } }), PLOT_CONFIG);
    Plotly.react(this.pr.plot, pr, fitted({ legend: inside(0), xaxis: { ...unit, title: { text: "recall" } },
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
    Plotly.react(this.scores.plot, bars, fitted({ barmode: "overlay", bargap: 0,
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

// The kinds `run.log_sanity_check`, `run.log_method_comparison` and `run.log_faithfulness` store (from the registry).
let TRUST_KINDS = [];
const SIMILARITY = { spearman: "Spearman rank correlation", spearman_abs: "Spearman (absolute values)", ssim: "SSIM",
  hog: "HOG similarity (Pearson)" };
const METRIC_HEADERS = { deletion: "deletion AUC", insertion: "insertion AUC",
  sanity: "rank corr., mean over the randomisation cascade" };

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
  view.sanity.plot.classList.add("tall");
  view.faith.plot.classList.add("tall");
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
  Plotly.react(view.sanity.plot, traces, fitted({
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
  Plotly.react(view.faith.plot, traces, fitted({
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
    `${METRIC_HEADERS[m] || m}\u00a0${answer.lower_is_better[m] ? "↓" : "↑"}`)), el("th", {}, "note"));
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

/** The view's object for the page (app.js): `core` is the page's shared module, `entry` the view's registry line. */
export default function create(core, entry) {
  ({
    COLORS, PLOT_CONFIG, Plotly, api, baseLayout, chartCard, el, fade, fillSelect, fillSteps, forgetSteps, num,
    noteUnreadable, plain, report, runsHolding, tableCard, tagsIn
  } = core);
  TRUST_KINDS = entry.conventions.trust_kinds;
  return evaluation;
}
