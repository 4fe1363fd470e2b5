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
    assert {"static/style.css", "static/plotly.min.js", "static/app.js"} <= set(loaded)
    for address in loaded:
        assert not address.startswith("/"), address
        assert client.get(urljoin(PAGE, address)).status_code == 200, address
    script = client.get(urljoin(PAGE, "static/app.js")).text
    # No string in app.js starts with a path from the server's root ("/api/...", '/static/...', `/x`); a quote
    # right after a slash is a regular expression's (/"/g), not a string.
    assert re.findall(r"""(?<![/\\])["'`]/[A-Za-z_$]""", script) == []
    assert re.findall(r"""(?<![/\\])["'`]/[A-Za-z_$]""", 'fetch("/api/runs")') != []  # what it would catch
    assert "fetch(`api/${path}?${query}`" in script  # the API is reached relative to the page
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
