"""The NVML wrapper, against a faithful fake of pynvml and against the real one without a GPU."""

from __future__ import annotations

import ast
import inspect
import subprocess
import sys
from pathlib import Path
from typing import Any

import pynvml
import pytest

from fake_nvml import FakeGpu, FakeNvml, own_pid
from jupyter_prov4ml.hardware import gpu as gpu_module
from jupyter_prov4ml.hardware.gpu import (
    GpuProbe,
    GpuProcessUse,
    GpuReader,
    GpuSample,
    GpuUnavailable,
    NullGpu,
    open_gpu_probe,
)

GPU_SOURCE = Path(gpu_module.__file__).read_text(encoding="utf-8")
UUID_A = "GPU-aaaa1111-2222-3333-4444-555555555555"
UUID_B = "GPU-bbbb1111-2222-3333-4444-555555555555"
UUID_AB = "GPU-aaab1111-2222-3333-4444-555555555555"


def _open(fake: FakeNvml, cuda_visible: str | None = None) -> GpuProbe | NullGpu:
    environ = {} if cuda_visible is None else {"CUDA_VISIBLE_DEVICES": cuda_visible}
    return open_gpu_probe(nvml=fake, environ=environ)


def _probe(fake: FakeNvml, cuda_visible: str | None = None) -> GpuProbe:
    probe = _open(fake, cuda_visible)
    assert isinstance(probe, GpuProbe), probe
    return probe


def _two_gpus() -> FakeNvml:
    return FakeNvml(
        [
            FakeGpu(name="NVIDIA A100-SXM4-40GB", uuid=UUID_A, power_mw=250_000),
            FakeGpu(name="NVIDIA H100 80GB HBM3", uuid=UUID_B, power_mw=500_000),
        ]
    )


def vars_of(sample: Any) -> dict[str, Any]:
    """A slotted dataclass's fields as a dict."""
    return {name: getattr(sample, name) for name in sample.__dataclass_fields__}


def _nvml_attributes_used_by_gpu_module() -> set[str]:
    """Attribute names read off the NVML module object (`nvml.X` or `self._nvml.X`)."""
    names = set()
    for node in ast.walk(ast.parse(GPU_SOURCE)):
        if not isinstance(node, ast.Attribute):
            continue
        owner = node.value
        if (isinstance(owner, ast.Name) and owner.id == "nvml") or (
            isinstance(owner, ast.Attribute) and owner.attr == "_nvml"
        ):
            names.add(node.attr)
    return names


# --- the fake is faithful ------------------------------------------------------------------


def test_fake_matches_real_pynvml_for_everything_the_probe_uses() -> None:
    """Every pynvml name gpu.py touches exists in the real pynvml, and the fake has it with the
    same signature (functions) or as the very same object (constants, exception classes)."""
    used = _nvml_attributes_used_by_gpu_module()
    assert {"nvmlInit", "nvmlDeviceGetTotalEnergyConsumption", "NVMLError"} <= used
    fake = FakeNvml()
    for name in sorted(used):
        assert name in dir(pynvml), f"pynvml has no {name}"
        real, faked = getattr(pynvml, name), getattr(fake, name)
        if inspect.isfunction(real):
            real_params = [(p.name, p.default) for p in inspect.signature(real).parameters.values()]
            fake_params = [
                (p.name, p.default) for p in inspect.signature(faked).parameters.values()
            ]
            assert fake_params == real_params, name
        else:
            assert faked is real, name


def test_fake_raises_the_real_error_subclasses() -> None:
    """The fake's errors are pynvml's: NVMLError(code) maps to the subclass, with `.value`."""
    fake = FakeNvml([FakeGpu(unsupported={"nvmlDeviceGetPowerUsage"})])
    fake.nvmlInit()
    handle = fake.nvmlDeviceGetHandleByIndex(0)
    with pytest.raises(pynvml.NVMLError_NotSupported) as caught:
        fake.nvmlDeviceGetPowerUsage(handle)
    assert caught.value.value == pynvml.NVML_ERROR_NOT_SUPPORTED
    with pytest.raises(pynvml.NVMLError_InvalidArgument):
        fake.nvmlDeviceGetHandleByIndex(5)
    assert isinstance(fake.nvmlDeviceGetUtilizationRates(handle), pynvml.c_nvmlUtilization_t)


