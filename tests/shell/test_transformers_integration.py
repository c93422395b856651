"""integrations.transformers.ProvCallback with the real Hugging Face Trainer on CPU (a tiny
BERT built from a config: nothing downloaded), through `%%provrun` in a real IPython shell:
every point the Trainer logged is stored with its global step and context, arguments and
model config are redacted parameters, epochs are loop steps, each `checkpoint-N` folder is
an artifact whose sha256 is the folder's, and `total_flos` is kept as a flagged estimate."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest

from conftest import closed_runs


@pytest.fixture
def transformers() -> Any:
    """transformers, imported when the test runs (not when tests are collected)."""
    pytest.importorskip("torch", reason="torch cannot be imported: the Trainer needs it")
    pytest.importorskip("accelerate", reason="accelerate cannot be imported: the Trainer needs it")
    return pytest.importorskip(
        "transformers", reason="transformers cannot be imported: nothing to integrate with"
    )


TRAIN = """
import torch
from transformers import BertConfig, BertForSequenceClassification, Trainer, TrainingArguments
from jupyter_prov4ml.integrations.transformers import ProvCallback

torch.manual_seed(0)
config = BertConfig(vocab_size=32, hidden_size=8, num_hidden_layers=1, num_attention_heads=1,
                    intermediate_size=8, max_position_embeddings=8, num_labels=2)
model = BertForSequenceClassification(config)
ids = torch.randint(0, 32, (12, 6))
rows = [{"input_ids": i, "attention_mask": torch.ones(6, dtype=torch.long),
         "labels": int(i[0] % 2)} for i in ids]
args = TrainingArguments(output_dir=output, num_train_epochs=2, per_device_train_batch_size=4,
                         per_device_eval_batch_size=4, logging_steps=1, eval_strategy="epoch",
                         save_strategy="epoch", report_to=[], use_cpu=True, disable_tqdm=True,
                         hub_token="hf_abcdefghijklmnopqrstuvwxyz123456")
trainer = Trainer(model=model, args=args, train_dataset=rows, eval_dataset=rows[:4],
                  callbacks=[ProvCallback()])
trainer.train()
"""


def folder_digest(folder: Path) -> str:
    """The folder's sha256 as the README defines it, computed here independently: one line
    `<sha256>  <size>  <relative path>` per file, sorted by path, joined by newlines."""
    lines = []
    for path in sorted(folder.rglob("*"), key=lambda p: p.relative_to(folder).as_posix()):
        if path.is_file():
            data = path.read_bytes()
            relative = path.relative_to(folder).as_posix()
            lines.append(f"{hashlib.sha256(data).hexdigest()}  {len(data)}  {relative}")
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def test_trainer_inside_provrun(
    loaded: Any, store_dir: Path, tmp_path: Path, transformers: Any
) -> None:
    """What the Trainer logged (its `log_history`) is what is stored, point for point."""
    from jupyter_prov4ml import read_metrics
    from jupyter_prov4ml.integrations.run_link import context_of

    loaded.user_ns["output"] = str(tmp_path / "out")
    result = loaded.run_cell("%%provrun --no-graph\n" + TRAIN, store_history=True)
    assert result.success, result.error_in_exec
    assert loaded._jupyter_prov4ml.writer.flush(timeout_s=60)
    (record,) = [r for r in closed_runs(store_dir) if r["kind"] == "provrun"]
    assert record["status"] == "ok"
    state = loaded.user_ns["trainer"].state

    logged = sorted(
        (name, context_of(name), entry["step"], float(value))
        for entry in state.log_history
        for name, value in entry.items()
        if name not in ("step", "total_flos")
    )
    assert {"loss", "grad_norm", "learning_rate", "eval_loss", "train_runtime"} <= {
        name for name, _, _, _ in logged
    }
    frame = read_metrics(record["run_id"], store=store_dir)
    stored = sorted(
        zip(frame["name"], frame["context"], frame["step"], frame["value"], strict=True)
    )
    assert stored == logged
    assert ("eval_loss", "validation") in {(name, context) for name, context, _, _ in stored}

    params = {p["name"]: p["value"] for p in record["params"]}
    assert params["learning_rate"] == loaded.user_ns["args"].learning_rate
    assert params["num_train_epochs"] == 2
    assert params["hub_token"] == "<redacted>"
    assert params["config.hidden_size"] == 8
    assert params["transformers.version"] == transformers.__version__
    assert params["transformers.total_flos_estimate"] == float(state.total_flos)

    assert [(s["index"], s["completed"]) for s in record["steps"]] == [(0, True), (1, True)]
    assert [dict(s["inner_iterations"]) for s in record["steps"]] == [{"step": 3}, {"step": 3}]

    folders = sorted((tmp_path / "out").glob("checkpoint-*"))
    assert [f.name for f in folders] == ["checkpoint-3", "checkpoint-6"]
    artifacts = {a["name"]: a for a in record["artifacts"]}
    for folder in folders:
        assert artifacts[folder.name]["sha256"] == folder_digest(folder)
        size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
        assert artifacts[folder.name]["size_bytes"] == size
