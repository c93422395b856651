"""Read-only NVIDIA GPU probe: the only module that imports `pynvml`.

`open_gpu_probe()` starts NVML once, when called (never at import), and returns a `GpuProbe`
for the GPUs this process may use, as `CUDA_VISIBLE_DEVICES` selects them, or a `NullGpu`
saying why there is none. Only `nvmlDeviceGet*` / `nvmlSystemGet*` queries are made: nothing
here changes a GPU setting.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import re
import threading
from collections import Counter
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from types import ModuleType, TracebackType
from typing import Any, Protocol

__all__ = [
    "GpuInfo",
    "GpuProbe",
    "GpuProcessUse",
    "GpuReader",
    "GpuSample",
    "GpuUnavailable",
    "NullGpu",
    "open_gpu_probe",
]

_INDEX = re.compile(r"-?\d+")


class GpuUnavailable(Exception):
    """A GPU stopped answering NVML during a run (lost, reset, or its driver went away)."""


@dataclass(frozen=True, slots=True)
class GpuInfo:
    """Static facts about one visible GPU, read once when the probe opens.

    `index` is the GPU's position among those this process sees (what `cuda:N` names);
    `nvml_index` is NVML's physical index, which `nvidia-smi` shows.
    """

    index: int
    nvml_index: int
    uuid: str
    name: str
    memory_total_bytes: int
    driver_version: str
    cuda_driver_version: str | None
    power_limit_w: float | None
    architecture: str | None
    has_energy_counter: bool


@dataclass(frozen=True, slots=True)
class GpuProcessUse:
    """What one process of the kernel's tree uses of one GPU (None: not reported)."""

    pid: int
    memory_bytes: int | None
    sm_utilization_percent: float | None


@dataclass(frozen=True, slots=True)
class GpuSample:
    """One reading of one GPU; a field is None where this GPU or driver cannot report it."""

    index: int
    utilization_percent: float | None
    memory_utilization_percent: float | None
    memory_used_bytes: int | None
    power_w: float | None
    temperature_c: float | None
    sm_clock_mhz: float | None
    process_memory_bytes: int | None
    energy_mj: int | None
    # The kernel's process tree on this GPU (read when the sampler is given its pids): its
    # processes found in NVML's lists, and their totals. `device_level`: NVML lists processes
    # none of which this PID namespace can see (a container; NVML reports host PIDs), so the
    # totals are the whole device's figures, flagged as such.
    processes: tuple[GpuProcessUse, ...] = ()
    tree_memory_bytes: int | None = None
    tree_sm_utilization_percent: float | None = None
    device_level: bool = False

    def tree_columns(self) -> dict[str, float]:
        """The tree's figures as sample columns (none when the tree was not read)."""
        if self.tree_memory_bytes is None and self.tree_sm_utilization_percent is None:
            return {}
        prefix = f"gpu{self.index}_"
        values = {
            prefix + "tree_memory_bytes": _number(self.tree_memory_bytes),
            prefix + "tree_sm_utilization_percent": _number(self.tree_sm_utilization_percent),
            prefix + "device_level": 1.0 if self.device_level else 0.0,
        }
        for use in self.processes:
            values[f"proc{use.pid}_gpu{self.index}_memory_bytes"] = _number(use.memory_bytes)
            values[f"proc{use.pid}_gpu{self.index}_sm_utilization_percent"] = _number(
                use.sm_utilization_percent
            )
        return values


def _number(value: float | None) -> float:
    return math.nan if value is None else float(value)


class GpuReader(Protocol):
    """What callers may rely on, whether or not a GPU is there."""

    @property
    def devices(self) -> tuple[GpuInfo, ...]:
        """Static facts of each visible GPU, in CUDA's order."""
        ...

    @property
    def available(self) -> bool:
        """Whether reads can still return samples."""
        ...

    def describe(self) -> str:
        """One line for people: what GPUs there are, or why there are none."""
        ...

    def read(self, pids: Collection[int] | None = None) -> tuple[GpuSample, ...]:
        """One sample per visible GPU; with `pids` (the kernel's process tree), also what
        those processes use of each GPU."""
        ...

    def energy_mj(self) -> tuple[int | None, ...]:
        """Each GPU's cumulative energy counter in millijoules, None where it has none."""
        ...

    def close(self) -> None:
        """Release NVML; later reads return nothing."""
        ...


