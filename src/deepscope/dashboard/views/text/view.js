// Text: the notes of every text tag, rendered as Markdown (TensorBoard's habit) by markdown() below.

let api, el, settled, state;

// ---- a tiny, safe Markdown ---------------------------------------------------------------------------------------
// Built as DOM nodes whose text is set as text, never parsed as HTML: a note holding "<b>" shows "<b>". Headings (#),
// paragraphs, fenced code blocks (```), lists (-, *, + or 1.), and inline `code`, **strong**, *em* / _em_ and
// [links](https://...): http(s) only, anything else (javascript:, data:) stays text.

const INLINE = new RegExp([
  "`([^`]+)`", // 1: code
  "\\*\\*(.+?)\\*\\*", // 2: strong
  "(?<![\\w*])\\*(?!\\s)(.+?)\\*(?![\\w*])", // 3: em
  "(?<!\\w)_(?!\\s)(.+?)_(?!\\w)", // 4: em (snake_case words stay as they are)
  "\\[([^\\]]+)\\]\\(([^)\\s]+)\\)", // 5, 6: link text, address
].join("|"), "g");

/** The inline nodes of one block's text. */
function inline(text) {
  const nodes = [];
  let at = 0;
  for (const found of text.matchAll(INLINE)) {
    if (found.index > at) nodes.push(text.slice(at, found.index));
    const [whole, code, strong, em, em2, label, href] = found;
    if (code !== undefined) nodes.push(el("code", {}, code));
    else if (strong !== undefined) nodes.push(el("strong", {}, inline(strong)));
    else if (em !== undefined || em2 !== undefined) nodes.push(el("em", {}, inline(em ?? em2)));
    else if (/^https?:\/\//i.test(href)) {
      nodes.push(el("a", { href, target: "_blank", rel: "noopener noreferrer" }, inline(label)));
    } else nodes.push(whole);
    at = found.index + whole.length;
  }
  if (at < text.length) nodes.push(text.slice(at));
  return nodes;
}

/** A note's Markdown as a <div class="markdown">. */
export function markdown(text) {
  const blocks = [];
  const lines = text.replace(/\r\n?/g, "\n").split("\n");
  let paragraph = [];
  let list = null;
  const flush = () => {
    if (paragraph.length) blocks.push(el("p", {}, inline(paragraph.join("\n"))));
    paragraph = [];
    list = null;
  };
  for (let i = 0; i < lines.length; i += 1) {
    const line = lines[i];
    const fence = line.match(/^\s*```/);
    if (fence) {
      flush();
      const code = [];
      for (i += 1; i < lines.length && !/^\s*```/.test(lines[i]); i += 1) code.push(lines[i]);
      blocks.push(el("pre", {}, el("code", {}, code.join("\n"))));
      continue;
    }
    const heading = line.match(/^(#{1,6})\s+(.*?)\s*#*\s*$/);
    const item = line.match(/^\s*(?:([-*+])|(\d+)[.)])\s+(.*)$/);
    if (heading) {
      flush();
      blocks.push(el(`h${heading[1].length}`, {}, inline(heading[2])));
    } else if (item) {
      const ordered = item[2] !== undefined;
      if (!list || (list.tagName === "OL") !== ordered) {
        flush();
        list = el(ordered ? "ol" : "ul");
        blocks.push(list);
      }
      list.append(el("li", {}, inline(item[3])));
    } else if (!line.trim()) {
      flush();
    } else if (list && /^\s+\S/.test(line)) {
      list.lastChild.append(` ${line.trim()}`); // a list item's continuation
    } else {
      if (list) list = null;
      paragraph.push(line);
    }
  }
  flush();
  return el("div", { class: "markdown" }, blocks);
}

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
    // One run that cannot be read is named above the view; the others' notes are shown.
    const answers = await Promise.all(wanted.map(([run, tag]) => settled(api("text", { run, tag }), run)));
    this.list.replaceChildren(...answers.flatMap((answer, i) => (answer === null ? [] : [el(
      "div",
      { class: "card" },
      el("div", { class: "card-head" }, el("span", { class: "title" }, `${wanted[i][0]} · ${wanted[i][1]}`)),
      answer.points.map((point) => el("div", {}, el("span", { class: "step" }, `step ${point.step}`),
        markdown(point.text))),
    )])));
  },
};

/** The view's object for the page (app.js): `core` is the page's shared module, `entry` the view's registry line. */
export default function create(core, entry) {
  ({ api, el, settled, state } = core);
  return texts;
}
