"""A kernel killed mid-`%%provrun` (SIGKILL): the run is found and finalised as `crashed`
(at once by the kernel's monitor process; by the next `list` or `%load_ext` without one).

The real thing first (a kernel process killed while its cell logs metrics), then the pieces:
checkpoints, the session lock that tells a dead kernel from a busy one, and recovery's
behaviour with several recoverers and with damaged checkpoints.
"""

from __future__ import annotations

import dataclasses
import json
import math
import queue
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from conftest import cli, closed_runs, deserialize_strict, extension_of, journal_events
from jupyter_prov4ml.capture.metrics import MetricLog
from jupyter_prov4ml.capture.progress import Checkpointer, Progress, ProgressSlice
from jupyter_prov4ml.capture.recorder import OpenWindow
from jupyter_prov4ml.hardware.sampler import SampleColumns, Sampler
from jupyter_prov4ml.notices import Notices
from jupyter_prov4ml.records import HostSample, SessionInfo
from jupyter_prov4ml.store.codec import (
    jsonable,
    pack,
    progress_from_dict,
    progress_to_dict,
    unpack,
)
from jupyter_prov4ml.store.journal import read_journal
from jupyter_prov4ml.store.layout import Store
from jupyter_prov4ml.store.recovery import recover_store
from jupyter_prov4ml.store.session_lock import LOCK_NAME, SessionLock
from jupyter_prov4ml.store.writer import StoreWriter

# Runs far longer than any test waits (1000 s of sleeps): the tests end it (SIGKILL, interrupt)
# once the journal holds what they check, never after a fixed time.
TRAINING_CELL = """%%provrun --name doomed --param lr=0.01 --interval 0.05
from jupyter_prov4ml import log_metric, log_param
epochs = 1000
log_param("optimizer", "adam")
for step in range(100_000):
    log_metric("loss", 1.0 / (step + 1), step=step)
    time.sleep(0.01)
"""
# A generous bound on waiting for something that does happen (not a measure of speed).
WAIT_S = 120


@dataclasses.dataclass(frozen=True)
class Journaled:
    """What a store's journals hold so far of a run still open."""

    checkpoints: int = 0
    points: int = 0
    samples: int = 0
    last_seen_unix_s: float | None = None


def _written_events(store: Path) -> list[dict[str, Any]]:
    """The journal lines written so far, skipping one that a live writer is still writing."""
    events = []
    for journal in sorted(store.glob("sessions/*/journal.jsonl")):
        events += [json.loads(line) for line in journal.read_text().split("\n")[:-1]]
    return events


def _journaled(store: Path) -> Journaled:
    """The progress journaled so far for the one open `%%provrun` of a store (if any)."""
    checkpoints = sum(1 for event in _written_events(store) if event["event"] == "progress")
    for journal in store.glob("sessions/*/journal.jsonl"):
        for progress in read_journal(journal, with_progress=True).progress.values():
            series = progress.metrics.series.values() if progress.metrics else ()
            return Journaled(
                checkpoints,
                sum(len(s.steps) for s in series),
                len(progress.samples),
                progress.last_seen_unix_s,
            )
    return Journaled(checkpoints)


def _wait_for_journal(
    store: Path,
    kernel: Any,
    msg_id: str,
    checkpoints: int = 1,
    points: int = 0,
    samples: int = 0,
) -> Journaled:
    """Wait until the journal holds at least this many checkpoints, metric points and samples
    of the cell `msg_id` running in `kernel`: what a test asserts afterwards is there by
    construction, on a fast machine as on a slow one. Fails at once if the cell ends."""
    deadline = time.monotonic() + WAIT_S
    while True:
        seen = _journaled(store)
        if seen.checkpoints >= checkpoints and seen.points >= points and seen.samples >= samples:
            return seen
        assert time.monotonic() < deadline, f"after {WAIT_S} s the journal holds only {seen}"
        try:  # also the pause between two looks at the journal
            reply = kernel.client.get_shell_msg(timeout=0.2)
        except queue.Empty:
            continue
        if reply["parent_header"].get("msg_id") == msg_id:
            raise AssertionError(f"the cell ended while the test waited: {reply['content']}")


