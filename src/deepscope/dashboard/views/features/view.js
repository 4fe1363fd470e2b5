// Features: what units learned, per layer, with one slider over the logged steps.

let naturalSize, isFeature, api, el, fillSelect, num, report, state, withToken;

// ---- features ---------------------------------------------------------------------------------------------------

// The longer side a picture is upscaled to at most (by a whole factor, at most 8 times: core.naturalSize).
const PICTURE_CAP = 160;

/** What units learned, per layer: the pictures logged under `features/<layer>/<what>` (filters, maximisations,
 * top patches, ...), each beside its scalars (the filters' noise), with one slider over the logged steps
 * (checkpoints): each picture shows its last step at or before the one chosen. Pixels come from /api/images. */

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
        // At its natural size, upscaled by a whole factor up to PICTURE_CAP (core.naturalSize, as the Images view):
        // a 28 px maximisation is 140 px, several cards a row, never stretched to the card's width.
        card = { img: naturalSize(el("img", { alt: kind.tag }), PICTURE_CAP), label: el("span", { class: "note" }) };
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

/** The view's object for the page (app.js): `core` is the page's shared module, `entry` the view's registry line. */
export default function create(core, entry) {
  ({ naturalSize, isFeature, api, el, fillSelect, num, report, state, withToken } = core);
  return features;
}
