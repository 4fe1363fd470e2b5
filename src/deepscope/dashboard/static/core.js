// deepscope board: the page's shared module (no build step). Every view's module (views/<name>/view.js) receives it
// as `core` from app.js, which loads it and the views with the page's token: a module importing another by a
// relative URL would ask for it without the token, which a board with one refuses.
//
// Safety rule for every module of the page: every string that comes from the store (run names, tags, layer names,
// texts) is put into the page with textContent or as a plotly data/label string, never through innerHTML.

// index.html loads plotly.js beside the page's modules, which start their requests at once: api() hands an answer on
// (to be drawn) only once plotly is there, and the views' controls take no input until then.
export const plotlyReady = Promise.resolve(window.plotlyLoaded);

// ---- two builds of plotly.js ------------------------------------------------------------------------------------
// index.html loads plotly's basic build (scatter, bar and pie traces with every layout component: 1.2 MB), which
// draws most charts; compiling the whole build (4.8 MB) was most of a first visit's time. The whole build is loaded
// the first time a chart needs a trace the basic one lacks (a heatmap, parallel coordinates, a 3-D or WebGL scatter,
// an icicle), and window.Plotly stays the basic build. plotly keeps a chart's state on its element in the terms of
// the build that drew it, so each chart is drawn, changed and purged by that build: `Plotly` below finds it.
const BASIC_TRACES = new Set(["scatter", "bar", "pie"]);
const WHOLE_BUILD = "static/plotly.min.js";
const DRAWS = new Set(["newPlot", "react"]);
const builds = { basic: undefined, whole: undefined };
const drawnBy = new WeakMap(); // a chart's element -> the build that drew it
const waiting = new WeakMap(); // a chart's element -> its calls waiting for the whole build, in order
let wholeLoading = null;

function basicBuild() {
  builds.basic ??= window.Plotly;
  return builds.basic;
}

/** The whole build of plotly.js, loaded once (window.Plotly stays the basic build). */
export function wholePlotly() {
  wholeLoading ??= plotlyReady.then(() => new Promise((resolve, reject) => {
    const basic = basicBuild();
    const script = document.createElement("script");
    script.src = withToken(WHOLE_BUILD);
    script.onload = () => {
      builds.whole = window.Plotly;
      window.Plotly = basic;
      resolve(builds.whole);
    };
    script.onerror = () => {
      wholeLoading = null;
      reject(new Error("plotly.js (its whole build) could not be loaded from the server"));
    };
    document.head.append(script);
  }));
  return wholeLoading;
}

/** Whether plotly's whole build is needed to draw traces of these types (the basic build lacks one of them). */
export function needsWholeBuild(types) {
  return types.some((type) => !BASIC_TRACES.has(type));
}

function needsWhole(args) {
  const data = Array.isArray(args[0]) ? args[0] : args[0]?.data;
  return Array.isArray(data) && needsWholeBuild(data.map((trace) => trace?.type ?? "scatter"));
}

/** Calls plotly's function at `path` (["react"], ["Plots", "resize"]) on the chart `gd` with `args`, by the build
 * that drew the chart; a draw that needs the whole build waits for it, and the chart's later calls wait behind. */
function call(path, gd, args) {
  const chart = typeof gd === "string" ? document.getElementById(gd) : gd;
  const queued = chart instanceof Element ? waiting.get(chart) : undefined;
  if (queued) return enqueue(chart, queued.catch(() => {}).then(() => perform(path, chart, args)));
  if (DRAWS.has(path.at(-1)) && needsWhole(args) && !builds.whole) {
    return enqueue(chart, wholePlotly().then(() => perform(path, chart, args)));
  }
  return perform(path, chart ?? gd, args);
}

function enqueue(chart, promise) {
  waiting.set(chart, promise);
  promise.then(() => {
    if (waiting.get(chart) === promise) waiting.delete(chart);
  }, (error) => {
    if (waiting.get(chart) === promise) waiting.delete(chart);
    report(error);
  });
  return promise;
}

function perform(path, chart, args) {
  const name = path.at(-1);
  let build = chart instanceof Element ? drawnBy.get(chart) : undefined;
  if (DRAWS.has(name) && needsWhole(args) && build !== builds.whole) {
    build?.purge(chart); // drawn by the basic build before: the whole build draws it anew
    build = builds.whole;
  }
  build ??= basicBuild();
  const owner = path.slice(0, -1).reduce((object, key) => object[key], build);
  const result = owner[name](chart, ...args);
  if (DRAWS.has(name)) drawnBy.set(chart, build);
  else if (name === "purge") { // plotly drops the chart's listeners too
    drawnBy.delete(chart);
    canvasCharts.delete(chart);
    listening.delete(chart);
  }
  return result;
}

function dispatcher(path) {
  return new Proxy({}, {
    get(_, key) {
      const value = path.concat(key).reduce((object, k) => object?.[k], basicBuild());
      if (typeof value === "function") return (gd, ...args) => call(path.concat(key), gd, args);
      return value !== null && typeof value === "object" ? dispatcher(path.concat(key)) : value;
    },
  });
}

