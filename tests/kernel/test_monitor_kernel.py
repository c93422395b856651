"""The monitor process outside the kernel, with real kernels: it samples while a C call holds
the GIL, finalises a killed kernel's run at once with its cause, is started once per kernel,
and never outlives its kernel."""

from __future__ import annotations

import json
import os
import queue
import signal
import time
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from conftest import cli, closed_runs, journal_events
from jupyter_prov4ml.hardware.crash_cause import TEST_MEMORY_EVENTS_ENV
from jupyter_prov4ml.store.journal import read_journal
from jupyter_prov4ml.store.monitor_files import read_samples

# A generous bound on waiting for something that does happen (not a measure of speed).
WAIT_S = 120
# The crash bound the README states: a killed run's end is at most this far before the kill.
CRASH_BOUND_S = 3.0


def _load(kernel: Any) -> None:
    messages = kernel.execute("import time\n%load_ext jupyter_prov4ml")
    assert not [m for m in messages if m["msg_type"] == "error"]


def _value(kernel: Any, expression: str) -> Any:
    """A JSON-able value computed in the kernel."""
    text = kernel.stream_text(f"import json as _j\nprint(_j.dumps({expression}))")
    return json.loads(text.strip().splitlines()[-1])


def _monitor_pid(kernel: Any) -> int:
    pid = _value(kernel, "get_ipython()._jupyter_prov4ml.monitor.pid")
    assert isinstance(pid, int)
    return pid


