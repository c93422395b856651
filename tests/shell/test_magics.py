"""The extension through its public interface: `%load_ext`, cells, `%%provrun`, `%prov`,
in a real, isolated IPython shell."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Any

import pytest
from IPython.core.error import UsageError

from conftest import cli, closed_runs, deserialize_strict, displayed, extension_of, journal_events


def flush(shell: Any) -> None:
    """Write everything pending; fail with our own notices if the writer skipped anything."""
    extension = extension_of(shell)
    assert extension.writer.flush(timeout_s=30)
    pending = extension.notices.drain()
    assert not [m for m in pending if "could not save" in m], pending


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def test_load_prints_one_line_with_store_and_hardware(
    shell: Any, store_dir: Path, capsys: Any
) -> None:
    """`%load_ext` says where the store is and what CPU/GPU it found, in one line."""
    shell.run_cell("%load_ext jupyter_prov4ml")
    lines = [line for line in capsys.readouterr().out.splitlines() if line]
    assert len(lines) == 1
    assert str(store_dir) in lines[0]
    assert "cores" in lines[0]
    assert "no NVIDIA GPU" in lines[0]


def test_ordinary_cells_are_recorded(loaded: Any, store_dir: Path) -> None:
    """Every executed cell gives one record with sha256, cell id, count, timing and status."""
    source = "x = sum(range(1000))\nx"
    result = loaded.run_cell(source, store_history=True, cell_id="cell-abc")
    flush(loaded)
    runs = closed_runs(store_dir)
    assert len(runs) == 1
    run = runs[0]
    assert run["kind"] == "cell"
    assert run["cell"]["sha256"] == sha(source)
    assert run["cell"]["cell_id"] == "cell-abc"
    assert run["cell"]["execution_count"] == result.execution_count
    assert run["status"] == "ok"
    assert run["wall_time_s"] >= 0 and run["cpu_time_s"] >= 0
    assert run["ended_at_unix_s"] >= run["started_at_unix_s"]


def test_failed_and_interrupted_cells(loaded: Any, store_dir: Path) -> None:
    """A raising cell is `failed` with its exception type; KeyboardInterrupt is `interrupted`."""
    loaded.run_cell("1/0", store_history=True)
    loaded.run_cell("raise KeyboardInterrupt", store_history=True)
    loaded.run_cell("pass", store_history=True)
    flush(loaded)
    statuses = [(r["status"], r["error_type"]) for r in closed_runs(store_dir)]
    assert statuses == [
        ("failed", "ZeroDivisionError"),
        ("interrupted", "KeyboardInterrupt"),
        ("ok", None),
    ]


PROVRUN = """%%provrun --name baseline --param lr=0.01 --param epochs=3 --no-graph
batch_size = 64
optimizer: str = "sgd"
total = sum(i * i for i in range(20000))
"""


def test_provrun_records_params_from_both_sources(loaded: Any, store_dir: Path) -> None:
    """`--param` values and literal top-level assignments are both recorded, typed."""
    result = loaded.run_cell(PROVRUN, store_history=True, cell_id="train-1")
    assert result.success
    assert loaded.user_ns["total"] == sum(i * i for i in range(20000))
    flush(loaded)
    runs = closed_runs(store_dir)
    assert [r["kind"] for r in runs] == ["provrun"], "the nested body must not add a record"
    run = runs[0]
    params = {p["name"]: (p["value"], p["source"]) for p in run["params"]}
    assert params == {
        "lr": (0.01, "magic"),
        "epochs": (3, "magic"),
        "batch_size": (64, "literal"),
        "optimizer": ("sgd", "literal"),
    }
    assert run["name"] == "baseline"
    assert run["cell"]["sha256"] == sha(PROVRUN)
    assert run["cell"]["cell_id"] == "train-1"
    assert run["hardware"]["sample_count"] >= 1
    (cpu,) = [r for r in run["energy"]["readings"] if r["component"] == "cpu"]
    assert cpu["method"] == "estimated" and cpu["energy_j"] >= 0


def test_provrun_document_reads_back_with_prov(loaded: Any, store_dir: Path) -> None:
    """The run's PROV-JSON deserializes without warnings and carries cell, params, agents."""
    loaded.run_cell(PROVRUN, store_history=True, cell_id="train-1")
    flush(loaded)
    (path,) = store_dir.glob("sessions/*/runs/*.prov.json")
    doc = deserialize_strict(path)
    text = path.read_text()
    assert sha(PROVRUN) in text
    provn = doc.get_provn()
    assert "used(" in provn and "wasAssociatedWith(" in provn and "wasGeneratedBy(" in provn
    assert "p4m:param_" in provn and "prov:SoftwareAgent" in provn and "prov:Person" in provn
    (samples,) = store_dir.glob("sessions/*/runs/*.hardware_samples.parquet")
    assert hashlib.sha256(samples.read_bytes()).hexdigest() in text