def test_probe_never_calls_a_setter() -> None:
    """gpu.py reads only: it names no NVML function that changes a setting."""
    used = _nvml_attributes_used_by_gpu_module()
    assert not [name for name in used if "Set" in name or "Reset" in name]
    assert "nvmlDeviceSet" not in GPU_SOURCE


def test_importing_the_probe_does_not_import_pynvml() -> None:
    """pynvml is imported by open_gpu_probe(), never at module import."""
    code = "import sys, jupyter_prov4ml.hardware.gpu; print('pynvml' in sys.modules)"
    root = Path(__file__).resolve().parents[3]
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=root, check=True
    )
    assert result.stdout.strip() == "False"


# --- no GPU ---------------------------------------------------------------------------------


def test_real_pynvml_on_this_machine_returns_null_gpu_with_a_reason() -> None:
    """With the real pynvml and no NVIDIA driver, opening gives a NullGpu and never raises."""
    probe = open_gpu_probe()
    if isinstance(probe, GpuProbe):
        probe.close()
        pytest.skip("this machine has an NVIDIA GPU")
    assert isinstance(probe, NullGpu)
    assert probe.reason
    assert probe.describe() == f"no NVIDIA GPU ({probe.reason})"
    assert (probe.devices, probe.read(), probe.energy_mj(), probe.available) == ((), (), (), False)
    probe.close()


@pytest.mark.parametrize(
    ("code", "error_text"),
    [
        (pynvml.NVML_ERROR_LIBRARY_NOT_FOUND, "NVML Shared Library Not Found"),
        (pynvml.NVML_ERROR_DRIVER_NOT_LOADED, "Driver Not Loaded"),
        (pynvml.NVML_ERROR_NO_PERMISSION, "Insufficient Permissions"),
    ],
)
def test_init_failure_gives_null_gpu(code: int, error_text: str) -> None:
    """nvmlInit failing (no library, no driver, no permission) gives a NullGpu naming why."""
    fake = FakeNvml([FakeGpu()], init_error=code)
    probe = _open(fake)
    assert isinstance(probe, NullGpu)
    assert error_text in probe.reason
    assert fake.calls == {}


