"""Resource probes: what a worker can offer, so it only leases tasks it can run.

A probe is any callable returning measurements of the machine::

    {"gpu_memory_gb": 7.5, "gpu_utilization": 35.0, ...}

``gpu_memory_gb`` is the *free* memory of the best GPU in GB and
``gpu_utilization`` its current busy percentage (0..100). Other keys are
custom resources (``{"cpu": 8}``) and are passed through unchanged.

A task states its needs as ``TaskSpec.resources``::

    {"min_gpu_memory_gb": 0.5, "min_gpu_utilization": 10}

and ``Task.fits(capacity)`` is true when every need is at most the capacity
of the same name. ``capacity()`` translates measurements into that capacity:

* ``min_gpu_memory_gb`` <- ``gpu_memory_gb`` (free GB);
* ``min_gpu_utilization`` <- ``100 - gpu_utilization``: the field is
  read as *the minimum free GPU capacity in percent* a task needs, so a task
  with ``min_gpu_utilization=10`` runs only where the GPU is at most 90 % busy;
* any other key ``k`` is offered both as ``k`` and ``min_k``.

The default probe, ``gpu_probe``, asks NVML (``pip install nvidia-ml-py``,
imported as ``pynvml``) and reports no GPU when NVML is missing or fails.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable, Mapping

__all__ = ["NO_GPU", "Probe", "capacity", "gpu_probe", "no_gpu_probe"]

logger = logging.getLogger("resile.worker")

Probe = Callable[[], Mapping[str, float]]

NO_GPU: dict[str, float] = {"gpu_memory_gb": 0.0, "gpu_utilization": 100.0}

_nvml_lock = threading.Lock()
_nvml_ready: bool | None = None  # None: not tried yet


def no_gpu_probe() -> dict[str, float]:
    """A probe for machines without a GPU: no free GPU memory, no free GPU capacity."""
    return dict(NO_GPU)


def _nvml_init() -> bool:
    global _nvml_ready
    with _nvml_lock:
        if _nvml_ready is None:
            try:
                import pynvml  # type: ignore[import-not-found,unused-ignore]

                pynvml.nvmlInit()
                _nvml_ready = True
            except Exception as exc:  # ImportError, NVMLError: no driver, no GPU
                logger.debug("resile: NVML unavailable (%s); the worker offers no GPU", exc)
                _nvml_ready = False
        return _nvml_ready


def gpu_probe() -> dict[str, float]:
    """Measure the GPU with the most free memory through NVML (``nvidia-ml-py``).

    Returns ``{"gpu_memory_gb": free GB, "gpu_utilization": busy %}`` of the
    GPU with the most free memory; ``NO_GPU`` when ``pynvml`` is not
    installed, NVML cannot start, or there is no device. Never raises.
    """
    if not _nvml_init():
        return no_gpu_probe()
    try:
        import pynvml

        best: dict[str, float] | None = None
        for i in range(int(pynvml.nvmlDeviceGetCount())):
            handle = pynvml.nvmlDeviceGetHandleByIndex(i)
            free_gb = float(pynvml.nvmlDeviceGetMemoryInfo(handle).free) / 1024**3
            util = float(pynvml.nvmlDeviceGetUtilizationRates(handle).gpu)
            if best is None or free_gb > best["gpu_memory_gb"]:
                best = {"gpu_memory_gb": free_gb, "gpu_utilization": util}
        return best if best is not None else no_gpu_probe()
    except Exception as exc:
        logger.warning("resile: GPU probe failed (%s); offering no GPU this time", exc)
        return no_gpu_probe()


def _number(value: object, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise ValueError(f"resource probe: {key!r} must be a number, got {value!r}")
    return float(value)


def capacity(measured: Mapping[str, float]) -> dict[str, float]:
    """Translate a probe's measurements into the capacity ``Task.fits`` checks.

    Raises:
        ValueError: the probe returned something that is not a mapping of numbers.
    """
    if not isinstance(measured, Mapping):
        raise ValueError(f"resource probe must return a dict of numbers, got {measured!r}")
    out: dict[str, float] = {}
    for key, value in measured.items():
        number = _number(value, str(key))
        if key == "gpu_memory_gb":
            out["min_gpu_memory_gb"] = max(0.0, number)
        elif key == "gpu_utilization":
            out["min_gpu_utilization"] = max(0.0, 100.0 - number)
        else:
            out[str(key)] = number
            out[f"min_{key}"] = number
    return out
