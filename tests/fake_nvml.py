"""A faithful stand-in for the `pynvml` module, for tests on machines without a GPU.

`FakeNvml` is a real `ModuleType` whose functions have pynvml's names and signatures, raise
pynvml's own exception classes (`NVMLError(code)` maps to the same subclasses, because they
are the same classes) and return pynvml's own result types: the ctypes structs for
utilisation and memory, `nvmlFriendlyObject`s for process lists, milliwatts for power and
millijoules for energy. `tests/test_gpu_probe.py` checks the names and signatures against the
installed pynvml.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import pynvml


@dataclass
class FakeGpu:
    """One simulated GPU. Units are NVML's: bytes, percent, milliwatts, millijoules, MHz."""

    name: str = "NVIDIA H100 80GB HBM3"
    uuid: str = "GPU-2f6e1c4a-0000-4000-8000-000000000000"
    memory_total_bytes: int = 80 * 2**30
    memory_used_bytes: int = 2 * 2**30
    utilization_gpu: int = 50
    utilization_memory: int = 20
    power_mw: int = 300_000
    power_limit_mw: int = 700_000
    temperature_c: int = 45
    sm_clock_mhz: int = 1980
    architecture: int = pynvml.NVML_DEVICE_ARCH_HOPPER
    has_energy_counter: bool = True
    energy_mj: int = 5_000_000
    # (pid, usedGpuMemory) entries; usedGpuMemory None is what pynvml reports under WDDM.
    compute_processes: list[tuple[int, int | None]] = field(default_factory=list)
    graphics_processes: list[tuple[int, int | None]] = field(default_factory=list)
    # (pid, timeStamp in µs, smUtil %) samples NVML keeps for per-process utilisation.
    process_utilization: list[tuple[int, int, int]] = field(default_factory=list)
    # pynvml function names this GPU answers with NVML_ERROR_NOT_SUPPORTED (or another code).
    unsupported: set[str] = field(default_factory=set)
    errors: dict[str, int] = field(default_factory=dict)


class _Handle:
    """Opaque like pynvml's `c_nvmlDevice_t` pointer: callers only pass it back."""

    def __init__(self, index: int) -> None:
        self.index = index

    def __repr__(self) -> str:
        return f"<fake nvmlDevice {self.index}>"