def test_missing_pynvml_gives_null_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without pynvml installed, opening gives a NullGpu instead of an ImportError."""
    monkeypatch.setitem(sys.modules, "pynvml", None)
    probe = open_gpu_probe(environ={})
    assert isinstance(probe, NullGpu)
    assert "pynvml" in probe.reason


def test_no_gpu_listed_gives_null_gpu_and_shuts_nvml_down() -> None:
    """A driver with zero GPUs gives a NullGpu and leaves NVML shut down."""
    fake = FakeNvml([])
    probe = _open(fake)
    assert isinstance(probe, NullGpu)
    assert probe.reason == "NVML lists no GPU"
    assert fake.refcount == 0


def test_failure_while_listing_gives_null_gpu_and_shuts_nvml_down() -> None:
    """A GPU failing while its static facts are read gives a NullGpu, NVML shut down."""
    fake = FakeNvml([FakeGpu(errors={"nvmlDeviceGetName": pynvml.NVML_ERROR_GPU_IS_LOST})])
    probe = _open(fake)
    assert isinstance(probe, NullGpu)
    assert "GPU is lost" in probe.reason
    assert fake.refcount == 0


def test_null_gpu_and_probe_share_the_reader_interface() -> None:
    """Both readers provide everything GpuReader promises."""
    readers: list[GpuReader] = [NullGpu("test"), _probe(FakeNvml([FakeGpu()]))]
    for reader in readers:
        for name in ("devices", "available", "describe", "read", "energy_mj", "close"):
            assert hasattr(reader, name), name
        reader.close()


# --- one and two GPUs -------------------------------------------------------------------------


def test_one_gpu_static_facts() -> None:
    """Static facts are read once, decoded and converted to our units."""
    fake = FakeNvml([FakeGpu(uuid=UUID_A)])
    probe = _probe(fake)
    (info,) = probe.devices
    assert (info.index, info.nvml_index, info.uuid) == (0, 0, UUID_A)
    assert info.name == "NVIDIA H100 80GB HBM3"
    assert info.memory_total_bytes == 80 * 2**30
    assert (info.driver_version, info.cuda_driver_version) == ("550.54.15", "12.4")
    assert info.power_limit_w == 700.0
    assert info.architecture == "Hopper"
    assert info.has_energy_counter
    assert probe.available
    assert probe.describe() == "1× NVIDIA H100 80GB HBM3"
    assert fake.init_calls == 1
    probe.close()


def test_one_gpu_sample_in_our_units() -> None:
    """A sample converts mW to W and keeps NVML's percent, bytes, °C, MHz and mJ."""
    fake = FakeNvml([FakeGpu(compute_processes=[(own_pid(), 3 * 2**20), (1, 2**30)])])
    probe = _probe(fake)
    (sample,) = probe.read()
    assert sample == GpuSample(
        index=0,
        utilization_percent=50.0,
        memory_utilization_percent=20.0,
        memory_used_bytes=2 * 2**30,
        power_w=300.0,
        temperature_c=45.0,
        sm_clock_mhz=1980.0,
        process_memory_bytes=3 * 2**20,
        energy_mj=5_000_000,
    )
    probe.close()


def test_legacy_bytes_strings_are_decoded() -> None:
    """Older pynvml returned bytes for names, UUIDs and versions; we store str."""
    probe = _probe(FakeNvml([FakeGpu(uuid=UUID_A)], legacy_bytes=True))
    (info,) = probe.devices
    assert (info.name, info.uuid, info.driver_version) == (
        "NVIDIA H100 80GB HBM3",
        UUID_A,
        "550.54.15",
    )
    probe.close()


def test_two_gpus_read_one_sample_each_in_order() -> None:
    """Two GPUs give two samples, in CUDA order, each with its own power."""
    probe = _probe(_two_gpus())
    samples = probe.read()
    assert [s.index for s in samples] == [0, 1]
    assert [s.power_w for s in samples] == [250.0, 500.0]
    assert [d.uuid for d in probe.devices] == [UUID_A, UUID_B]
    assert probe.describe() == "1× NVIDIA A100-SXM4-40GB, 1× NVIDIA H100 80GB HBM3"
    probe.close()


def test_identical_gpus_are_counted_in_describe() -> None:
    """Two GPUs of one model read `2× <name>`."""
    probe = _probe(FakeNvml([FakeGpu(uuid=UUID_A), FakeGpu(uuid=UUID_B)]))
    assert probe.describe() == "2× NVIDIA H100 80GB HBM3"
    probe.close()


# --- energy counter ---------------------------------------------------------------------------


def test_energy_counter_advances_with_power() -> None:
    """energy_mj() follows the cumulative counter: 300 W for 2 s adds 600,000 mJ."""
    fake = _two_gpus()
    probe = _probe(fake)
    start = probe.energy_mj()
    fake.advance(2.0)
    end = probe.energy_mj()
    assert [e - s for s, e in zip(start, end, strict=True)] == [500_000, 1_000_000]  # type: ignore[operator]
    probe.close()


def test_gpu_without_energy_counter() -> None:
    """A pre-Volta GPU has no counter: None everywhere, and the counter is never asked again."""
    fake = FakeNvml([FakeGpu(has_energy_counter=False)])
    probe = _probe(fake)
    assert not probe.devices[0].has_energy_counter
    asked_at_open = fake.calls["nvmlDeviceGetTotalEnergyConsumption"]
    assert probe.energy_mj() == (None,)
    assert probe.read()[0].energy_mj is None
    assert probe.read()[0].power_w == 300.0
    assert fake.calls["nvmlDeviceGetTotalEnergyConsumption"] == asked_at_open
    probe.close()