class NullGpu:
    """The GPU reader when no NVIDIA GPU can be used: reads nothing and says why."""

    __slots__ = ("_reason",)

    def __init__(self, reason: str) -> None:
        self._reason = reason

    @property
    def reason(self) -> str:
        """Why there is no GPU to read."""
        return self._reason

    @property
    def devices(self) -> tuple[GpuInfo, ...]:
        """No devices."""
        return ()

    @property
    def available(self) -> bool:
        """Always False."""
        return False

    def describe(self) -> str:
        """`no NVIDIA GPU (<reason>)`."""
        return f"no NVIDIA GPU ({self._reason})"

    def read(self, pids: Collection[int] | None = None) -> tuple[GpuSample, ...]:
        """No samples."""
        return ()

    def energy_mj(self) -> tuple[int | None, ...]:
        """No counters."""
        return ()

    def close(self) -> None:
        """Nothing to release."""

    def __enter__(self) -> NullGpu:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"NullGpu(reason={self._reason!r})"


@dataclass(slots=True)
class _Device:
    info: GpuInfo
    handle: object
    # Queries this GPU answered with NotSupported/NoPermission: asking again every tick would
    # only cost time (up to ~0.4 ms a query on old GPUs) for the same answer.
    unsupported: set[str] = field(default_factory=set)
    # The newest per-process utilisation sample read (NVML's µs timestamp): the next query
    # asks only for newer ones.
    utilization_seen_us: int = 0