/** plotly.js for the views: `Plotly.react(chart, ...)` and the rest, each call by the build that drew the chart
 * (window.Plotly, the basic build, exists only once it has loaded). */
export const Plotly = dispatcher([]);

export const TOKEN = new URLSearchParams(window.location.search).get("token");
export const COLORS = [
  "#1f77b4", "#e8590c", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
];
/** What the page knows: the runs and which views have data (from the server), the views' registry entries, the
 * active view, the mounted ones. */
export const state = { runs: [], views: {}, registry: [], active: null, mounted: new Map(), busy: false };

/** A view's shared conventions, as the server's registry serves them (`conventions("features").prefix`). */
export function conventions(name) {
  return state.registry.find((entry) => entry.name === name)?.conventions ?? {};
}

/** An image tag of the Features view: `<prefix><layer>/<what>` (the server's `feature`; its prefix from the
 * registry). The Images view shows every other picture. */
export function isFeature(tag) {
  const prefix = conventions("features").prefix ?? "features/";
  if (!tag.startsWith(prefix)) return false;
  const [layer, ...what] = tag.slice(prefix.length).split("/");
  return Boolean(layer) && what.join("/").length > 0;
}

// ---- plumbing ---------------------------------------------------------------------------------------------------

// What a run's status means, for the badge beside its name; a finished run gets none.
const STATUS_TITLES = {
  running: "a process is writing this run now",
  interrupted: "stopped before its end: Ctrl-C, or its process ended without closing it",
  failed: "ended by an error (its message is under the tag run/error)",
  unreadable: "this run could not be read",
};

/** The badge of a run's status (`running`, `interrupted`, `failed`, ...), or null for a finished run. */
export function statusBadge(run) {
  if (run.status === "finished") return null;
  const title = STATUS_TITLES[run.status] ?? run.status;
  return el("span", { class: `run-status status-${run.status}`, title: run.error ? `${title}: ${run.error}` : title },
    run.status);
}

/** A URL with the page's token added (the server may require it on every request). */
export function withToken(url) {
  if (!TOKEN) return url;
  const u = new URL(url, window.location.href);
  u.searchParams.set("token", TOKEN);
  return u.href;
}

/** GET api/<path> with query parameters (an array: the key repeated); the parsed JSON, or an Error with the
 * server's detail. The request goes out at once; the answer is handed on once plotly.js is there, to be drawn. */
export async function api(path, params = {}) {
  const answer = await get(path, params);
  await plotlyReady;
  return answer;
}

/** api() for answers that draw nothing (the run list, the views): not waiting for plotly.js. */
export async function get(path, params = {}) {
  const query = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) {
    if (Array.isArray(value)) for (const item of value) query.append(key, String(item));
    else if (value !== undefined && value !== null) query.set(key, String(value));
  }
  if (TOKEN) query.set("token", TOKEN);
  const headers = TOKEN ? { Authorization: `Bearer ${TOKEN}` } : {};
  const response = await fetch(`api/${path}?${query}`, { headers, cache: "no-store" });
  await refused(response, path);
  return response.json();
}

/** Throws an Error with the server's detail (its JSON `detail`, else the status text) unless `response` is ok. */
async function refused(response, path) {
  if (response.ok) return;
  let detail = response.statusText;
  try {
    detail = (await response.json()).detail || detail;
  } catch {
    // not JSON: keep the status text
  }
  throw new Error(`${path}: ${response.status} ${detail}`);
}

/** POST api/<path> with a JSON body: what starts work on the server (a page elsewhere cannot send one); the parsed
 * JSON answer, or an Error with the server's detail. */
export async function post(path, body) {
  const headers = { "Content-Type": "application/json" };
  if (TOKEN) headers.Authorization = `Bearer ${TOKEN}`;
  const response = await fetch(`api/${path}`, {
    method: "POST", headers, body: JSON.stringify(body), cache: "no-store",
  });
  await refused(response, path);
  const answer = await response.json();
  await plotlyReady;
  return answer;
}

/** `names` cut into consecutive slices whose URL-encoded names add up to at most `size` characters each. */
export function slices(names, size) {
  const out = [];
  let length = Infinity;
  for (const name of names) {
    const cost = encodeURIComponent(name).length + 6; // "&runs="
    if (length + cost > size) {
      out.push([]);
      length = 0;
    }
    out[out.length - 1].push(name);
    length += cost;
  }
  return out;
}

/** An element with attributes/properties and children (strings become text nodes: never parsed as HTML). */
export function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === "class") node.className = value;
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (key in node) node[key] = value;
    else node.setAttribute(key, value);
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

/** A number from the API, where non-finite values come as strings; plotted as gaps (null). */
export function num(value) {
  if (typeof value === "number") return value;
  return null;
}

/** An array the API sent as `{dtype: "<f8" | "<i8", base64}` (`encoding=base64`: little-endian bytes, cheap for
 * the server to make) as plain numbers, with non-finite floats as the strings "NaN", "Infinity", "-Infinity",
 * exactly as the JSON encoding sends them. */
