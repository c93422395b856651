"""End to end in a real browser: JupyterLab runs notebooks in headless Chromium.

- notebooks/quickstart.ipynb (Run All): every cell executes, and the provenance outputs (inline
  SVG graph, `%%provrun` summary, the dashboard's final state) appear with no traceback.
- A notebook built here, whose `%%provrun` cell runs until this test releases it: its live
  dashboard is read while the cell provably still runs. No check depends on how long any cell
  takes, so the result is the same on a slow laptop and on a fast CI machine.

Needs JupyterLab, the `playwright` Python package and a system Chromium at /usr/bin/chromium
(`make test` installs it with scripts/ensure-system-package.sh). Playwright's own browser
downloads are never used. Skips, with the reason, only when one of those cannot be found or
started; every check on the page fails the test.

The fixtures live in this file on purpose: a `tests/browser/conftest.py` would replace
`tests/conftest.py` as the module `conftest`, which `tests/test_magics.py` imports.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

pytestmark = pytest.mark.browser

T = TypeVar("T")

REPO = Path(__file__).resolve().parents[2]
NOTEBOOKS = REPO / "notebooks"
NOTEBOOK = "quickstart.ipynb"
LIVE_NOTEBOOK = "live_dashboard.ipynb"  # written by `held_notebook`, next to the quickstart
ARTIFACTS = REPO / "build" / "test-artifacts"
SCREENSHOT = ARTIFACTS / "jupyterlab-quickstart.png"
LIVE_SCREENSHOT = ARTIFACTS / "jupyterlab-live-dashboard.png"
SERVER_LOG = ARTIFACTS / "jupyterlab-server.log"

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]

# Generous upper bounds only: each one is how long to wait for something that does happen, and
# no check depends on how fast the machine is.
LAB_START_TIMEOUT_S = 120
KERNEL_READY_TIMEOUT_S = 120
RUN_ALL_TIMEOUT_S = 180
# The held `%%provrun` cell: how long the test may take to see it run with its dashboard and to
# see the dashboard's elapsed time move; and how long the cell waits for its release at most
# (a safety net should the test die before releasing it; the test's own waits end first).
LIVE_TIMEOUT_S = 120
HOLD_LIMIT_S = 600

# Selectors. The package emits these classes in its text/html outputs.
GRAPH_SVG = ".jp-prov4ml-graph svg"
SUMMARY = ".jp-prov4ml-summary"
LIVE = ".jp-prov4ml-live"
CODE_PROMPTS = ".jp-Notebook .jp-CodeCell .jp-InputPrompt"
NUMBERED = re.compile(r"\[\s*\d+\s*\]")

# User settings for the isolated Lab: no news/update toasts at all, and every cell attached
# to the DOM (the default "contentVisibility"/"full" windowing may leave cells out of it).
LAB_SETTINGS = {
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {
        "fetchNews": "false",
        "checkForUpdates": False,
        "doNotDisturbMode": True,
    },
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
}


@dataclass(frozen=True)
class Lab:
    url: str
    token: str
    root: Path
    store: Path
    log: Path


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Terminate the server, then kill it; then end what is left of its process group
    (its kernels), which this fixture started in a session of its own."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            break
        time.sleep(1)


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """JupyterLab on 127.0.0.1 on a free port, serving a temp copy of notebooks/, with its own
    config, data, runtime, settings, workspace, IPython and provenance-store folders."""
    if importlib.util.find_spec("jupyterlab") is None:
        pytest.skip("JupyterLab is not installed (pip install 'jupyterlab>=4')")
    base = tmp_path_factory.mktemp("jupyterlab")
    root = base / "notebooks"
    shutil.copytree(NOTEBOOKS, root)
    store = base / "prov4ml-store"
    settings = base / "lab-settings"
    for name, values in LAB_SETTINGS.items():
        path = settings / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))

    env = dict(os.environ)
    env.update(
        {
            # User-level folders only: kernel specs and lab extensions installed in the
            # environment (sys.prefix/share/jupyter, e.g. jupyterlab_widgets) are still found.
            "JUPYTER_CONFIG_DIR": str(base / "config"),
            "JUPYTER_DATA_DIR": str(base / "data"),
            "JUPYTER_RUNTIME_DIR": str(base / "runtime"),
            "JUPYTERLAB_SETTINGS_DIR": str(settings),
            "JUPYTERLAB_WORKSPACES_DIR": str(base / "workspaces"),
            "IPYTHONDIR": str(base / "ipython"),
            "JUPYTER_PROV4ML_STORE": str(store),
            # The kernel imports this working tree's jupyter_prov4ml.
            "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p),
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.pop("JUPYTER_PATH", None)
    env.pop("JUPYTER_TOKEN", None)

    token = secrets.token_hex(24)
    port = _free_port()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    log = base / "jupyterlab.log"
    command = [
        sys.executable,
        "-m",
        "jupyter",
        "lab",
        "--no-browser",
        f"--IdentityProvider.token={token}",
        "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.port={port}",
        "--ServerApp.port_retries=0",
        f"--ServerApp.root_dir={root}",
        "--ServerApp.terminals_enabled=False",
        "--LabApp.news_url=None",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        "--LabApp.expose_app_in_browser=True",
    ]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        command.append("--allow-root")  # CI containers often run as root
    with log.open("wb") as out:
        proc = subprocess.Popen(
            command,
            cwd=root,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + LAB_START_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                pytest.skip(f"JupyterLab exited at start (status {proc.returncode}):\n{_tail(log)}")
            try:
                with urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=5) as r:
                    if r.status == 200:
                        break
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                pytest.skip(
                    f"JupyterLab did not answer /api/status in {LAB_START_TIMEOUT_S} s:\n"
                    f"{_tail(log)}"
                )
            time.sleep(0.5)
        yield Lab(url=url, token=token, root=root, store=store, log=log)
    finally:
        _stop(proc)
        shutil.copyfile(log, SERVER_LOG)


@pytest.fixture
def page(lab: Lab) -> Iterator[Any]:
    """A page of headless system Chromium, driven by Playwright (never its own downloads)."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package")
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(
            f"{CHROMIUM} not found: run 'scripts/ensure-system-package.sh chromium chromium' "
            "(make test does)"
        )
    with sync_api.sync_playwright() as playwright:
        try:
            browser = playwright.chromium.launch(
                executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS, timeout=60_000
            )
        except sync_api.Error as error:
            pytest.skip(f"could not start {CHROMIUM} through Playwright: {error}")
        try:
            context = browser.new_context(viewport={"width": 1400, "height": 1000})
            context.set_default_timeout(30_000)
            yield context.new_page()
        finally:
            browser.close()


