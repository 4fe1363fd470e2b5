// Images: pictures, sounds and clips of every tag but the Features view's, with a slider over steps.

let urlState, report, naturalSize, isFeature, api, el, matcher, settled, state, withToken;

// ---- images -----------------------------------------------------------------------------------------------------

/** The kinds the Images tab shows: pictures (PNG), clips (animated GIF, shown as an image) and sounds (WAV). */
let MEDIA_KINDS = [];

const images = {
  title: "Images",
  mount(container) {
    // The run filter is the page's (`runs` in the URL), as in Scalars.
    this.filter = el("input", { type: "text", placeholder: "name or regex", value: urlState.read("runs") ?? "",
      oninput: () => {
        urlState.write("runs", this.filter.value);
        this.refresh().catch(report);
      } });
    this.grid = el("div", { class: "grid images" });
    this.cards = new Map();
    container.append(
      el("aside", {}, el("label", {}, "Runs (filter)", this.filter)),
      el("div", { class: "content" }, this.grid),
    );
  },

  async refresh() {
    const match = matcher(this.filter.value);
    const wanted = [];
    for (const run of state.runs) {
      if (!match(run.name)) continue;
      for (const [tag, kind] of Object.entries(run.tags)) {
        // features/ pictures have their own tab
        if (MEDIA_KINDS.includes(kind) && !(kind === "image" && isFeature(tag))) wanted.push([run.name, tag]);
      }
    }
    const keys = new Set(wanted.map(([run, tag]) => `${run}\u0000${tag}`));
    for (const [key, card] of this.cards) {
      if (!keys.has(key)) {
        card.node.remove();
        this.cards.delete(key);
      }
    }
    await Promise.all(wanted.map(async ([run, tag]) => {
      const answer = await settled(api("images", { run, tag }), run);
      if (answer === null) return; // named above the view
      const key = `${run}\u0000${tag}`;
      let card = this.cards.get(key);
      if (!card) {
        // A sound plays in the browser's own player; a clip is an animated GIF, which an <img> plays.
        const media = answer.kind === "audio"
          ? el("audio", { controls: true, preload: "metadata", title: `${tag} of ${run}` })
          : naturalSize(el("img", { alt: `${tag} of ${run}` }), 256, { fitParent: true });
        const label = el("span", { class: "note" });
        const slider = el("input", { type: "range", min: 0, max: 0, step: 1, value: 0 });
        const head = el("div", { class: "card-head" }, el("span", { class: "title" }, `${run} · ${tag}`), label);
        const caption = el("p", { class: "note caption" }); // shown, not only as a tooltip
        const node = el("div", { class: "card", dataset: { kind: answer.kind } }, head, media, caption, slider);
        card = { media, label, slider, node, caption, kind: answer.kind };
        card.follow = true; // the slider follows the newest record until the user moves it
        slider.addEventListener("input", () => {
          card.follow = Number(slider.value) === card.points.length - 1;
          this.show(card);
        });
        this.cards.set(key, card);
        this.grid.append(card.node);
      }
      card.points = answer.points;
      card.slider.max = Math.max(0, answer.points.length - 1);
      if (card.follow) card.slider.value = card.slider.max;
      this.show(card);
    }));
  },

  show(card) {
    const point = card.points[Number(card.slider.value)];
    if (!point) return;
    const src = withToken(point.url);
    if (card.media.getAttribute("src") !== src) card.media.src = src;
    const place = `${Number(card.slider.value) + 1} of ${card.points.length}`;
    if (card.kind === "audio") {
      const channels = point.channels === 1 ? "mono" : `${point.channels} channels`;
      card.label.textContent = `step ${point.step} · ${point.seconds.toFixed(2)} s · ${point.sample_rate} Hz`
        + ` · ${channels} · ${place}`;
      return;
    }
    card.media.title = point.caption || "";
    card.caption.textContent = point.caption || "";
    card.caption.hidden = !point.caption;
    const clip = card.kind === "video" ? ` · ${point.frames} frames at ${point.fps} fps` : "";
    card.label.textContent = `step ${point.step} · ${point.width}×${point.height}${clip} · ${place}`;
  },
};

/** The view's object for the page (app.js): `core` is the page's shared module, `entry` the view's registry line. */
export default function create(core, entry) {
  ({ urlState, report, naturalSize, isFeature, api, el, matcher, settled, state, withToken } = core);
  MEDIA_KINDS = entry.conventions.kinds;
  return images;
}
