"""``ds.Run(..., system=True)``: CPU, memory and GPU use sampled in a background thread into ``system/*`` scalars
(:mod:`deepscope.track.system`), which stops with the run and never breaks training."""

from __future__ import annotations

import gc
import os
import sys
import threading
import time
import warnings
import weakref

import numpy as np
import psutil
import pytest
import torch

import deepscope as ds
from deepscope.store import Reader
from deepscope.track.system import SystemMonitor, SystemReader

INTERVAL = 0.05
HOST_TAGS = {"system/cpu_percent", "system/process_cpu_percent", "system/memory_percent", "system/process_rss_mib"}


def _sampler_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "deepscope-system-metrics"]


def _wait_for_samples(run: ds.Run, count: int, tag: str = "system/memory_percent") -> None:
    """Wait (up to 10 s: a loaded machine wakes the sampler late) until ``run`` holds ``count`` samples of ``tag``."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        run.flush()
        with Reader(run.path) as reader:
            if tag in reader.tags() and len(reader.scalars(tag).values) >= count:
                return
        time.sleep(INTERVAL)
    raise AssertionError(f"fewer than {count} samples of {tag} in 10 s")


def _busy(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        sum(range(1000))


def test_system_metrics_are_sampled_into_plausible_scalars_and_stop_with_the_run(tmp_path):
    with ds.Run(tmp_path / "r", system=True, system_interval=INTERVAL) as run:
        assert len(_sampler_threads()) == 1
        for step in range(5):
            _busy(INTERVAL)  # some CPU to measure
            run.log({"train/loss": 1.0 / (step + 1)})
        _wait_for_samples(run, 2)
        rss = psutil.Process().memory_info().rss / 2**20
    assert _sampler_threads() == []  # joined by close
    with Reader(tmp_path / "r") as reader:
        tags = reader.tags()
        assert set(tags) >= HOST_TAGS and all(tags[tag] == "scalar" for tag in HOST_TAGS)
        assert not any(tag.startswith("system/gpu") for tag in tags)  # this test never initialises CUDA
        series = {tag: reader.scalars(tag) for tag in HOST_TAGS}
        count = len(series["system/cpu_percent"].values)
    assert count >= 2
    assert all(len(s.values) == count for s in series.values())  # one sample, every tag
    assert ((series["system/cpu_percent"].values >= 0) & (series["system/cpu_percent"].values <= 100)).all()
    process_cpu = series["system/process_cpu_percent"].values
    assert ((process_cpu >= 0) & (process_cpu <= 100 * os.cpu_count())).all()
    assert process_cpu.max() > 0  # it was busy
    assert ((series["system/memory_percent"].values > 0) & (series["system/memory_percent"].values <= 100)).all()
    assert series["system/process_rss_mib"].values == pytest.approx(rss, rel=0.5)  # MiB, this process's
    steps = series["system/cpu_percent"].steps
    assert steps[0] >= 0 and (np.diff(steps) >= 0).all()  # whole seconds since the run opened
    assert steps[-1] <= time.time() - series["system/cpu_percent"].wall_times[0] + 1
    time.sleep(3 * INTERVAL)
    with Reader(tmp_path / "r") as reader:  # nothing came after the close
        assert len(reader.scalars("system/cpu_percent").values) == count


def test_system_metrics_are_opt_in(tmp_path):
    with ds.Run(tmp_path / "r") as run:
        run.log({"loss": 1.0})
        assert _sampler_threads() == []
        time.sleep(2 * INTERVAL)
    with Reader(tmp_path / "r") as reader:
        assert reader.tags() == {"loss": "scalar"}


def test_a_failing_sampler_warns_once_stops_and_training_goes_on(tmp_path, monkeypatch):
    calls = []

    def broken(self: SystemReader) -> dict[str, float]:
        calls.append(1)
        raise OSError("sensor gone")

    monkeypatch.setattr(SystemReader, "read", broken)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with ds.Run(tmp_path / "r", system=True, system_interval=INTERVAL) as run:
            for step in range(4):
                time.sleep(INTERVAL)
                run.log({"loss": float(step)})
            deadline = time.monotonic() + 5
            while _sampler_threads() and time.monotonic() < deadline:
                time.sleep(INTERVAL)
            assert _sampler_threads() == []  # stopped by itself, before the run closed
    messages = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert len(messages) == 1 and "system metrics stopped" in messages[0] and "OSError: sensor gone" in messages[0]
    assert calls == [1]
    with Reader(tmp_path / "r") as reader:
        assert reader.tags() == {"loss": "scalar"}
        assert reader.scalars("loss").values.tolist() == [0.0, 1.0, 2.0, 3.0]


def test_a_resumed_run_goes_on_with_later_system_steps(tmp_path):
    with ds.Run(tmp_path / "r", system=True, system_interval=INTERVAL) as run:
        _wait_for_samples(run, 2)
    with Reader(tmp_path / "r") as reader:
        before = reader.scalars("system/memory_percent").steps
    resumed = ds.Run(tmp_path / "r", resume=True, system=True, system_interval=INTERVAL)
    with resumed as run, warnings.catch_warnings():
        warnings.simplefilter("error")  # a step going backwards would warn, and so stop the sampler
        _wait_for_samples(run, len(before) + 2)
    with Reader(tmp_path / "r") as reader:
        steps = reader.scalars("system/memory_percent").steps
    assert steps[: len(before)].tolist() == before.tolist()
    assert (steps[len(before) :] > before.max()).all()  # the seconds go on from the last sample's


def test_a_forgotten_run_is_still_collected_and_its_sampler_stopped(tmp_path):
    run = ds.Run(tmp_path / "r", system=True, system_interval=INTERVAL)
    run.log({"loss": 1.0})
    forgotten = weakref.ref(run)
    del run
    gc.collect()
    assert forgotten() is None  # the sampler holds the run weakly
    assert _sampler_threads() == []  # the finalizer stopped it before closing the writer
    with Reader(tmp_path / "r") as reader:
        assert reader.info()["status"] == "finished"


@pytest.mark.parametrize("interval", [0, -1.0, float("nan"), "10", True])
def test_a_bad_interval_is_refused_before_anything_is_created(tmp_path, interval):
    with pytest.raises(ds.BadInputError, match="system_interval is a number of seconds > 0"):
        ds.Run(tmp_path / "r", system=True, system_interval=interval)
    assert not (tmp_path / "r").exists()


def test_without_psutil_system_metrics_say_what_to_install_and_create_nothing(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "psutil", None)  # import psutil now fails
    with pytest.raises(ImportError, match=r"pip install 'deepscope\[system\]'"):
        ds.Run(tmp_path / "r", system=True)
    assert not (tmp_path / "r").exists()
    ds.Run(tmp_path / "r").close()  # without system metrics psutil is not needed


def test_gpu_metrics_per_initialised_device_and_utilisation_skipped_once_it_fails(monkeypatch):
    mib = 2**20
    utilisation_calls = []

    def utilization(device: int) -> int:
        utilisation_calls.append(device)
        raise ModuleNotFoundError("pynvml")

    reader = SystemReader()
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: False)
    assert set(reader.read()) == HOST_TAGS  # CUDA not initialised by the process: no GPU tags, no CUDA touched
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device: (device + 1) * mib)
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device: (device + 1) * 4 * mib)
    monkeypatch.setattr(torch.cuda, "utilization", utilization)
    for _ in range(2):
        values = reader.read()
        assert {tag: v for tag, v in values.items() if tag.startswith("system/gpu")} == {
            "system/gpu0/memory_allocated_mib": 1.0,
            "system/gpu0/memory_reserved_mib": 4.0,
            "system/gpu1/memory_allocated_mib": 2.0,
            "system/gpu1/memory_reserved_mib": 8.0,
        }
    assert utilisation_calls == [0]  # tried once, then skipped for good

    monkeypatch.setattr(torch.cuda, "utilization", lambda device: 40 + device)
    values = SystemReader().read()
    assert (values["system/gpu0/utilization_percent"], values["system/gpu1/utilization_percent"]) == (40.0, 41.0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_gpu_memory_is_sampled_on_a_real_device(tmp_path):
    held = torch.empty(64 * 2**20, dtype=torch.uint8, device="cuda")  # 64 MiB; initialises CUDA
    with ds.Run(tmp_path / "r", system=True, system_interval=INTERVAL) as run:
        time.sleep(4 * INTERVAL)
        run.log({"loss": held[:1].float().sum()})
    with Reader(tmp_path / "r") as reader:
        device = torch.cuda.current_device()
        allocated = reader.scalars(f"system/gpu{device}/memory_allocated_mib").values
        reserved = reader.scalars(f"system/gpu{device}/memory_reserved_mib").values
    assert (allocated >= 64).all() and (reserved >= allocated).all()
    del held


def test_the_monitor_logs_nothing_once_stopped():
    logged = []
    monitor = SystemMonitor(lambda values, step: logged.append(step), INTERVAL, lambda: {"system/x": 1.0})
    monitor.start(first_step=7)
    deadline = time.monotonic() + 10
    while len(logged) < 2 and time.monotonic() < deadline:
        time.sleep(INTERVAL)
    monitor.stop()
    assert not monitor.running
    count = len(logged)
    time.sleep(3 * INTERVAL)
    assert len(logged) == count >= 2 and logged[0] == 7  # steps start at first_step