@dataclass(frozen=True)
class HeldNotebook:
    """The live-dashboard test's notebook (in the Lab's root) and the file that releases its
    held `%%provrun` cell."""

    name: str
    release: Path


# The held cell waits for an event the test controls, not for an amount of work or a fixed
# time: it ends when the test creates the release file, which the test does only once it has
# read the live dashboard moving. HOLD_LIMIT_S only ends it should the test die first.
HELD_CELL = """\
%%provrun --name live-dashboard --param hold=until-released
import time
from pathlib import Path

release = Path({release!r})
deadline = time.monotonic() + {limit}
while not release.exists():
    if time.monotonic() > deadline:
        raise TimeoutError("the browser test never released this cell")
    time.sleep(0.05)
print("released by the test")
"""


@pytest.fixture
def held_notebook(lab: Lab) -> Iterator[HeldNotebook]:
    """A notebook, written into the Lab's root, whose `%%provrun` cell runs until the test
    creates the release file; the file is created at teardown in any case, so the kernel is
    never left waiting."""
    release = lab.root / "live_dashboard.release"
    release.unlink(missing_ok=True)
    notebook = new_notebook(
        cells=[
            new_code_cell("%load_ext jupyter_prov4ml"),
            new_code_cell("steps = 3\nsteps"),
            new_code_cell(HELD_CELL.format(release=str(release), limit=HOLD_LIMIT_S)),
            new_code_cell("%prov list"),
        ],
        metadata={
            "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}
        },
    )
    nbformat.write(notebook, lab.root / LIVE_NOTEBOOK)
    try:
        yield HeldNotebook(LIVE_NOTEBOOK, release)
    finally:
        release.touch()


