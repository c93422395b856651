"""End to end in a real browser: JupyterLab runs notebooks/quickstart.ipynb in headless Chromium,
and the provenance outputs (inline SVG graph, `%%provrun` summary) appear with no traceback.

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
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.browser

REPO = Path(__file__).resolve().parents[2]
NOTEBOOKS = REPO / "notebooks"
NOTEBOOK = "quickstart.ipynb"
ARTIFACTS = REPO / "build" / "test-artifacts"
SCREENSHOT = ARTIFACTS / "jupyterlab-quickstart.png"
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

LAB_START_TIMEOUT_S = 120
KERNEL_READY_TIMEOUT_S = 120
RUN_ALL_TIMEOUT_S = 180

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


# ----------------------------------------------------------------------------------------------
# Page helpers


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


@dataclass
class LiveCheck:
    """What the live-dashboard check saw while the `%%provrun` cell ran."""

    seen_running: bool = False
    readings: tuple[str, str] | None = None
    still_running_after: bool = False


def check_live_dashboard(page: Any, provrun_index: int) -> LiveCheck:
    """LIVE DASHBOARD check: while the `%%provrun` cell shows `[*]` and its dashboard is on the
    page, read `elapsed_s` twice about 1 s apart. The caller asserts that it changed."""
    result = LiveCheck(seen_running=True)
    cell = page.locator(".jp-Notebook .jp-CodeCell").nth(provrun_index)
    first = read_live_field(page, "elapsed_s", cell)
    time.sleep(1.0)
    second = read_live_field(page, "elapsed_s", cell)
    result.readings = (first, second)
    result.still_running_after = "*" in code_prompts(page)[provrun_index]
    return result


def wait_for_run_all(page: Any, provrun_index: int | None) -> LiveCheck | None:
    """Wait until no code cell shows `[*]` any more (not the kernel status, which can read
    "Idle" while a cell with a widget still runs). Meanwhile, when the `%%provrun` cell's live
    dashboard appears while that cell runs, do the live check once."""
    deadline = time.monotonic() + RUN_ALL_TIMEOUT_S
    started = False
    live: LiveCheck | None = None
    while True:
        prompts = code_prompts(page)
        busy = any("*" in p for p in prompts)
        started = started or busy or any(NUMBERED.search(p) for p in prompts)
        if (
            live is None
            and provrun_index is not None
            and "*" in prompts[provrun_index]
            and page.locator(LIVE).count()
        ):
            live = check_live_dashboard(page, provrun_index)
            continue
        if started and not busy:
            return live
        if time.monotonic() > deadline:
            raise AssertionError(
                f"cells still running after {RUN_ALL_TIMEOUT_S} s; prompts: {prompts}"
            )
        time.sleep(0.1)


def save_screenshot(page: Any) -> None:
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
    page.screenshot(path=str(SCREENSHOT), full_page=True)


# ----------------------------------------------------------------------------------------------


def test_quickstart_runs_in_jupyterlab(lab: Lab, page: Any) -> None:
    """Run → Run All Cells on the quickstart: every cell executes, the provenance graph (inline
    SVG) and the `%%provrun` summary are shown, no output has a traceback, and, once the live
    dashboard exists, its elapsed time moves while the `%%provrun` cell runs."""
    console_errors: list[str] = []
    page.on("console", lambda m: console_errors.append(m.text) if m.type == "error" else None)
    try:
        page.goto(
            f"{lab.url}/lab/tree/{NOTEBOOK}?token={lab.token}",
            wait_until="domcontentloaded",
            timeout=LAB_START_TIMEOUT_S * 1000,
        )
        wait_for_kernel_idle(page)

        sources = cell_sources(page)
        provruns = [i for i, s in enumerate(sources) if s.lstrip().startswith("%%provrun")]
        assert provruns, f"no %%provrun cell found in the page; code cells: {sources}"

        run_all_cells(page)
        live = wait_for_run_all(page, provruns[0])

        prompts = code_prompts(page)
        assert all(NUMBERED.search(p) for p in prompts), f"not every cell ran: {prompts}"
        assert page.evaluate("() => window.__prov4mlRunAll || 'done'") == "done"

        outputs = page.locator(".jp-Notebook .jp-OutputArea").all_inner_texts()
        tracebacks = [text for text in outputs if "Traceback" in text]
        assert not tracebacks, "a cell output shows a traceback:\n" + "\n---\n".join(tracebacks)

        assert page.locator(SUMMARY).count() >= 1, "no %%provrun summary table on the page"

        # LIVE DASHBOARD (being built): when `.jp-prov4ml-live` exists, this check must have run
        # while the `%%provrun` cell was running, and must pass.
        if page.locator(LIVE).count() or live is not None:
            assert live is not None and live.readings is not None, (
                "the live dashboard is on the page, but the %%provrun cell was never seen "
                "running with it: the cell must run well over 1 s for the check"
            )
            assert live.still_running_after, (
                f"the %%provrun cell finished within the 1 s between two readings of elapsed_s "
                f"{live.readings}: the cell must run longer for the check"
            )
            first, second = live.readings
            print(f"live dashboard elapsed_s, 1 s apart while running: {first!r}, {second!r}")
            assert first != second, f"live elapsed_s did not move in 1 s: {first!r}"

        if shutil.which("dot") is None:
            outputs_text = "\n".join(outputs)
            assert "digraph" in outputs_text, "neither the SVG graph nor its DOT fallback shown"
            pytest.skip("Graphviz's dot is missing: checked the DOT fallback, not the SVG graph")
        graph = page.locator(GRAPH_SVG)
        assert graph.count() >= 1, f"no inline provenance graph ({GRAPH_SVG}) on the page"
        graph.first.scroll_into_view_if_needed()
        box = graph.first.bounding_box()
        assert box is not None and box["width"] > 50 and box["height"] > 50, box
    except Exception:
        if console_errors:
            print("browser console errors:\n" + "\n".join(console_errors[-20:]))
        print(f"JupyterLab log (tail):\n{_tail(lab.log)}")
        raise
    finally:
        save_screenshot(page)