def test_mixed_counter_support_across_gpus() -> None:
    """energy_mj() is per GPU: a number where there is a counter, None where not."""
    fake = FakeNvml([FakeGpu(uuid=UUID_A), FakeGpu(uuid=UUID_B, has_energy_counter=False)])
    probe = _probe(fake)
    assert probe.energy_mj() == (5_000_000, None)
    probe.close()


# --- unsupported queries ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("function", "field"),
    [
        ("nvmlDeviceGetPowerUsage", "power_w"),
        ("nvmlDeviceGetTemperature", "temperature_c"),
        ("nvmlDeviceGetClockInfo", "sm_clock_mhz"),
        ("nvmlDeviceGetMemoryInfo", "memory_used_bytes"),
    ],
)
def test_not_supported_drops_only_that_field_and_is_not_retried(function: str, field: str) -> None:
    """A query answered NotSupported gives None for its field alone, and is not asked again."""
    fake = FakeNvml([FakeGpu()])
    probe = _probe(fake)
    fake.gpus[0].unsupported.add(function)
    before = fake.calls.get(function, 0)
    samples = [probe.read()[0] for _ in range(3)]
    for sample in samples:
        assert getattr(sample, field) is None
        # (the process tree's figures are read only when the sampler passes its pids)
        others = {
            k: v for k, v in vars_of(sample).items() if k != field and not k.startswith("tree_")
        }
        assert None not in others.values(), others
    assert fake.calls[function] == before + 1
    probe.close()


def test_utilization_not_supported_drops_both_rates() -> None:
    """One utilisation query feeds two fields; NotSupported drops both, nothing else."""
    fake = FakeNvml([FakeGpu(unsupported={"nvmlDeviceGetUtilizationRates"})])
    probe = _probe(fake)
    (sample,) = probe.read()
    assert sample.utilization_percent is None
    assert sample.memory_utilization_percent is None
    assert sample.power_w == 300.0
    probe.close()


@pytest.mark.parametrize(
    "code",
    [
        pynvml.NVML_ERROR_NOT_SUPPORTED,
        pynvml.NVML_ERROR_NO_PERMISSION,
        pynvml.NVML_ERROR_FUNCTION_NOT_FOUND,
    ],
)
def test_process_lists_unreadable_give_none(code: int) -> None:
    """Process lists refused (NotSupported, NoPermission, old driver) give None, not a crash."""
    errors = {
        "nvmlDeviceGetComputeRunningProcesses": code,
        "nvmlDeviceGetGraphicsRunningProcesses": code,
    }
    probe = _probe(FakeNvml([FakeGpu(errors=errors)]))
    (sample,) = probe.read()
    assert sample.process_memory_bytes is None
    assert sample.power_w == 300.0
    probe.close()


def test_optional_static_facts_missing_give_none() -> None:
    """No power limit, no architecture query, no CUDA version: those facts are None."""
    fake = FakeNvml(
        [
            FakeGpu(
                unsupported={"nvmlDeviceGetEnforcedPowerLimit"},
                errors={"nvmlDeviceGetArchitecture": pynvml.NVML_ERROR_FUNCTION_NOT_FOUND},
            )
        ],
        cuda_driver_version=0,
    )
    probe = _probe(fake)
    (info,) = probe.devices
    assert (info.power_limit_w, info.architecture, info.cuda_driver_version) == (None, None, None)
    probe.close()


