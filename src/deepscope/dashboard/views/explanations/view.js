// Explanations: the gallery of inputs and each method's heatmap; for a tag explained at several steps (probes during
// training), a step slider and one probe's heatmaps across training beside the loss curve.

let api, baseLayout, chartCard, el, fillSelect, fillSteps, forgetSteps, num, Plotly, PLOT_CONFIG, report, runsHolding,
  tagsIn, withToken;

/** A number from the API with `digits` decimals; non-finite ones ("NaN", "Infinity") as they came. */
const fixed = (value, digits) => (typeof value === "number" ? value.toFixed(digits) : String(value));

const explanations = {
  title: "Explanations",
  mount(container) {
    const again = () => this.refresh().catch(report);
    this.run = el("select", { onchange: again });
    this.tag = el("select", { onchange: again });
    this.step = el("select", { class: "gallery-step", onchange: again });
    this.show = el("select", { onchange: again }, el("option", { value: "overlay" }, "heatmap over input"),
      el("option", { value: "heatmap" }, "heatmap alone"));
    this.wrongOnly = el("input", { type: "checkbox", onchange: () => this.draw() });
    this.info = el("p", { class: "note" });
    this.advice = el("p", { class: "advice" });
    this.gallery = el("div", { class: "gallery" });
    // Over training: shown when the tag holds sets at several steps.
    this.slider = el("input", { type: "range", class: "probe-slider", min: 0, max: 0, step: 1, value: 0,
      oninput: () => this.slide() });
    this.sliderLabel = el("span", { class: "note" });
    this.probe = el("select", { class: "probe-choice", onchange: again });
    this.loss = el("select", { class: "probe-loss", onchange: again });
    this.overTraining = el("div", { class: "over-training", hidden: true },
      el("label", {}, el("span", {}, "Step ", this.sliderLabel), this.slider),
      el("label", {}, "Probe", this.probe), el("label", {}, "Loss beside it", this.loss));
    this.now = el("div", { class: "probe-now" });
    this.strips = el("div", { class: "probe-strips" });
    this.chart = chartCard("loss", "", () => this.lossCsv());
    this.panel = el("div", { class: "probe-track card", hidden: true },
      el("div", { class: "card-head" }, el("span", { class: "title" }, "probe over training"),
        el("span", { class: "note probe-title" })),
      el("div", { class: "probe-body" }, this.now, el("div", { class: "probe-loss-chart" }, this.chart.card)),
      this.strips);
    container.append(
      el("aside", {}, el("label", {}, "Run", this.run), el("label", {}, "Explanations", this.tag),
        el("label", {}, "Step", this.step), this.overTraining, el("label", {}, "Show", this.show),
        el("label", { class: "inline" }, this.wrongOnly, "misclassified only"), this.info),
      el("div", { class: "content" }, this.advice, this.panel, this.gallery),
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
    await this.refreshTrack(run, tag, answer);
  },

  /** The chosen probe across every step of the tag, fetched again when the run, tag, probe, loss tag or the
   * tag's steps change (training goes on). */
  async refreshTrack(run, tag, answer) {
    const several = answer.steps.length > 1;
    this.overTraining.hidden = !several;
    this.panel.hidden = !several;
    if (!several) {
      this.track = null;
      return;
    }
    const probes = answer.items.map((item, i) => String(i));
    fillSelect(this.probe, probes, probes[0]);
    for (const [i, option] of [...this.probe.options].entries()) {
      const item = answer.items[i];
      option.textContent = `#${item.index}${item.label !== null ? ` · ${item.label}` : ""}`;
    }
    const losses = tagsIn(run, "scalar").filter((t) => t.toLowerCase().includes("loss"));
    const loss = fillSelect(this.loss, losses, losses.includes("train/loss") ? "train/loss" : losses[0]) || undefined;
    const index = Number(this.probe.value || 0);
    const key = [run, tag, index, loss, answer.steps.join(",")].join("\u0000");
    if (this.trackKey !== key) {
      this.track = await api("probe", { run, tag, index, loss });
      this.trackKey = key;
      this.trackDrawn = null;
    }
    this.slider.max = String(answer.steps.length - 1);
    this.slider.value = String(Math.max(0, answer.steps.indexOf(answer.step)));
    this.drawTrack(answer.step);
  },

  /** The slider moved: the probe's panel follows at once (its frames are all here), the gallery after a fetch. */
  slide() {
    const steps = this.answer?.steps ?? [];
    const step = steps[Number(this.slider.value)];
    if (step === undefined) return;
    this.drawTrack(step);
    if (String(step) !== this.step.value) {
      this.step.value = String(step);
      this.refresh().catch(report);
    }
  },

  drawTrack(step) {
    const track = this.track;
    if (!track) return;
    const i = track.steps.indexOf(step);
    const frame = track.frames[i < 0 ? track.frames.length - 1 : i];
    this.sliderLabel.textContent = `${frame.step} (${track.steps.indexOf(frame.step) + 1} of ${track.steps.length})`;
    const drawn = `${this.trackKey}\u0000${frame.step}\u0000${this.show.value}`;
    if (this.trackDrawn === drawn) return;
    this.trackDrawn = drawn;
    const wrong = frame.correct === false;
    this.panel.querySelector(".probe-title").textContent = this.probe.selectedOptions[0]?.textContent ?? "";
    const picture = (url, alt) => el("img", { src: withToken(url), alt, title: alt });
    const score = (s) => fixed(s, 3);
    this.now.className = `probe-now ${wrong ? "wrong" : frame.correct ? "right" : ""}`;
    this.now.dataset.step = String(frame.step);
    this.now.replaceChildren(
      el("figure", {}, picture(track.input, "probe"), el("figcaption", {},
        el("div", {}, `label: ${track.label ?? "?"}`),
        el("div", { class: "prediction" }, `step ${frame.step} · predicted: ${frame.prediction ?? "?"}`,
          wrong ? " ✗ misclassified at this step" : frame.correct ? " ✓" : ""),
        el("div", {}, frame.loss === null ? "" : `${track.loss.tag} at this step: ${fixed(frame.loss, 4)}`))),
      ...frame.maps.map((map) => el("figure", { dataset: { method: map.method } },
        picture(map[this.show.value], `${map.method} at step ${frame.step}`),
        el("figcaption", {}, `${map.method} · ${map.target}: ${score(map.score)}`))),
    );
    // Each method's map at every step, the current one outlined, misclassified steps in red; a click moves there.
    this.strips.replaceChildren(...track.methods.map((method) => el("div", { class: "probe-strip" },
      el("span", { class: "note" }, method),
      ...track.frames.map((f, k) => [f, k, f.maps.find((map) => map.method === method)]).filter(([, , map]) => map)
        .map(([f, k, map]) => el("img", {
        src: withToken(map[this.show.value]),
        alt: `${method} at step ${f.step}`,
        title: `step ${f.step} · predicted ${f.prediction ?? "?"}${f.correct === false ? " ✗" : ""}`,
        class: `${f.step === frame.step ? "current" : ""} ${f.correct === false ? "wrong" : ""}`,
        onclick: () => {
          this.slider.value = String(k);
          this.slide();
        },
      })))));
    this.drawLoss(frame);
  },

  drawLoss(frame) {
    const loss = this.track.loss;
    this.chart.card.hidden = !loss;
    if (!loss) return;
    this.chart.card.querySelector(".title").textContent = loss.tag;
    this.chart.noteNode.textContent = frame.loss === null ? "" : `step ${frame.step}: ${fixed(frame.loss, 4)}`;
    const traces = [{ x: loss.steps, y: loss.values.map(num), type: "scatter", mode: "lines", name: loss.tag,
      line: { color: "#1f77b4" } }];
    if (frame.loss !== null) {
      traces.push({ x: [frame.step], y: [num(frame.loss)], type: "scatter", mode: "markers", name: `step ${frame.step}`,
        marker: { size: 10, color: frame.correct === false ? "#cf222e" : "#e8590c" } });
    }
    Plotly.react(this.chart.plot, traces, baseLayout({ showlegend: false, uirevision: this.trackKey,
      xaxis: { title: { text: "step" } }, yaxis: { title: { text: loss.tag } },
      shapes: [{ type: "line", x0: frame.step, x1: frame.step, yref: "paper", y0: 0, y1: 1,
        line: { color: "#888", dash: "dot", width: 1 } }] }), PLOT_CONFIG);
  },

  lossCsv() {
    const loss = this.track?.loss;
    return [["step", loss?.tag ?? "loss"], loss ? loss.steps.map((s, i) => [s, loss.values[i]]) : []];
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

/** The view's object for the page (app.js): `core` is the page's shared module, `entry` the view's registry line. */
export default function create(core, entry) {
  ({ api, baseLayout, chartCard, el, fillSelect, fillSteps, forgetSteps, num, Plotly, PLOT_CONFIG, report, runsHolding,
    tagsIn, withToken } = core);
  return explanations;
}
