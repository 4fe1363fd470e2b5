"""The board's Scalars view drawn in a real browser: ``--runs`` runs (default 100) of ``--points`` points each
(default 10,000, one tag), served by a real board (uvicorn in a thread) and drawn by headless Chromium (Debian's
``/usr/bin/chromium`` through Playwright, a fresh profile).

Timed: from ``goto`` to every run's traces holding their points in the chart, drawn (two animation frames later);
this covers loading the page and plotly.js, ``/api/runs`` and ``/api/views``, the batched scalars request,
decoding, smoothing and plotly's draw. Cold: a new browser profile and a new server, opened once the server has
read what it reads as it starts (the Scalars answers at the page's points per run; ``--no-warm`` empties them);
then, best of ``--repeats`` reloads: the server's answer cache emptied (a browser that has seen the board before,
a store it has not), and warm (plotly.js cached by the browser, the finished runs' answers by the server).
Goal (issue 4): the page has drawn 100 runs x 10,000 points in under 2 s. Quiet machine (2026-12-02, before the
chart was drawn once in the page): first load 2.34 s, reloads 1.13-1.18 s; the chart drawn once, eight interleaved
before/after pairs at load average 17 falling to 3.6: first load median 9.23 / 5.15 s; a sweep's lines on one canvas
(2026-12-03): first load 1.87-1.90 s against 2.59-2.68 s with SVG lines, interleaved (docs/board.md, "Speed").

    python bench/bench_board_page.py
    python bench/bench_board_page.py --runs 10 --points 1000 --repeats 2

``main(argv)`` returns the figures as a dict.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from common import CHROMIUM, CHROMIUM_ARGS

TAG = "train/loss"
# Every scalar chart holds a trace with points for each of `runs` runs (meta = the run's name; with smoothing on,
# a faint raw trace and its smoothed line per run), and its lines are drawn: plotly's (`data`, SVG paths), or, for a
# sweep's chart, those painted on its canvas (`lineTraces`, core.reactLines) the frame after plotly's draw.
DRAWN = """(runs) => {
    const plots = [...document.querySelectorAll('.view[data-view="scalars"] .card[data-tag] .plot')];
    return plots.length > 0 && plots.every((gd) => {
        const traces = gd.lineTraces || gd.data || [];
        const filled = new Set(traces.filter((t) => t.meta && t.x && t.x.length > 0).map((t) => t.meta));
        const lines = gd.querySelector('.scatterlayer path.js-line') || gd.querySelector('canvas.lines');
        return filled.size === runs && !!lines;
    });
}"""
TWO_FRAMES = "() => new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)))"


def write_store(root: Path, runs: int, points: int, seed: int = 0) -> None:
    """``runs`` deepscope runs ``run000``... under ``root``, each one tag ``train/loss`` of ``points`` steps."""
    import deepscope as ds

    rng = np.random.default_rng(seed)
    for k in range(runs):
        with ds.Run(root / f"run{k:03d}") as run:
            run.log_series(TAG, np.arange(points), rng.random(points))


@contextmanager
def chromium() -> Iterator[Any]:
    """A headless Chromium page with a fresh profile (an empty cache), closed on exit."""
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as profile, sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            profile,
            executable_path=CHROMIUM,
            args=CHROMIUM_ARGS,
            headless=True,
            viewport={"width": 1400, "height": 900},
        )
        try:
            yield context.pages[0] if context.pages else context.new_page()
        finally:
            context.close()


def scalars_drawn(page: Any, url: str, runs: int, timeout_s: float = 120) -> float:
    """Seconds from opening the board's Scalars view at ``url`` until every chart shows all ``runs`` runs, drawn."""
    start = time.perf_counter()
    page.goto(url.split("?")[0] + "?view=scalars")
    page.wait_for_function(DRAWN, arg=runs, timeout=timeout_s * 1e3, polling="raf")
    page.evaluate(TWO_FRAMES)  # plotly has handed its draw to the browser, and the browser has painted it
    return time.perf_counter() - start


def in_page(page: Any) -> float:
    """Seconds from the page's first API request to now, by the page's own clock."""
    return page.evaluate(
        """() => { const first = performance.getEntriesByType('resource').find((e) => e.name.includes('/api/'));
                   return (performance.now() - first.startTime) / 1000; }"""
    )


