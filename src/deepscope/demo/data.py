"""FashionMNIST for the demo: torchvision's loader first, the Debian package's IDX files when there is no network.

The order of sources, and why:

1. ``folder`` given (``deepscope demo --data DIR``): the IDX files in that folder, nothing else is tried.
2. torchvision's ``datasets.FashionMNIST`` (the path most users know), under a cache folder. It downloads only
   when its files are absent, and every socket gets a short timeout, so a machine without network fails in
   seconds instead of hanging.
3. The IDX files of the Debian package ``dataset-fashion-mnist`` (``/usr/share/datasets/fashion-mnist``).
4. Nothing: a :class:`DataUnavailableError` naming the command that installs the Debian package (run for the
   user when ``install=True``, as root, with apt-get present).
"""

from __future__ import annotations

import gzip
import os
import shutil
import socket
import subprocess
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import torch
from torch import Tensor

CLASSES: tuple[str, ...] = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)

DEBIAN_PACKAGE = "dataset-fashion-mnist"
DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
INSTALL_COMMAND = f"apt-get install {DEBIAN_PACKAGE}"

# The four files of the data set, by role; each may be stored gzipped or plain.
FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}

# IDX type codes (the third byte of the magic number) and the numpy dtypes they stand for, big-endian.
_IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}

Log = Callable[[str], None]


class DataUnavailableError(RuntimeError):
    """No source of FashionMNIST worked; the message says what was tried and how to get the data."""


@dataclass
class FashionData:
    """FashionMNIST as uint8 images ``[N, 28, 28]`` and int64 labels ``[N]``, with where it came from."""

    train_images: Tensor
    train_labels: Tensor
    test_images: Tensor
    test_labels: Tensor
    source: str


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """An IDX file (gzipped when its name ends in ``.gz``) as a numpy array of its stored type and shape.

    Raises:
        ValueError: the file is not IDX (bad magic number, unknown type code, or a size that does not match
            its header).
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        raw = handle.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_TYPES:
        raise ValueError(f"{path} is not an IDX file (magic bytes {raw[:4]!r}).")
    dtype = np.dtype(_IDX_TYPES[raw[2]])
    ndim = raw[3]
    header = 4 + 4 * ndim
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) != expected:
        raise ValueError(f"{path}: header says shape {shape} ({expected} bytes in all) but the file has {len(raw)}.")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def find_idx_files(folder: str | os.PathLike[str]) -> dict[str, Path] | None:
    """The four FashionMNIST files in ``folder`` (plain preferred over ``.gz``), or ``None`` if any is missing."""
    folder = Path(folder)
    found: dict[str, Path] = {}
    for role, stem in FILES.items():
        for candidate in (folder / stem, folder / f"{stem}.gz"):
            if candidate.is_file():
                found[role] = candidate
                break
        else:
            return None
    return found


def load_idx_folder(folder: str | os.PathLike[str], source: str | None = None) -> FashionData:
    """FashionMNIST from the four IDX files in ``folder``.

    Raises:
        DataUnavailableError: a file is missing or the images and labels do not fit together.
    """
    files = find_idx_files(folder)
    if files is None:
        names = ", ".join(f"{stem}[.gz]" for stem in FILES.values())
        raise DataUnavailableError(f"{folder} does not hold the four FashionMNIST IDX files ({names}).")
    arrays = {role: torch.from_numpy(read_idx(path).copy()) for role, path in files.items()}
    for split in ("train", "test"):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if images.ndim != 3 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
            raise DataUnavailableError(
                f"{folder}: {split} images {tuple(images.shape)} and labels {tuple(labels.shape)} do not fit "
                "together (expected [N, H, W] and [N])."
            )
    return FashionData(
        train_images=arrays["train_images"].to(torch.uint8),
        train_labels=arrays["train_labels"].long(),
        test_images=arrays["test_images"].to(torch.uint8),
        test_labels=arrays["test_labels"].long(),
        source=source or f"IDX files in {folder}",
    )


def default_cache() -> Path:
    """Where torchvision keeps its copy: ``$DEEPSCOPE_DATA``, else ``~/.cache/deepscope``."""
    return Path(os.environ.get("DEEPSCOPE_DATA") or Path.home() / ".cache" / "deepscope")


@contextmanager
def socket_timeout(seconds: float) -> Iterator[None]:
    """Every new socket times out after ``seconds`` inside the block (torchvision's download has no timeout)."""
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)