@pytest.mark.parametrize(
    ("compute", "graphics", "expected"),
    [
        ([], [], 0),
        ([("own", 100), ("other", 999)], [], 100),
        ([], [("own", 50)], 50),
        ([("own", 100)], [("own", 100)], 100),
        ([("own", None)], [], None),
    ],
    ids=["none", "compute-only", "graphics-only", "both-lists-once", "wddm-unknown"],
)
def test_process_memory_counts_this_process_only(
    compute: list[tuple[str, int | None]],
    graphics: list[tuple[str, int | None]],
    expected: int | None,
) -> None:
    """Only entries with our PID count, a process in both lists counts once, and an
    unattributable amount (WDDM) is None rather than 0."""
    pids = {"own": own_pid(), "other": own_pid() + 1}
    gpu = FakeGpu(
        compute_processes=[(pids[who], used) for who, used in compute],
        graphics_processes=[(pids[who], used) for who, used in graphics],
    )
    probe = _probe(FakeNvml([gpu]))
    assert probe.read()[0].process_memory_bytes == expected
    probe.close()


# --- a GPU lost mid-run ---------------------------------------------------------------------


def test_gpu_lost_mid_run_raises_once_then_reads_nothing() -> None:
    """A GPU falling off the bus raises GpuUnavailable once; later reads return ()."""
    fake = _two_gpus()
    probe = _probe(fake)
    assert len(probe.read()) == 2
    fake.fail_after(3)
    with pytest.raises(GpuUnavailable, match="GPU is lost") as caught:
        probe.read()
    assert isinstance(caught.value.__cause__, pynvml.NVMLError_GpuIsLost)
    assert probe.read() == ()
    assert probe.read() == ()
    assert probe.energy_mj() == (None, None)
    assert not probe.available
    assert "stopped answering NVML" in probe.describe()
    probe.close()
    assert fake.shutdown_calls == 1


@pytest.mark.parametrize("code", [pynvml.NVML_ERROR_UNKNOWN, pynvml.NVML_ERROR_GPU_IS_LOST])
def test_other_nvml_errors_count_as_lost(code: int) -> None:
    """Errors other than NotSupported/NoPermission (Unknown, GpuIsLost) end the probe."""
    fake = FakeNvml([FakeGpu()])
    probe = _probe(fake)
    fake.gpus[0].errors["nvmlDeviceGetUtilizationRates"] = code
    with pytest.raises(GpuUnavailable):
        probe.read()
    assert probe.read() == ()
    probe.close()


def test_gpu_lost_while_reading_energy() -> None:
    """energy_mj() raises GpuUnavailable once too, then gives None per GPU."""
    fake = FakeNvml([FakeGpu()])
    probe = _probe(fake)
    fake.fail_after(0, pynvml.NVML_ERROR_GPU_IS_LOST)
    with pytest.raises(GpuUnavailable):
        probe.energy_mj()
    assert probe.energy_mj() == (None,)
    assert probe.read() == ()
    probe.close()


def test_close_shuts_nvml_down_once() -> None:
    """close() calls nvmlShutdown exactly once, however often it is called; reads stop."""
    fake = FakeNvml([FakeGpu()])
    probe = _probe(fake)
    probe.close()
    probe.close()
    assert (fake.init_calls, fake.shutdown_calls, fake.refcount) == (1, 1, 0)
    assert probe.read() == ()
    assert not probe.available


def test_close_tolerates_a_driver_already_gone() -> None:
    """close() after the driver vanished (shutdown itself failing) does not raise."""
    fake = FakeNvml([FakeGpu()])
    probe = _probe(fake)
    fake.refcount = 0  # NVML uninitialised behind our back
    probe.close()
    assert fake.shutdown_calls == 1


def test_probe_as_context_manager() -> None:
    """`with open_gpu_probe() as gpus:` closes NVML on exit."""
    fake = FakeNvml([FakeGpu()])
    with _probe(fake) as probe:
        assert probe.read()
    assert fake.refcount == 0


# --- CUDA_VISIBLE_DEVICES ---------------------------------------------------------------------


def _three_gpus() -> FakeNvml:
    return FakeNvml([FakeGpu(uuid=UUID_A), FakeGpu(uuid=UUID_B), FakeGpu(uuid=UUID_AB)])


