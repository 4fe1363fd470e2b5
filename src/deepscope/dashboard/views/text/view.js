// Text: the notes of every text tag.

let api, el, state;

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

/** The view's object for the page (app.js): `core` is the page's shared module, `entry` the view's registry line. */
export default function create(core, entry) {
  ({ api, el, state } = core);
  return texts;
}