def resolves(host: str, timeout: float) -> bool:
    """Whether ``host``'s name resolves within ``timeout`` seconds.

    Name lookups ignore socket timeouts and can take half a minute on a machine without network (resolver
    retries), so the lookup runs in a daemon thread that is simply abandoned if it is too slow.
    """
    answer: list[bool] = []

    def lookup() -> None:
        try:
            socket.getaddrinfo(host, 80)
            answer.append(True)
        except OSError:
            answer.append(False)

    thread = threading.Thread(target=lookup, name=f"resolve {host}", daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(answer and answer[0])


def load_torchvision(root: Path, download: bool, timeout: float = 5.0) -> FashionData:
    """FashionMNIST through ``torchvision.datasets.FashionMNIST`` under ``root``.

    Raises:
        ImportError: torchvision is not installed.
        RuntimeError, OSError: the files are absent and could not be downloaded: the mirror's name does not
            resolve in ``timeout`` seconds, or torchvision failed (it wraps URL errors in a RuntimeError once
            every mirror has failed).
    """
    from torchvision import datasets

    raw = root / "FashionMNIST" / "raw"
    if download and not all((raw / stem).is_file() for stem in FILES.values()):
        host = urlparse(datasets.FashionMNIST.mirrors[0]).hostname or ""
        if not resolves(host, timeout):
            raise OSError(f"{host} could not be resolved (waited at most {timeout:g} s)")
    with socket_timeout(timeout):
        train = datasets.FashionMNIST(str(root), train=True, download=download)
        test = datasets.FashionMNIST(str(root), train=False, download=download)
    return FashionData(
        train_images=train.data.to(torch.uint8),
        train_labels=train.targets.long(),
        test_images=test.data.to(torch.uint8),
        test_labels=test.targets.long(),
        source=f"torchvision.datasets.FashionMNIST (files in {Path(root) / 'FashionMNIST' / 'raw'})",
    )


def install_debian_package(log: Log) -> bool:
    """Run ``apt-get install -y dataset-fashion-mnist`` if we are root and apt-get exists; whether it worked."""
    apt = shutil.which("apt-get")
    if apt is None or not hasattr(os, "geteuid") or os.geteuid() != 0:
        return False
    log(f"running as root: installing the data set with `{apt} install -y {DEBIAN_PACKAGE}` ...")
    result = subprocess.run([apt, "install", "-y", DEBIAN_PACKAGE], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        tail = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["(no output)"]
        log(f"apt-get failed ({result.returncode}): {tail[0]}")
        return False
    return True


def load_fashion_mnist(
    folder: str | os.PathLike[str] | None = None,
    cache: str | os.PathLike[str] | None = None,
    offline: bool = False,
    install: bool = False,
    timeout: float = 5.0,
    debian_dir: str | os.PathLike[str] | None = None,
    log: Log = print,
) -> FashionData:
    """FashionMNIST from the first source that works (see the module's docstring); ``log`` hears each step.

    Args:
        folder: a folder of the four IDX files to use instead of any other source.
        cache: torchvision's root folder (default :func:`default_cache`).
        offline: never download; use torchvision's files only if they are already in ``cache``.
        install: when every source fails, install the Debian package if running as root with apt-get.
        timeout: seconds a network connection may take before the download counts as failed.
        debian_dir: where the Debian package keeps its files (default ``/usr/share/datasets/fashion-mnist``).

    Raises:
        DataUnavailableError: no source worked; the message names each attempt and the install command.
    """
    if folder is not None:
        return load_idx_folder(folder)
    root = Path(cache) if cache is not None else default_cache()
    debian = Path(debian_dir) if debian_dir is not None else DEBIAN_DIR
    tried: list[str] = []
    try:
        data = load_torchvision(root, download=not offline, timeout=timeout)
    except ImportError:
        tried.append("torchvision is not installed (pip install 'deepscope[vision]')")
    except (RuntimeError, OSError) as error:
        if offline:
            tried.append(f"torchvision's FashionMNIST files are not in {root} and offline mode forbids downloading")
        else:
            last = str(error).strip().splitlines()[-1] if str(error).strip() else type(error).__name__
            tried.append(f"torchvision could not download FashionMNIST into {root} (no network?): {last.strip()}")
    else:
        return data
    log(f"{tried[-1]}; falling back to the Debian package's files in {debian}.")
    if find_idx_files(debian) is None and install and install_debian_package(log):
        log(f"installed {DEBIAN_PACKAGE}.")
    if find_idx_files(debian) is not None:
        return load_idx_folder(debian, source=f"Debian package {DEBIAN_PACKAGE} (IDX files in {debian})")
    tried.append(f"the Debian package's files are not in {debian}")
    raise DataUnavailableError(
        "FashionMNIST is not available: "
        + "; ".join(tried)
        + f". Install it with `{INSTALL_COMMAND}` (as root, or with sudo), connect to the network, "
        "or pass --data DIR with the four IDX files."
    )


MEAN, STD = 0.2860, 0.3530  # FashionMNIST's training-set pixel mean and standard deviation, in [0, 1] units
BACKGROUND = (0.0 - MEAN) / STD  # the black background (pixel 0) as a network input


def to_inputs(images: Tensor) -> Tensor:
    """uint8 images ``[N, 28, 28]`` as normalised float inputs ``[N, 1, 28, 28]`` (FashionMNIST's mean and std)."""
    return (images.float().div(255).unsqueeze(1) - MEAN) / STD