export function unpack(packed) {
  const bytes = base64Bytes(packed.base64);
  const view = new DataView(bytes.buffer); // explicit little-endian reads, whatever the machine's byte order
  const n = bytes.length / 8;
  const out = new Array(n);
  if (packed.dtype === "<i8") {
    for (let i = 0; i < n; i += 1) out[i] = Number(view.getBigInt64(8 * i, true));
  } else {
    for (let i = 0; i < n; i += 1) {
      const x = view.getFloat64(8 * i, true);
      out[i] = Number.isFinite(x) ? x : Number.isNaN(x) ? "NaN" : x > 0 ? "Infinity" : "-Infinity";
    }
  }
  return out;
}

/** The bytes of a base64 string (the browser's own decoder where it has one). */
export function base64Bytes(text) {
  if (Uint8Array.fromBase64) return Uint8Array.fromBase64(text);
  const binary = atob(text);
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i += 1) bytes[i] = binary.charCodeAt(i);
  return bytes;
}

const LITTLE_ENDIAN = new Uint8Array(new Uint32Array([1]).buffer)[0] === 1;

const TYPED = {
  "<f4": [Float32Array, "getFloat32"],
  "<i4": [Int32Array, "getInt32"],
  "<u2": [Uint16Array, "getUint16"],
  "<u1": [Uint8Array, "getUint8"],
};

/** An array the API sent as `{dtype: "<f4" | "<i4" | "<u2" | "<u1", base64}` as the typed array of that dtype: on
 * a little-endian machine (nearly all) the bytes are used as they are, so a million 3D points cost one copy. */
export function typed(packed) {
  const bytes = base64Bytes(packed.base64);
  const [Type, getter] = TYPED[packed.dtype];
  const size = Type.BYTES_PER_ELEMENT;
  if (LITTLE_ENDIAN) return new Type(bytes.buffer, bytes.byteOffset, bytes.length / size);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.length);
  const out = new Type(bytes.length / size);
  for (let i = 0; i < out.length; i += 1) out[i] = view[getter](size * i, true);
  return out;
}

/** Text for plotly, which reads trace names, labels and hover text as a small HTML dialect (<b>, <a href>,
 * &amp;): entities show every character as itself, so a run named "<b>x</b>" is drawn as typed. */
export function plain(text) {
  return String(text).replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
}

export function status(text, isError = false) {
  const node = document.getElementById("status");
  node.textContent = text;
  node.classList.toggle("error", isError);
}

export function saveFile(name, text, type) {
  const url = URL.createObjectURL(new Blob([text], { type }));
  const link = el("a", { href: url, download: name });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}

export function csvCell(value) {
  const text = value === null || value === undefined ? "" : String(value);
  // Quote always; a leading =,+,-,@ would be a formula in a spreadsheet, so such text gets a leading quote mark.
  const safe = /^[=+\-@\t\r]/.test(text) && Number.isNaN(Number(text)) ? `'${text}` : text;
  return `"${safe.replace(/"/g, '""')}"`;
}

export function toCsv(header, rows) {
  return [header, ...rows].map((row) => row.map(csvCell).join(",")).join("\n") + "\n";
}

export function fileName(...parts) {
  return parts.join("_").replace(/[^A-Za-z0-9._-]+/g, "-").replace(/^-+|-+$/g, "").slice(0, 120) || "chart";
}

/** A chart card: title, PNG/SVG/CSV/JSON buttons, and a plotly div. `csv()` returns [header, rows] at click time
 * (or a promise of them: a view may fetch every point first); `json()`, when given, the data as a JSON value. */
export function chartCard(title, note, csv, json) {
  const plot = el("div", { class: "plot" });
  const name = () => fileName(title);
  const card = el(
    "div",
    { class: "card" },
    el(
      "div",
      { class: "card-head" },
      el("span", { class: "title" }, title),
      el("span", { class: "note" }, note || ""),
      el(
        "span",
        { class: "tools" },
        el("button", {
          type: "button",
          title: "download the chart as PNG",
          onclick: () => Plotly.downloadImage(...imageOf(plot, { format: "png", filename: name(), scale: 2 })),
        }, "PNG"),
        el("button", {
          type: "button",
          title: "download the chart as SVG",
          onclick: () => Plotly.downloadImage(...imageOf(plot, { format: "svg", filename: name() })),
        }, "SVG"),
        el("button", {
          type: "button",
          title: "download the chart's data as CSV",
          class: "csv",
          onclick: async () => {
            try {
              const [header, rows] = await csv();
              saveFile(`${name()}.csv`, toCsv(header, rows), "text/csv");
            } catch (error) {
              report(error);
            }
          },
        }, "CSV"),
        json ? el("button", {
          type: "button",
          title: "download the chart's data as JSON",
          class: "json",
          onclick: async () => {
            try {
              saveFile(`${name()}.json`, JSON.stringify(await json()), "application/json");
            } catch (error) {
              report(error);
            }
          },
        }, "JSON") : null,
      ),
    ),
    plot,
  );
  return { card, plot, noteNode: card.querySelector(".note") };
}