def _load_extension(kernel: Any) -> None:
    messages = kernel.execute("import time\n%load_ext jupyter_prov4ml")
    errors = [m["content"] for m in messages if m["msg_type"] == "error"]
    assert not errors, errors


@pytest.mark.kernel
def test_sigkill_mid_provrun_leaves_a_crashed_run(tmp_path: Path, kernels: Any) -> None:
    store = tmp_path / "store"
    kernel = kernels(store)
    _load_extension(kernel)
    msg_id = kernel.client.execute(TRAINING_CELL)
    # The running cell journals its progress: wait until it has journaled what is checked below.
    seen = _wait_for_journal(store, kernel, msg_id, checkpoints=3, points=100, samples=40)
    killed_at = time.time()
    kernel.kill()
    dead_at = time.time()
    # The kernel's monitor process finalises the run at once (no `list` needed).
    deadline = time.monotonic() + WAIT_S
    while not any(
        event["event"] == "close" and event["run"]["kind"] == "provrun"
        for event in journal_events(store)
    ):
        assert time.monotonic() < deadline, "the monitor finalised the run"
        time.sleep(0.1)

    listing = cli("list", "--store", str(store), "--json", "--kind", "provrun", cwd=tmp_path)
    assert listing.returncode == 0, listing.stderr
    assert "recovered" not in listing.stderr, "already finalised by the monitor"
    (run,) = json.loads(listing.stdout)
    assert run["status"] == "crashed"
    assert run["name"] == "doomed"
    assert run["params"]["lr"] == 0.01 and run["params"]["optimizer"] == "adam"
    assert run["params"]["epochs"] == 1000
    record = next(r for r in closed_runs(store) if r["run_id"] == run["run_id"])
    # Bounded loss: the run is known alive up to the monitor's last look at it (within 3 s
    # of the kill, the README's bound), and keeps everything journaled before the kill
    # (compared with what the journal held, not with a duration).
    assert seen.last_seen_unix_s is not None
    assert seen.last_seen_unix_s <= record["ended_at_unix_s"] <= dead_at
    assert killed_at - 3.0 <= record["ended_at_unix_s"]
    assert record["error_type"].startswith("KernelDied: killed")
    assert "(cause unknown); last step logged: " in record["error_type"]
    assert record["started_at_unix_s"] < record["ended_at_unix_s"]
    (metric,) = record["metrics"]
    assert metric["name"] == "loss" and metric["count"] >= seen.points >= 100
    assert metric["first"] == 1.0
    assert record["hardware"]["sample_count"] >= seen.samples >= 40
    files = {f["role"]: store / f["relpath"] for f in record["data_files"]}
    steps = pq.read_table(files["metrics"]).column("step").to_pylist()
    assert steps == list(range(len(steps))), "every journaled point, in order, none twice"
    assert pq.read_table(files["hardware_samples"]).num_rows == record["hardware"]["sample_count"]
    document = deserialize_strict(Path(run["prov_path"]))
    assert "crashed" in json.dumps(json.loads(document.serialize(format="json")))
    assert not list(store.glob(f"sessions/*/{LOCK_NAME}")), "recovered: lock file removed"

    # Listing again finds the run once and recovers nothing more.
    again = cli("list", "--store", str(store), "--json", "--kind", "provrun", cwd=tmp_path)
    assert "recovered" not in again.stderr
    assert [r["run_id"] for r in json.loads(again.stdout)] == [run["run_id"]]