def test_provrun_expands_variables_in_the_line(loaded: Any, store_dir: Path) -> None:
    """`$var` in the magic line is expanded by IPython, as for any magic."""
    loaded.run_cell("rate = 0.5", store_history=True)
    loaded.run_cell("%%provrun --param lr=$rate --no-graph\npass\n", store_history=True)
    flush(loaded)
    run = closed_runs(store_dir)[-1]
    assert run["params"] == [{"name": "lr", "value": 0.5, "source": "magic"}]


def test_provrun_failure_shows_one_normal_traceback(
    loaded: Any, store_dir: Path, capsys: Any
) -> None:
    """A failing body shows the user's traceback once, fails the cell, and is saved `failed`."""
    result = loaded.run_cell(
        "%%provrun --no-graph\nx = 1\nraise ValueError('boom')\n", store_history=True
    )
    out = capsys.readouterr()
    text = out.out + out.err
    assert text.count("ValueError") >= 1 and text.count("Traceback") <= 1
    assert "jupyter_prov4ml" not in text
    assert isinstance(result.error_in_exec, ValueError)
    flush(loaded)
    run = closed_runs(store_dir)[-1]
    assert (run["kind"], run["status"], run["error_type"]) == ("provrun", "failed", "ValueError")


def test_provrun_interrupted(loaded: Any, store_dir: Path) -> None:
    """KeyboardInterrupt inside the body gives status `interrupted` and the run is kept."""
    result = loaded.run_cell("%%provrun --no-graph\nraise KeyboardInterrupt\n", store_history=True)
    assert isinstance(result.error_in_exec, KeyboardInterrupt)
    flush(loaded)
    assert closed_runs(store_dir)[-1]["status"] == "interrupted"


def test_provrun_shows_summary_and_graph(loaded: Any) -> None:
    """The summary and the graph are displayed; the summary names duration and parameters."""
    loaded.run_cell("%%provrun --name shown --param lr=0.1\ny = 2\n", store_history=True)
    bundles = displayed(loaded)
    texts = [b.get("text/plain", "") for b in bundles]
    assert any("duration" in t and "lr=0.1" in t and "peak RSS" in t for t in texts)
    assert any(
        "jp-prov4ml-graph" in b.get("text/html", "") or "DOT" in b.get("text/plain", "")
        for b in bundles
    )


@pytest.mark.parametrize(
    "line",
    ["--bogus", "--param lr", "--param =3", "--interval 0", "--interval abc"],
)
def test_bad_arguments_raise_usage_error(loaded: Any, line: str) -> None:
    """Bad `%%provrun` options raise IPython's UsageError and run nothing."""
    with pytest.raises(UsageError) as error:
        loaded.run_cell_magic("provrun", line, "ran = True\n")
    assert "usage" in str(error.value).lower() or "--" in str(error.value)
    assert "ran" not in loaded.user_ns