class FakeNvml(ModuleType):
    """The pynvml functions jupyter_prov4ml uses, over a list of `FakeGpu`s.

    Switches: `init_error` (an NVML_ERROR_* code raised by nvmlInit), `legacy_bytes` (return
    C strings as bytes, as pynvml < 11.5 did), `fail_after(k, code)` (after k more device
    queries every query raises `code`, e.g. a GPU falling off the bus), `advance(seconds)`
    (time passes: each energy counter grows by its GPU's power × seconds). `wait_until` lets
    a test (or a cell) wait for what the reader did, e.g. two samples read or a fault raised,
    instead of for an amount of time.
    """

    def __init__(
        self,
        gpus: Sequence[FakeGpu] = (),
        *,
        driver_version: str = "550.54.15",
        cuda_driver_version: int = 12040,
        init_error: int | None = None,
        legacy_bytes: bool = False,
    ) -> None:
        super().__init__("pynvml")
        # Constants and the exception hierarchy are pynvml's own objects.
        for name in dir(pynvml):
            if name.startswith(("NVML_", "NVMLError")) or name == "NVMLLibraryMismatchError":
                setattr(self, name, getattr(pynvml, name))
        self.gpus = list(gpus)
        self.driver_version = driver_version
        self.cuda_driver_version = cuda_driver_version
        self.init_error = init_error
        self.legacy_bytes = legacy_bytes
        self.refcount = 0
        self.init_calls = 0
        self.shutdown_calls = 0
        self.calls: dict[str, int] = {}
        # Injected errors raised so far (by `fail_after` or a FakeGpu's `errors`).
        self.faults = 0
        # Notified at every call and every fault, for `wait_until`.
        self._changed = threading.Condition()
        self._fail_countdown: int | None = None
        self._fail_code = pynvml.NVML_ERROR_GPU_IS_LOST

    # --- test controls -------------------------------------------------------------------

    def fail_after(self, calls: int, code: int = pynvml.NVML_ERROR_GPU_IS_LOST) -> None:
        """After `calls` more device queries, every device query raises NVMLError(code)."""
        self._fail_countdown = calls
        self._fail_code = code

    def wait_until(self, condition: Callable[[FakeNvml], bool], timeout_s: float = 60.0) -> bool:
        """Block until `condition(self)` holds, checked after each NVML call (from any thread);
        False if it still does not after `timeout_s`, a bound only a hung reader reaches."""
        with self._changed:
            return self._changed.wait_for(lambda: condition(self), timeout_s)

    def advance(self, seconds: float) -> None:
        """Let time pass: each counter grows by power (mW) × seconds = millijoules."""
        for gpu in self.gpus:
            gpu.energy_mj += round(gpu.power_mw * seconds)

    # --- plumbing --------------------------------------------------------------------------

    def _string(self, value: str) -> Any:
        return value.encode() if self.legacy_bytes else value

    def _enter(self, function: str, handle: _Handle | None = None) -> FakeGpu | None:
        """Count the call and raise what real NVML would raise for it."""
        with self._changed:
            self.calls[function] = self.calls.get(function, 0) + 1
            self._changed.notify_all()
        if self.refcount == 0:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_UNINITIALIZED)
        if self._fail_countdown is not None and function.startswith("nvmlDevice"):
            if self._fail_countdown <= 0:
                raise self._fault(self._fail_code)
            self._fail_countdown -= 1
        if handle is None:
            return None
        if not isinstance(handle, _Handle) or not 0 <= handle.index < len(self.gpus):
            raise pynvml.NVMLError(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        gpu = self.gpus[handle.index]
        if function in gpu.errors:
            raise self._fault(gpu.errors[function])
        if function in gpu.unsupported:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)
        return gpu

    def _fault(self, code: int) -> pynvml.NVMLError:
        """The error an injected fault raises, counted in `faults`."""
        with self._changed:
            self.faults += 1
            self._changed.notify_all()
        return pynvml.NVMLError(code)

    def _gpu(self, function: str, handle: _Handle) -> FakeGpu:
        gpu = self._enter(function, handle)
        assert gpu is not None
        return gpu

    # --- the pynvml surface ----------------------------------------------------------------

    def nvmlInit(self) -> None:
        self.init_calls += 1
        if self.init_error is not None:
            raise pynvml.NVMLError(self.init_error)
        self.refcount += 1

    def nvmlShutdown(self) -> None:
        self.shutdown_calls += 1
        self._enter("nvmlShutdown")
        self.refcount -= 1

    def nvmlSystemGetDriverVersion(self) -> Any:
        self._enter("nvmlSystemGetDriverVersion")
        return self._string(self.driver_version)

    def nvmlSystemGetCudaDriverVersion(self) -> int:
        self._enter("nvmlSystemGetCudaDriverVersion")
        return self.cuda_driver_version

    def nvmlDeviceGetCount(self) -> int:
        self._enter("nvmlDeviceGetCount")
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> _Handle:
        self._enter("nvmlDeviceGetHandleByIndex")
        if not 0 <= index < len(self.gpus):
            raise pynvml.NVMLError(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        return _Handle(index)

    def nvmlDeviceGetHandleByUUID(self, uuid: str | bytes) -> _Handle:
        self._enter("nvmlDeviceGetHandleByUUID")
        text = uuid.decode() if isinstance(uuid, bytes) else uuid
        for index, gpu in enumerate(self.gpus):
            if gpu.uuid == text:
                return _Handle(index)
        raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_FOUND)

    def nvmlDeviceGetIndex(self, handle: _Handle) -> int:
        self._gpu("nvmlDeviceGetIndex", handle)
        return handle.index

    def nvmlDeviceGetUUID(self, handle: _Handle) -> Any:
        return self._string(self._gpu("nvmlDeviceGetUUID", handle).uuid)

    def nvmlDeviceGetName(self, handle: _Handle) -> Any:
        return self._string(self._gpu("nvmlDeviceGetName", handle).name)

    def nvmlDeviceGetMemoryInfo(self, handle: _Handle, version: int | None = None) -> Any:
        gpu = self._gpu("nvmlDeviceGetMemoryInfo", handle)
        if version:
            raise NotImplementedError("the fake models the v1 struct only")
        used = gpu.memory_used_bytes
        return pynvml.c_nvmlMemory_t(
            total=gpu.memory_total_bytes, free=gpu.memory_total_bytes - used, used=used
        )

    def nvmlDeviceGetEnforcedPowerLimit(self, handle: _Handle) -> int:
        return self._gpu("nvmlDeviceGetEnforcedPowerLimit", handle).power_limit_mw

    def nvmlDeviceGetArchitecture(self, device: _Handle) -> int:
        return self._gpu("nvmlDeviceGetArchitecture", device).architecture

    def nvmlDeviceGetTotalEnergyConsumption(self, handle: _Handle) -> int:
        gpu = self._gpu("nvmlDeviceGetTotalEnergyConsumption", handle)
        if not gpu.has_energy_counter:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)
        return gpu.energy_mj

    def nvmlDeviceGetUtilizationRates(self, handle: _Handle) -> Any:
        gpu = self._gpu("nvmlDeviceGetUtilizationRates", handle)
        return pynvml.c_nvmlUtilization_t(gpu=gpu.utilization_gpu, memory=gpu.utilization_memory)

    def nvmlDeviceGetPowerUsage(self, handle: _Handle) -> int:
        return self._gpu("nvmlDeviceGetPowerUsage", handle).power_mw

    def nvmlDeviceGetTemperature(self, handle: _Handle, sensor: int) -> int:
        gpu = self._gpu("nvmlDeviceGetTemperature", handle)
        if sensor != pynvml.NVML_TEMPERATURE_GPU:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        return gpu.temperature_c

    def nvmlDeviceGetClockInfo(self, handle: _Handle, type: int) -> int:
        gpu = self._gpu("nvmlDeviceGetClockInfo", handle)
        if type != pynvml.NVML_CLOCK_SM:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)
        return gpu.sm_clock_mhz

    def nvmlDeviceGetComputeRunningProcesses(self, handle: _Handle) -> list[Any]:
        gpu = self._gpu("nvmlDeviceGetComputeRunningProcesses", handle)
        return _processes(gpu.compute_processes)

    def nvmlDeviceGetGraphicsRunningProcesses(self, handle: _Handle) -> list[Any]:
        gpu = self._gpu("nvmlDeviceGetGraphicsRunningProcesses", handle)
        return _processes(gpu.graphics_processes)

    def nvmlDeviceGetProcessUtilization(self, handle: _Handle, timeStamp: int) -> list[Any]:
        gpu = self._gpu("nvmlDeviceGetProcessUtilization", handle)
        return _utilization_samples(gpu.process_utilization, timeStamp)