def _visible_pid(pid: int) -> bool:
    """Whether `pid` names a process in this PID namespace."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return True
    return True


class GpuProbe:
    """Reads the visible NVIDIA GPUs through an initialised NVML; made by `open_gpu_probe`.

    Thread-safe, because the sampler thread reads samples while the recorder may read the
    energy counters at a window's edges. After a GPU is lost, or after `close()`, `read()`
    returns () and `energy_mj()` returns None for every GPU.
    """

    def __init__(self, nvml: ModuleType, devices: Sequence[tuple[GpuInfo, object]]) -> None:
        self._nvml = nvml
        self._devices = tuple(_Device(info, handle) for info, handle in devices)
        self._infos = tuple(info for info, _ in devices)
        self._unsupported = _unsupported_errors(nvml)
        self._lock = threading.Lock()
        self._dead = False
        self._closed = False

    @property
    def devices(self) -> tuple[GpuInfo, ...]:
        """Static facts of each visible GPU, in CUDA's order."""
        return self._infos

    @property
    def available(self) -> bool:
        """True until a GPU is lost or the probe is closed."""
        return not self._dead and bool(self._devices)

    def describe(self) -> str:
        """Counts of GPU models, e.g. `2× NVIDIA H100 80GB HBM3`."""
        counts = Counter(info.name for info in self._infos)
        text = ", ".join(f"{count}× {name}" for name, count in counts.items())
        if self._dead and not self._closed:
            text += " (stopped answering NVML)"
        return text

    def read(self, pids: Collection[int] | None = None) -> tuple[GpuSample, ...]:
        """One sample per visible GPU, or () once the probe is closed or a GPU was lost;
        with `pids`, each sample also says what those processes use of its GPU.

        Raises `GpuUnavailable`, once, when a GPU stops answering NVML.
        """
        with self._lock:
            if self._dead:
                return ()
            pid = os.getpid()
            samples = []
            for device in self._devices:
                try:
                    memory = self._memory_by_pid(device)
                    sample = self._sample(device, pid, memory)
                    if pids is not None:
                        sample = self._tree_use(device, sample, memory, frozenset(pids))
                    samples.append(sample)
                except self._nvml.NVMLError as err:
                    raise self._lose(device, err) from err
            return tuple(samples)

    def energy_mj(self) -> tuple[int | None, ...]:
        """Each GPU's cumulative energy counter (mJ since the driver loaded), None without one.

        Raises `GpuUnavailable`, once, when a GPU stops answering NVML.
        """
        with self._lock:
            if self._dead:
                return (None,) * len(self._devices)
            readings = []
            for device in self._devices:
                try:
                    readings.append(self._energy(device))
                except self._nvml.NVMLError as err:
                    raise self._lose(device, err) from err
            return tuple(readings)

    def close(self) -> None:
        """Shut NVML down (once); later reads return nothing."""
        with self._lock:
            self._dead = True
            if self._closed:
                return
            self._closed = True
            # A failure here means the driver is already gone (a lost GPU, an unloaded module):
            # nothing is left to release, and closing must not fail the kernel's shutdown.
            with contextlib.suppress(self._nvml.NVMLError):
                self._nvml.nvmlShutdown()

    def __enter__(self) -> GpuProbe:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"GpuProbe({self.describe()!r}, available={self.available})"

    def _lose(self, device: _Device, err: BaseException) -> GpuUnavailable:
        self._dead = True
        info = device.info
        return GpuUnavailable(
            f"GPU {info.index} ({info.name}, {info.uuid}) stopped answering NVML: {err}"
        )

    def _query(self, device: _Device, name: str, query: Callable[..., Any], *args: object) -> Any:
        """`query(handle, *args)`, or None where this GPU does not support it."""
        if name in device.unsupported:
            return None
        try:
            return query(device.handle, *args)
        except self._unsupported:
            device.unsupported.add(name)
            return None

    def _energy(self, device: _Device) -> int | None:
        if not device.info.has_energy_counter:
            return None
        value = self._query(device, "energy", self._nvml.nvmlDeviceGetTotalEnergyConsumption)
        return None if value is None else int(value)

    def _sample(
        self, device: _Device, pid: int, by_pid: Mapping[int, int | None] | None
    ) -> GpuSample:
        nvml = self._nvml
        rates = self._query(device, "utilization", nvml.nvmlDeviceGetUtilizationRates)
        memory = self._query(device, "memory", nvml.nvmlDeviceGetMemoryInfo)
        power_mw = self._query(device, "power", nvml.nvmlDeviceGetPowerUsage)
        temperature = self._query(
            device, "temperature", nvml.nvmlDeviceGetTemperature, nvml.NVML_TEMPERATURE_GPU
        )
        clock = self._query(device, "sm_clock", nvml.nvmlDeviceGetClockInfo, nvml.NVML_CLOCK_SM)
        return GpuSample(
            index=device.info.index,
            utilization_percent=None if rates is None else float(rates.gpu),
            memory_utilization_percent=None if rates is None else float(rates.memory),
            memory_used_bytes=None if memory is None else int(memory.used),
            power_w=None if power_mw is None else power_mw / 1000.0,
            temperature_c=None if temperature is None else float(temperature),
            sm_clock_mhz=None if clock is None else float(clock),
            # NVML reports host PIDs: inside a container without the host's PID namespace our
            # process is not found and this reads 0 (the tree's figures flag that case).
            process_memory_bytes=None if by_pid is None else by_pid.get(pid, 0),
            energy_mj=self._energy(device),
        )

    def _tree_use(
        self,
        device: _Device,
        sample: GpuSample,
        memory: Mapping[int, int | None] | None,
        pids: frozenset[int],
    ) -> GpuSample:
        """`sample` with the tree's use of `device`: memory from the running-process lists,
        SM utilisation from `nvmlDeviceGetProcessUtilization` (the latest sample per pid)."""
        utilization = self._utilization_by_pid(device)
        if memory is None and utilization is None:
            return sample
        listed = set(memory or ()) | set(utilization or ())
        ours = sorted(listed & pids)
        uses = tuple(
            GpuProcessUse(
                pid,
                None if memory is None else memory.get(pid),
                None if utilization is None else utilization.get(pid),
            )
            for pid in ours
        )
        if not ours and listed and not any(_visible_pid(other) for other in listed):
            # Host PIDs seen from inside a container: the device's own figures, flagged.
            return dataclasses.replace(
                sample,
                tree_memory_bytes=sample.memory_used_bytes,
                tree_sm_utilization_percent=sample.utilization_percent,
                device_level=True,
            )
        known_memory = [use.memory_bytes for use in uses if use.memory_bytes is not None]
        known_sm = [
            use.sm_utilization_percent for use in uses if use.sm_utilization_percent is not None
        ]
        return dataclasses.replace(
            sample,
            processes=uses,
            tree_memory_bytes=None if memory is None else sum(known_memory),
            tree_sm_utilization_percent=None if utilization is None else min(100.0, sum(known_sm)),
        )

    def _memory_by_pid(self, device: _Device) -> dict[int, int | None] | None:
        """GPU memory per pid listed on `device` (compute and graphics, each MIG instance
        once); None when neither list can be read."""
        nvml = self._nvml
        compute = self._query(
            device, "compute_processes", nvml.nvmlDeviceGetComputeRunningProcesses
        )
        graphics = self._query(
            device, "graphics_processes", nvml.nvmlDeviceGetGraphicsRunningProcesses
        )
        if compute is None and graphics is None:
            return None
        per_instance: dict[tuple[int, object, object], int | None] = {}
        for process in (*(compute or ()), *(graphics or ())):
            key = (
                int(process.pid),
                getattr(process, "gpuInstanceId", None),
                getattr(process, "computeInstanceId", None),
            )
            used = process.usedGpuMemory
            known = per_instance.get(key)
            per_instance[key] = used if known is None else max(known, used or 0)
        by_pid: dict[int, int | None] = {}
        for (pid, _, _), used in per_instance.items():
            if used is None:
                by_pid.setdefault(pid, None)
            else:
                by_pid[pid] = (by_pid.get(pid) or 0) + int(used)
        return by_pid

    def _utilization_by_pid(self, device: _Device) -> dict[int, float] | None:
        """The latest SM utilisation per pid since the previous read; None where this GPU
        cannot say. NVML answers NotFound when no process ran in the interval."""
        if "process_utilization" in device.unsupported:
            return None
        try:
            found = self._nvml.nvmlDeviceGetProcessUtilization(
                device.handle, device.utilization_seen_us
            )
        except self._unsupported:
            device.unsupported.add("process_utilization")
            return None
        except self._nvml.NVMLError_NotFound:
            return {}
        latest: dict[int, tuple[int, float]] = {}
        for entry in found:
            stamp = int(entry.timeStamp)
            device.utilization_seen_us = max(device.utilization_seen_us, stamp)
            pid = int(entry.pid)
            if pid not in latest or latest[pid][0] <= stamp:
                latest[pid] = (stamp, float(entry.smUtil))
        return {pid: value for pid, (_, value) in latest.items()}