# ----------------------------------------------------------------------------------------------
# Page helpers


def wait_until(what: str, condition: Callable[[], T | None], timeout_s: float) -> T:
    """Poll `condition` every 0.1 s until it returns a value other than None (which it returns)
    or `timeout_s` passes (an AssertionError naming `what`). A generous bound on something
    that does happen, never a measure of speed; `condition` may fail early by raising."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value is not None:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {timeout_s} s for {what}")
        time.sleep(0.1)


def code_prompts(page: Any) -> list[str]:
    """The input prompt of every code cell: '[ ]:', '[*]:' (queued or running) or '[3]:'."""
    return [
        " ".join(text.split())
        for text in page.locator(CODE_PROMPTS).evaluate_all(
            "els => els.map(e => e.textContent || '')"
        )
    ]


def cell_sources(page: Any) -> list[str]:
    """The source of every code cell, in the same order as `code_prompts`."""
    return list(
        page.locator(".jp-Notebook .jp-CodeCell").evaluate_all(
            "els => els.map(e => (e.querySelector('.cm-content') || {}).innerText || '')"
        )
    )


def provrun_cells(page: Any) -> list[int]:
    """The indexes (among code cells) of the cells that start with `%%provrun`."""
    return [i for i, s in enumerate(cell_sources(page)) if s.lstrip().startswith("%%provrun")]


def read_live_field(page: Any, field: str, scope: Any = None) -> str:
    """The text now shown by one field of the live `%%provrun` dashboard,
    `.jp-prov4ml-live [data-field="FIELD"]` (the last dashboard on the page, or in `scope`)."""
    root = scope if scope is not None else page
    return str(root.locator(f'{LIVE} [data-field="{field}"]').last.inner_text()).strip()


def wait_for_kernel_idle(page: Any) -> None:
    """The notebook is open, its session has a connected kernel, and that kernel is idle
    (before anything runs, so the status indicator can be trusted here)."""
    page.locator(".jp-Notebook .jp-CodeCell").first.wait_for(
        state="visible", timeout=KERNEL_READY_TIMEOUT_S * 1000
    )
    if page.evaluate("() => Boolean(window.jupyterapp)"):
        page.wait_for_function(
            """() => {
                const w = window.jupyterapp.shell.currentWidget;
                const k = w && w.sessionContext && w.sessionContext.session
                    && w.sessionContext.session.kernel;
                return Boolean(w && w.context && w.context.isReady && k
                    && k.connectionStatus === 'connected' && k.status === 'idle');
            }""",
            timeout=KERNEL_READY_TIMEOUT_S * 1000,
        )
    else:
        page.locator('.jp-Notebook-ExecutionIndicator[data-status="idle"]').first.wait_for(
            state="attached", timeout=KERNEL_READY_TIMEOUT_S * 1000
        )


def open_notebook(page: Any, lab: Lab, notebook: str) -> None:
    """Open `notebook` in a JupyterLab workspace of its own (so no tab a previous test left
    open is restored next to it) and wait until its kernel is idle."""
    workspace = Path(notebook).stem
    page.goto(
        f"{lab.url}/lab/workspaces/{workspace}/tree/{notebook}?token={lab.token}",
        wait_until="domcontentloaded",
        timeout=LAB_START_TIMEOUT_S * 1000,
    )
    wait_for_kernel_idle(page)
    assert page.locator(".jp-Notebook").count() == 1, "another notebook is open on the page"


def run_all_cells(page: Any) -> None:
    """Run → Run All Cells: through the app's command registry (exposed with
    --LabApp.expose_app_in_browser), else through the menu. Does not wait for the cells."""
    if page.evaluate("() => Boolean(window.jupyterapp)"):
        page.evaluate(
            """() => {
                window.__prov4mlRunAll = 'pending';
                window.jupyterapp.commands.execute('notebook:run-all-cells').then(
                    () => { window.__prov4mlRunAll = 'done'; },
                    (e) => { window.__prov4mlRunAll = 'error: ' + e; });
            }"""
        )
        return
    page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click()
    page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Run All Cells$")).click()


def wait_for_run_all(page: Any) -> None:
    """Wait until no code cell shows `[*]` any more (not the kernel status, which can read
    "Idle" while a cell with a widget still runs), once some cell started."""
    started = False

    def finished() -> bool | None:
        nonlocal started
        prompts = code_prompts(page)
        busy = any("*" in p for p in prompts)
        started = started or busy or any(NUMBERED.search(p) for p in prompts)
        return True if started and not busy else None

    try:
        wait_until("every cell to finish", finished, RUN_ALL_TIMEOUT_S)
    except AssertionError as error:
        raise AssertionError(f"{error}; prompts: {code_prompts(page)}") from None


def check_ran_cleanly(page: Any) -> list[str]:
    """Every code cell ran, Run All ended without error, and no output shows a traceback;
    the outputs' texts."""
    prompts = code_prompts(page)
    assert all(NUMBERED.search(p) for p in prompts), f"not every cell ran: {prompts}"
    assert page.evaluate("() => window.__prov4mlRunAll || 'done'") == "done"
    outputs = list(page.locator(".jp-Notebook .jp-OutputArea").all_inner_texts())
    tracebacks = [text for text in outputs if "Traceback" in text]
    assert not tracebacks, "a cell output shows a traceback:\n" + "\n---\n".join(tracebacks)
    assert page.locator(SUMMARY).count() >= 1, "no %%provrun summary table on the page"
    return outputs


