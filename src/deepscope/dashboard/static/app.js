// deepscope board: the page's core. Plain ES modules, no build step; charts by plotly.js (window.Plotly, served
// locally). It loads the shared module (core.js) and the registry of views (static/views.json: each view's name,
// title, record kinds, module and conventions), then each view's module when its tab is first opened; a view's
// module's default export `create(core, entry)` returns its object: `mount(container)` builds its controls once,
// `refresh()` fetches and redraws (called on every poll while the view is shown). Adding a view is adding its
// folder on the server (deepscope/dashboard/views/<name>/): nothing here changes.

const POLL_MS = 2000;
const TOKEN = new URLSearchParams(window.location.search).get("token");

/** A URL relative to the page, with the page's token (the server may require it on every request). */
function address(path) {
  const url = new URL(path, document.baseURI);
  if (TOKEN) url.searchParams.set("token", TOKEN);
  return url.href;
}

document.getElementById("view").inert = true;
const core = await import(address("static/core.js"));
const { drawUnreadable, el, get, report, state, status, plotlyReady } = core;
plotlyReady.then(() => {
  document.getElementById("view").inert = false;
}, () => {});

// The theme toggle: follow the browser (auto), dark, light, in turn; charts follow a change of the browser's too.
const themeButton = document.getElementById("theme");
const THEMES = ["auto", "dark", "light"];
themeButton.textContent = `theme: ${core.savedTheme()}`;
themeButton.addEventListener("click", () => {
  const next = THEMES[(THEMES.indexOf(core.savedTheme()) + 1) % THEMES.length];
  core.setTheme(next);
  themeButton.textContent = `theme: ${next}`;
});
window.matchMedia?.("(prefers-color-scheme: dark)").addEventListener?.("change", () => core.recolor());

const modules = new Map(); // view name -> promise of its object

/** The view's object, its module loaded on first use. */
function viewOf(name) {
  if (!modules.has(name)) {
    const entry = state.registry.find((e) => e.name === name);
    // plotly's whole build, where the view draws a trace the basic build lacks: loading beside the view's data
    if (core.needsWholeBuild(entry.traces)) core.wholePlotly().catch(() => {});
    modules.set(name, import(address(entry.module)).then((module) => module.default(core, entry)));
  }
  return modules.get(name);
}

async function select(name) {
  state.active = name;
  for (const button of document.querySelectorAll("#tabs button")) {
    button.classList.toggle("active", button.dataset.view === name);
  }
  const view = await viewOf(name);
  if (state.active !== name) return;
  const main = document.getElementById("view");
  if (!state.mounted.has(name)) {
    const container = el("div", { class: "view", dataset: { view: name } });
    container.style.display = "contents";
    view.mount(container);
    state.mounted.set(name, container);
    main.append(container);
  }
  for (const [key, container] of state.mounted) container.style.display = key === name ? "contents" : "none";
  const query = new URLSearchParams(window.location.search);
  query.set("view", name);
  history.replaceState(null, "", `?${query}`);
  await view.refresh();
}

function drawTabs() {
  const nav = document.getElementById("tabs");
  const available = state.registry.map((entry) => entry.name).filter((name) => state.views[name]);
  const current = [...nav.children].map((b) => b.dataset.view);
  if (current.join() !== available.join()) {
    nav.replaceChildren(...available.map((name) => el("button", {
      type: "button",
      dataset: { view: name },
      class: name === state.active ? "active" : "",
      onclick: () => select(name).then(() => status(`updated ${new Date().toLocaleTimeString()}`), report),
    }, state.registry.find((entry) => entry.name === name).title)));
  }
  document.getElementById("empty").hidden = available.length > 0;
  return available;
}

async function poll() {
  if (state.busy) return;
  state.busy = true;
  try {
    // The runs and which views have data, in one answer (one listing of the runs on the server).
    const [overview] = await Promise.all([get("overview"), registryLoaded]);
    ({ runs: state.runs, views: state.views } = overview);
    const available = drawTabs();
    if (!state.active || !available.includes(state.active)) {
      const asked = new URLSearchParams(window.location.search).get("view");
      if (available.length) await select(available.includes(asked) ? asked : available[0]);
    } else {
      await (await viewOf(state.active)).refresh();
    }
    drawUnreadable();
    status(`${state.runs.length} runs · updated ${new Date().toLocaleTimeString()}`);
  } catch (error) {
    report(error);
  } finally {
    state.busy = false;
  }
}

const registryLoaded = fetch(address("static/views.json"), { cache: "no-store" }).then((response) => {
  if (!response.ok) throw new Error(`static/views.json: ${response.status} ${response.statusText}`);
  return response.json();
}).then((registry) => {
  state.registry = registry;
});

// The view the address asks for: its module loads beside the first poll, and the view asks for its data at once
// (`prefetch()`, where it has one), not after the runs and the views have come back.
registryLoaded.then(() => {
  const asked = new URLSearchParams(window.location.search).get("view");
  if (asked && state.registry.some((entry) => entry.name === asked)) {
    viewOf(asked).then((view) => view.prefetch?.(), () => {});
  }
}, () => {});

poll();
// Polling repeats once plotly is there: before, the first poll's requests are still waiting to be drawn.
plotlyReady.then(() => setInterval(poll, POLL_MS), () => {});
