"""The vanishing-gradient journey (seed 000): tanh vs ReLU MLPs logged into runs."""

from __future__ import annotations

from PIL import Image

from deepscope.cli import main
from deepscope.demo import gradients
from deepscope.store import Reader, list_runs


def test_tanh_gradients_vanish_and_relu_gradients_do_not(tmp_path):
    journey = gradients.run(tmp_path, steps=40, every=10, log=lambda _: None, progress=False)
    assert journey.ratio["tanh"] < 1e-6
    assert journey.ratio["relu"] > 1e-2
    assert journey.accuracy["relu"] > journey.accuracy["tanh"]
    with Reader(journey.runs["relu"]) as reader:
        assert len(reader.scalars("train/loss")) == 40
        assert reader.config()["activation"] == "relu"
        assert "weight/0.weight" in reader.tags(kind="histogram")
    assert Image.open(journey.figure).size[0] > 500
    runs = {r.name: r for r in list_runs(tmp_path)}
    assert set(runs) == {"tanh", "relu"} and all(r.status == "finished" for r in runs.values())


def test_demo_gradients_command(tmp_path, capsys):
    assert main(["demo", "gradients", "--out", str(tmp_path), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "tanh" in out and "relu" in out and "gradient_norms.png" in out
    assert main(["demo", "gradients", "--epochs", "2"]) == 2


def test_demo_gradients_runs_on_the_threads_asked_and_puts_them_back(tmp_path, monkeypatch):
    import torch

    seen = []
    monkeypatch.setattr(gradients, "run", lambda **kwargs: seen.append(torch.get_num_threads()))
    before = torch.get_num_threads()
    asked = 3 if before != 3 else 2
    assert main(["demo", "gradients", "--out", str(tmp_path), "--threads", str(asked), "--no-progress"]) == 0
    assert seen == [asked] and torch.get_num_threads() == before