def open_gpu_probe(
    nvml: ModuleType | None = None, environ: Mapping[str, str] | None = None
) -> GpuProbe | NullGpu:
    """Start NVML and open the GPUs this process may use; never raises.

    `nvml` replaces the `pynvml` module (tests pass a fake); `environ` replaces `os.environ`.
    CUDA_VISIBLE_DEVICES is honoured as CUDA reads it (see `_select_handles`); CUDA numbers
    GPUs fastest-first unless CUDA_DEVICE_ORDER=PCI_BUS_ID, so on a node with mixed GPU models
    an index may name a different GPU for CUDA than for NVML, which always numbers by PCI bus.
    Returns a `NullGpu` with the reason when pynvml is missing, NVML does not start (no
    driver, no library) or no GPU is left visible.
    """
    env = os.environ if environ is None else environ
    if nvml is None:
        try:
            import pynvml
        except ImportError as err:
            return NullGpu(f"pynvml is not installed: {err}")
        nvml = pynvml
    try:
        nvml.nvmlInit()
    except nvml.NVMLError as err:
        return NullGpu(f"NVML did not start: {err}")
    except OSError as err:
        return NullGpu(f"NVML library could not be loaded: {err}")
    spec = env.get("CUDA_VISIBLE_DEVICES")
    try:
        devices = _visible_devices(nvml, spec)
    except nvml.NVMLError as err:
        _shutdown(nvml)
        return NullGpu(f"NVML failed while listing GPUs: {err}")
    if not devices:
        _shutdown(nvml)
        if spec is None:
            return NullGpu("NVML lists no GPU")
        return NullGpu(f"CUDA_VISIBLE_DEVICES={spec!r} leaves no GPU visible")
    return GpuProbe(nvml, devices)


def _shutdown(nvml: ModuleType) -> None:
    # Only reached while giving up on NVML already; the NullGpu carries the first error.
    with contextlib.suppress(nvml.NVMLError):
        nvml.nvmlShutdown()


def _unsupported_errors(nvml: ModuleType) -> tuple[type[BaseException], ...]:
    """Errors that mean "this GPU or driver cannot answer this query", not "the GPU is gone"."""
    errors: list[type[BaseException]] = [nvml.NVMLError_NotSupported, nvml.NVMLError_NoPermission]
    # FunctionNotFound: a driver older than the binding. NVMLLibraryMismatchError (not an
    # NVMLError, and absent from old pynvml) is how pynvml's unversioned process queries say
    # the same thing.
    for name in ("NVMLError_FunctionNotFound", "NVMLLibraryMismatchError"):
        error = getattr(nvml, name, None)
        if isinstance(error, type) and issubclass(error, BaseException):
            errors.append(error)
    return tuple(errors)


def _text(value: object) -> str:
    """pynvml before 11.5 returned C strings as bytes."""
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)


def _optional(nvml: ModuleType, query: Callable[..., Any], *args: object) -> Any:
    """A static fact that some GPUs or drivers lack: None instead of an error."""
    try:
        return query(*args)
    except (nvml.NVMLError, *_unsupported_errors(nvml)):
        return None