def test_bad_arguments_from_a_cell_fail_it_without_recording_a_run(
    loaded: Any, store_dir: Path
) -> None:
    """From a cell, a UsageError fails the cell; the cell is recorded as failed, no provrun."""
    result = loaded.run_cell("%%provrun --param lr\nran = True\n", store_history=True)
    assert not result.success
    flush(loaded)
    assert [(r["kind"], r["status"]) for r in closed_runs(store_dir)] == [("cell", "failed")]


def test_unload_stops_recording_and_reload_works(loaded: Any, store_dir: Path) -> None:
    """After `%unload_ext` nothing is recorded and the magics are gone; loading again works."""
    loaded.run_cell("a = 1", store_history=True)
    loaded.run_cell("%unload_ext jupyter_prov4ml", store_history=True)
    recorded = len(closed_runs(store_dir))
    loaded.run_cell("b = 2", store_history=True)
    assert len(closed_runs(store_dir)) == recorded
    assert "provrun" not in loaded.magics_manager.magics["cell"]
    assert not [t for t in loaded.ast_transformers if type(t).__name__ == "CellTreeCapture"]
    assert loaded.run_cell("%%provrun\npass\n").error_in_exec is not None
    assert loaded.run_cell("%load_ext jupyter_prov4ml").success
    loaded.run_cell("c = 3", store_history=True)
    flush(loaded)
    sessions = list(store_dir.glob("sessions/*"))
    assert len(sessions) == 2
    sources = [r["cell"]["source"] for r in closed_runs(store_dir)]
    assert "c = 3" in sources and "b = 2" not in sources


def test_loading_twice_is_harmless(loaded: Any, store_dir: Path) -> None:
    """A second `%load_ext` registers nothing more: still one record per cell."""
    loaded.run_cell("%load_ext jupyter_prov4ml")
    loaded.run_cell("z = 1", store_history=True)
    flush(loaded)
    assert [r["cell"]["source"] for r in closed_runs(store_dir)].count("z = 1") == 1


