"""What the host has: its GPUs through NVML when an NVIDIA driver is present, else none (a CPU-only host).

NVML (nvidia-ml-py) reads the real model, memory and encoder capacity; without a driver the agent still runs, with
software encoding, and reports no GPUs.
"""

from __future__ import annotations

import dataclasses
import os

import structlog

log = structlog.get_logger(__name__)


@dataclasses.dataclass(frozen=True, slots=True)
class GpuInfo:
    model: str
    memory_bytes: int
    encoder_engines: int
    uuid: str


def gpus() -> list[GpuInfo]:
    """The host's NVIDIA GPUs; an empty list when NVML or the driver is absent."""
    try:
        import pynvml
    except ImportError:
        return []
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        log.info("no NVIDIA driver; running without GPU inventory", reason=str(exc))
        return []
    try:
        out = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(i)
            name = pynvml.nvmlDeviceGetName(handle)
            uuid = pynvml.nvmlDeviceGetUUID(handle)
            memory = pynvml.nvmlDeviceGetMemoryInfo(handle).total
            out.append(
                GpuInfo(
                    model=name.decode() if isinstance(name, bytes) else str(name),
                    memory_bytes=int(memory),
                    encoder_engines=_encoder_engines(pynvml, handle),
                    uuid=uuid.decode() if isinstance(uuid, bytes) else str(uuid),
                )
            )
        return out
    finally:
        pynvml.nvmlShutdown()


def _encoder_engines(pynvml: object, handle: object) -> int:
    """NVML gives no engine count, only whether H.264 encoding capacity exists (a percentage): report 1 engine
    when it does, 0 when not (data-centre GPUs without NVENC answer 0 or refuse)."""
    try:
        capacity = pynvml.nvmlDeviceGetEncoderCapacity(handle, pynvml.NVML_ENCODER_QUERY_H264)  # type: ignore[attr-defined]
    except Exception:
        return 0
    return 1 if capacity > 0 else 0


def utilisation() -> tuple[float, float]:
    """(cpu, gpu) load in 0..1: CPU from the load average per core, GPU from NVML's busiest device."""
    cpu = min(os.getloadavg()[0] / (os.cpu_count() or 1), 1.0)
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception:
        return cpu, 0.0
    try:
        busiest = 0
        for i in range(pynvml.nvmlDeviceGetCount()):
            rates = pynvml.nvmlDeviceGetUtilizationRates(pynvml.nvmlDeviceGetHandleByIndex(i))
            busiest = max(busiest, rates.gpu)
        return cpu, busiest / 100
    except Exception:
        return cpu, 0.0
    finally:
        pynvml.nvmlShutdown()