export const PLOT_CONFIG = {
  responsive: true,
  displaylogo: false,
  toImageButtonOptions: { format: "png", scale: 2 },
};

// ---- many lines on one canvas -----------------------------------------------------------------------------------
// plotly draws each trace as SVG of its own and costs about 3 ms a trace on a page's first draw: a sweep's chart
// (100 runs, a raw and a smoothed line each, 512 points a line) took 0.4-1 s in plotly and 0.4 s more of the
// browser's raster without a GPU, most of a first visit. Drawn with `canvas` on, plotly gets one trace that draws
// and hovers nothing, holding the traces' extreme points (its axes range over them as over the traces), and keeps
// the axes, zoom, pan and the modebar; the traces are painted on one <canvas> over plotly's plot, again whenever
// plotly redraws or its axes move (zoom, pan, resize, theme), and the cursor table is the page's own (cursorTable).
// TensorBoard draws its line charts on a canvas too. A chart with a legend keeps plotly's SVG: its entries are
// plotly's traces. The traces painted are on the chart's element as `lineTraces` (plotly's `data` holds the one).
const canvasCharts = new WeakMap(); // chart element -> {traces, canvas, table, cursor, pixels, frame}
const listening = new WeakSet(); // chart elements whose plotly events reach paintSoon (plotly's purge drops them)
const CURSOR_ROW_PX = 16; // a row of the cursor table (style.css .cursor-table)

/** `Plotly.react(gd, traces, layout, config)`, with the traces painted on a canvas when `canvas` is true. */
export function reactLines(gd, traces, layout, config, canvas) {
  const held = canvasCharts.get(gd);
  if (!canvas) {
    if (held) {
      for (const node of [held.canvas, held.table, held.cursor]) node?.remove();
      canvasCharts.delete(gd);
      delete gd.lineTraces;
    }
    return Plotly.react(gd, traces, layout, config);
  }
  // The modebar's camera would save plotly's SVG without the lines; the card's PNG and SVG buttons draw them.
  const drawn = Plotly.react(gd, [extremes(traces, layout.yaxis?.type === "log")], { ...layout, hovermode: false },
    { ...config, modeBarButtonsToRemove: [...(config.modeBarButtonsToRemove || []), "toImage"] });
  const now = held ?? { canvas: null, table: null, cursor: null, pixels: [], frame: 0 };
  now.traces = traces;
  canvasCharts.set(gd, now);
  gd.lineTraces = traces;
  return Promise.resolve(drawn).then((result) => {
    if (!listening.has(gd)) { // once, also when it stops being a canvas chart and becomes one again
      listening.add(gd);
      const repaint = () => paintSoon(gd);
      for (const event of ["plotly_afterplot", "plotly_relayout", "plotly_relayouting"]) gd.on(event, repaint);
    }
    gd.addEventListener("mousemove", pointerMoved); // the same function: added once
    gd.addEventListener("mouseleave", pointerLeft);
    paintSoon(gd);
    return result;
  });
}

/** One trace that draws and hovers nothing, holding each trace's first, last, lowest and highest points: plotly
 * ranges its axes over the traces as if it had them. On a log y axis only positive values count, as there. */
function extremes(traces, logY) {
  const x = [];
  const y = [];
  for (const trace of traces) {
    let [first, last, low, high] = [-1, -1, -1, -1];
    trace.y.forEach((v, i) => {
      if (typeof v !== "number" || !Number.isFinite(v) || (logY && v <= 0)) return;
      if (first < 0) first = i;
      last = i;
      if (low < 0 || v < trace.y[low]) low = i;
      if (high < 0 || v > trace.y[high]) high = i;
    });
    for (const i of new Set([first, last, low, high])) {
      if (i >= 0) {
        x.push(trace.x[i]);
        y.push(trace.y[i]);
      }
    }
  }
  return { type: "scatter", mode: "none", x, y, hoverinfo: "skip", showlegend: false };
}

/** The chart's traces painted at the next frame (once, however many of plotly's events asked meanwhile). */
function paintSoon(gd) {
  const held = canvasCharts.get(gd);
  if (!held || held.frame) return;
  held.frame = requestAnimationFrame(() => {
    held.frame = 0;
    if (canvasCharts.get(gd) === held) paintLines(gd, held);
  });
}

