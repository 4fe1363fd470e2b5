"""The board as a security reviewer probes it: Host parsing, headers, paths out of a run, integer bounds, work that
only a JSON POST starts, what an error answer may say, where the token comes from (FastAPI's test client)."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest

import deepscope as ds
from deepscope.track.records import Embedding, Histogram, Image

pytest.importorskip("fastapi")
pytest.importorskip("plotly")
from fastapi.testclient import TestClient

from deepscope import cli
from deepscope import dashboard as board_module
from deepscope.dashboard import create_app, security
from deepscope.errors import BadInputError

LOCAL = "http://127.0.0.1"
TOO_BIG = str(2**63)  # one past the largest step SQLite or PostgreSQL can hold


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("served")
    with ds.Run(root / "good") as run:
        run.log_series("loss", np.arange(10), np.linspace(1.0, 0.0, 10))
        run.log_records(
            [
                Histogram(
                    "weights",
                    step,
                    -1.0,
                    1.0,
                    np.array([1, 2]),
                    layer="fc",
                    kind="weight",
                    mean=0.0,
                    std=1.0,
                    zero_fraction=0.0,
                    norm=1.0,
                    count=3,
                )
                for step in range(2)
            ]
        )
        run.log_records([Embedding("emb", 0, np.random.default_rng(0).normal(size=(30, 5)).astype(np.float32))])
    return root


@pytest.fixture(scope="module")
def client(root: Path) -> TestClient:
    return TestClient(create_app(root), base_url=LOCAL)


# ---- Host -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "name"),
    [
        ("127.0.0.1", "127.0.0.1"),
        ("127.0.0.1:6006", "127.0.0.1"),
        ("LocalHost:1", "localhost"),
        ("[::1]:6006", "::1"),
        ("[::1]", "::1"),
        ("board.example.org:443", "board.example.org"),
        ("127.0.0.1:1@evil.example", None),
        ("127.0.0.1@evil.example", None),
        ("evil.example#127.0.0.1", None),
        ("127.0.0.1:6006/evil", None),
        ("127.0.0.1 evil.example", None),
        ("127.0.0.1:99999", None),
        ("127.0.0.1:0", None),
        ("::1", None),  # an IPv6 address in a Host header is bracketed
        ("", None),
    ],
)
def test_host_header_is_one_name_and_a_port(header: str, name: str | None) -> None:
    assert security.host_name(header) == name


@pytest.mark.parametrize("host", ["127.0.0.1:1@evil.example", "localhost:6006/x", "127.0.0.1 evil", "[::1"])
def test_malformed_host_is_refused_with_or_without_token(client: TestClient, root: Path, host: str) -> None:
    assert client.get("/api/runs", headers={"Host": host}).status_code == 400
    guarded = TestClient(create_app(root, token="s3cret"), base_url=LOCAL)
    assert guarded.get("/api/runs", params={"token": "s3cret"}, headers={"Host": host}).status_code == 400


def test_loopback_hosts_answer_and_others_are_refused(client: TestClient) -> None:
    for host in ("127.0.0.1:6006", "localhost", "[::1]:6006"):
        assert client.get("/api/runs", headers={"Host": host}).status_code == 200, host
    for host in ("evil.example", "127.0.0.1.evil.example", "localhost.evil.example:6006"):
        assert client.get("/api/runs", headers={"Host": host}).status_code == 403, host


# ---- headers ----------------------------------------------------------------------------------------------------


def _policy(answer: object) -> dict[str, str]:
    policy = answer.headers["content-security-policy"]  # type: ignore[attr-defined]
    return {part.split()[0]: part.partition(" ")[2] for part in (p.strip() for p in policy.split(";")) if part}


@pytest.mark.parametrize(
    ("route", "status"),
    [("/", 200), ("/api/runs", 200), ("/static/app.js", 200), ("/api/scalars?run=nope&tag=x", 404)],
)
def test_every_answer_carries_the_security_headers(client: TestClient, route: str, status: int) -> None:
    answer = client.get(route)
    assert answer.status_code == status
    assert answer.headers["referrer-policy"] == "no-referrer"
    assert answer.headers["x-content-type-options"] == "nosniff"
    assert answer.headers["x-frame-options"] == "DENY"
    policy = _policy(answer)
    assert policy["frame-ancestors"] == "'none'"
    assert policy["object-src"] == "'none'" and policy["base-uri"] == "'none'"
    scripts = policy["script-src"].split()
    assert "'self'" in scripts and "'unsafe-inline'" not in scripts and "*" not in scripts


def test_the_pages_inline_scripts_are_allowed_by_their_hash_only(client: TestClient) -> None:
    page = client.get("/")
    inline = re.findall(r"<script>(.*?)</script>", page.text, re.DOTALL)
    assert inline, "the page has an inline script (it adds the token to its files' addresses)"
    scripts = _policy(page)["script-src"].split()
    for body in inline:
        digest = base64.b64encode(hashlib.sha256(body.encode()).digest()).decode()
        assert f"'sha256-{digest}'" in scripts
    assert len([s for s in scripts if s.startswith("'sha256-")]) == len(inline)


def test_refusals_carry_the_headers_too(root: Path) -> None:
    guarded = TestClient(create_app(root, token="s3cret"), base_url=LOCAL)
    answer = guarded.get("/")
    assert answer.status_code == 401
    assert _policy(answer)["frame-ancestors"] == "'none'" and answer.headers["referrer-policy"] == "no-referrer"


def test_a_notebooks_board_may_be_framed_by_this_machine_only(root: Path) -> None:
    framed = TestClient(board_module.create_app(root, framed=True), base_url=LOCAL)
    answer = framed.get("/")
    ancestors = _policy(answer)["frame-ancestors"].split()
    assert "'self'" in ancestors and "http://127.0.0.1:*" in ancestors and "*" not in ancestors
    local = ("localhost", "127.0.0.1", "[::1]")
    assert all(any(name in a for name in local) or a in ("'self'", "vscode-webview:") for a in ancestors)
    assert "x-frame-options" not in answer.headers


# ---- paths ------------------------------------------------------------------------------------------------------


def test_a_files_folder_that_is_a_symlink_is_not_followed(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    (outside / "etc").mkdir(parents=True)
    (outside / "etc" / "passwd").write_text("root:x:0:0")
    served = tmp_path / "served"
    with ds.Run(served / "hostile") as run:
        run.log({"x": 1.0})
    shutil.rmtree(served / "hostile" / "files", ignore_errors=True)
    (served / "hostile" / "files").symlink_to(outside)
    client = TestClient(create_app(served), base_url=LOCAL)
    answer = client.get("/api/file", params={"run": "hostile", "path": "files/etc/passwd"})
    assert answer.status_code == 404
    assert "root:x" not in answer.text
    # The store's own reading path (what decodes a record's files) refuses it too.
    from deepscope.store.sqlite import RunFiles

    with pytest.raises(PermissionError):
        RunFiles(served / "hostile").read("files/etc/passwd")


def test_a_stored_reference_out_of_the_run_is_not_read(tmp_path: Path) -> None:
    from deepscope.store import Reader

    (tmp_path / "secret.png").write_bytes(b"secret")
    with ds.Run(tmp_path / "run") as run:
        run.log_records([Image("pic", 0, np.zeros((2, 2), np.uint8))])
    with sqlite3.connect(tmp_path / "run" / "run.db") as db:
        db.execute("UPDATE objects SET file = 'files/../../secret.png'")
    with Reader(tmp_path / "run") as reader:
        unreadable: list = []
        assert reader.records("pic", unreadable=unreadable) == []
        assert "outside the run's files/" in unreadable[0].error


# ---- bounds -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("route", "params"),
    [
        ("/api/scalars", {"run": "good", "tag": "loss", "start": TOO_BIG}),
        ("/api/scalars", {"run": "good", "tag": "loss", "end": "-" + str(2**63 + 1)}),
        ("/api/scalars/batch", {"tag": "loss", "start": TOO_BIG}),
        ("/api/histograms", {"run": "good", "tag": "weights", "start": TOO_BIG}),
        ("/api/histograms", {"run": "good", "tag": "weights", "end": TOO_BIG}),
        ("/api/scalars", {"run": "good", "tag": "loss", "max_points": TOO_BIG}),
    ],
)
def test_integers_beyond_64_bits_are_422(client: TestClient, route: str, params: dict[str, str]) -> None:
    answer = client.get(route, params=params)
    assert answer.status_code == 422, answer.text


def test_the_largest_steps_are_fine(client: TestClient) -> None:
    answer = client.get("/api/scalars", params={"run": "good", "tag": "loss", "start": str(2**63 - 1)})
    assert answer.status_code == 200 and answer.json()["steps"] == []
    answer = client.get("/api/histograms", params={"run": "good", "tag": "weights", "end": str(-(2**63))})
    assert answer.status_code == 200 and answer.json()["points"] == []


# ---- work only on a JSON POST ----------------------------------------------------------------------------------

PROJECTION = {"run": "good", "tag": "emb", "name": "pca-2d"}


def _status(client: TestClient) -> str:
    return client.get("/api/projection/status", params=PROJECTION).json()["status"]


def test_no_get_and_no_simple_post_starts_a_projection(root: Path) -> None:
    client = TestClient(create_app(root), base_url=LOCAL)  # its own app: no job started by another test
    # What a page elsewhere can make a browser send without asking: an <img> GET, a form or text/plain POST, a
    # POST whose body has no type.
    answer = client.get("/api/projection", params=PROJECTION)
    assert answer.status_code == 200 and answer.json()["status"] == "absent" and answer.json()["points"] is None
    body = json.dumps(PROJECTION)
    for headers in ({"Content-Type": "text/plain"}, {"Content-Type": "application/x-www-form-urlencoded"}, {}):
        answer = client.post("/api/projection", content=body, headers=headers)
        assert answer.status_code in (415, 422), (headers, answer.status_code)
    answer = client.post("/api/projection", data=PROJECTION)  # a form
    assert answer.status_code in (415, 422)
    assert _status(client) == "absent"
    # The page's own request: JSON, which a cross-origin page could only send after a CORS preflight.
    answer = client.post("/api/projection", json=PROJECTION)
    assert answer.status_code == 200 and answer.json()["status"] == "done"
    assert _status(client) == "done"
    assert client.get("/api/projection", params=PROJECTION).json()["points"] == answer.json()["points"]


def test_a_projection_post_checks_its_step_too(client: TestClient) -> None:
    answer = client.post("/api/projection", json={**PROJECTION, "step": 2**63})
    assert answer.status_code == 422


# ---- what an error says -----------------------------------------------------------------------------------------


def test_errors_never_name_the_servers_paths(tmp_path: Path) -> None:
    served = tmp_path / "served"
    for name in ("bad_info", "truncated"):
        with ds.Run(served / name) as run:
            run.log_series("loss", np.arange(10), np.zeros(10))
    with sqlite3.connect(served / "bad_info" / "run.db") as db:
        db.execute("UPDATE run_info SET value = 'not json{' WHERE key = 'status'")
    db_file = served / "truncated" / "run.db"
    db_file.write_bytes(db_file.read_bytes()[:1000])
    client = TestClient(create_app(served), base_url=LOCAL)
    answers = [
        client.get("/api/runs"),
        client.get("/api/scalars", params={"run": "truncated", "tag": "loss"}),
        client.get("/api/scalars", params={"run": "bad_info", "tag": "nope"}),
        client.get("/api/file", params={"run": "bad_info", "path": "files/x.png"}),
    ]
    for answer in answers:
        assert str(tmp_path) not in answer.text and str(tmp_path.resolve()) not in answer.text, answer.text
    errors = {run["name"]: run["error"] for run in answers[0].json()}
    assert errors["bad_info"].startswith("bad_info/run.db: the run_info value of 'status' is not JSON")
    assert errors["truncated"].startswith("truncated/run.db ")


@pytest.mark.parametrize(
    ("message", "private"),
    [
        ("/srv/runs/a/run.db: damaged", "a/run.db: damaged"),
        ("the tag 'train/loss' of /srv/runs", "the tag 'train/loss' of ."),
        ("cannot read /home/me/elsewhere/x.npz (gone)", "cannot read …/x.npz (gone)"),
        ("run 'a' has no file 'files/1/x.png'", "run 'a' has no file 'files/1/x.png'"),
    ],
)
def test_private_takes_the_root_off_and_cuts_other_paths(message: str, private: str) -> None:
    assert security.private(message, ["/srv/runs"]) == private


# ---- the token --------------------------------------------------------------------------------------------------


def test_token_comes_from_the_flag_a_file_or_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(board_module.TOKEN_ENV, raising=False)
    assert board_module.token_from(None, None) is None
    monkeypatch.setenv(board_module.TOKEN_ENV, "from-env")
    assert board_module.token_from(None, None) == "from-env"
    assert board_module.token_from("flag", None) == "flag"
    kept = tmp_path / "token"
    kept.write_text("from-file\nignored\n")
    assert board_module.token_from(None, kept) == "from-file"
    with pytest.raises(BadInputError, match="not both"):
        board_module.token_from("flag", kept)
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(BadInputError, match="empty"):
        board_module.token_from(None, tmp_path / "empty")
    with pytest.raises(BadInputError, match="cannot read"):
        board_module.token_from(None, tmp_path / "missing")


def test_cli_passes_the_token_file_and_environment_to_the_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    served: list[str | None] = []
    monkeypatch.setattr(board_module, "serve", lambda root, host, port, token, workers, **explore: served.append(token))
    kept = tmp_path / "token"
    kept.write_text("from-file\n")
    monkeypatch.setenv(board_module.TOKEN_ENV, "from-env")
    assert cli.main(["board", str(tmp_path), "--token-file", str(kept)]) == 0
    assert cli.main(["board", str(tmp_path)]) == 0
    assert served == ["from-file", "from-env"]
    assert cli.main(["board", str(tmp_path), "--token-file", str(tmp_path / "missing")]) == 2
