"""A `%%provrun`'s full context through a real IPython shell, read back from its PROV-JSON
with `prov`: the package list as a store file by sha256, the imported modules' versions, the
git checkout (commit, branch, dirty, the redacted diff by file), the seeds the run gave and
torch's deterministic switches; `log_model` and `log_input` as entities the run generated
and used."""

from __future__ import annotations

import hashlib
import random
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from prov.model import ProvActivity, ProvDocument, ProvEntity

import jupyter_prov4ml
from conftest import closed_runs, deserialize_strict


def run(shell: Any, source: str) -> Any:
    """Run a cell, then write everything."""
    result = shell.run_cell(source, store_history=True)
    assert shell._jupyter_prov4ml.writer.flush(timeout_s=60)
    return result


def document_of(store: Path, run_id: str) -> ProvDocument:
    (path,) = store.glob(f"sessions/*/runs/{run_id}.prov.json")
    return deserialize_strict(path)


def attributes(doc: ProvDocument, kind: type, prefix: str) -> dict[str, dict[str, Any]]:
    """Each record of `kind` whose local id starts with `prefix`: its attributes by local
    name (values as `prov` read them)."""
    found = {}
    for record in doc.get_records(kind):
        local = str(record.identifier.localpart)
        if local.startswith(prefix):
            found[local] = {str(k.localpart): v for k, v in record.attributes}
    return found


def the_one(found: dict[str, dict[str, Any]]) -> dict[str, Any]:
    assert len(found) == 1, sorted(found)
    return next(iter(found.values()))