function paintLines(gd, held) {
  const full = gd._fullLayout;
  const paper = full?._paper?.node();
  if (!paper || !full.xaxis || !full.yaxis) return;
  if (!held.canvas) {
    held.canvas = document.createElement("canvas");
    held.canvas.className = "lines";
  }
  const canvas = held.canvas;
  if (canvas.previousSibling !== paper) paper.after(canvas); // above the grid, below the modebar
  const { l, t, w, h } = full._size;
  const ratio = window.devicePixelRatio || 1;
  Object.assign(canvas.style, { left: `${l}px`, top: `${t}px`, width: `${w}px`, height: `${h}px` });
  if (canvas.width !== Math.round(w * ratio)) canvas.width = Math.round(w * ratio);
  if (canvas.height !== Math.round(h * ratio)) canvas.height = Math.round(h * ratio);
  const context = canvas.getContext("2d");
  context.setTransform(ratio, 0, 0, ratio, 0, 0);
  context.clearRect(0, 0, w, h);
  held.pixels = [];
  const x = axisScale(full.xaxis, w, false);
  const y = axisScale(full.yaxis, h, true);
  if (!x || !y) return;
  context.lineJoin = "round";
  for (const trace of held.traces) {
    if ((trace.visible ?? true) !== true) continue;
    const n = trace.x.length;
    const px = new Float64Array(n);
    const py = new Float64Array(n);
    for (let k = 0; k < n; k += 1) {
      px[k] = x(trace.x[k]);
      py[k] = y(trace.y[k]);
    }
    held.pixels.push({ trace, px, py });
    const mode = trace.mode || "lines";
    context.globalAlpha = trace.opacity ?? 1;
    if (mode.includes("lines")) {
      context.strokeStyle = trace.line?.color || "#444";
      context.lineWidth = trace.line?.width ?? 2;
      context.beginPath();
      let pen = false; // a missing or non-finite point breaks the line, as plotly's gaps do
      for (let k = 0; k < n; k += 1) {
        if (!Number.isFinite(px[k]) || !Number.isFinite(py[k])) pen = false;
        else if (pen) context.lineTo(px[k], py[k]);
        else {
          context.moveTo(px[k], py[k]);
          pen = true;
        }
      }
      context.stroke();
    }
    if (mode.includes("markers")) {
      context.fillStyle = trace.marker?.color || trace.line?.color || "#444";
      const radius = (trace.marker?.size ?? 6) / 2;
      for (let k = 0; k < n; k += 1) {
        if (!Number.isFinite(px[k]) || !Number.isFinite(py[k])) continue;
        context.beginPath();
        context.arc(px[k], py[k], radius, 0, 2 * Math.PI);
        context.fill();
      }
    }
  }
}

/** Data value -> pixel along a plotly axis of `length` px, from its current range (also while it is dragged); a
 * y axis counts from the top. null for an empty range. */
function axisScale(axis, length, fromTop) {
  const [low, high] = axis.range.map((r) => axis.r2l(r));
  if (!(high !== low) || !Number.isFinite(low) || !Number.isFinite(high)) return null;
  const k = length / (high - low);
  const at = (v) => (axis.c2l(axis.d2c(v)) - low) * k;
  return fromTop ? (v) => length - at(v) : at;
}

/** The cursor table of a canvas chart: at the x under the pointer, each hovered trace's nearest point (its name,
 * colour and value), the top line first; a sweep with more traces than rows fit lists those nearest the pointer and
 * says how many more there are. A vertical line marks the x. */
function cursorTable(gd, event) {
  const held = canvasCharts.get(gd);
  const full = gd._fullLayout;
  if (!held || !full?._size || event.buttons) return hideCursor(held); // a drag (zoom, pan) shows no table
  const { l, t, w, h } = full._size;
  const box = gd.getBoundingClientRect();
  const cx = event.clientX - box.left - l;
  const cy = event.clientY - box.top - t;
  if (cx < 0 || cx > w || cy < 0 || cy > h) return hideCursor(held);
  const rows = [];
  for (const { trace, px, py } of held.pixels) {
    if (trace.hoverinfo === "skip" || trace.hoverinfo === "none") continue;
    let best = -1;
    for (let k = 0; k < px.length; k += 1) {
      const drawn = Number.isFinite(px[k]) && Number.isFinite(py[k]);
      if (drawn && (best < 0 || Math.abs(px[k] - cx) < Math.abs(px[best] - cx))) best = k;
    }
    if (best >= 0) rows.push({ trace, k: best, px: px[best], dy: Math.abs(py[best] - cy) });
  }
  if (!rows.length) return hideCursor(held);
  const nearest = rows.reduce((a, b) => (Math.abs(b.px - cx) < Math.abs(a.px - cx) ? b : a));
  const fits = Math.max(1, Math.floor(full.height / CURSOR_ROW_PX) - 2);
  const byPointer = [...rows].sort((a, b) => a.dy - b.dy);
  const shown = byPointer.slice(0, fits).sort((a, b) => b.trace.y[b.k] - a.trace.y[a.k]);
  if (!held.table) {
    held.table = el("div", { class: "cursor-table" });
    held.cursor = el("div", { class: "cursor-line" });
  }
  // On the chart's element, outside plotly's own, whose style sheet sets every div's padding and border.
  if (held.table.parentNode !== gd) gd.append(held.cursor, held.table);
  const more = rows.length - shown.length;
  held.table.replaceChildren(
    el("div", { class: "head" }, `${full.xaxis.title?.text ?? ""} ${cursorNumber(nearest.trace.x[nearest.k])}`.trim()),
    ...shown.map((row) => el("div", { class: row === byPointer[0] ? "row nearest" : "row" },
      el("span", { class: "swatch", style: `background:${row.trace.line?.color || "#444"}` }),
      el("span", { class: "name" }, String(row.trace.meta ?? row.trace.name ?? "")),
      el("span", { class: "value" }, cursorNumber(row.trace.y[row.k])))),
    more > 0 ? el("div", { class: "more" }, `${more} more runs`) : null,
  );
  held.table.hidden = false;
  held.cursor.hidden = false;
  Object.assign(held.cursor.style, { left: `${l + nearest.px}px`, top: `${t}px`, height: `${h}px` });
  // Beside the pointer, on the side with room, and inside the chart's height.
  const width = held.table.offsetWidth;
  const left = l + cx + 16 + width <= full.width ? l + cx + 16 : Math.max(0, l + cx - 16 - width);
  const top = Math.max(0, Math.min(t + cy - held.table.offsetHeight / 2, full.height - held.table.offsetHeight));
  Object.assign(held.table.style, { left: `${left}px`, top: `${top}px` });
  return undefined;
}