def wait_for_final_dashboard(page: Any, scope: Any) -> str:
    """The dashboard's final state: once the run has ended it shows the run's status, `ok`.
    (Waited for: the widget's last update may reach the page after the cell's prompt.)"""
    return wait_until(
        "the dashboard's final status 'ok'",
        lambda: "ok" if read_live_field(page, "status", scope) == "ok" else None,
        LIVE_TIMEOUT_S,
    )


def check_graph(page: Any, outputs: list[str]) -> None:
    """The inline provenance graph (SVG) is shown and has a size; without Graphviz's dot, the
    DOT fallback is checked instead and the test is skipped, saying so."""
    if shutil.which("dot") is None:
        assert "digraph" in "\n".join(outputs), "neither the SVG graph nor its DOT fallback shown"
        pytest.skip("Graphviz's dot is missing: checked the DOT fallback, not the SVG graph")
    graph = page.locator(GRAPH_SVG)
    assert graph.count() >= 1, f"no inline provenance graph ({GRAPH_SVG}) on the page"
    graph.first.scroll_into_view_if_needed()
    box = graph.first.bounding_box()
    assert box is not None and box["width"] > 50 and box["height"] > 50, box


def save_screenshot(page: Any, path: Path) -> None:
    """The whole notebook in one PNG: Lab scrolls inside its own panel, so the left side bar is
    closed and the viewport made as tall as the notebook's content, scrolled to the top."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    try:
        height = page.evaluate(
            """() => {
                if (window.jupyterapp) { window.jupyterapp.shell.collapseLeft(); }
                const outer = document.querySelector('.jp-NotebookPanel .jp-WindowedPanel-outer');
                return outer ? outer.scrollHeight : 0;
            }"""
        )
        page.set_viewport_size({"width": 1400, "height": min(max(1000, height + 200), 12000)})
        page.wait_for_timeout(500)
        page.evaluate(
            """() => {
                const outer = document.querySelector('.jp-NotebookPanel .jp-WindowedPanel-outer');
                if (outer) { outer.scrollTop = 0; }
            }"""
        )
        page.wait_for_timeout(300)
    except Exception:  # noqa: BLE001 - best effort; the screenshot itself matters more
        pass
    page.screenshot(path=str(path), full_page=True)


@contextmanager
def reported(page: Any, lab: Lab, screenshot: Path) -> Iterator[None]:
    """On a failure, print the browser's console errors and the server log's tail; in any
    case, save a screenshot of the page."""
    console_errors: list[str] = []
    page.on("console", lambda m: console_errors.append(m.text) if m.type == "error" else None)
    try:
        yield
    except Exception:
        if console_errors:
            print("browser console errors:\n" + "\n".join(console_errors[-20:]))
        print(f"JupyterLab log (tail):\n{_tail(lab.log)}")
        raise
    finally:
        save_screenshot(page, screenshot)


# ----------------------------------------------------------------------------------------------


def test_quickstart_runs_in_jupyterlab(lab: Lab, page: Any) -> None:
    """Run → Run All Cells on the quickstart: every cell executes, the provenance graph (inline
    SVG) and the `%%provrun` summary are shown, no output has a traceback, and the `%%provrun`
    cell's dashboard, if shown, ends on the run's status. Nothing here depends on how long a
    cell takes (the dashboard moving while a cell runs: `test_live_dashboard_moves_...`)."""
    with reported(page, lab, SCREENSHOT):
        open_notebook(page, lab, NOTEBOOK)
        provruns = provrun_cells(page)
        assert provruns, f"no %%provrun cell found in the page; code cells: {cell_sources(page)}"

        run_all_cells(page)
        wait_for_run_all(page)
        outputs = check_ran_cleanly(page)

        cell = page.locator(".jp-Notebook .jp-CodeCell").nth(provruns[0])
        if cell.locator(LIVE).count():
            wait_for_final_dashboard(page, cell)
        check_graph(page, outputs)


def test_live_dashboard_moves_while_provrun_runs(
    lab: Lab, page: Any, held_notebook: HeldNotebook
) -> None:
    """Run → Run All Cells on a notebook whose `%%provrun` cell runs until this test releases
    it: while the cell provably runs, its live dashboard shows status `running` and host
    figures, and its elapsed time moves; once released, every cell ran, the summary and graph
    are shown, no output has a traceback, and the dashboard ends on the run's final figures
    (status `ok`, elapsed time at least the last live reading)."""
    with reported(page, lab, LIVE_SCREENSHOT):
        open_notebook(page, lab, held_notebook.name)
        (held,) = provrun_cells(page)
        cell = page.locator(".jp-Notebook .jp-CodeCell").nth(held)
        run_all_cells(page)

        def live_and_running() -> bool | None:
            prompt = code_prompts(page)[held]
            assert not NUMBERED.search(prompt), (
                f"the held %%provrun cell ended before the test released it: {prompt}\n"
                + "\n".join(page.locator(".jp-Notebook .jp-OutputArea").all_inner_texts())
            )
            if "*" not in prompt or not cell.locator(LIVE).count():
                return None
            return True if read_live_field(page, "status", cell) == "running" else None

        wait_until(
            "the held %%provrun cell to run with its live dashboard showing 'running'",
            live_and_running,
            LIVE_TIMEOUT_S,
        )
        first = read_live_field(page, "elapsed_s", cell)
        # The cell cannot end before the release: wait for the value to move, however long
        # (within the bound) this machine takes to redraw the widget.
        second = wait_until(
            f"the live dashboard's elapsed_s to move from {first!r}",
            lambda: (
                text
                if float(text := read_live_field(page, "elapsed_s", cell)) > float(first)
                else None
            ),
            LIVE_TIMEOUT_S,
        )
        print(f"live dashboard elapsed_s while the cell runs: {first!r}, then {second!r}")
        assert float(read_live_field(page, "process_rss_mib", cell)) > 0, "no live host figures"
        # By construction, not by luck: the cell is still held, and the dashboard says so.
        assert "*" in code_prompts(page)[held], "the held cell ended before its release"
        assert read_live_field(page, "status", cell) == "running"

        held_notebook.release.touch()
        wait_for_run_all(page)
        outputs = check_ran_cleanly(page)
        held_output = cell.locator(".jp-OutputArea").inner_text()
        assert "released by the test" in held_output, held_output
        assert cell.locator(SUMMARY).count() == 1, "no summary under the held %%provrun cell"

        wait_for_final_dashboard(page, cell)
        final = read_live_field(page, "elapsed_s", cell)
        assert float(final) >= float(second), (first, second, final)
        check_graph(page, outputs)


HOSTILE_NOTEBOOK = "hostile_names.ipynb"
HOSTILE_SCREENSHOT = ARTIFACTS / "jupyterlab-hostile-names.png"
# Each payload would set window.__pwned (or open a javascript: link) if it ran as markup.
HOSTILE_RUN_NAME = '<<TABLE HREF="javascript:window.__pwned=1"><TR><TD>x</TD></TR></TABLE>>'
HOSTILE_CELL = r"""%%provrun --no-graph
from jupyter_prov4ml import log_metric, log_param, track
log_param('"><svg/onload=window.__pwned=2>', '<img src=x onerror=window.__pwned=3>')
log_param("ends with a backslash\\", "value\\")
for step in track(range(3), name="<script>window.__pwned=4</script>"):
    log_metric('"><img src=x onerror=window.__pwned=5>', 1.0 / (step + 1), step=step)