def test_session_document_holds_plain_cells(loaded: Any, store_dir: Path, tmp_path: Path) -> None:
    """Plain cells are journal lines only (no PROV file is written ahead); `export --session`
    makes the session's PROV-JSON from them, and `prov` reads it back."""
    loaded.run_cell("a = 1", store_history=True)
    loaded.run_cell("b = a + 1", store_history=True)
    flush(loaded)
    assert not list(store_dir.glob("sessions/*/*.prov.json"))
    (session,) = (p.name for p in store_dir.glob("sessions/*"))
    path = tmp_path / "session.prov.json"
    done = cli(
        "export", session, "--session", "--store", str(store_dir), "-o", str(path), cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    doc = deserialize_strict(path)
    assert sha("a = 1") in path.read_text() and sha("b = a + 1") in path.read_text()
    assert len(list(doc.get_records())) > 4


def test_unwritable_store_warns_once_and_recovers(shell: Any, store_dir: Path, capsys: Any) -> None:
    """A store that cannot be written: one warning line, cells unaffected, records kept and
    written once the store works again."""
    store_dir.parent.mkdir(parents=True, exist_ok=True)
    store_dir.write_text("not a folder")  # mkdir under it fails, even for root
    shell.run_cell("%load_ext jupyter_prov4ml")
    ext = extension_of(shell)
    err = ""
    for i in range(3):
        result = shell.run_cell(f"v{i} = {i}", store_history=True)
        assert result.success
        assert not ext.writer.flush(timeout_s=2)
        shell.run_cell("pass", store_history=True)
        err += capsys.readouterr().err
    # The writer tells its failure after the failed write, which a flush does not wait for:
    # cells run (each tells what is pending) until it is told; the bound is for a writer
    # thread that never runs.
    deadline = time.monotonic() + 60
    while "cannot write provenance" not in err and time.monotonic() < deadline:
        time.sleep(0.01)
        shell.run_cell("pass", store_history=True)
        err += capsys.readouterr().err
    assert err.count("cannot write provenance") == 1
    assert "Traceback" not in err
    store_dir.unlink()
    assert ext.writer.flush(timeout_s=30)
    sources = [r["cell"]["source"] for r in closed_runs(store_dir)]
    assert {"v0 = 0", "v1 = 1", "v2 = 2"} <= set(sources)


def test_store_removed_under_us_is_begun_again(loaded: Any, store_dir: Path, capsys: Any) -> None:
    """The store folder deleted while the kernel runs (rm -rf): one warning line, cells
    unaffected, and what runs from then on is journaled into a new journal headed by its
    session line, listed by `%prov list`, with a live lock (not mistaken for a crash)."""
    import shutil

    ext = extension_of(loaded)
    loaded.run_cell("before = 1", store_history=True)
    assert ext.writer.flush()
    shutil.rmtree(store_dir)
    for i in range(3):
        assert loaded.run_cell(f"after{i} = {i}", store_history=True).success
    assert loaded.run_cell("%%provrun --no-graph\nz = 3", store_history=True).success
    assert ext.writer.flush()
    loaded.run_cell("pass")  # notices are told by the next cell
    err = capsys.readouterr().err
    assert err.count("were removed") == 1 and "Traceback" not in err
    events = journal_events(store_dir)
    assert events[0]["event"] == "session"
    sources = [r["cell"]["source"] for r in closed_runs(store_dir)]
    assert {"after0 = 0", "after1 = 1", "after2 = 2"} <= set(sources)
    assert "before = 1" not in sources
    assert "%%provrun --no-graph\nz = 3" in sources
    assert ext.writer.flush()
    listed = {run.run_id for run in ext.store.query()}
    assert listed == {r["run_id"] for r in closed_runs(store_dir)}
    assert list(store_dir.glob("sessions/*/writer.lock"))
    from jupyter_prov4ml.store.recovery import recover_store

    assert not recover_store(ext.store), "the new lock is held: the session is alive"


@pytest.mark.parametrize("where", ["begin", "end"])
@pytest.mark.parametrize("body_fails", [False, True])
def test_our_failure_around_a_provrun_body_never_changes_the_cell(
    loaded: Any, store_dir: Path, capsys: Any, monkeypatch: Any, where: str, body_fails: bool
) -> None:
    """Our bug before the body (capture set-up) or after it (finishing the record): the body
    runs once, its output and its own error (if any) reach the user unchanged, we say one
    line, and the cell is still recorded: as a provrun with what was collected, or, when the
    capture never started, as a plain cell."""
    ext = extension_of(loaded)

    def broken(*args: Any) -> Any:
        raise RuntimeError(f"injected bug in meter.{where}")

    monkeypatch.setattr(ext.meter, where, broken)
    tail = "1 / 0" if body_fails else "'done'"
    result = loaded.run_cell(
        f"%%provrun --no-graph --name hurt\nprint('ran')\nx = 5\n{tail}", store_history=True
    )
    assert loaded.user_ns["x"] == 5
    captured = capsys.readouterr()
    assert captured.out.splitlines().count("ran") == 1
    if body_fails:
        assert isinstance(result.error_in_exec, ZeroDivisionError)
        assert "ZeroDivisionError" in captured.out  # IPython's own traceback, as usual
    else:
        assert result.success and "'done'" in captured.out
    assert "Traceback" not in captured.err
    assert captured.err.count(f"injected bug in meter.{where}") == 1
    assert len(captured.err.splitlines()) == 1
    ext.writer.flush()
    (record,) = [r for r in closed_runs(store_dir) if "print('ran')" in r["cell"]["source"]]
    assert record["status"] == ("failed" if body_fails else "ok")
    assert record["kind"] == ("cell" if where == "begin" else "provrun")
    if where == "end":
        assert record["name"] == "hurt" and record["energy"] is None


def test_our_hook_failure_never_breaks_the_cell(loaded: Any, capsys: Any, monkeypatch: Any) -> None:
    """An exception inside our own hook: the user's cell result is unchanged, one short line,
    no traceback, and recording switches off after repeated failures."""
    ext = extension_of(loaded)

    def broken(info: Any) -> None:
        raise RuntimeError("injected")

    monkeypatch.setattr(ext.recorder, "begin", broken)
    for _ in range(5):
        result = loaded.run_cell("41 + 1", store_history=True)
        assert result.success and result.result == 42
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert 1 <= err.count("jupyter_prov4ml:") <= 2
    assert ext.pre_run_cell not in loaded.events.callbacks["pre_run_cell"]


def test_prov_list_and_show(loaded: Any) -> None:
    """`%prov list` returns a table of runs; `%prov show` displays one run's summary."""
    loaded.run_cell("%%provrun --name listed --no-graph\npass\n", store_history=True)
    table = loaded.run_line_magic("prov", "list --kind provrun")
    assert "listed" in repr(table) and "provrun" in repr(table)
    run_id = table.rows[-1]["run_id"]
    loaded.run_line_magic("prov", f"show {run_id}")
    assert any("listed" in b.get("text/plain", "") for b in displayed(loaded))
    with pytest.raises(UsageError):
        loaded.run_line_magic("prov", "show nope")


def sha_of(source: str) -> str:
    return hashlib.sha256(source.encode()).hexdigest()


def test_journal_has_open_and_close_for_provrun(loaded: Any, store_dir: Path) -> None:
    """The journal says a %%provrun opened while it still runs, with what recovery needs
    (source, parameters, name), before it closes. A cell that ended before the writer got to
    it costs no open line."""
    loaded.run_cell(
        "%%provrun --no-graph --name opened --param lr=0.5\n"
        "get_ipython()._jupyter_prov4ml.writer.flush()\n",
        store_history=True,
    )
    loaded.run_cell("y = 2", store_history=True)
    flush(loaded)
    events = journal_events(store_dir)
    assert events[0]["event"] == "session"
    (opened,) = [e for e in events if e["event"] == "open" and e["kind"] == "provrun"]
    assert opened["name"] == "opened" and opened["params"][0]["value"] == 0.5
    assert opened["source"].endswith("writer.flush()\n")
    assert events.index(opened) < min(i for i, e in enumerate(events) if e["event"] == "close")
    # (a %%provrun's record is journaled when it ends, then again with its files)
    assert len({e["run"]["run_id"] for e in events if e["event"] == "close"}) == 2
    assert sum(e["event"] == "open" and e["run_id"] == opened["run_id"] for e in events) <= 2
    assert not any(e["event"] == "open" and e["cell_sha256"] == sha_of("y = 2") for e in events)


def test_secrets_never_reach_the_store(loaded: Any, store_dir: Path) -> None:
    """Parameters named like credentials are redacted whichever way they arrive (magic line,
    literal assignment, API), and so are their values in the stored cell source: the secret
    values appear nowhere in the store, while the cell's sha256 is still the original's."""
    loaded.run_cell(
        "%%provrun --no-graph --param api_key=sk-live-123456789abcdef\n"
        'password = "hunter2-very-secret"\n'
        "from jupyter_prov4ml import log_param\n"
        "log_param('HF_TOKEN', 'hf_abcdefghijklmnopqrstuvwxyz')\n"
        "batch_size = 8\n",
        store_history=True,
    )
    flush(loaded)
    stored = b"".join(p.read_bytes() for p in store_dir.rglob("*") if p.is_file())
    for secret in (b"sk-live-123456789abcdef", b"hunter2-very-secret", b"hf_abcdefghijklmnop"):
        assert secret not in stored
    run = closed_runs(store_dir)[-1]
    params = {p["name"]: p["value"] for p in run["params"]}
    assert params["api_key"] == params["password"] == params["HF_TOKEN"] == "<redacted>"
    assert params["batch_size"] == 8
    assert run["cell"]["sha256"] != sha(run["cell"]["source"]), "hash of the original source"
    assert "batch_size = 8" in run["cell"]["source"]


def test_provrun_warns_when_it_reads_stale_inputs(loaded: Any) -> None:
    """A run that reads a value computed from since-rebound inputs says so in one line."""
    loaded.run_cell("a = 1", store_history=True, cell_id="c1")
    loaded.run_cell("b = a * 10", store_history=True, cell_id="c2")
    loaded.run_cell("a = 2", store_history=True, cell_id="c1")  # c2's output is now stale
    loaded.run_cell("%%provrun --no-graph\nc = b + 1\n", store_history=True, cell_id="c3")
    (summary,) = [
        b["text/plain"] for b in displayed(loaded) if "duration" in b.get("text/plain", "")
    ]
    assert "read stale inputs: b (see %prov stale)" in summary
    fresh = "%%provrun --no-graph\nd = a + 1\n"
    loaded.run_cell(fresh, store_history=True, cell_id="c4")
    last = [b["text/plain"] for b in displayed(loaded) if "duration" in b.get("text/plain", "")][-1]
    assert "stale" not in last


def test_flush_and_unload_say_what_is_still_unwritten(
    shell: Any, store_dir: Path, capsys: Any
) -> None:
    """With the store unwritable, `%prov flush` says how many records still wait (not that
    they were written), and `%unload_ext` says so too instead of nothing; once the store works,
    `%prov flush` says everything is written."""
    store_dir.parent.mkdir(parents=True, exist_ok=True)
    store_dir.write_text("not a folder")
    shell.run_cell("%load_ext jupyter_prov4ml")
    for i in range(3):
        shell.run_cell(f"w{i} = {i}", store_history=True)
    capsys.readouterr()
    shell.run_cell("%prov flush")
    out = capsys.readouterr().out
    assert "not yet written" in out and "written to" in out and "everything" not in out
    count = int(out.split("jupyter_prov4ml: ")[1].split(" record")[0])
    assert count >= 3
    shell.run_cell("%unload_ext jupyter_prov4ml")
    assert "not yet written" in capsys.readouterr().err
    store_dir.unlink()
    shell.run_cell("%load_ext jupyter_prov4ml")
    shell.run_cell("z = 1", store_history=True)
    capsys.readouterr()
    shell.run_cell("%prov flush")
    assert "everything recorded is written" in capsys.readouterr().out


@pytest.mark.parametrize("padding", [0, 5_000], ids=["short", "long"])
def test_edited_cell_is_derived_from_the_hash_of_its_old_source(
    loaded: Any, store_dir: Path, padding: int
) -> None:
    """The hooks key a cell's versions by the source itself, or by its hash when long; the
    record says `derived_from_sha256` is the SHA-256 of the old source either way, a cell
    without a front-end id is known by its code, and the stale view sees the edit."""
    filler = "#" * padding + "\n"
    old, new = f"{filler}a = 1\n", f"{filler}a = 2\n"
    loaded.run_cell(old, store_history=True, cell_id="c1")
    loaded.run_cell("b = a * 10\n", store_history=True, cell_id="c2")
    loaded.run_cell(new, store_history=True, cell_id="c1")
    loaded.run_cell(old, store_history=True)  # no id: its own cell, known by its code
    loaded.run_cell(old, store_history=True)
    flush(loaded)
    runs = [run for run in closed_runs(store_dir) if run["kind"] == "cell"]
    edited, first_anonymous, second_anonymous = runs[-3:]
    assert edited["cell"]["sha256"] == sha(new)
    assert edited["derived_from_sha256"] == sha(old)
    assert first_anonymous["derived_from_sha256"] is None
    assert second_anonymous["derived_from_sha256"] is None
    stale = extension_of(loaded).recorder.lineage.stale_cells({"c1": new + "# edited\n"})
    reasons = {cell.cell_id: cell.reasons for cell in stale}
    assert reasons["c1"] == ("its source changed after it ran",)
    assert "`a` was rebound" in reasons["c2"][0]
    assert {cell.sha256 for cell in stale} >= {sha(new)}