def patch_page(page: Any, webgl: bool = False, chart_points: int | None = None) -> None:
    """Serve the Scalars view's module drawing scalar lines with WebGL (``scattergl``) instead of SVG, and/or the
    registry of views giving the Scalars view ``chart_points`` points per chart (shared by its runs) instead of the
    server's budget (then the server's warmed answers do not match what the page asks)."""
    import json
    from importlib.resources import files

    if webgl:
        script = files("deepscope.dashboard").joinpath("views/scalars/view.js").read_text()
        old, new = 'const LINE_TYPE = "scatter";', 'const LINE_TYPE = "scattergl";'
        assert old in script, f"the page no longer has {old!r}; update this benchmark"
        script = script.replace(old, new)
        page.route(
            "**/views/scalars/view.js*", lambda route: route.fulfill(body=script, content_type="text/javascript")
        )
    if chart_points:

        def registry(route: Any) -> None:
            views = route.fetch().json()
            next(v for v in views if v["name"] == "scalars")["conventions"]["chart_points"] = chart_points
            route.fulfill(body=json.dumps(views), content_type="application/json")

        page.route("**/static/views.json*", registry)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--points", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--webgl", action="store_true", help="draw the lines with WebGL (scattergl), not SVG")
    parser.add_argument("--chart-points", type=int, help="points per chart, shared by its runs (the page: 64,000)")
    parser.add_argument(
        "--no-warm", action="store_true", help="empty the answers the server warmed as it started before the first load"
    )
    parser.add_argument(
        "--whole-first", action="store_true", help="the page's first plotly.js is the whole build, not the basic one"
    )
    args = parser.parse_args(argv)

    from deepscope.dashboard import board

    figures: dict[str, Any] = {"runs": args.runs, "points": args.points}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "runs"
        start = time.perf_counter()
        write_store(root, args.runs, args.points)
        figures["write_s"] = time.perf_counter() - start
        if args.whole_first:  # as before 2026-12-03: the whole build (4.8 MB) where the page asks for the basic one
            from deepscope.dashboard import server

            server.PLOTLY_BASIC_JS = server.PLOTLY_JS
        served = board(root)
        served.app.state.warming.join(timeout=120)  # as a user's browser, opened a second after the server
        figures["warmed_s"] = served.app.state.warmed_s
        if args.no_warm:
            served.app.state.views["scalars"].clear()
        try:
            with chromium() as page:
                errors: list[str] = []
                page.on("pageerror", lambda e: errors.append(str(e)))
                if args.webgl or args.chart_points:
                    patch_page(page, args.webgl, args.chart_points)
                figures["cold_s"] = scalars_drawn(page, served.url, args.runs)
                figures["cold_in_page_s"] = in_page(page)
                shown = page.evaluate(
                    f"""() => {{ const gd = document.querySelector('.card[data-tag="{TAG}"] .plot');
                        return (gd.lineTraces || gd.data).map((t) => t.x.length); }}"""
                )
                figures["canvas"] = page.evaluate(
                    f"""() => !!document.querySelector('.card[data-tag="{TAG}"] .plot').lineTraces"""
                )
                figures["traces"], figures["points_drawn"] = len(shown), sum(shown)
                for name, clear in (("server_cold", True), ("warm", False)):
                    best, best_inside = float("inf"), float("inf")
                    for _ in range(args.repeats):
                        if clear:
                            served.app.state.views["scalars"].clear()
                        best = min(best, scalars_drawn(page, served.url, args.runs))
                        best_inside = min(best_inside, in_page(page))
                    figures[f"{name}_s"], figures[f"{name}_in_page_s"] = best, best_inside
                assert not errors, errors
        finally:
            served.stop()

    print(f"board page bench: {args.runs} runs x {args.points:,} points, one tag, Scalars view in headless Chromium")
    print(f"  writing the runs:                                   {figures['write_s']:7.2f} s")
    budget = f"{args.chart_points:,} points per chart (--chart-points)" if args.chart_points else "the page's budget"
    print(f"  {'WebGL lines (--webgl)' if args.webgl else 'SVG lines (a sweep: canvas)'}, {budget}")
    print(f"  first plotly.js: {'the whole build (--whole-first)' if args.whole_first else 'the basic build'}")
    warmed = "emptied (--no-warm)" if args.no_warm else "kept"
    print(f"  the server's warm-up as it started: {figures['warmed_s']:.2f} s, its answers {warmed}")
    where = "on one canvas" if figures["canvas"] else "as plotly's SVG"
    print(f"  drawn: {figures['traces']} traces, {figures['points_drawn']:,} points, {where}")
    for name, what in (
        ("cold", "first load (new profile, new server; goal < 2 s)"),
        ("server_cold", f"reload, server cache emptied (best of {args.repeats})"),
        ("warm", f"reload, warm (best of {args.repeats})"),
    ):
        print(f"  {what:<52} {figures[f'{name}_s']:6.2f} s   in the page {figures[f'{name}_in_page_s']:5.2f} s")
    return figures


if __name__ == "__main__":
    main()
