"""The board behind a proxy: every address the page and the API hand out is relative (it works under any path
prefix), and ``ds.board`` shows the address a proxy (JupyterHub, jupyter-server-proxy) serves it at."""

from __future__ import annotations

import io
import re
from pathlib import Path
from urllib.parse import parse_qs, urljoin, urlsplit

import numpy as np
import pytest
import torch
from torch import nn

import deepscope as ds
from deepscope.track.records import Image

pytest.importorskip("fastapi")
pytest.importorskip("plotly")
from fastapi import FastAPI
from fastapi.testclient import TestClient
from PIL import Image as PILImage

from deepscope import dashboard
from deepscope.dashboard import create_app

LOCAL = "http://127.0.0.1"
PREFIX = "/user/alice/proxy/1234"  # where jupyter-server-proxy serves port 1234 of a JupyterHub user
PAGE = f"{LOCAL}{PREFIX}/"


@pytest.fixture(scope="module")
def proxied(tmp_path_factory: pytest.TempPathFactory) -> tuple[TestClient, dict[str, object]]:
    """The board mounted under :data:`PREFIX` of another app (nothing answers outside it), over a run with images
    and an explanation gallery (the answers that carry file addresses)."""
    root = tmp_path_factory.mktemp("proxied")
    pixels = np.arange(5 * 7 * 3, dtype=np.uint8).reshape(5, 7, 3)
    model = nn.Sequential(nn.Conv2d(3, 2, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    inputs = torch.rand(2, 3, 6, 6, generator=torch.Generator().manual_seed(0))
    with ds.Run(root / "exp") as run:
        run.log_records([Image("samples", 0, pixels)])
        stored = run.log_explanations(ds.explain(model, inputs, method="saliency"), labels=[0, 1])
    outer = FastAPI()
    outer.mount(PREFIX, create_app(root))
    return TestClient(outer, base_url=LOCAL), {"pixels": pixels, "stored": stored}


def _picture(client: TestClient, address: str) -> np.ndarray:
    """The PNG at ``address`` as the page's browser reaches it: resolved against the page's own address."""
    assert not address.startswith("/"), f"{address!r} is absolute: it leaves the proxy's prefix"
    answer = client.get(urljoin(PAGE, address))
    assert answer.status_code == 200 and answer.headers["content-type"] == "image/png", address
    return np.asarray(PILImage.open(io.BytesIO(answer.content)))


def test_the_page_and_its_files_load_under_a_prefix(proxied: tuple[TestClient, dict[str, object]]) -> None:
    client, _ = proxied
    page = client.get(PAGE)
    assert page.status_code == 200
    assert client.get(f"{LOCAL}/").status_code == 404  # outside the prefix nothing answers, as behind a proxy
    # What index.html loads: attributes, and the file names its inline script joins to the token.
    named = re.findall(r'(?:href|src)\s*=\s*"([^"]*)"', page.text) + re.findall(r'"(static/[^"]+)"', page.text)
    loaded = [address for address in named if not address.startswith("data:")]
    assert {"static/style.css", "static/plotly-basic.min.js", "static/app.js"} <= set(loaded)
    for address in loaded:
        assert not address.startswith("/"), address
        assert client.get(urljoin(PAGE, address)).status_code == 200, address
    # The page's modules: the core, the shared module, the registry's view modules (all relative to the page).
    views = client.get(urljoin(PAGE, "static/views.json")).json()
    modules = ["static/app.js", "static/core.js", *(view["module"] for view in views)]
    scripts = {}
    for module in modules:
        assert not module.startswith("/"), module
        answer = client.get(urljoin(PAGE, module))
        assert answer.status_code == 200 and "javascript" in answer.headers["content-type"], module
        scripts[module] = answer.text
    # No string in a module starts with a path from the server's root ("/api/...", '/static/...', `/x`); a quote
    # right after a slash is a regular expression's (/"/g), not a string.
    for module, script in scripts.items():
        assert re.findall(r"""(?<![/\\])["'`]/[A-Za-z_$]""", script) == [], module
    assert re.findall(r"""(?<![/\\])["'`]/[A-Za-z_$]""", 'fetch("/api/runs")') != []  # what it would catch
    assert "fetch(`api/${path}?${query}`" in scripts["static/core.js"]  # the API is reached relative to the page
    # plotly's whole build, which core.js loads when a chart needs it, relative to the page too
    assert 'WHOLE_BUILD = "static/plotly.min.js"' in scripts["static/core.js"]
    assert client.get(urljoin(PAGE, "static/plotly.min.js")).status_code == 200
    runs = client.get(urljoin(PAGE, "api/runs")).json()
    assert [run["name"] for run in runs] == ["exp"]


def test_api_answers_address_files_relative_to_the_page(proxied: tuple[TestClient, dict[str, object]]) -> None:
    client, made = proxied
    (point,) = client.get(urljoin(PAGE, "api/images"), params={"run": "exp", "tag": "samples"}).json()["points"]
    np.testing.assert_array_equal(_picture(client, point["url"]), made["pixels"])
    gallery = client.get(urljoin(PAGE, "api/explanations"), params={"run": "exp", "tag": "explanations"}).json()
    stored = made["stored"]
    for i, item in enumerate(gallery["items"]):
        np.testing.assert_array_equal(_picture(client, item["input"]), stored.inputs[i])  # type: ignore[attr-defined]
        (saliency,) = item["maps"]
        np.testing.assert_array_equal(_picture(client, saliency["overlay"]), stored.overlays[0, i])  # type: ignore[attr-defined]
        np.testing.assert_array_equal(_picture(client, saliency["heatmap"]), stored.heatmaps[0, i])  # type: ignore[attr-defined]


def test_the_page_works_under_a_prefix_in_a_browser(tmp_path: Path) -> None:
    """Headless Chromium opens the board where a proxy would put it, with a token: every request (page, scripts,
    API, pictures) must reach the board, and the run list shows each run's status."""
    from deepscope.dashboard.headless import CHROMIUM, CHROMIUM_ARGS

    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    pytest.importorskip("uvicorn")
    from conftest import serving

    with ds.Run(tmp_path / "done") as run:
        run.log({"loss": 1.0}, step=0)
        run.log_records([Image("samples", 0, np.full((5, 7, 3), 200, dtype=np.uint8))])
    for name, error in (("stopped", KeyboardInterrupt), ("broken", ValueError)):
        with pytest.raises(error), ds.Run(tmp_path / name) as run:
            run.log({"loss": 2.0}, step=0)
            raise error
    outer = FastAPI()
    outer.mount(PREFIX, create_app(tmp_path, token="s3cret"))
    problems: list[str] = []
    missed: list[str] = []
    with serving(outer) as url, sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        page = browser.new_page()
        page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: problems.append(str(e)))
        page.on("response", lambda r: missed.append(f"{r.status} {r.url}") if r.status >= 400 else None)
        page.goto(f"{url}{PREFIX}/?token=s3cret")
        page.wait_for_selector(".runlist .run-name", timeout=15_000)
        badges = page.eval_on_selector_all(
            ".runlist label",
            """(ls) => ls.map((l) => [l.querySelector('.run-name').textContent,
                                      l.querySelector('.run-status')?.textContent ?? null])""",
        )
        assert sorted(badges) == [["broken", "failed"], ["done", None], ["stopped", "interrupted"]]
        page.click('#tabs button[data-view="images"]')
        page.wait_for_function(
            "() => { const i = document.querySelector('.images img'); return i && i.naturalWidth; }",
            timeout=15_000,
        )
        assert page.evaluate("() => document.querySelector('.images img').naturalWidth") == 7
        browser.close()
    assert not missed and not problems, (missed, problems)


# ---- ds.board behind a proxy ------------------------------------------------------------------------------------


@pytest.fixture
def bare_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No JupyterHub, no proxy chosen, not VS Code (whatever the machine running the tests has set)."""
    for name in (dashboard.PROXY_ENV, dashboard.HUB_PREFIX_ENV, "VSCODE_PID", "VSCODE_CWD"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def _installed_jupyter_server_proxy(monkeypatch: pytest.MonkeyPatch, folder: Path) -> None:
    (folder / "jupyter_server_proxy").mkdir()
    (folder / "jupyter_server_proxy" / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(folder))


@pytest.mark.parametrize(
    ("env", "server_proxy", "expected"),
    [
        ({}, False, None),  # a local browser: the board's own address
        ({"JUPYTERHUB_SERVICE_PREFIX": "/user/alice/"}, False, "/user/alice/proxy/{port}/"),
        ({"JUPYTERHUB_SERVICE_PREFIX": "/user/alice"}, False, "/user/alice/proxy/{port}/"),
        ({}, True, "/proxy/{port}/"),  # jupyter-server-proxy on a plain Jupyter server (base URL /)
        ({"VSCODE_PID": "42"}, True, None),  # VS Code forwards ports itself
        ({"JUPYTERHUB_SERVICE_PREFIX": "/user/alice/", "DEEPSCOPE_PROXY": "off"}, True, None),
        ({"DEEPSCOPE_PROXY": "1"}, False, "/proxy/{port}/"),
        ({"DEEPSCOPE_PROXY": "ON", "JUPYTERHUB_SERVICE_PREFIX": "/user/bob/"}, False, "/user/bob/proxy/{port}/"),
        ({"DEEPSCOPE_PROXY": "https://hub.example.org/p/{port}/"}, False, "https://hub.example.org/p/{port}/"),
    ],
)
def test_proxy_is_detected(
    bare_env: pytest.MonkeyPatch, tmp_path: Path, env: dict[str, str], server_proxy: bool, expected: str | None
) -> None:
    for name, value in env.items():
        bare_env.setenv(name, value)
    if server_proxy:
        _installed_jupyter_server_proxy(bare_env, tmp_path)
    assert dashboard.proxy_template() == expected
    assert dashboard.proxy_template("auto") == expected


def test_proxy_chosen_wins_over_detection(bare_env: pytest.MonkeyPatch) -> None:
    bare_env.setenv(dashboard.HUB_PREFIX_ENV, "/user/alice/")
    bare_env.setenv(dashboard.PROXY_ENV, "off")
    assert dashboard.proxy_template(False) is None
    assert dashboard.proxy_template(True) == "/user/alice/proxy/{port}/"
    assert dashboard.proxy_template("/lab/proxy/{port}/") == "/lab/proxy/{port}/"
    bare_env.delenv(dashboard.HUB_PREFIX_ENV)
    assert dashboard.proxy_template(True) == "/proxy/{port}/"


@pytest.mark.parametrize(
    ("proxy", "env", "message"),
    [
        ("/user/alice/proxy/", None, r"proxy='/user/alice/proxy/': .*\{port\}"),
        ("/proxy/{port}/{user}/", None, r"\{port\} is the only field"),
        ("auto", "maybe", r"\$DEEPSCOPE_PROXY='maybe': .*\{port\}"),
        (3, None, "pass 'auto', True, False or an address template"),
    ],
)
def test_bad_proxy_is_refused_clearly(
    bare_env: pytest.MonkeyPatch, proxy: object, env: str | None, message: str
) -> None:
    if env is not None:
        bare_env.setenv(dashboard.PROXY_ENV, env)
    with pytest.raises(ds.BadInputError, match=message):
        dashboard.proxy_template(proxy)  # type: ignore[arg-type]


def test_proxied_url_keeps_the_token() -> None:
    assert dashboard.proxied_url("/user/a/proxy/{port}/", 8123, None) == "/user/a/proxy/8123/"
    assert dashboard.proxied_url("/user/a/proxy/{port}/", 8123, "t-1_x") == "/user/a/proxy/8123/?token=t-1_x"
    assert dashboard.proxied_url("https://h/?port={port}", 1, "a b") == "https://h/?port=1&token=a%20b"


def test_board_under_jupyterhub_shows_the_proxied_address_with_a_token(
    bare_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import http.client

    with ds.Run(tmp_path / "exp") as run:
        run.log({"loss": 1.0}, step=0)
    bare_env.setenv(dashboard.HUB_PREFIX_ENV, "/user/alice/")
    shown = dashboard.board(tmp_path)
    try:
        port = shown._server.config.port
        address = urlsplit(shown.url)
        assert address.path == f"/user/alice/proxy/{port}/"
        (token,) = parse_qs(address.query)["token"]  # a board behind a proxy always has a token
        assert len(token) >= 24 and shown.local_url == f"http://127.0.0.1:{port}/?token={token}"
        html = shown._repr_html_()
        assert f'<iframe src="{shown.url}"' in html and f'<a href="{shown.url}"' in html
        # The proxy forwards the browser's Host header (the hub's name): the token lets the request in.
        for query, status in ((f"?token={token}", 200), ("", 401)):
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            connection.request("GET", f"/api/runs{query}", headers={"Host": "hub.example.org"})
            answer = connection.getresponse()
            assert answer.status == status, query
            connection.close()
    finally:
        shown.stop()
    local = dashboard.board(tmp_path, proxy=False)  # chosen: the board's own address, no token on 127.0.0.1
    try:
        assert local.url == local.local_url == f"http://127.0.0.1:{local._server.config.port}/"
    finally:
        local.stop()
