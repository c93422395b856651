"""The pure parts of a run's context: papermill's injected cell read back, seed wrappers put
back, imported versions read without side effects, the installed-package list, and old
journal records (without the new fields) still decoded."""

from __future__ import annotations

import json
import random
import types
import warnings

from jupyter_prov4ml.capture.context import (
    accelerator_versions,
    imported_versions,
    installed_packages,
)
from jupyter_prov4ml.capture.injected import InjectedParameters, injected_params
from jupyter_prov4ml.capture.seeds import SeedWatch, randomness_of
from jupyter_prov4ml.records import (
    CellRef,
    CellRun,
    DataInput,
    GitState,
    ModelSummary,
    Param,
    Randomness,
    RunContext,
    SeedCall,
)
from jupyter_prov4ml.store.codec import encode_line, run_from_dict, run_to_dict


def test_papermill_cells_are_read_as_injected_parameters() -> None:
    """papermill's own form (plain or black-formatted), with non-finite floats kept as text;
    a cell that is not of that form is not an injected cell."""
    assert injected_params("# Parameters\nlr = 0.3\nname = 'fast'\nn = None\n") == (
        Param("lr", 0.3, "injected"),
        Param("name", "fast", "injected"),
        Param("n", None, "injected"),
    )
    (nan,) = injected_params("# Parameters\nx = float('nan')\n") or ()
    assert nan.value == "float('nan')"
    assert injected_params("# Parameters\nsizes = [1, 2]\n") == (
        Param("sizes", "[1, 2]", "injected"),
    )
    assert injected_params("# Parameters\nx = compute()\nprint(x)\n") is None
    assert injected_params("# Parameters of mine\nx = 1\n") is None
    assert injected_params("x = 1\n# Parameters\n") is None
    assert injected_params("# Parameters\nx = (\n") is None


def test_the_newest_injected_cell_counts_and_history_is_read_once() -> None:
    """Cells are read as the history grows; a later injected cell replaces an earlier one."""
    reader = InjectedParameters()
    history = ["", "%load_ext jupyter_prov4ml", "# Parameters\nlr = 0.3\n"]
    assert reader.update(history) == (Param("lr", 0.3, "injected"),)
    history += ["x = 1", "# Parameters\nlr = 0.5\n"]
    assert reader.update(history) == (Param("lr", 0.5, "injected"),)
    assert reader.update(history[:2]) == (Param("lr", 0.5, "injected"),)


def test_credentials_in_injected_values_are_redacted() -> None:
    """An injected API key is kept as `<redacted>`, like any parameter."""
    (param,) = injected_params("# Parameters\napi_key = 'sk-abcdefghijklmnopqrstuvwx12345'\n") or ()
    assert param.value == "<redacted>"


def test_seed_watch_records_and_restores_only_its_own_wrappers() -> None:
    """Seeds are recorded (big ones as text); on stop the original comes back, unless the user
    replaced the function meanwhile."""
    module = types.SimpleNamespace(seed=lambda value=None: None)
    original = module.seed
    watch = SeedWatch()
    watch.start({"random": module})
    module.seed(5)
    module.seed(2**70)
    watch.stop()
    assert module.seed is original
    assert watch.calls == [SeedCall("random.seed", 5), SeedCall("random.seed", str(2**70))]
    watch = SeedWatch()
    watch.start({"random": module})
    mine = lambda value=None: None  # noqa: E731
    module.seed = mine
    watch.stop()
    assert module.seed is mine
    assert randomness_of([], {}) is None


def test_real_random_seed_is_wrapped_transparently() -> None:
    """The wrapped `random.seed` seeds exactly as the original does."""
    watch = SeedWatch()
    watch.start({"random": random})
    try:
        random.seed(123)
        first = random.random()
    finally:
        watch.stop()
    random.seed(123)
    assert random.random() == first
    assert watch.calls == [SeedCall("random.seed", 123)]


