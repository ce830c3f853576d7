"""One status line about the GPU(s) through nvidia-ml-py (``import pynvml``), or "no GPU"."""
from __future__ import annotations

import os

from textual import work
from textual.widgets import Static


def gpu_summary() -> str:
    """gpustat-style text: per device index, utilisation %, memory used/total GiB, and the memory of
    this console's runs if NVML lists them; "no GPU" without nvidia-ml-py or NVML."""
    try:
        import pynvml  # nvidia-ml-py, optional
    except ImportError:
        return "no GPU"
    try:
        pynvml.nvmlInit()
    except Exception:
        return "no GPU"
    try:
        parts = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            h = pynvml.nvmlDeviceGetHandleByIndex(i)
            util = pynvml.nvmlDeviceGetUtilizationRates(h).gpu
            mem = pynvml.nvmlDeviceGetMemoryInfo(h)
            ours = 0
            try:
                procs = pynvml.nvmlDeviceGetComputeRunningProcesses(h)
                ours = sum(int(p.usedGpuMemory or 0) for p in procs if p.pid != os.getpid())
            except Exception:
                pass
            parts.append(f"GPU{i} {util}% {mem.used / 2**30:.1f}/{mem.total / 2**30:.1f} GiB"
                         f" (processes {ours / 2**30:.1f} GiB)")
        return "  ".join(parts) or "no GPU"
    except Exception:
        return "no GPU"
    finally:
        try:
            pynvml.nvmlShutdown()
        except Exception:
            pass


class GpuLine(Static):
    """Refreshes :func:`gpu_summary` every ``interval`` s in a thread (off when ``enabled`` is False:
    tests and snapshots show a fixed "no GPU")."""

    def __init__(self, enabled: bool = True, interval: float = 2.0, **kwargs) -> None:
        super().__init__("no GPU", **kwargs)
        self.enabled = enabled
        self.interval = interval

    def on_mount(self) -> None:
        if self.enabled:
            self.poll()
            self.set_interval(self.interval, self.poll)

    @work(thread=True, exclusive=True, exit_on_error=False, group="gpu")
    def poll(self) -> None:
        text = gpu_summary()
        self.app.call_from_thread(self.update, text)
