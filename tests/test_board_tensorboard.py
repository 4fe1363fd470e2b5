"""The board's answers for what the SummaryWriter drop-in adds: sounds and clips in the Images tab, the custom-scalars
layout above the Scalars tab's charts. Through FastAPI's test client, against runs each test writes."""

from __future__ import annotations

import io
import wave
from pathlib import Path

import numpy as np
import pytest
import torch

import deepscope as ds
from deepscope.store import Reader
from deepscope.track.records import Audio, ScalarLayout, Video

pytest.importorskip("fastapi")
pytest.importorskip("plotly")
from fastapi.testclient import TestClient

from deepscope.dashboard import api, create_app
from deepscope.dashboard.views.scalars.data import custom_scalars

LOCAL = "http://127.0.0.1"
RATE = 8000


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("runs")
    tone = 0.5 * np.sin(np.arange(RATE // 2) * (2 * np.pi * 440 / RATE))
    frames = np.repeat(np.arange(0, 250, 50, dtype=np.uint8)[:, None, None], 6, 1).repeat(4, 2)  # 5 grey frames
    with ds.SummaryWriter(root / "a") as writer:
        writer.add_scalar("loss/train", 1.0, 0)
        writer.add_scalar("loss/val", 2.0, 0)
        writer.add_scalar("acc", 0.5, 0)
        writer.add_scalar("acc/low", 0.4, 0)
        writer.add_scalar("acc/high", 0.6, 0)
        writer.add_scalar("lr", 0.1, 0)
        writer.add_custom_scalars(
            {
                "Losses": {
                    "all losses": ["Multiline", ["^loss/"]],
                    "acc band": ["Margin", ["acc", "acc/low", "acc/high"]],
                },
                "Optimiser": {"lr": ["Multiline", ["^lr$", "^momentum$"]]},
            }
        )
        writer.run.log_records([Audio("sound", 2, tone, RATE), Video("clip", 1, frames, fps=5)])
    with ds.SummaryWriter(root / "b") as writer:  # another layout: its new chart joins, its "Losses" is the first's
        writer.add_scalar("loss/train", 3.0, 0)
        writer.add_custom_scalars(
            {"Losses": {"all losses": ["Multiline", ["nothing"]]}, "B": {"b": ["Multiline", ["x"]]}}
        )
    with ds.Run(root / "plain") as run:  # no layout, no media
        run.log({"loss/train": 1.0})
    return root


@pytest.fixture(scope="module")
def client(root: Path) -> TestClient:
    return TestClient(create_app(root), base_url=LOCAL)


def test_audio_answer_and_wav_file(client: TestClient) -> None:
    answer = client.get("/api/images", params={"run": "a", "tag": "sound"}).json()
    assert answer["kind"] == "audio"
    (point,) = answer["points"]
    assert (point["step"], point["sample_rate"], point["channels"], point["seconds"]) == (2, RATE, 1, 0.5)
    served = client.get(point["url"])
    assert served.status_code == 200 and served.headers["content-type"] in ("audio/x-wav", "audio/wav")
    with wave.open(io.BytesIO(served.content)) as sound:
        assert (sound.getframerate(), sound.getnframes(), sound.getsampwidth()) == (RATE, RATE // 2, 2)


def test_video_answer_and_gif_file(client: TestClient) -> None:
    from PIL import Image as PILImage

    answer = client.get("/api/images", params={"run": "a", "tag": "clip"}).json()
    assert answer["kind"] == "video"
    (point,) = answer["points"]
    assert (point["step"], point["width"], point["height"], point["frames"], point["fps"]) == (1, 4, 6, 5, 5.0)
    served = client.get(point["url"])
    assert served.status_code == 200 and served.headers["content-type"] == "image/gif"
    with PILImage.open(io.BytesIO(served.content)) as clip:
        assert clip.n_frames == 5 and clip.info["duration"] == 200  # 5 frames a second


def test_images_tab_appears_for_media_alone(tmp_path: Path) -> None:
    with ds.Run(tmp_path / "r") as run:
        run.log_records([Audio("s", 0, np.zeros(10), RATE)])
    assert api.views(tmp_path)["images"] is True
    with ds.Run(tmp_path / "other" / "q") as run:
        run.log({"x": 1.0})
    assert api.views(tmp_path / "other")["images"] is False


def test_images_of_another_kind_is_404_naming_it(client: TestClient) -> None:
    answer = client.get("/api/images", params={"run": "a", "tag": "lr"})
    assert answer.status_code == 404 and "scalar" in answer.json()["detail"]


def test_custom_scalars_merges_layouts_and_matches_tags(client: TestClient) -> None:
    answer = client.get("/api/custom_scalars").json()
    assert [c["category"] for c in answer["categories"]] == ["Losses", "Optimiser", "B"]
    losses, optimiser, b = (c["charts"] for c in answer["categories"])
    assert losses == [
        {
            "title": "all losses",
            "type": "multiline",
            "tags": ["^loss/"],
            "runs": {"a": ["loss/train", "loss/val"], "b": ["loss/train"], "plain": ["loss/train"]},
        },
        {
            "title": "acc band",
            "type": "margin",
            "tags": ["acc", "acc/low", "acc/high"],
            "runs": {"a": ["acc", "acc/low", "acc/high"]},
        },
    ]
    assert optimiser == [{"title": "lr", "type": "multiline", "tags": ["^lr$", "^momentum$"], "runs": {"a": ["lr"]}}]
    assert b == [{"title": "b", "type": "multiline", "tags": ["x"], "runs": {}}]  # no tag of b matches "x"


def test_custom_scalars_empty_without_layouts(tmp_path: Path) -> None:
    with ds.Run(tmp_path / "r") as run:
        run.log({"loss": 1.0})
    assert custom_scalars(tmp_path) == {"layout": {}, "categories": []}


def test_the_last_layout_is_the_one_shown(tmp_path: Path) -> None:
    with ds.Run(tmp_path / "r") as run:
        run.log({"loss": 1.0})
        run.log_records([ScalarLayout({"old": {"c": ["Multiline", ["loss"]]}})])
        run.log_records([ScalarLayout({"new": {"c": ["Multiline", ["loss"]]}})])
    assert [c["category"] for c in custom_scalars(tmp_path)["categories"]] == ["new"]


def test_unknown_kind_is_a_store_error(tmp_path: Path) -> None:
    """A kind a newer deepscope wrote: the reader says so instead of guessing."""
    import sqlite3

    with ds.Run(tmp_path / "r") as run:
        run.log_records([Video("clip", 0, torch.zeros(2, 3, 3, dtype=torch.uint8))])
    with sqlite3.connect(tmp_path / "r" / "run.db") as conn:
        conn.execute("UPDATE tags SET kind = 'hologram' WHERE name = 'clip'")
    conn.close()
    with Reader(tmp_path / "r") as reader, pytest.raises(ds.errors.StoreError, match="kind 'hologram'"):
        reader.records("clip")