@pytest.mark.kernel
def test_next_load_ext_recovers_and_says_so(tmp_path: Path, kernels: Any) -> None:
    """A kernel killed with a plain cell running; the next kernel's %load_ext finalises it
    while the other, live kernel's runs stay untouched."""
    store = tmp_path / "store"
    release = tmp_path / "release-bystander"
    victim = kernels(store)
    victim.execute("import time\n%load_ext jupyter_prov4ml")
    bystander = kernels(store)
    bystander.execute("%load_ext jupyter_prov4ml")
    # The bystander's cell runs until the test releases it (or, should the test die, for
    # 5 × WAIT_S), the victim's until it is killed: neither may end on its own during the test.
    waiting = (
        "import pathlib, time\n"
        f"deadline = time.monotonic() + {WAIT_S * 5}\n"
        f"while not pathlib.Path({str(release)!r}).exists() and time.monotonic() < deadline:\n"
        "    time.sleep(0.05)"
    )
    waited = bystander.client.execute(waiting)
    victim_cell = "x = 1\ntime.sleep(3600)"
    victim.client.execute(victim_cell)
    deadline = time.monotonic() + WAIT_S
    while len([e for e in _written_events(store) if e["event"] == "open"]) < 2:
        assert time.monotonic() < deadline, "both running cells are journaled as open"
        time.sleep(0.2)
    victim.kill()

    survivor = kernels(store)
    survivor.execute("%load_ext jupyter_prov4ml")
    text = survivor.stream_text("%prov list")
    assert "recovered 1 run(s)" in text, text
    crashed = [r for r in closed_runs(store) if r["status"] == "crashed"]
    assert len(crashed) == 1
    assert crashed[0]["cell"]["source"] == victim_cell
    # The bystander's cell is still running (held by the test): not touched.
    assert all(r["cell"]["source"] != waiting for r in closed_runs(store))
    release.touch()
    while True:
        reply = bystander.client.get_shell_msg(timeout=WAIT_S)
        if reply["parent_header"].get("msg_id") == waited:
            break
    assert reply["content"]["status"] == "ok"
    bystander.execute("get_ipython()._jupyter_prov4ml.writer.flush()")
    (finished,) = [r for r in closed_runs(store) if r["cell"]["source"] == waiting]
    assert finished["status"] == "ok" and finished["session_id"] != crashed[0]["session_id"]


# -- the pieces, in process ------------------------------------------------------------------


def test_packed_columns_round_trip_every_float() -> None:
    values = [0.0, -0.0, 1.5, math.inf, -math.inf, math.nan, sys.float_info.max, 5e-324]
    back = unpack(pack(values, "d"), "d")
    assert [repr(v) for v in back] == [repr(v) for v in values]
    assert list(unpack(pack([-(2**63), 2**63 - 1, 0], "q"), "q")) == [-(2**63), 2**63 - 1, 0]
    with pytest.raises(ValueError):
        unpack("AAAA", "d")  # 3 bytes


class _Capture:
    def __init__(self) -> None:
        self.metrics = MetricLog()
        self.params: list[Any] = []


def _through_the_journal(piece: ProgressSlice) -> ProgressSlice:
    """A progress slice as the journal holds it and recovery reads it back."""
    return progress_from_dict(json.loads(json.dumps(jsonable(progress_to_dict(piece)))))


def test_checkpoints_carry_only_what_is_new() -> None:
    samples = SampleColumns(capacity=8)
    capture = _Capture()
    sent: list[ProgressSlice] = []
    checkpointer = Checkpointer("r1", lambda: samples, capture, sent.append, 0)  # type: ignore[arg-type]
    progress = Progress()
    for tick in range(40):
        samples.append({"elapsed_s": tick * 0.1, "process_cpu_percent": float(tick)})
        capture.metrics.log("loss", float(tick), tick, "training")
        if tick % 7 == 0:
            checkpointer.checkpoint()
            progress.add(_through_the_journal(sent[-1]))
    checkpointer.checkpoint()
    progress.add(sent[-1])
    assert progress.metrics is not None
    series = progress.metrics.series[("loss", "training")]
    assert list(series.steps) == list(range(40)), "every point once"
    elapsed = progress.samples.column("elapsed_s")
    assert elapsed == sorted(set(elapsed)), "no sample twice, in time order"
    assert elapsed[-1] == samples.column("elapsed_s")[-1], "up to the last sample kept"
    assert progress.samples.downsample_factor == samples.downsample_factor > 1


