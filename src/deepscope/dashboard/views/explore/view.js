// Explore: pick a data item (or upload an image), one or several methods, a target and a layer; the server's
// worker explains it with the run's checkpoint and the page shows one heatmap and overlay per method, side by side,
// and the model's top predictions.

let api, el, fillSelect, get, report, state, TOKEN, withToken;

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

// An uploaded image's largest size (the server refuses more with 413, and says so).
const MAX_UPLOAD = 4 * 1024 * 1024;

/** A file's bytes as base64 (the upload's JSON body carries them so). */
function base64Of(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(String(reader.result).split(",", 2)[1] ?? "");
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(file);
  });
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

const explore = {
  title: "Explore",
  mount(container) {
    this.run = el("select", { class: "explore-run" });
    this.item = el("input", { type: "number", class: "explore-item", min: 0, value: 0, step: 1,
      oninput: () => { this.clearUpload(); this.describeItem(); } });
    this.upload = el("input", { type: "file", accept: "image/*", class: "explore-upload",
      onchange: () => this.sendUpload().catch(report) });
    this.uploadNote = el("span", { class: "note explore-upload-note" });
    this.itemNote = el("span", { class: "note" });
    this.method = el("select", { class: "explore-method", multiple: true, size: 6,
      title: "several methods (Ctrl/Cmd-click) are shown side by side" });
    this.target = el("input", { type: "text", class: "explore-target", placeholder: "predicted class" });
    this.layer = el("input", { type: "text", class: "explore-layer", placeholder: "the method's default" });
    this.step = el("input", { type: "text", class: "explore-step", placeholder: "the last checkpoint" });
    this.button = el("button", { type: "button", class: "explore-go", onclick: () => this.go().catch(report) },
      "Explain");
    this.status = el("p", { class: "note explore-status" });
    // Browse: the items filtered by true class, predicted class, misclassified and confidence (the worker predicts
    // every item once per checkpoint; the run keeps the predictions).
    this.trueClass = el("select", { class: "explore-filter-label" });
    this.predicted = el("select", { class: "explore-filter-predicted" });
    this.misclassified = el("input", { type: "checkbox", class: "explore-filter-misclassified" });
    this.minConfidence = el("input", { type: "number", class: "explore-filter-min", min: 0, max: 1, step: 0.05,
      value: 0 });
    this.maxConfidence = el("input", { type: "number", class: "explore-filter-max", min: 0, max: 1, step: 0.05,
      value: 1 });
    this.findButton = el("button", { type: "button", class: "explore-find", onclick: () => this.find().catch(report) },
      "Find items");
    this.found = el("div", { class: "explore-items" });
    this.browse = el("details", { class: "explore-browse" }, el("summary", {}, "Browse items"),
      el("label", {}, "True class", this.trueClass), el("label", {}, "Predicted class", this.predicted),
      el("label", { class: "inline" }, this.misclassified, "misclassified only"),
      el("div", { class: "explore-range" }, el("label", {}, "Confidence from", this.minConfidence),
        el("label", {}, "to", this.maxConfidence)),
      this.findButton, this.found);
    this.result = el("div", { class: "explore-result" });
    container.append(
      el("aside", {}, el("label", {}, "Run", this.run),
        el("label", {}, el("span", {}, "Item ", this.itemNote), this.item),
        el("label", {}, "or upload an image", this.upload, this.uploadNote),
        el("label", {}, "Methods", this.method), el("label", {}, "Target (class index)", this.target),
        el("label", {}, "Layer", this.layer), el("label", {}, "Checkpoint step", this.step), this.button,
        this.status, this.browse),
      el("div", { class: "content" }, this.result),
    );
  },

  async refresh() {
    fillSelect(this.run, state.runs.map((run) => run.name));
    if (!this.offer) {
      this.offer = await api("explore");
      fillSelect(this.method, this.offer.methods, this.offer.methods.includes("gradcam") ? "gradcam" : undefined);
      this.item.max = String(this.offer.items - 1);
      this.fillClasses([...new Set(this.offer.labels.filter((c) => c !== null))].sort((a, b) => a - b));
      this.describeItem();
    }
  },

  clearUpload() {
    this.uploaded = null;
    this.upload.value = "";
    this.uploadNote.textContent = "";
  },

  /** Send the chosen file to the run's uploads; the next "Explain" explains it instead of an item. */
  async sendUpload() {
    const file = this.upload.files[0];
    this.uploaded = null;
    if (!file) return;
    if (file.size > MAX_UPLOAD) {
      this.uploadNote.textContent = `${file.name} is ${(file.size / 2 ** 20).toFixed(1)} MB: at most 4 MB`;
      return;
    }
    this.uploadNote.textContent = `sending ${file.name}…`;
    const answer = await post("explore/uploads", { run: this.run.value, image: await base64Of(file) });
    this.uploaded = { name: answer.upload, file: file.name, run: this.run.value };
    this.uploadNote.textContent = `${file.name} (${answer.bytes} bytes) will be explained`;
  },

  describeItem() {
    const label = this.offer?.labels?.[Number(this.item.value)];
    this.itemNote.textContent = this.offer ? `of ${this.offer.items}${label !== undefined && label !== null
      ? ` · label ${label}` : ""}` : "";
  },

  fillClasses(classes) {
    for (const select of [this.trueClass, this.predicted]) {
      const current = select.value;
      select.replaceChildren(el("option", { value: "" }, "any"),
        ...classes.map((c) => el("option", { value: String(c) }, String(c))));
      select.value = classes.map(String).includes(current) ? current : "";
    }
  },

  /** Start a job (a JSON POST) and wait for it, showing its place in the queue; the finished job. */
  async runJob(body) {
    let job = await post("explore/jobs", body);
    while (job.status === "queued" || job.status === "running") {
      const others = job.others_running ? " · another job is running" : "";
      this.status.textContent = job.status === "queued"
        ? `queued · ${job.position === 0 ? "next" : `${job.position} job(s) ahead`}${others}`
        : `running · ${job.seconds.toFixed(1)} s${job.queued ? ` · ${job.queued} waiting` : ""}`;
      await sleep(200);
      job = await api(`explore/jobs/${job.id}`);
    }
    return job;
  },

  async go() {
    const number = (input) => (input.value.trim() === "" ? null : Number(input.value));
    const methods = [...this.method.selectedOptions].map((option) => option.value);
    const body = { run: this.run.value, methods, target: number(this.target), layer: this.layer.value.trim() || null,
      step: number(this.step) };
    if (this.uploaded && this.uploaded.run !== body.run) await this.sendUpload();  // uploads live in a run
    if (this.uploaded) body.upload = this.uploaded.name;
    else body.item = Number(this.item.value);
    this.button.disabled = true;
    try {
      const job = await this.runJob(body);
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

  /** The items that match the filters, as buttons that choose one. */
  async find() {
    const step = this.step.value.trim() === "" ? null : Number(this.step.value);
    this.findButton.disabled = true;
    try {
      const job = await this.runJob({ run: this.run.value, predictions: true, step });
      if (job.status === "failed") {
        this.status.textContent = `failed: ${job.error}`;
        return;
      }
      this.status.textContent = `predicted ${job.result.items} items${job.cached ? " (from the run's cache)" : ""}`;
      const params = { run: this.run.value, misclassified: this.misclassified.checked,
        min_confidence: this.minConfidence.value || 0, max_confidence: this.maxConfidence.value || 1, limit: 200 };
      if (step !== null) params.step = step;
      if (this.trueClass.value !== "") params.label = this.trueClass.value;
      if (this.predicted.value !== "") params.predicted = this.predicted.value;
      const found = await get("explore/items", params);
      this.fillClasses(found.classes);
      this.found.replaceChildren(
        el("p", { class: "note" }, `${found.matching} of ${found.total} items`
          + (found.matching > found.items.length ? ` (the first ${found.items.length})` : "")),
        ...found.items.map((row) => el("button", {
          type: "button", class: `explore-found${row.label !== null && row.label !== row.predicted ? " wrong" : ""}`,
          dataset: { item: String(row.item) },
          title: `label ${row.label ?? "?"}, predicted ${row.predicted} (${row.confidence.toFixed(3)})`,
          onclick: () => { this.item.value = String(row.item); this.clearUpload(); this.describeItem(); },
        }, `#${row.item} ${row.label ?? "?"}→${row.predicted} ${row.confidence.toFixed(2)}`)),
      );
    } finally {
      this.findButton.disabled = false;
    }
  },

  draw(job) {
    const r = job.result;
    const what = r.upload ? `the upload ${this.uploaded?.file ?? r.upload}` : `item ${r.item}`;
    const picture = (name, url, caption, method) => el("figure", { dataset: { picture: name, method: method ?? "" } },
      el("img", { src: withToken(url), alt: `${name} of ${what}` }), el("figcaption", {}, caption));
    const each = r.explanations ?? [r];
    const urls = job.urls.explanations?.length ? job.urls.explanations : [job.urls];
    this.result.replaceChildren(
      el("div", { class: "explore-pictures" }, picture("input", job.urls.input, "input"),
        each.map((e, i) => [
          picture("heatmap", urls[i].heatmap, `${e.method}${e.layer ? ` at ${e.layer}` : ""} · ${e.target}: `
            + `${e.score.toFixed(3)}`, e.method),
          picture("overlay", urls[i].overlay, `${e.method} overlay`, e.method),
        ])),
      el("p", { class: "note" }, `${what}${r.label !== null ? ` (label ${r.label})` : ""} · `
        + each.map((e) => e.method).join(", ") + " · "
        + (r.step === null ? "the model as made" : `checkpoint of step ${r.step}`)),
      el("table", { class: "explore-top" }, el("tr", {}, el("th", {}, "class"), el("th", {}, "probability")),
        r.top.map((t) => el("tr", {}, el("td", {}, String(t.class)), el("td", {}, t.probability.toFixed(3))))),
    );
  },
};

/** The view's object for the page (app.js): `core` is the page's shared module, `entry` the view's registry line. */
export default function create(core, entry) {
  ({ api, el, fillSelect, report, state, TOKEN, withToken } = core);
  get = core.get ?? core.api;
  return explore;
}