def _utilization_samples(entries: Sequence[tuple[int, int, int]], since_us: int) -> list[Any]:
    """What real NVML returns: the raw ctypes structs (not friendly objects) of the samples
    newer than `since_us`; with none, pynvml raises NVMLError(NOT_FOUND) (driver behaviour)."""
    newer = [
        pynvml.c_nvmlProcessUtilizationSample_t(
            pid=pid, timeStamp=stamp, smUtil=sm, memUtil=0, encUtil=0, decUtil=0
        )
        for pid, stamp, sm in entries
        if stamp > since_us
    ]
    if not newer:
        raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_FOUND)
    return newer


def _processes(entries: Sequence[tuple[int, int | None]]) -> list[Any]:
    """Built the way pynvml builds them: a ctypes struct turned into a friendly object."""
    result = []
    for pid, used in entries:
        struct = pynvml.c_nvmlProcessInfo_v3_t(
            pid=pid,
            usedGpuMemory=0 if used is None else used,
            gpuInstanceId=0xFFFFFFFF,
            computeInstanceId=0xFFFFFFFF,
        )
        obj = pynvml.nvmlStructToFriendlyObject(struct)
        if used is None:
            obj.usedGpuMemory = None
        result.append(obj)
    return result


def own_pid() -> int:
    """This test process's PID, as NVML would list it."""
    return os.getpid()