function pointerMoved(event) {
  cursorTable(event.currentTarget, event);
}

function pointerLeft(event) {
  hideCursor(canvasCharts.get(event.currentTarget));
}

function hideCursor(held) {
  if (held?.table) held.table.hidden = true;
  if (held?.cursor) held.cursor.hidden = true;
}

/** A value as the cursor table shows it: 7 significant digits, as plotly's hover; text (a date) as it is. */
function cursorNumber(value) {
  return typeof value === "number" ? String(Number(value.toPrecision(7))) : String(value ?? "");
}

/** What Plotly.downloadImage gets for a chart: the chart, or for one with canvas lines the same figure with its
 * lines as SVG (plotly draws it anew, off the page), at the chart's size. */
export function imageOf(plot, options) {
  const held = canvasCharts.get(plot);
  if (!held) return [plot, options];
  const { width, height } = plot._fullLayout;
  return [{ data: held.traces, layout: plot.layout }, { width, height, ...options }];
}

export function baseLayout(extra = {}) {
  const themed = themeLayout();
  const layout = {
    margin: { l: 60, r: 15, t: 10, b: 40 },
    showlegend: true,
    legend: { orientation: "h", y: -0.2, font: { size: 11 } },
    hovermode: "closest",
    ...themed,
    ...extra,
    xaxis: { ...themed.xaxis, ...(extra.xaxis || {}) },
    yaxis: { ...themed.yaxis, ...(extra.yaxis || {}) },
    font: { size: 11, color: themeColors().fg, ...(extra.font || {}) },
  };
  const box = hoverBox(layout.hovermode);
  if (box) layout.hoverlabel = { ...box, ...(extra.hoverlabel || {}) };
  return layout;
}

// ---- theme: light or dark, following the browser unless chosen ------------------------------------------------

const THEME_KEY = "deepscope-board-theme";

/** The theme shown: "dark" or "light" (the user's choice, else the browser's prefers-color-scheme). */
export function theme() {
  const chosen = document.documentElement.dataset.theme;
  if (chosen === "dark" || chosen === "light") return chosen;
  return window.matchMedia?.("(prefers-color-scheme: dark)").matches ? "dark" : "light";
}

function themeColors() {
  return theme() === "dark"
    ? { fg: "#e6edf3", grid: "#30363d", line: "#484f58", bg: "#0d1117" }
    : { fg: "#1f2328", grid: "#e5e8eb", line: "#d0d7de", bg: "#ffffff" };
}

/** The part of a plotly layout that follows the theme: transparent backgrounds, text and grid colours. */
export function themeLayout() {
  const c = themeColors();
  const axis = { gridcolor: c.grid, zerolinecolor: c.line, linecolor: c.line };
  return { paper_bgcolor: "rgba(0,0,0,0)", plot_bgcolor: "rgba(0,0,0,0)", xaxis: axis, yaxis: { ...axis } };
}

/** A unified hover box (one box listing every trace at the cursor) in the page's background: plotly's default is
 * the paper's, transparent here, and the lines showed through its text. A hover label of one trace keeps the
 * trace's colour. */
function hoverBox(hovermode) {
  const c = themeColors();
  return String(hovermode).includes("unified") ? { bgcolor: c.bg, bordercolor: c.line } : null;
}

/** Choose the theme ("auto", "dark", "light"), remembered in this browser; recolours every chart. */
export function setTheme(choice) {
  if (choice === "dark" || choice === "light") document.documentElement.dataset.theme = choice;
  else delete document.documentElement.dataset.theme;
  try {
    if (choice === "dark" || choice === "light") localStorage.setItem(THEME_KEY, choice);
    else localStorage.removeItem(THEME_KEY);
  } catch {
    // storage refused (a sandboxed frame): the choice lasts for this page only
  }
  recolor();
}