def _gone(pid: int) -> bool:
    """Exited (a zombie nobody reaped yet counts as exited)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return True
    return stat[stat.rindex(b")") + 2 :].split()[0] == b"Z"


def _wait(condition: Any, what: str, kernel: Any = None, msg_id: str | None = None) -> None:
    """Wait until `condition()`; fails at once if the cell `msg_id` ends first."""
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < deadline, f"after {WAIT_S} s: not {what}"
        if kernel is None:
            time.sleep(0.1)
            continue
        try:
            reply = kernel.client.get_shell_msg(timeout=0.1)
        except queue.Empty:
            continue
        if reply["parent_header"].get("msg_id") == msg_id:
            raise AssertionError(f"the cell ended while the test waited: {reply['content']}")


def _kill(kernel: Any) -> tuple[float, float]:
    """SIGKILL the kernel: the time just before the signal was sent, and one when the
    kernel is surely dead (reaped)."""
    process = kernel.manager.provisioner.process
    killed_at = time.time()
    os.kill(process.pid, signal.SIGKILL)
    process.wait(10)
    return killed_at, time.time()


def _journaled_points(store: Path) -> int:
    for journal in store.glob("sessions/*/journal.jsonl"):
        for progress in read_journal(journal, with_progress=True).progress.values():
            series = progress.metrics.series.values() if progress.metrics else ()
            return sum(len(s.steps) for s in series)
    return 0


def _monitor_rows_after(store: Path, unix_s: float) -> int:
    return sum(
        row.unix_s > unix_s
        for path in store.glob("sessions/*/monitor/*.samples.jsonl")
        for row in read_samples(path)
    )


def _provrun_closed(store: Path) -> bool:
    return any(
        e["event"] == "close" and e["run"]["kind"] == "provrun" for e in journal_events(store)
    )


@pytest.mark.kernel
def test_sigkill_during_a_gil_holding_call(tmp_path: Path, kernels: Any) -> None:
    """Points logged, a checkpoint journals them, then `sum(range(10**11))` holds the GIL (the
    kernel's threads stop) and the kernel is killed: the monitor kept sampling through the
    call and records the run `crashed` at once, ending within 3 s of the kill, with every
    point and the cause; a later `list` recovers nothing more; the monitor exits."""
    store = tmp_path / "store"
    release, started = tmp_path / "release", tmp_path / "started"
    kernel = kernels(store)
    _load(kernel)
    cell = (
        "%%provrun --name gil --param lr=0.1 --interval 0.05\n"
        "import pathlib\n"
        "from jupyter_prov4ml import log_metric\n"
        "for step in range(50):\n"
        "    log_metric('loss', 1.0 / (step + 1), step=step)\n"
        f"deadline = time.monotonic() + {WAIT_S}\n"
        f"while not pathlib.Path({str(release)!r}).exists() and time.monotonic() < deadline:\n"
        "    time.sleep(0.05)\n"
        f"pathlib.Path({str(started)!r}).touch()\n"
        "sum(range(10**11))\n"
    )
    msg_id = kernel.client.execute(cell)
    # A checkpoint (every 2 s, from the sampler thread) has journaled the 50 points.
    _wait(lambda: _journaled_points(store) >= 50, "50 points journaled", kernel, msg_id)
    release.touch()
    _wait(started.exists, "the C call started", kernel, msg_id)
    call_began = started.stat().st_mtime
    # The monitor samples while the call holds the GIL (the kernel's sampler cannot).
    _wait(lambda: _monitor_rows_after(store, call_began) >= 10, "10 samples during the call")
    kernel_pid = kernel.manager.provisioner.process.pid
    monitor = next(p for p in _children_of(kernel_pid) if _is_monitor(p))
    killed_at, dead_at = _kill(kernel)

    _wait(lambda: _provrun_closed(store), "the run finalised by the monitor")
    _wait(lambda: _gone(monitor), "the monitor exited")
    (record,) = [r for r in closed_runs(store) if r["kind"] == "provrun"]
    assert record["status"] == "crashed" and record["name"] == "gil"
    assert record["error_type"].startswith("KernelDied: killed")
    assert "cause unknown" in record["error_type"]
    assert "last step logged: 49 (loss)" in record["error_type"]
    assert killed_at - CRASH_BOUND_S <= record["ended_at_unix_s"] <= dead_at
    (metric,) = record["metrics"]
    assert metric["count"] == 50 and metric["first"] == 1.0
    assert {p["name"] for p in record["params"]} == {"lr"}
    # The samples the monitor took during the call (no per-process columns: only the
    # kernel's sampler writes those) are in the crashed run's samples file.
    files = {f["role"]: store / f["relpath"] for f in record["data_files"]}
    table = pq.read_table(files["hardware_samples"]).to_pydict()
    own = table.get(f"proc{kernel_pid}_rss_bytes", [None] * len(table["elapsed_s"]))
    during = [
        index
        for index, tree in enumerate(table["tree_rss_bytes"])
        if not _missing(tree) and _missing(own[index])
    ]
    assert len(during) >= 10
    assert table["elapsed_s"] == sorted(table["elapsed_s"])
    listing = cli("list", "--store", str(store), "--json", "--kind", "provrun", cwd=tmp_path)
    assert listing.returncode == 0, listing.stderr
    assert "recovered" not in listing.stderr
    assert [r["run_id"] for r in json.loads(listing.stdout)] == [record["run_id"]]


def _children_of(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(t) for t in (task / "children").read_text().split()]
    return found


def _is_monitor(pid: int) -> bool:
    try:
        return (
            b"jupyter_prov4ml.kernel.monitor_process" in Path(f"/proc/{pid}/cmdline").read_bytes()
        )
    except OSError:
        return False


@pytest.mark.kernel
def test_one_monitor_per_kernel_stopped_at_unload(tmp_path: Path, kernels: Any) -> None:
    """Two %%provrun cells share one monitor process (the only one among the kernel's
    children); unloading the extension stops it, and a kernel without a %%provrun has none."""
    store = tmp_path / "store"
    kernel = kernels(store)
    _load(kernel)
    kernel_pid = kernel.manager.provisioner.process.pid
    assert not [p for p in _children_of(kernel_pid) if _is_monitor(p)], "none before a run"
    kernel.execute("%%provrun --name one\nx = 1")
    first = _monitor_pid(kernel)
    kernel.execute("%%provrun --name two\ny = 2")
    assert _monitor_pid(kernel) == first
    assert [p for p in _children_of(kernel_pid) if _is_monitor(p)] == [first]
    kernel.execute("%unload_ext jupyter_prov4ml")
    _wait(lambda: _gone(first), "the monitor stopped at unload")
    runs = [r for r in closed_runs(store) if r["kind"] == "provrun"]
    assert [r["status"] for r in runs] == ["ok", "ok"]
    assert not list(store.glob("sessions/*/monitor/*.samples.jsonl")), "merged and removed"
    assert not list(store.glob("sessions/*/monitor/death.json"))


@pytest.mark.kernel
def test_a_monitor_never_outlives_its_kernel(tmp_path: Path, kernels: Any) -> None:
    """A kernel killed between cells, with no run open: its monitor exits, and nothing is
    recorded `crashed`."""
    store = tmp_path / "store"
    kernel = kernels(store)
    _load(kernel)
    kernel.execute("%%provrun\nz = 3")
    monitor = _monitor_pid(kernel)
    assert not _gone(monitor)
    _kill(kernel)
    _wait(lambda: _gone(monitor), "the monitor exited with its kernel")
    # (a plain cell whose end the writer had not journaled yet may be recovered `crashed`)
    assert [r["status"] for r in closed_runs(store) if r["kind"] == "provrun"] == ["ok"]


@pytest.mark.kernel
def test_an_oom_kill_is_recorded_as_the_cause(
    tmp_path: Path, kernels: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The OOM killer, simulated: the kernel's cgroup memory.events is replaced (tests only)
    by a file whose `oom_kill` count rises before the kernel is SIGKILLed, as the kernel's
    OOM killer does. The run is `crashed` with the cause `OOM kill`."""
    events = tmp_path / "memory.events"
    events.write_text("low 0\nhigh 0\nmax 3\noom 1\noom_kill 0\n")
    monkeypatch.setenv(TEST_MEMORY_EVENTS_ENV, str(events))
    store = tmp_path / "store"
    kernel = kernels(store)
    _load(kernel)
    msg_id = kernel.client.execute(
        f"%%provrun --name big --interval 0.05\ntime.sleep({WAIT_S * 5})"
    )
    # The run is journaled, and the monitor read the count before sampling it.
    _wait(
        lambda: (
            any(e["event"] == "progress" for e in journal_events(store))
            and any(read_samples(p) for p in store.glob("sessions/*/monitor/*.samples.jsonl"))
        ),
        "the run journaled and the monitor sampling it",
        kernel,
        msg_id,
    )
    events.write_text("low 0\nhigh 0\nmax 9\noom 2\noom_kill 1\n")
    killed_at, dead_at = _kill(kernel)
    _wait(lambda: _provrun_closed(store), "the run finalised by the monitor")
    (record,) = [r for r in closed_runs(store) if r["kind"] == "provrun"]
    assert record["status"] == "crashed"
    assert record["error_type"].startswith("KernelDied: OOM kill")
    assert killed_at - CRASH_BOUND_S <= record["ended_at_unix_s"] <= dead_at


def _memory_cgroup(name: str, limit_bytes: int) -> tuple[Path, Path] | None:
    """A child of this process's memory cgroup with a small limit: (its folder, the file its
    processes are written to); None where this machine does not allow making one."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        relative = path.lstrip("/")
        if "memory" in controllers.split(","):  # cgroup v1
            folder, limit_file = (
                Path("/sys/fs/cgroup/memory", relative, name),
                "memory.limit_in_bytes",
            )
        elif controllers == "" and "memory" in _text(
            Path("/sys/fs/cgroup", relative, "cgroup.subtree_control")
        ):
            folder, limit_file = Path("/sys/fs/cgroup", relative, name), "memory.max"
        else:
            continue
        try:
            folder.mkdir()
        except OSError:
            return None
        try:
            (folder / limit_file).write_text(str(limit_bytes))
        except OSError:
            folder.rmdir()
            return None
        return folder, folder / "cgroup.procs"
    return None


def _text(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


@pytest.mark.kernel
def test_a_real_oom_kill_in_a_small_cgroup(tmp_path: Path, kernels: Any) -> None:
    """Where this machine allows it (root, a writable cgroup hierarchy): the kernel is moved
    into a memory cgroup with a small limit, its %%provrun allocates until the OOM killer
    kills it, and the monitor records the run `crashed` with the cause `OOM kill`."""
    store = tmp_path / "store"
    kernel = kernels(store)
    _load(kernel)
    kernel_pid = kernel.manager.provisioner.process.pid
    rss = int(_value(kernel, "__import__('psutil').Process().memory_info().rss"))
    made = _memory_cgroup(f"p4m-test-{os.getpid()}-{kernel_pid}", rss + 300 * 2**20)
    if made is None:
        pytest.skip("no memory cgroup can be made here; the simulated OOM test covers it")
    folder, procs = made
    try:
        procs.write_text(str(kernel_pid))
        msg_id = kernel.client.execute(
            "%%provrun --name hog --interval 0.05\n"
            "from jupyter_prov4ml import log_metric\n"
            "log_metric('allocated_mb', 0, step=0)\n"
            "time.sleep(2.5)\n"  # a checkpoint journals the run and its point
            "hog = []\n"
            "while True:\n"
            "    hog.append(b'x' * (20 * 2**20))\n"
        )
        process = kernel.manager.provisioner.process
        deadline = time.monotonic() + WAIT_S
        while process.poll() is None:
            assert time.monotonic() < deadline, "the OOM killer ended the kernel"
            try:
                reply = kernel.client.get_shell_msg(timeout=0.2)
            except queue.Empty:
                continue
            if reply["parent_header"].get("msg_id") == msg_id:
                raise AssertionError(f"the cell ended: {reply['content']}")
        _wait(lambda: _provrun_closed(store), "the run finalised by the monitor")
        (record,) = [r for r in closed_runs(store) if r["kind"] == "provrun"]
        assert record["status"] == "crashed" and record["name"] == "hog"
        assert record["error_type"].startswith("KernelDied: OOM kill"), record["error_type"]
        assert "last step logged: 0 (allocated_mb)" in record["error_type"]
    finally:
        deadline = time.monotonic() + WAIT_S
        while True:
            try:
                folder.rmdir()
                break
            except OSError:  # the monitor is still finishing inside it
                assert time.monotonic() < deadline
                time.sleep(0.1)


@pytest.mark.kernel
def test_without_its_monitor_a_dead_kernel_is_recovered_by_the_cli(
    tmp_path: Path, kernels: Any
) -> None:
    """The monitor itself killed first, then the kernel mid-run: nothing finalises the run at
    once, and the next `list` recovers it with its one-line notice, as before the monitor."""
    store = tmp_path / "store"
    kernel = kernels(store)
    _load(kernel)
    msg_id = kernel.client.execute(
        "%%provrun --name orphan --interval 0.05\n"
        "from jupyter_prov4ml import log_metric\n"
        "log_metric('loss', 1.0, step=0)\n"
        f"time.sleep({WAIT_S * 5})"
    )
    _wait(
        lambda: (
            any(e["event"] == "progress" for e in journal_events(store))
            and _journaled_points(store) >= 1
        ),
        "a checkpoint with the point",
        kernel,
        msg_id,
    )
    (monitor,) = [p for p in _children_of(kernel.manager.provisioner.process.pid) if _is_monitor(p)]
    os.kill(monitor, signal.SIGKILL)
    _wait(lambda: _gone(monitor), "the monitor killed")
    _kill(kernel)
    assert not _provrun_closed(store)
    listing = cli("list", "--store", str(store), "--json", "--kind", "provrun", cwd=tmp_path)
    assert listing.returncode == 0, listing.stderr
    assert "recovered 1 run(s)" in listing.stderr
    (run,) = json.loads(listing.stdout)
    assert run["status"] == "crashed" and run["name"] == "orphan"
    (record,) = [r for r in closed_runs(store) if r["kind"] == "provrun"]
    assert record["error_type"] == "KernelDied: last step logged: 0 (loss)"


@pytest.mark.kernel
def test_the_monitor_fills_the_gap_of_a_gil_holding_call(tmp_path: Path, kernels: Any) -> None:
    """A %%provrun whose body blocks in a C call that holds the GIL (`open` of a FIFO through
    `ctypes.PyDLL`) until the test has seen the monitor sample it: the kernel's sampler could
    not tick meanwhile, and the run's saved samples hold the monitor's samples of that gap
    (rows with the tree's figures and no per-process columns, which only the kernel writes)."""
    store = tmp_path / "store"
    fifo, started = tmp_path / "fifo", tmp_path / "started"
    os.mkfifo(fifo)
    kernel = kernels(store)
    _load(kernel)
    kernel_pid = kernel.manager.provisioner.process.pid
    msg_id = kernel.client.execute(
        "%%provrun --name held --interval 0.05\n"
        "import ctypes, os, pathlib\n"
        f"pathlib.Path({str(started)!r}).touch()\n"
        f"os.close(ctypes.PyDLL(None).open({str(fifo).encode()!r}, os.O_RDONLY))\n"
    )
    _wait(started.exists, "the body started", kernel, msg_id)
    held_from = started.stat().st_mtime
    _wait(lambda: _monitor_rows_after(store, held_from) >= 12, "12 samples while held")
    os.close(os.open(fifo, os.O_WRONLY))  # lets the call return
    while True:
        reply = kernel.client.get_shell_msg(timeout=WAIT_S)
        if reply["parent_header"].get("msg_id") == msg_id:
            break
    assert reply["content"]["status"] == "ok"
    kernel.execute("get_ipython()._jupyter_prov4ml.writer.flush()")
    (record,) = [r for r in closed_runs(store) if r["kind"] == "provrun"]
    files = {f["role"]: store / f["relpath"] for f in record["data_files"]}
    table = pq.read_table(files["hardware_samples"]).to_pydict()
    own = table[f"proc{kernel_pid}_rss_bytes"]
    from_monitor = [
        index
        for index, tree in enumerate(table["tree_rss_bytes"])
        if not _missing(tree) and _missing(own[index])
    ]
    assert len(from_monitor) >= 8
    elapsed = table["elapsed_s"]
    assert elapsed == sorted(elapsed)


def _missing(value: Any) -> bool:
    """NaN, or null in the samples file."""
    return value is None or value != value