@pytest.mark.parametrize(
    ("spec", "nvml_indices"),
    [
        ("1", [1]),
        ("2,0", [2, 0]),
        (" 1 , 2 ", [1, 2]),
        ("0,0,1", [0, 1]),
        ("0,7,1", [0]),
        ("1,-1,0", [1]),
        (UUID_B, [1]),
        (f"{UUID_AB},0", [2, 0]),
        ("GPU-bbbb", [1]),
        ("bbbb1111", [1]),
        ("GPU-aaa", []),
        ("1,GPU-aa,2", [1]),
        ("MIG-aaaa1111-2222-3333-4444-555555555555,1", []),
    ],
)
def test_cuda_visible_devices_selects_and_orders(spec: str, nvml_indices: list[int]) -> None:
    """Indices and UUIDs (whole, or a unique prefix) pick GPUs in the given order; the list
    ends at the first entry naming no GPU, as CUDA reads it."""
    fake = _three_gpus()
    probe = _open(fake, spec)
    if not nvml_indices:
        assert isinstance(probe, NullGpu)
        assert "CUDA_VISIBLE_DEVICES" in probe.reason
        assert fake.refcount == 0
        return
    assert isinstance(probe, GpuProbe)
    assert [d.nvml_index for d in probe.devices] == nvml_indices
    assert [d.index for d in probe.devices] == list(range(len(nvml_indices)))
    uuids = [fake.gpus[i].uuid for i in nvml_indices]
    assert [d.uuid for d in probe.devices] == uuids
    probe.close()


@pytest.mark.parametrize("spec", ["", "-1", "NoDevFiles"])
def test_cuda_visible_devices_hiding_every_gpu(spec: str) -> None:
    """ "", "-1" or a non-GPU word hide every GPU: NullGpu, NVML shut down again."""
    fake = _three_gpus()
    probe = _open(fake, spec)
    assert isinstance(probe, NullGpu)
    assert "CUDA_VISIBLE_DEVICES" in probe.reason
    assert (fake.init_calls, fake.refcount) == (1, 0)


def test_cuda_visible_devices_unset_means_all() -> None:
    """Without CUDA_VISIBLE_DEVICES every GPU NVML lists is visible."""
    probe = _probe(_three_gpus())
    assert [d.nvml_index for d in probe.devices] == [0, 1, 2]
    probe.close()


def test_samples_follow_cuda_numbering() -> None:
    """With CUDA_VISIBLE_DEVICES=1, sample 0 is physical GPU 1."""
    fake = _two_gpus()
    probe = _probe(fake, "1")
    (sample,) = probe.read()
    assert (sample.index, sample.power_w) == (0, 500.0)
    probe.close()


def test_environ_defaults_to_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without `environ`, the process environment is read."""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    probe = open_gpu_probe(nvml=_two_gpus())
    assert isinstance(probe, GpuProbe)
    assert [d.uuid for d in probe.devices] == [UUID_B]
    probe.close()


# --- a real GPU, where there is one -------------------------------------------------------------


@pytest.mark.gpu
def test_real_gpu_reads_and_counts_energy() -> None:
    """On a machine with an NVIDIA GPU: static facts, a full sample, and a counter that moves."""
    probe = open_gpu_probe()
    if isinstance(probe, NullGpu):
        pytest.skip(probe.describe())
    with probe:
        assert probe.devices and probe.available
        samples = probe.read()
        assert len(samples) == len(probe.devices)
        assert all(s.memory_used_bytes is not None for s in samples)
        first = probe.energy_mj()
        assert len(first) == len(probe.devices)
        assert all(e is None or e >= 0 for e in first)


def test_sample_fields_have_units_in_their_names() -> None:
    """Every measured field of GpuSample (and of each process's use) names its unit; the
    flag and the per-process list are not measurements."""
    units = ("_percent", "_bytes", "_w", "_c", "_mhz", "_mj")
    unmeasured = {"index", "processes", "device_level", "pid"}
    fields = [
        name
        for kind in (GpuSample, GpuProcessUse)
        for name in kind.__dataclass_fields__
        if name not in unmeasured
    ]
    assert all(name.endswith(units) for name in fields), fields