/** The theme chosen in this browser before: "auto" (follow the browser), "dark" or "light". */
export function savedTheme() {
  try {
    return localStorage.getItem(THEME_KEY) || "auto";
  } catch {
    return "auto";
  }
}

/** Every chart drawn, its backgrounds, text and grid in the current theme's colours (the data keep theirs). */
export function recolor() {
  if (!window.Plotly) return;
  const c = themeColors();
  for (const plot of document.querySelectorAll(".js-plotly-plot")) {
    const box = hoverBox(plot._fullLayout?.hovermode);
    Plotly.relayout(plot, { "font.color": c.fg, paper_bgcolor: "rgba(0,0,0,0)", plot_bgcolor: "rgba(0,0,0,0)",
      "xaxis.gridcolor": c.grid, "yaxis.gridcolor": c.grid, "xaxis.zerolinecolor": c.line,
      "yaxis.zerolinecolor": c.line,
      ...(box ? { "hoverlabel.bgcolor": box.bgcolor, "hoverlabel.bordercolor": box.bordercolor } : {}) });
  }
}

// ---- the page's state in its URL ------------------------------------------------------------------------------

/** The page's URL query: what a view shows (its filters, chosen runs, smoothing, ...) is kept there, so a reload
 * or a shared link restores it. `read(key)` a value, `readAll(key)` a repeated one; `write(key, value)` sets it (an
 * array: repeated; empty, null or undefined: removed) without a new history entry. */
export const urlState = {
  read(key) {
    return new URLSearchParams(window.location.search).get(key);
  },
  readAll(key) {
    return new URLSearchParams(window.location.search).getAll(key);
  },
  write(key, value) {
    const query = new URLSearchParams(window.location.search);
    query.delete(key);
    if (Array.isArray(value)) for (const item of value) query.append(key, String(item));
    else if (value !== null && value !== undefined && value !== "") query.set(key, String(value));
    history.replaceState(null, "", `?${query}`);
  },
};

/** An <img> shown at its natural size, upscaled by a whole factor (pixels stay square and sharp) up to `cap`
 * pixels on its longer side and at most 8 times. With `fitParent`, the factor is also the largest whole one that
 * fits the parent's content width (a grid card sized by its column): CSS max-width alone would squeeze the picture
 * to a fractional scale. */
export function naturalSize(img, cap = 256, { fitParent = false } = {}) {
  const fit = () => {
    const longer = Math.max(img.naturalWidth, img.naturalHeight);
    if (!longer) return;
    let factor = Math.max(1, Math.min(8, Math.floor(cap / longer)));
    const box = fitParent ? img.parentElement : null;
    if (box && box.clientWidth) {
      const style = getComputedStyle(box);
      const border = img.offsetWidth - img.clientWidth;
      const room = box.clientWidth - parseFloat(style.paddingLeft) - parseFloat(style.paddingRight) - border;
      factor = Math.max(1, Math.min(factor, Math.floor(room / img.naturalWidth)));
    }
    img.style.width = `${img.naturalWidth * factor}px`;
    img.dataset.scale = String(factor);
  };
  img.addEventListener("load", fit);
  if (img.complete) fit();
  return img;
}

/** Run names matching a filter: a regular expression when it is one, else a plain substring. */
export function matcher(filter) {
  if (!filter) return () => true;
  try {
    const re = new RegExp(filter, "i");
    return (name) => re.test(name);
  } catch {
    const lower = filter.toLowerCase();
    return (name) => name.toLowerCase().includes(lower);
  }
}

/** A run's colour, from its name alone (a hash, not its place in the list): adding, removing or filtering runs
 * recolours none of the others, and a run keeps its colour across reloads and views. The hue is one of 36 spread
 * around the wheel, the lightness one of three levels: 108 colours, each `#rrggbb`. */
export function runColor(name) {
  let hash = 0x811c9dc5; // FNV-1a over the UTF-16 code units
  for (let i = 0; i < name.length; i += 1) {
    hash ^= name.charCodeAt(i);
    hash = Math.imul(hash, 0x01000193);
  }
  hash >>>= 0;
  const hue = (hash % 36) * 10;
  const lightness = [42, 52, 34][Math.floor(hash / 36) % 3];
  return hslHex(hue, 70, lightness);
}

/** An HSL colour (degrees, percent, percent) as `#rrggbb`. */
export function hslHex(h, s, l) {
  const a = (s / 100) * Math.min(l / 100, 1 - l / 100);
  const channel = (n) => {
    const k = (n + h / 30) % 12;
    const value = l / 100 - a * Math.max(-1, Math.min(k - 3, 9 - k, 1));
    return Math.round(255 * value).toString(16).padStart(2, "0");
  };
  return `#${channel(0)}${channel(8)}${channel(4)}`;
}

/** Names compared with their numbers as numbers: "grad_norm/2" before "grad_norm/10", "[1]" before "[10]",
 * "layer1.2" before "layer1.10" (the order a model and a person count in). */
export const NAME_ORDER = new Intl.Collator(undefined, { numeric: true });
export const byName = (a, b) => NAME_ORDER.compare(a, b);