def test_a_damaged_checkpoint_changes_nothing() -> None:
    progress = Progress()
    good = {"run_id": "r", "at_unix_s": 5.0, "metrics_t0_ns": 0, "params": []}
    progress.add(progress_from_dict(good))
    bad_chunks = [
        {"at_unix_s": 6.0, "samples": {"downsample_factor": 1, "columns": {"x": "!!"}}},
        {"at_unix_s": 6.0, "metrics": [{"name": 1, "context": "c"}]},
        {
            "at_unix_s": 6.0,
            "params": [{"name": "p", "value": 1}],
            "metrics": [
                {"name": "m", "context": "c", "step": pack([1], "q"), "value": "", "time_ns": ""}
            ],
        },
        {"samples": {}},
    ]
    for chunk in bad_chunks:
        with pytest.raises((KeyError, TypeError, ValueError)):
            progress.add(progress_from_dict({"run_id": "r", **chunk}))
    assert progress.params == [] and progress.last_seen_unix_s == 5.0
    assert progress.metrics is not None and not progress.metrics.series


def _session(session_id: str) -> SessionInfo:
    return SessionInfo(session_id, "me", time.time(), (), "host", "linux", "cpu", 2, 1)


def _window(run_id: str) -> OpenWindow:
    return OpenWindow(run_id, "x = 1", "ab" * 32, "cell-1", time.time(), 0, 0)


def _abandoned_session(store: Store, session_id: str, runs: int = 1) -> StoreWriter:
    """A session that opened runs and then 'died': its lock is released without a close."""
    writer = StoreWriter(store, _session(session_id), Notices(), recover=recover_store)
    writer.start()
    for index in range(runs):
        writer.opened(_window(f"{session_id}-run{index}"), "provrun", {"name": f"n{index}"})
    assert writer.flush()
    writer._stop.set()  # the thread ends without writing anything more
    writer._wake.set()
    assert writer._thread is not None
    writer._thread.join(WAIT_S)
    assert not writer._thread.is_alive()
    assert writer._lock is not None
    writer._lock.release(remove=False)  # what the OS does when the process dies
    return writer


