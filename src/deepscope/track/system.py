"""System metrics of a run (``ds.Run(..., system=True)``): CPU, memory and GPU use, sampled in a background thread.

Every ``interval`` seconds a daemon thread reads (:class:`SystemReader`):

==================================================  ==============================================================
tag                                                 value
==================================================  ==============================================================
``system/cpu_percent``                              the machine's CPU use, 0-100 (% of all its cores)
``system/process_cpu_percent``                      this process's CPU use, 0-100 per core (400 = four cores busy)
``system/memory_percent``                           the machine's memory in use, %
``system/process_rss_mib``                          this process's resident memory, MiB
``system/gpu<i>/memory_allocated_mib``              memory held by tensors on CUDA device ``i``, MiB
``system/gpu<i>/memory_reserved_mib``               memory PyTorch's caching allocator holds on device ``i``, MiB
``system/gpu<i>/utilization_percent``               device ``i``'s utilisation, % (``torch.cuda.utilization``)
==================================================  ==============================================================

The GPU tags appear once the training process has initialised CUDA itself (the sampler never does: a CUDA context
costs memory on every device and makes the process unsafe to fork). The utilisation is skipped for good when
``torch.cuda.utilization`` fails (it needs NVIDIA's ``pynvml``).

Each sample is logged with ``run.log`` at step = whole seconds the run has been open (summed over resumes), so
the step axis reads as time. A failing sample warns once and stops the sampler; training goes on.
"""

from __future__ import annotations

import math
import threading
import time
import warnings
from collections.abc import Callable
from typing import Any

import torch

from ..errors import BadInputError

_MIB = 1024.0 * 1024.0


class SystemReader:
    """Reads the machine's and this process's CPU and memory use (psutil) and each CUDA device's memory and
    utilisation (``torch.cuda``, once the process has initialised CUDA).

    Raises:
        ImportError: psutil is not installed (``pip install 'deepscope[system]'``).
    """

    def __init__(self) -> None:
        try:
            import psutil
        except ImportError as error:
            raise ImportError("system metrics need psutil: pip install 'deepscope[system]'") from error
        self._psutil: Any = psutil
        self._process = psutil.Process()
        # CPU use is measured between two calls: this first one starts the clock for the first sample.
        psutil.cpu_percent(None)
        self._process.cpu_percent(None)
        self._utilization = True

    def read(self) -> dict[str, float]:
        """One sample: tag -> value (see the module's table)."""
        psutil, process = self._psutil, self._process
        values = {
            "system/cpu_percent": float(psutil.cpu_percent(None)),
            "system/process_cpu_percent": float(process.cpu_percent(None)),
            "system/memory_percent": float(psutil.virtual_memory().percent),
            "system/process_rss_mib": process.memory_info().rss / _MIB,
        }
        if torch.cuda.is_initialized():
            for device in range(torch.cuda.device_count()):
                values[f"system/gpu{device}/memory_allocated_mib"] = torch.cuda.memory_allocated(device) / _MIB
                values[f"system/gpu{device}/memory_reserved_mib"] = torch.cuda.memory_reserved(device) / _MIB
                if self._utilization:
                    try:
                        values[f"system/gpu{device}/utilization_percent"] = float(torch.cuda.utilization(device))
                    except Exception:  # no pynvml, or a driver without it: a known gap, not a failure
                        self._utilization = False
        return values


class SystemMonitor:
    """Calls ``log(read(), step)`` every ``interval`` seconds in a daemon thread until :meth:`stop`.

    ``step`` is ``start``'s ``first_step`` plus the whole seconds since :meth:`start`. The first sample is taken
    one interval after the start (CPU use needs an interval to be measured over). An exception from ``read`` or
    ``log`` is reported once, as a ``RuntimeWarning``, and ends the sampling; it never reaches the thread that
    trains.
    """

    def __init__(
        self,
        log: Callable[[dict[str, float], int], None],
        interval: float,
        read: Callable[[], dict[str, float]],
    ) -> None:
        number = isinstance(interval, int | float) and not isinstance(interval, bool)
        if not number or not math.isfinite(interval) or interval <= 0:
            raise BadInputError(f"system_interval is a number of seconds > 0, e.g. 10, not {interval!r}")
        self.interval = float(interval)
        self._log = log
        self._read = read
        self._first_step = 0
        self._started = 0.0
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._sample, name="deepscope-system-metrics", daemon=True)

    def start(self, first_step: int = 0) -> None:
        self._first_step = first_step
        self._started = time.monotonic()
        self._thread.start()

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def stop(self, timeout: float = 10.0) -> None:
        """End the sampling and wait (up to ``timeout`` seconds) for a sample being logged: none is logged after."""
        self._stopping.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)
            if self._thread.is_alive():
                warnings.warn(
                    f"the system-metrics sampler did not stop within {timeout} s; its next sample is dropped",
                    RuntimeWarning,
                    stacklevel=2,
                )

    def _sample(self) -> None:
        while not self._stopping.wait(self.interval):
            try:
                values = self._read()
                if self._stopping.is_set():
                    return
                self._log(values, self._first_step + int(time.monotonic() - self._started))
            except Exception as error:
                if not self._stopping.is_set():
                    warnings.warn(
                        f"system metrics stopped after an error; training goes on without them: "
                        f"{type(error).__name__}: {error}",
                        RuntimeWarning,
                        stacklevel=1,
                    )
                return