def git(folder: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-c", "user.email=t@example.org", "-c", "user.name=t", *args],
        cwd=folder,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


needs_git = pytest.mark.skipif(
    subprocess.run(["git", "--version"], capture_output=True, check=False).returncode != 0,
    reason="git is not installed",
)


@needs_git
def test_environment_has_packages_file_imports_and_git(
    shell: Any, tmp_path: Path, store_dir: Path
) -> None:
    """In a git checkout with a changed file: the environment entity names the package list
    file by sha256 (the file's real digest, `name==version` lines, sorted), the versions of
    imported modules, the commit, branch, dirty flag and the diff's sha256, with the diff
    stored redacted."""
    git(tmp_path, "init", "-q", "-b", "main")
    (tmp_path / "train.py").write_text("lr = 0.1\n")
    git(tmp_path, "add", "train.py")
    git(tmp_path, "commit", "-q", "-m", "first")
    token = "ghp_" + "a1B2c3D4e5F6g7H8i9J0" * 2
    (tmp_path / "train.py").write_text(f"lr = 0.2\napi_token = '{token}'\n")
    commit = git(tmp_path, "rev-parse", "HEAD")
    raw_diff = subprocess.run(
        ["git", "diff", "--no-color", "--no-ext-diff", "HEAD"],
        cwd=tmp_path,
        capture_output=True,
        check=True,
    ).stdout
    assert run(shell, "%load_ext jupyter_prov4ml").success
    shell.user_ns["np"] = np
    assert run(shell, "%%provrun --no-graph\nx = np.zeros(3)\n").success
    record = closed_runs(store_dir)[-1]
    doc = document_of(store_dir, record["run_id"])
    environment = the_one(attributes(doc, ProvEntity, "environment_"))

    packages = store_dir / environment["packages_file"]
    assert hashlib.sha256(packages.read_bytes()).hexdigest() == environment["packages_sha256"]
    lines = packages.read_text().splitlines()
    names = [line.partition("==")[0] for line in lines]
    assert names == sorted(names) and len(lines) == environment["packages_count"]
    assert f"numpy=={np.__version__}" in lines
    assert not [k for k in environment if k.startswith("package_")], "not one per package"
    imported = environment["imported_modules"].split(", ")
    assert f"numpy=={np.__version__}" in imported
    assert environment["imported_count"] == len(imported)

    assert environment["git_commit"] == commit
    assert environment["git_branch"] == "main"
    assert environment["git_dirty"] is True
    assert environment["git_diff_sha256"] == hashlib.sha256(raw_diff).hexdigest()
    stored_diff = (store_dir / environment["git_diff_file"]).read_text()
    assert "+lr = 0.2" in stored_diff
    assert token not in stored_diff and token not in packages.read_text()


def test_outside_git_the_run_has_no_git_facts(loaded: Any, store_dir: Path) -> None:
    """A notebook folder that is no git checkout: no git attributes, the rest as usual."""
    assert run(loaded, "%%provrun --no-graph\ny = 1\n").success
    doc = document_of(store_dir, closed_runs(store_dir)[-1]["run_id"])
    environment = the_one(attributes(doc, ProvEntity, "environment_"))
    assert "packages_sha256" in environment
    assert not [k for k in environment if k.startswith("git_")]


def test_seeds_given_during_the_run_are_recorded_and_unwrapped_after(
    loaded: Any, store_dir: Path
) -> None:
    """random.seed, numpy.random.seed, default_rng and torch.manual_seed called in the run:
    each seed on the run activity (the last one, and how many calls), torch's initial seed
    and deterministic switches too; after the run the functions are the originals again."""
    torch = pytest.importorskip("torch")
    originals = (random.seed, np.random.seed, torch.manual_seed)
    loaded.user_ns.update(np=np, torch=torch)
    result = run(
        loaded,
        "%%provrun --no-graph\n"
        "import random\n"
        "random.seed(42)\n"
        "random.seed(43)\n"
        "np.random.seed(3)\n"
        "rng = np.random.default_rng(11)\n"
        "torch.manual_seed(7)\n"
        "torch.use_deterministic_algorithms(True)\n"
        "x = torch.rand(2)\n"
        "torch.use_deterministic_algorithms(False)\n",
    )
    assert result.success
    assert (random.seed, np.random.seed, torch.manual_seed) == originals
    doc = document_of(store_dir, closed_runs(store_dir)[-1]["run_id"])
    activity = the_one(attributes(doc, ProvActivity, "run_"))
    assert activity["seed_random_seed"] == 43
    assert activity["seed_random_seed_calls"] == 2
    assert activity["seed_numpy_random_seed"] == 3
    assert activity["seed_numpy_random_default_rng"] == 11
    assert activity["seed_torch_manual_seed"] == 7
    assert activity["torch_initial_seed"] == 7
    assert activity["torch_deterministic_algorithms"] is False  # as it was at the end
    assert activity["cudnn_deterministic"] is False
    assert activity["cudnn_benchmark"] is False


def test_seed_wrappers_are_removed_when_the_body_fails(loaded: Any) -> None:
    """A run whose body raises still puts the seeding functions back."""
    original = random.seed
    result = loaded.run_cell("%%provrun --no-graph\nimport random\nrandom.seed(1)\n1/0\n")
    assert not result.success
    assert random.seed is original


def test_log_model_records_a_torch_model_and_saves_it(loaded: Any, store_dir: Path) -> None:
    """A torch module: class, parameter counts (trainable apart), bytes of parameters and
    buffers, dtypes, devices, top-level layers and a weights sha256 that changes with the
    weights; `save=True` writes its state dict as an artifact whose sha256 is the file's."""
    torch = pytest.importorskip("torch")
    loaded.user_ns["torch"] = torch
    run(
        loaded,
        "%%provrun --no-graph\n"
        "from jupyter_prov4ml import log_model\n"
        "torch.manual_seed(0)\n"
        "net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.BatchNorm1d(8),"
        " torch.nn.Linear(8, 2))\n"
        "net[0].weight.requires_grad_(False)\n"
        "first = log_model(net, name='net', save=True)\n"
        "with torch.no_grad():\n"
        "    net[2].bias.add_(1)\n"
        "second = log_model(net, name='net')\n",
    )
    first, second = loaded.user_ns["first"], loaded.user_ns["second"]
    assert first.weights_sha256 != second.weights_sha256
    record = closed_runs(store_dir)[-1]
    doc = document_of(store_dir, record["run_id"])
    models = attributes(doc, ProvEntity, "model_")
    assert len(models) == 2
    model = models[f"model_{record['run_id']}_net"]
    assert model["class_name"] == "torch.nn.modules.container.Sequential"
    assert model["parameters_total"] == (4 * 8 + 8) + (8 + 8) + (8 * 2 + 2)
    assert model["parameters_trainable"] == 74 - 4 * 8
    # float32 parameters, plus BatchNorm's running mean/var (float32) and count (int64)
    assert model["weights_bytes"] == 4 * 74 + 4 * 16 + 8
    assert model["dtypes"] == "torch.float32, torch.int64"
    assert model["devices"] == "cpu"
    assert model["layers"] == "0:Linear, 1:BatchNorm1d, 2:Linear"
    assert model["weights_sha256"] == first.weights_sha256
    (artifact,) = record["artifacts"]
    saved = Path(artifact["path"])
    assert hashlib.sha256(saved.read_bytes()).hexdigest() == artifact["sha256"]
    assert model["artifact_sha256"] == artifact["sha256"]
    assert saved.resolve().is_relative_to(store_dir.resolve())
    reloaded = torch.load(saved)
    assert torch.equal(reloaded["0.weight"], loaded.user_ns["net"][0].weight)
    generated = {
        str(r.args[0].localpart) for r in doc.get_records() if type(r).__name__ == "ProvGeneration"
    }
    assert f"model_{record['run_id']}_net" in generated


def test_log_model_records_a_keras_model(
    loaded: Any, store_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Keras 3 model (torch backend): its own layers (not the torch module's internals),
    count_params, trainable weights; saved as a `.keras` file, private to the user."""
    monkeypatch.setenv("KERAS_BACKEND", "torch")
    keras = pytest.importorskip("keras")
    loaded.user_ns["keras"] = keras
    run(
        loaded,
        "%%provrun --no-graph\n"
        "from jupyter_prov4ml import log_model\n"
        "m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, name='hidden'),"
        " keras.layers.Dense(2, name='out', trainable=False)])\n"
        "log_model(m, name='mlp', save=True)\n",
    )
    record = closed_runs(store_dir)[-1]
    doc = document_of(store_dir, record["run_id"])
    model = the_one(attributes(doc, ProvEntity, "model_"))
    assert model["framework"] == "keras" and model["layers"] == "hidden:Dense, out:Dense"
    assert (model["parameters_total"], model["parameters_trainable"]) == (58, 40)
    assert model["weights_bytes"] == 58 * 4
    (artifact,) = record["artifacts"]
    saved = Path(artifact["path"])
    assert saved.suffix == ".keras" and saved.stat().st_mode & 0o077 == 0
    assert hashlib.sha256(saved.read_bytes()).hexdigest() == model["artifact_sha256"]


def test_log_input_describes_files_tables_arrays_and_loaders(
    loaded: Any, store_dir: Path, tmp_path: Path
) -> None:
    """Each input kind is a DataInput entity the run `used`: a file with size and sha256, a
    DataFrame with rows, columns, dtypes and a content digest, an array with shape, dtype
    and hash, a DataLoader with batches, batch size, workers, shuffle and the samples of its
    dataset (10, not batches × batch size = 12)."""
    torch = pytest.importorskip("torch")
    pandas = pytest.importorskip("pandas")
    data = tmp_path / "train.csv"
    data.write_text("a,b\n1,2\n")
    loaded.user_ns.update(torch=torch, pd=pandas, np=np, path=str(data))
    run(
        loaded,
        "%%provrun --no-graph\n"
        "from jupyter_prov4ml import log_input\n"
        "log_input(path)\n"
        "frame = pd.DataFrame({'a': [1, 2], 'b': [0.5, 1.5]})\n"
        "log_input(frame, name='table')\n"
        "log_input(np.arange(6, dtype=np.int32).reshape(2, 3), name='grid')\n"
        "ds = torch.utils.data.TensorDataset(torch.zeros(10, 2))\n"
        "log_input(torch.utils.data.DataLoader(ds, batch_size=3, shuffle=True), name='loader')\n",
    )
    record = closed_runs(store_dir)[-1]
    run_id = record["run_id"]
    doc = document_of(store_dir, run_id)
    inputs = attributes(doc, ProvEntity, "input_")
    used = {str(r.args[1].localpart) for r in doc.get_records() if type(r).__name__ == "ProvUsage"}
    assert set(inputs) <= used and len(inputs) == 4

    file = inputs[f"input_{run_id}_train.csv"]
    assert file["input_kind"] == "file" and file["size_bytes"] == data.stat().st_size
    assert file["sha256"] == hashlib.sha256(data.read_bytes()).hexdigest()
    assert file["hash_method"] == "full"

    table = inputs[f"input_{run_id}_table"]
    assert (table["rows"], table["columns"], table["dtypes"]) == (2, "a, b", "int64, float64")
    assert table["hash_method"] == "pandas.util.hash_pandas_object" and len(table["sha256"]) == 64

    grid = inputs[f"input_{run_id}_grid"]
    assert (grid["shape"], grid["dtypes"], grid["size_bytes"]) == ("2x3", "int32", 24)
    expected = hashlib.sha256(b"<i4(2, 3)\0" + np.arange(6, dtype=np.int32).tobytes())
    assert grid["sha256"] == expected.hexdigest()

    loader = inputs[f"input_{run_id}_loader"]
    assert loader["length"] == 4 and loader["batch_size"] == 3
    assert loader["dataset_length"] == 10 and loader["shuffle"] is True
    assert loader["num_workers"] == 0 and loader["drop_last"] is False


def test_an_input_named_like_a_credential_keeps_no_hash(
    loaded: Any, store_dir: Path, tmp_path: Path, capsys: Any
) -> None:
    """`log_input` of a file named like a credential: size kept, no sha256 (redaction's rule
    for anything named like a secret), so the stored document equals its export."""
    secret = tmp_path / "api_key.txt"
    secret.write_text("sk-not-really-but-still\n")
    loaded.user_ns["path"] = str(secret)
    run(loaded, "%%provrun --no-graph\nfrom jupyter_prov4ml import log_input\nlog_input(path)\n")
    run_id = closed_runs(store_dir)[-1]["run_id"]
    (stored,) = store_dir.glob(f"sessions/*/runs/{run_id}.prov.json")
    entity = the_one(attributes(document_of(store_dir, run_id), ProvEntity, "input_"))
    assert "sha256" not in entity and entity["hash_method"] == "redacted"
    assert entity["size_bytes"] == secret.stat().st_size
    from jupyter_prov4ml.cli.main import main as cli_main

    capsys.readouterr()
    assert cli_main(["export", run_id, "--store", str(store_dir)]) == 0
    exported = ProvDocument.deserialize(content=capsys.readouterr().out, format="json")
    assert exported == deserialize_strict(stored)


def test_sampled_hash_of_a_large_file_is_flagged(
    loaded: Any, store_dir: Path, tmp_path: Path
) -> None:
    """Above the full-hash size a file is hashed by samples, and says so."""
    from jupyter_prov4ml.capture import data_inputs

    big = tmp_path / "big.bin"
    big.write_bytes(bytes(range(256)) * 4096 * 3)  # 3 MiB
    limit = data_inputs.MAX_FULL_HASH_BYTES
    data_inputs.MAX_FULL_HASH_BYTES = 2**20
    try:
        summary = data_inputs.describe_file(big, None, data_inputs.MAX_FULL_HASH_BYTES)
    finally:
        data_inputs.MAX_FULL_HASH_BYTES = limit
    assert summary.hash_method == "sampled"
    assert summary.sha256 != hashlib.sha256(big.read_bytes()).hexdigest()


def test_log_model_and_input_in_a_plain_cell(loaded: Any, store_dir: Path) -> None:
    """Outside %%provrun the entities attach to the cell's own record, as the API does."""
    loaded.user_ns["np"] = np
    run(loaded, "import jupyter_prov4ml as p4m\np4m.log_input(np.ones(2), name='ones')\n")
    record = closed_runs(store_dir)[-1]
    assert [i["name"] for i in record["inputs"]] == ["ones"]


def test_bad_calls_warn_and_never_raise(loaded: Any, store_dir: Path, capsys: Any) -> None:
    """A missing file, an object whose len raises, and a model that cannot be saved: one
    warning line each (or a plain summary), never an exception in the user's cell."""
    result = run(
        loaded,
        "%%provrun --no-graph\n"
        "from jupyter_prov4ml import log_input, log_model\n"
        "class Weird:\n"
        "    def __len__(self): raise RuntimeError('no')\n"
        "log_input('/no/such/file.csv')\n"
        "w = log_input(Weird())\n"
        "m = log_model(object(), save=True)\n",
    )
    assert result.success
    err = capsys.readouterr().err
    assert "log_input" in err and "no/such/file.csv" in err
    assert "cannot save a object" in err
    assert loaded.user_ns["w"].kind == "object" and loaded.user_ns["w"].length is None


def test_api_without_the_extension_warns() -> None:
    """Without %load_ext, log_model and log_input warn and record nothing."""
    with pytest.warns(RuntimeWarning, match="not loaded"):
        assert jupyter_prov4ml.log_model(object()) is None
    with pytest.warns(RuntimeWarning, match="not loaded"):
        assert jupyter_prov4ml.log_input([1, 2]) is None