def _architecture_name(nvml: ModuleType, value: object) -> str | None:
    for name in dir(nvml):
        if name.startswith("NVML_DEVICE_ARCH_") and getattr(nvml, name) == value:
            label = name.removeprefix("NVML_DEVICE_ARCH_")
            return None if label == "UNKNOWN" else label.capitalize()
    return f"architecture {value}"


def _cuda_version(value: object) -> str | None:
    """NVML encodes CUDA 12.4 as 12040."""
    if not isinstance(value, int) or value <= 0:
        return None
    return f"{value // 1000}.{value % 1000 // 10}"


def _select_handles(nvml: ModuleType, spec: str | None) -> list[tuple[int, object]]:
    """(NVML index, handle) of each GPU CUDA would expose, in CUDA's order.

    Unset: every GPU. Otherwise a comma list of indices or UUIDs (`GPU-…`, or a unique prefix
    of one), read as CUDA reads it: the list ends at the first entry that names no GPU, so ""
    and "-1" hide every GPU. MIG instances (`MIG-…`) end the list too: they report neither
    power nor energy of their own. A GPU named twice is kept once.
    """
    count = int(nvml.nvmlDeviceGetCount())
    if spec is None:
        return [(index, nvml.nvmlDeviceGetHandleByIndex(index)) for index in range(count)]
    chosen: list[tuple[int, object]] = []
    for token in spec.split(","):
        found = _resolve(nvml, token.strip(), count)
        if found is None:
            break
        if all(found[0] != index for index, _ in chosen):
            chosen.append(found)
    return chosen


def _resolve(nvml: ModuleType, token: str, count: int) -> tuple[int, object] | None:
    if not token or token.startswith("MIG-"):
        return None
    if _INDEX.fullmatch(token):
        index = int(token)
        return (index, nvml.nvmlDeviceGetHandleByIndex(index)) if 0 <= index < count else None
    uuid = token if token.startswith("GPU-") else f"GPU-{token}"
    try:
        handle = nvml.nvmlDeviceGetHandleByUUID(uuid)
    except (nvml.NVMLError_NotFound, nvml.NVMLError_InvalidArgument):
        # CUDA also accepts a unique prefix of a UUID; NVML's lookup wants the whole UUID.
        matches = [index for index, full in _all_uuids(nvml, count) if full.startswith(uuid)]
        if len(matches) != 1:
            return None
        return matches[0], nvml.nvmlDeviceGetHandleByIndex(matches[0])
    return int(nvml.nvmlDeviceGetIndex(handle)), handle


def _all_uuids(nvml: ModuleType, count: int) -> list[tuple[int, str]]:
    uuids = []
    for index in range(count):
        try:
            uuids.append(
                (index, _text(nvml.nvmlDeviceGetUUID(nvml.nvmlDeviceGetHandleByIndex(index))))
            )
        except _unsupported_errors(nvml):
            # With cgroup device limits (Slurm), NVML may list GPUs this job cannot open.
            continue
    return uuids


def _visible_devices(nvml: ModuleType, spec: str | None) -> list[tuple[GpuInfo, object]]:
    selected = _select_handles(nvml, spec)
    if not selected:
        return []
    driver = _text(nvml.nvmlSystemGetDriverVersion())
    cuda = _cuda_version(_optional(nvml, nvml.nvmlSystemGetCudaDriverVersion))
    devices = []
    for position, (nvml_index, handle) in enumerate(selected):
        memory = nvml.nvmlDeviceGetMemoryInfo(handle)
        limit_mw = _optional(nvml, nvml.nvmlDeviceGetEnforcedPowerLimit, handle)
        architecture = _optional(nvml, nvml.nvmlDeviceGetArchitecture, handle)
        energy = _optional(nvml, nvml.nvmlDeviceGetTotalEnergyConsumption, handle)
        info = GpuInfo(
            index=position,
            nvml_index=nvml_index,
            uuid=_text(nvml.nvmlDeviceGetUUID(handle)),
            name=_text(nvml.nvmlDeviceGetName(handle)),
            memory_total_bytes=int(memory.total),
            driver_version=driver,
            cuda_driver_version=cuda,
            power_limit_w=None if limit_mw is None else limit_mw / 1000.0,
            architecture=None if architecture is None else _architecture_name(nvml, architecture),
            # Volta and newer keep a cumulative counter; older GPUs answer NotSupported.
            has_energy_counter=energy is not None,
        )
        devices.append((info, handle))
    return devices