export function tagsOf(kind, runs = state.runs) {
  const tags = new Set();
  for (const run of runs) {
    for (const [tag, k] of Object.entries(run.tags)) if (k === kind) tags.add(tag);
  }
  return [...tags].sort(byName);
}

export function runsWith(kind, tag) {
  return state.runs.filter((run) => run.tags[tag] === kind);
}

/** Fill a <select> with options, keeping the current choice when it is still there. */
export function fillSelect(select, values, preferred) {
  const current = select.value || preferred;
  const same = select.options.length === values.length && values.every((v, i) => select.options[i].value === v);
  if (!same) select.replaceChildren(...values.map((value) => el("option", { value }, value)));
  if (values.includes(current)) select.value = current;
  else if (preferred !== undefined && values.includes(preferred)) select.value = preferred;
  return select.value;
}

// ---- scalars ----------------------------------------------------------------------------------------------------


export function report(error) {
  status(String(error.message || error), true);
}

// ---- what could not be read ------------------------------------------------------------------------------------

/** Runs and records the views' answers said the server could not read (a damaged file), by what names them: why.
 * The page names them above the view, with the runs the run list says are unreadable, and draws everything else. */
export const unreadable = new Map();

/** Note the records (or runs) an answer lists as unreadable: `[{tag, step, error}]` of `answer.run`, or
 * `[{run, error}]` of a batch over runs (whose runs with a series are readable again). */
export function noteUnreadable(answer) {
  for (const series of answer?.series || []) unreadable.delete(series.run);
  for (const item of answer?.unreadable || []) {
    const name = item.tag === undefined ? item.run : `${answer.run} · ${item.tag} at step ${item.step}`;
    unreadable.set(name, item.error);
  }
  return answer;
}

/** `promise` (an API answer about one run), or null when it fails: noted as unreadable under `name`, so one run
 * the server cannot read leaves the others drawn. */
export function settled(promise, name) {
  return promise.then(noteUnreadable, (error) => {
    unreadable.set(name, String(error.message || error));
    return null;
  });
}

/** The list of unreadable runs (from the run list) and records (noted by the views), above the view. */
export function drawUnreadable() {
  const named = new Map(unreadable);
  for (const run of state.runs) if (run.status === "unreadable") named.set(run.name, run.error || "");
  let box = document.getElementById("unreadable");
  if (!box) {
    box = el("details", { id: "unreadable", class: "unreadable" });
    document.getElementById("view").before(box);
  }
  box.hidden = named.size === 0;
  const items = [...named].sort(([a], [b]) => byName(a, b));
  box.replaceChildren(
    el("summary", {}, `${items.length} ${items.length === 1 ? "run or record" : "runs or records"} could not be read`),
    el("ul", {}, items.map(([name, error]) => el("li", {}, el("b", {}, name), error ? `: ${error}` : ""))),
  );
}

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));


/** Runs holding a tag of one of `kinds`, and the select of their tags of those kinds. */
export function runsHolding(kinds) {
  return state.runs.filter((run) => Object.values(run.tags).some((k) => kinds.includes(k))).map((run) => run.name);
}

export function tagsIn(runName, kind) {
  const run = state.runs.find((r) => r.name === runName);
  return run ? Object.entries(run.tags).filter(([, k]) => k === kind).map(([tag]) => tag).sort(byName) : [];
}

/** Fill a step <select> (newest last); keeps the user's choice, else follows the newest step. */
export function fillSteps(select, steps) {
  const values = steps.map(String);
  const follow = !select.value || select.value === select.options[select.options.length - 1]?.value;
  fillSelect(select, values, values[values.length - 1]);
  if (follow) select.value = values[values.length - 1] ?? "";
  return select.value === "" ? undefined : Number(select.value);
}

/** Empty a step <select> when the run or tag it lists steps of has changed (their steps differ). */
export function forgetSteps(view, select, key) {
  if (view.stepsOf !== key) select.replaceChildren();
  view.stepsOf = key;
}

/** `hex` ("#rrggbb") as an rgba() colour of opacity `alpha`: the mean ± std bands. */
export function fade(hex, alpha) {
  const [r, g, b] = [1, 3, 5].map((i) => parseInt(hex.slice(i, i + 2), 16));
  return `rgba(${r},${g},${b},${alpha})`;
}

/** A card holding a table (no plotly): title, note, CSV button, and the table's container. */
export function tableCard(title, csv) {
  const body = el("div", { class: "table-wrap" });
  const card = el("div", { class: "card" }, el("div", { class: "card-head" }, el("span", { class: "title" }, title),
    el("span", { class: "note" }), el("span", { class: "tools" }, el("button", {
      type: "button", title: "download the table as CSV", class: "csv",
      onclick: () => {
        const [header, rows] = csv();
        saveFile(`${fileName(title)}.csv`, toCsv(header, rows), "text/csv");
      },
    }, "CSV"))), body);
  return { card, body, noteNode: card.querySelector(".note") };
}