def test_live_sessions_are_left_alone(tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    live = StoreWriter(store, _session("live"), Notices())
    live.start()
    live.opened(_window("live-run"), "cell")
    assert live.flush()
    assert not recover_store(store), "its lock is held: the kernel is busy, not dead"
    assert live.close()
    assert not (store.session_dir("live") / LOCK_NAME).exists(), "a clean close drops the lock"
    assert not recover_store(store)


def test_concurrent_recoverers_close_each_run_once(tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    for session in ("dead1", "dead2"):
        _abandoned_session(store, session, runs=3)
    results: list[Any] = []
    threads = [
        threading.Thread(target=lambda: results.append(recover_store(store))) for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # (dead2's own writer already recovered dead1 when it started: that is one more recoverer)
    assert sum(len(result.runs) for result in results) == 3
    closes = [r["run_id"] for r in closed_runs(store.root)]
    assert sorted(closes) == sorted(f"dead{s}-run{i}" for s in (1, 2) for i in range(3))
    assert not recover_store(store)


def test_lock_survives_a_recoverer_removing_the_file(tmp_path: Path) -> None:
    """`hold` locks the file that is at the path, even if a recoverer unlinked the one it
    opened first, so a live session always has a lock file that reads as taken."""
    session_dir = tmp_path / "s"
    lock = SessionLock.hold(session_dir)
    assert lock is not None
    assert SessionLock.take_if_dead(session_dir) is None
    lock.release(remove=True)
    assert SessionLock.take_if_dead(session_dir) is None, "no file: nothing to recover"


def test_recovery_runs_at_load_and_is_reported_once(loaded: Any, store_dir: Path) -> None:
    """An extension loaded on a store holding a dead session's open run finalises it in its
    writer thread; the user hears one line, and `%prov list` shows the run as crashed."""
    extension = extension_of(loaded)
    store = Store(store_dir)
    _abandoned_session(store, "dead", runs=1)
    loaded.run_line_magic("unload_ext", "jupyter_prov4ml")
    loaded.run_cell("%load_ext jupyter_prov4ml")
    assert extension_of(loaded) is not extension
    extension_of(loaded).writer.flush()
    (crashed,) = [r for r in closed_runs(store_dir) if r["status"] == "crashed"]
    assert crashed["run_id"] == "dead-run0" and crashed["name"] == "n0"
    assert any("recovered 1 run(s)" in m for m in extension_of(loaded).notices.drain())


def test_long_run_journal_grows_with_the_log_of_its_length(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A long run (a fast clock, a small buffer): the sample buffer stays within capacity,
    the journal keeps old samples at the resolution they had, so its rows grow with the log
    of the run's length, and the recovered run's PROV document states the downsampling."""
    import types

    from jupyter_prov4ml.capture.run_capture import RunCapture
    from jupyter_prov4ml.hardware import sampler as sampling
    from jupyter_prov4ml.hardware.gpu import NullGpu

    clock = types.SimpleNamespace(now=0.0)
    monkeypatch.setattr(sampling, "time", types.SimpleNamespace(perf_counter=lambda: clock.now))
    store = Store(tmp_path / "store")
    writer = StoreWriter(store, _session("long"), Notices())
    writer.start()
    window = _window("long-run")
    writer.opened(window, "provrun", {"interval_s": 0.1})
    capacity, ticks = 100, 6_400
    sampler = sampling.Sampler(_Host(), NullGpu("none"), Notices(), 0.1, capacity=capacity)
    sampler._t0 = 0.0
    capture = RunCapture(0)
    checkpointer = Checkpointer(window.run_id, lambda: sampler.samples, capture, writer.progress, 0)
    sampler.subscribe(checkpointer.on_tick)
    for tick in range(1, ticks + 1):
        clock.now = tick * 0.1
        sampler._tick()
    assert writer.flush()
    assert len(sampler.samples) < capacity
    state = read_journal(store.journal_path("long"), with_progress=True)
    journaled = len(state.progress[window.run_id].samples)
    doublings = sampler.samples.downsample_factor.bit_length() - 1
    assert doublings >= 5
    assert journaled <= capacity + capacity // 2 * doublings < ticks / 10

    writer._stop.set()  # the kernel dies
    writer._wake.set()
    assert writer._thread is not None
    writer._thread.join(WAIT_S)
    assert not writer._thread.is_alive()
    assert writer._lock is not None
    writer._lock.release(remove=False)
    (run,) = recover_store(store).runs
    assert run.hardware is not None and run.hardware.sample_count == journaled
    (record,) = [r for r in closed_runs(store.root) if r["run_id"] == window.run_id]
    document = json.loads(
        Path(store.root / record["data_files"][0]["relpath"])
        .with_name(f"{window.run_id}.prov.json")
        .read_text()
    )
    factor = document["activity"][f"p4m:run_{window.run_id}"]["p4m:sample_downsample_factor"]
    journaled_factor = state.progress[window.run_id].samples.downsample_factor
    assert journaled_factor >= 2 ** (doublings - 1)
    assert factor == {"$": str(journaled_factor), "type": "xsd:int"}


class _Host:
    def prime(self) -> None:
        return None

    def read(self, elapsed_s: float) -> HostSample:
        return HostSample(elapsed_s, 50.0, 2**30, 40.0, 2**33)


def test_a_failing_checkpointer_costs_one_line_and_nothing_else(
    loaded: Any, store_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    """Our bug in the checkpointer (injected): the cell's output and result are unchanged,
    the user sees one line, checkpoints stop, and the run is saved when it ends."""
    failed, sampled = threading.Event(), threading.Event()

    def broken(self: Checkpointer) -> None:
        failed.set()
        raise RuntimeError("injected checkpoint bug")

    tick = Sampler._tick

    def counted_tick(self: Sampler) -> None:
        tick(self)
        if len(self.samples) > 5:
            sampled.set()

    monkeypatch.setattr(Checkpointer, "checkpoint", broken)
    monkeypatch.setattr(Sampler, "_tick", counted_tick)
    extension_of(loaded).checkpoint_period_s = 0.02
    # The cell runs until the checkpoint has failed and more than 5 samples are taken (not for
    # a fixed time that a slow or busy machine could fill with fewer ticks).
    loaded.user_ns.update(_failed=failed, _sampled=sampled)
    result = loaded.run_cell(
        "%%provrun --no-graph --interval 0.01\n"
        f"assert _failed.wait({WAIT_S}) and _sampled.wait({WAIT_S})\n"
        "print('out')\n41 + 1",
        store_history=True,
    )
    assert result.success, result.error_in_exec
    captured = capsys.readouterr()
    assert captured.out.splitlines()[-2:] == ["out", "Out[1]: 42"]
    assert captured.err.count("crash checkpoints stopped") == 1
    assert "Traceback" not in captured.err
    extension_of(loaded).writer.flush()
    (run,) = [r for r in closed_runs(store_dir) if r["kind"] == "provrun"]
    assert run["status"] == "ok" and run["hardware"]["sample_count"] > 5


def test_recovery_ends_a_line_the_dead_kernel_left_half_written(tmp_path: Path) -> None:
    """Killed mid-write, a journal ends without a newline: the recovered close line starts on
    a line of its own (the half line is skipped as damaged, nothing else)."""
    store = Store(tmp_path / "store")
    _abandoned_session(store, "torn", runs=1)
    with store.journal_path("torn").open("a") as journal:
        journal.write('{"event":"progress","run_id":"torn-run0","at_unix_s":1')
    (run,) = recover_store(store).runs
    state = read_journal(store.journal_path("torn"), with_progress=True)
    assert list(state.closed) == [run.run_id] and state.bad_lines == 1


@pytest.mark.kernel
def test_kernel_interrupt_mid_provrun_saves_an_interrupted_run(
    tmp_path: Path, kernels: Any
) -> None:
    """The front end's interrupt (SIGINT to a real kernel) during a training loop: the cell
    ends with KeyboardInterrupt as usual, and the run is saved as `interrupted` with its
    parameters, samples and every metric point logged before the interrupt."""
    store = tmp_path / "store"
    kernel = kernels(store)
    _load_extension(kernel)
    msg_id = kernel.client.execute(TRAINING_CELL.replace("doomed", "stopped"))
    # Interrupted once the journal shows the loop well under way: the checks below hold then.
    _wait_for_journal(store, kernel, msg_id, checkpoints=1, points=100, samples=11)
    kernel.manager.interrupt_kernel()
    while True:
        reply = kernel.client.get_shell_msg(timeout=60)
        if reply["parent_header"].get("msg_id") == msg_id:
            break
    assert reply["content"]["status"] == "error"
    assert reply["content"]["ename"] == "KeyboardInterrupt"
    kernel.execute("get_ipython()._jupyter_prov4ml.writer.flush()")
    (record,) = [r for r in closed_runs(store) if r["kind"] == "provrun"]
    assert record["status"] == "interrupted" and record["name"] == "stopped"
    assert {p["name"] for p in record["params"]} >= {"lr", "epochs", "optimizer"}
    (metric,) = record["metrics"]
    files = {f["role"]: store / f["relpath"] for f in record["data_files"]}
    steps = pq.read_table(files["metrics"]).column("step").to_pylist()
    assert metric["count"] == len(steps) >= 100 and steps == list(range(len(steps)))
    assert record["hardware"]["sample_count"] > 10
    # The kernel is still alive and recording.
    assert kernel.execute("after = 1")
    assert not recover_store(Store(store)), "an interrupted kernel is not a dead one"
