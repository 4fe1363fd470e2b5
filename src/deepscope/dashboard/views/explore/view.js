// Explore: pick a data item, a method, a target and a layer; the server's worker explains it with the run's
// checkpoint and the page shows the heatmap, the overlay and the model's top predictions.

let api, el, fillSelect, report, state, TOKEN, withToken;

// One job at a time per page: the server keys jobs by this id.
const CLIENT = (window.crypto?.randomUUID?.() ?? String(Math.random()).slice(2));

/** POST a JSON body (the only way to start work: a page of another origin cannot send one unasked). */
async function post(path, body) {
  const headers = { "Content-Type": "application/json", "X-Deepscope-Client": CLIENT };
  if (TOKEN) headers.Authorization = `Bearer ${TOKEN}`;
  const response = await fetch(withToken(`api/${path}`), { method: "POST", headers, body: JSON.stringify(body),
    cache: "no-store" });
  const answer = await response.json().catch(() => ({ detail: response.statusText }));
  if (!response.ok) throw new Error(`${path}: ${response.status} ${answer.detail}`);
  return answer;
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

const explore = {
  title: "Explore",
  mount(container) {
    this.run = el("select", { class: "explore-run" });
    this.item = el("input", { type: "number", class: "explore-item", min: 0, value: 0, step: 1,
      oninput: () => this.describeItem() });
    this.itemNote = el("span", { class: "note" });
    this.method = el("select", { class: "explore-method" });
    this.target = el("input", { type: "text", class: "explore-target", placeholder: "predicted class" });
    this.layer = el("input", { type: "text", class: "explore-layer", placeholder: "the method's default" });
    this.step = el("input", { type: "text", class: "explore-step", placeholder: "the last checkpoint" });
    this.button = el("button", { type: "button", class: "explore-go", onclick: () => this.go().catch(report) },
      "Explain");
    this.status = el("p", { class: "note explore-status" });
    this.result = el("div", { class: "explore-result" });
    container.append(
      el("aside", {}, el("label", {}, "Run", this.run),
        el("label", {}, el("span", {}, "Item ", this.itemNote), this.item),
        el("label", {}, "Method", this.method), el("label", {}, "Target (class index)", this.target),
        el("label", {}, "Layer", this.layer), el("label", {}, "Checkpoint step", this.step), this.button,
        this.status),
      el("div", { class: "content" }, this.result),
    );
  },

  async refresh() {
    fillSelect(this.run, state.runs.map((run) => run.name));
    if (!this.offer) {
      this.offer = await api("explore");
      fillSelect(this.method, this.offer.methods, this.offer.methods.includes("gradcam") ? "gradcam" : undefined);
      this.item.max = String(this.offer.items - 1);
      this.describeItem();
    }
  },

  describeItem() {
    const label = this.offer?.labels?.[Number(this.item.value)];
    this.itemNote.textContent = this.offer ? `of ${this.offer.items}${label !== undefined && label !== null
      ? ` · label ${label}` : ""}` : "";
  },

  async go() {
    const number = (input) => (input.value.trim() === "" ? null : Number(input.value));
    const body = { run: this.run.value, item: Number(this.item.value), method: this.method.value,
      target: number(this.target), layer: this.layer.value.trim() || null, step: number(this.step) };
    this.button.disabled = true;
    try {
      let job = await post("explore/jobs", body);
      while (job.status === "queued" || job.status === "running") {
        this.status.textContent = job.status === "queued"
          ? `queued${job.position ? ` behind ${job.position}` : ""}` : `running · ${job.seconds.toFixed(1)} s`;
        await sleep(200);
        job = await api(`explore/jobs/${job.id}`);
      }
      if (job.status === "failed") {
        this.status.textContent = `failed: ${job.error}`;
        return;
      }
      this.status.textContent = `done in ${job.seconds.toFixed(2)} s${job.cached ? " (from the run's cache)" : ""}`;
      this.draw(job);
    } finally {
      this.button.disabled = false;
    }
  },

  draw(job) {
    const r = job.result;
    const picture = (name) => el("figure", { dataset: { picture: name } },
      el("img", { src: withToken(job.urls[name]), alt: `${name} of item ${r.item}` }), el("figcaption", {}, name));
    this.result.replaceChildren(
      el("div", { class: "explore-pictures" }, picture("input"), picture("heatmap"), picture("overlay")),
      el("p", { class: "note" }, `item ${r.item}${r.label !== null ? ` (label ${r.label})` : ""} · ${r.method}`
        + `${r.layer ? ` at ${r.layer}` : ""} · ${r.target}: ${r.score.toFixed(3)} · `
        + (r.step === null ? "the model as made" : `checkpoint of step ${r.step}`)),
      el("table", { class: "explore-top" }, el("tr", {}, el("th", {}, "class"), el("th", {}, "probability")),
        r.top.map((t) => el("tr", {}, el("td", {}, String(t.class)), el("td", {}, t.probability.toFixed(3))))),
    );
  },
};

/** The view's object for the page (app.js): `core` is the page's shared module, `entry` the view's registry line. */
export default function create(core, entry) {
  ({ api, el, fillSelect, report, state, TOKEN, withToken } = core);
  return explore;
}
