// Explanations: the gallery of inputs and each method's heatmap.

let api, el, fillSelect, fillSteps, forgetSteps, report, runsHolding, tagsIn, withToken;

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

/** The view's object for the page (app.js): `core` is the page's shared module, `entry` the view's registry line. */
export default function create(core, entry) {
  ({ api, el, fillSelect, fillSteps, forgetSteps, report, runsHolding, tagsIn, withToken } = core);
  return explanations;
}