"""


def test_hostile_names_stay_text_in_jupyterlab(lab: Lab, page: Any) -> None:
    """A notebook full of names shaped as HTML, attribute break-outs, scripts and Graphviz
    HTML-like labels (run, parameter, metric and loop names, values ending in a backslash):
    JupyterLab shows them as text in the live dashboard, the summary, the run table and the
    graphs; no script runs, no `javascript:` link exists, every cell runs cleanly."""
    run_name = HOSTILE_RUN_NAME
    notebook = new_notebook(
        cells=[
            new_code_cell("%load_ext jupyter_prov4ml"),
            new_code_cell(HOSTILE_CELL),
            new_code_cell(f"%%provrun --name '{run_name}'\nx = 1"),
            new_code_cell("%prov list"),
            new_code_cell("%prov graph"),
        ],
        metadata={
            "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}
        },
    )
    nbformat.write(notebook, lab.root / HOSTILE_NOTEBOOK)
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    with reported(page, lab, HOSTILE_SCREENSHOT):
        open_notebook(page, lab, HOSTILE_NOTEBOOK)
        run_all_cells(page)
        wait_for_run_all(page)
        outputs = check_ran_cleanly(page)
        text = "\n".join(outputs)
        assert page.evaluate("() => window.__pwned === undefined"), "a payload ran"
        assert not dialogs, dialogs
        links = page.evaluate(
            """() => Array.from(document.querySelectorAll('a, [href], [*|href]'))
                .map(e => e.getAttribute('href') || e.getAttribute('xlink:href') || '')
                .filter(h => h.trim().toLowerCase().startsWith('javascript'))"""
        )
        assert links == [], links
        # Shown as text, where the user can read them.
        assert "onerror=window.__pwned=5" in text, "the metric name is not shown as text"
        assert "<script>window.__pwned=4</script>" in text, "the loop name is not shown as text"
        assert "ends with a backslash\\" in text
        images = page.evaluate(
            "() => document.querySelectorAll('.jp-OutputArea img[src=x]').length"
        )
        assert images == 0
        if shutil.which("dot") is not None:
            assert page.locator(GRAPH_SVG).count() >= 1, "the session graph is not drawn"