def test_imported_versions_skip_stdlib_private_and_lazy_attributes() -> None:
    """Only top-level third-party modules; `__version__` read from the module's namespace (a
    module `__getattr__` is never called), else the distribution of the same name."""

    class Lazy(types.ModuleType):
        def __getattr__(self, name: str) -> str:
            warnings.warn("deprecated", DeprecationWarning, stacklevel=2)
            raise AttributeError(name)

    plain = types.ModuleType("plain")
    plain.__version__ = "1.2.3"  # type: ignore[attr-defined]
    modules = {
        "plain": plain,
        "plain.sub": plain,
        "json": json,
        "_private": plain,
        "lazy": Lazy("lazy"),
        "from_dist": types.ModuleType("from_dist"),
    }
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        found = imported_versions(modules, {"from-dist": "4.5"})
    assert found == (("from_dist", "4.5"), ("plain", "1.2.3"))


def test_installed_packages_are_sorted_name_version_lines() -> None:
    """Every line `name==version`, sorted by normalised name, this environment's numpy in it."""
    import numpy

    packages = installed_packages()
    names = [line.partition("==")[0] for line in packages.text.splitlines()]
    assert names == sorted(names) and len(names) == len(packages.versions)
    assert packages.versions["numpy"] == numpy.__version__


def test_journal_lines_without_the_new_fields_still_decode() -> None:
    """A record written before context/randomness/models/inputs existed decodes with their
    defaults; a record with all of them round-trips through a journal line."""
    old = {
        "run_id": "s-00001",
        "session_id": "s",
        "kind": "provrun",
        "cell": {"sha256": "ab" * 32, "source": "x = 1"},
        "started_at_unix_s": 1.0,
        "ended_at_unix_s": 2.0,
        "wall_time_s": 1.0,
        "cpu_time_s": 0.5,
        "status": "ok",
    }
    decoded = run_from_dict(old)
    assert (decoded.context, decoded.randomness, decoded.models, decoded.inputs) == (
        None,
        None,
        (),
        (),
    )
    full = CellRun(
        "s-00002", "s", "provrun", CellRef("cd" * 32, "y"), 1.0, 2.0, 1.0, 0.5, "ok",
        context=RunContext(
            "ef" * 32, "sessions/s/environment/packages-x.txt", 3, (("numpy", "2.0"),),
            GitState("a" * 40, None, True, "b" * 64, "sessions/s/environment/d.patch"),
            (("cuda_version", "12.4"),),
        ),
        randomness=Randomness((SeedCall("random.seed", 1),), 7, False, False, True),
        models=(ModelSummary("m", "M", 10, 5, 40, ("f32",), ("cpu",), ("0:L",), "c" * 64),),
        inputs=(DataInput("d", "array", "ndarray", shape=(2, 3), dtypes=("int32",)),),
    )  # fmt: skip
    line = json.loads(encode_line("close", {"run": run_to_dict(full)}))
    assert run_from_dict(line["run"]) == full


def test_cuda_versions_come_from_an_imported_torch_and_nvml() -> None:
    """torch's CUDA and cuDNN versions (cuDNN asked only of a CUDA build), NVML's driver and
    CUDA driver versions; nothing without torch and GPUs, and a failing torch costs nothing."""
    cudnn = types.SimpleNamespace(version=lambda: 90100)
    torch = types.SimpleNamespace(
        version=types.SimpleNamespace(cuda="12.4", hip=None),
        backends=types.SimpleNamespace(cudnn=cudnn),
    )
    assert accelerator_versions({"torch": torch}, [("550.54.15", "12.4")]) == (
        ("torch_cuda_version", "12.4"),
        ("cudnn_version", "90100"),
        ("gpu_driver_version", "550.54.15"),
        ("cuda_driver_version", "12.4"),
    )
    cpu_torch = types.SimpleNamespace(version=types.SimpleNamespace(cuda=None, hip=None))
    assert accelerator_versions({"torch": cpu_torch}) == ()

    def broken() -> int:
        raise RuntimeError("no cudnn")

    torch.backends.cudnn = types.SimpleNamespace(version=broken)
    assert accelerator_versions({"torch": torch}) == (("torch_cuda_version", "12.4"),)
