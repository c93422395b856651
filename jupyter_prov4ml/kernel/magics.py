"""`%%provrun` and `%prov`: parse the line, hand the work to the extension, display the result."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, cell_magic, line_magic, magics_class, no_var_expand
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring

from jupyter_prov4ml.capture.params import ParamError, parse_param_option
from jupyter_prov4ml.kernel.provrun import ProvrunOptions, run_captured
from jupyter_prov4ml.notation import utf8_safe
from jupyter_prov4ml.notices import brief
from jupyter_prov4ml.views.prov_graph import ProvGraph
from jupyter_prov4ml.views.run_display import show_finished_run, show_stored_run
from jupyter_prov4ml.views.run_summary import RunSummary

if TYPE_CHECKING:
    from jupyter_prov4ml.kernel.extension import ProvExtension

# `%prov list` shows at most this many runs unless asked for more: a notebook keeps its
# outputs, and a table of every run of a large store would bloat it.
NOTEBOOK_LIST_LIMIT = 200
# IPython expands `$name` and `{expr}` in a magic's line with a regex whose time grows with
# the square of the line's length (2.5 s for 10,000 characters here, minutes for 100,000):
# `%%provrun` expands its line itself, and only lines up to this long.
MAX_EXPANDED_LINE_CHARS = 2_000
# IPython's argument splitting (shlex) takes time growing with the square of one argument's
# length (0.13-0.23 s at 100,000 characters, ~2 s at 400,000): longer lines are refused.
MAX_LINE_CHARS = 10_000
# The frame IPython expands a cell magic's line in (its `run_cell_magic` uses depth 2), seen
# from inside the magic, one call further down.
_EXPANSION_DEPTH = 3
# The same for a line magic (IPython's `run_line_magic` has one frame fewer).
_LINE_EXPANSION_DEPTH = 2


def parsed_line(magic: Any, line: str) -> Any:
    """The magic's arguments; an unbalanced quote, or a line too long to parse in bounded
    time, is a UsageError like any other bad line."""
    if len(line) > MAX_LINE_CHARS:
        raise UsageError(
            f"the magic's line is {len(line):,} characters, more than {MAX_LINE_CHARS:,}; "
            "log long values from the cell instead (jupyter_prov4ml.log_param)"
        )
    try:
        return parse_argstring(magic, line)
    except ValueError as error:  # shlex: "No closing quotation", "No escaped character"
        raise UsageError(f"{error}\n{magic.parser.format_usage()}") from None


def _count(text: str) -> int:
    """`--last N`, checked as the CLI checks it (imported on use: it lives with the index)."""
    from jupyter_prov4ml.store.index import parse_count

    return parse_count(text)


@magics_class
class ProvMagics(Magics):
    """Magics bound to one ProvExtension."""

    def __init__(self, shell: Any, extension: ProvExtension) -> None:
        super().__init__(shell)
        self.extension = extension

    @magic_arguments()
    @argument("--name", "-n", help="a name for this run (e.g. baseline)")
    @argument(
        "--param",
        "-p",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="record a parameter; repeat for several (values are Python literals or text)",
    )
    @argument(
        "--interval",
        type=float,
        default=0.1,
        metavar="SECONDS",
        help="hardware sampling interval (default 0.1 s, i.e. 10 Hz)",
    )
    @argument("--no-graph", action="store_true", help="do not show the provenance graph")
    @argument("--no-live", action="store_true", help="do not show the live dashboard")
    @no_var_expand
    @cell_magic
    def provrun(self, line: str, cell: str) -> None:
        """Run the cell with full provenance capture: parameters, hardware use, PROV graph.

        Top-level literal assignments in the cell (``batch_size = 64``) are recorded as
        parameters too, read with ``ast`` and never evaluated.
        """
        if ("$" in line or "{" in line) and len(line) <= MAX_EXPANDED_LINE_CHARS:
            line = self.extension.shell.var_expand(line, _EXPANSION_DEPTH)
        args = parsed_line(self.provrun, line)
        try:
            params = tuple(parse_param_option(text) for text in args.param)
        except ParamError as error:
            raise UsageError(f"{error}\n{self.provrun.parser.format_usage()}") from None
        if not 0.001 <= args.interval <= 3600:
            raise UsageError(
                f"--interval must be between 0.001 and 3600 seconds, got {args.interval}\n"
                + self.provrun.parser.format_usage()
            )
        options = ProvrunOptions(
            # A lone surrogate (text decoded with surrogateescape) cannot be stored as UTF-8.
            name=None if args.name is None else utf8_safe(args.name),
            params=params,
            interval_s=args.interval,
            graph=not args.no_graph,
            live=not args.no_live,
        )
        captured = run_captured(self.extension, options, cell)
        if captured is not None:
            summary = RunSummary(
                captured.run, captured.latest_metrics, captured.stale_inputs, captured.curves
            )
            document = captured.document if options.graph else None
            show_finished_run(summary, document, self.extension.notices)

    @magic_arguments()
    @argument(
        "command",
        nargs="?",
        default="status",
        choices=[
            "status",
            "list",
            "show",
            "diff",
            "stale",
            "graph",
            "flush",
            "config",
            "verify",
            "annotate",
            "tag",
            "note",
            "plot",
            "compare",
            "energy",
        ],
        help="what to do (default: status)",
    )
    @argument(
        "args",
        nargs="*",
        help="RUN_ID for show; RUN_A RUN_B for diff; RUN … for plot and compare; "
        "RUN NAME… for tag; RUN TEXT for note; for config: `store PATH`, "
        "`carbon-intensity G_PER_KWH` or `cpu-watts-per-core WATTS`",
    )
    @argument("--last", type=_count, default=None, metavar="N", help="list only the last N runs")
    @argument("--kind", choices=["cell", "provrun"], default=None, help="list only this kind")
    @argument("--name", default=None, metavar="X", help="list only runs named X (glob: base*)")
    @argument("--failed", action="store_true", help="list only runs that did not end ok")
    @argument("--tag", default=None, metavar="TAG", help="list only runs tagged TAG")
    @argument("--remove", action="store_true", help="tag: remove the tags instead")
    @argument("--full", action="store_true", help="show/graph: every node, nothing folded")
    @argument("--metric", default=None, metavar="NAME", help="plot/energy: this metric")
    @argument("--context", default=None, metavar="C", help="plot/energy: this context only")
    @argument("--x", choices=["step", "time"], default="step", help="plot: the x axis")
    @argument(
        "--group-by",
        default=None,
        metavar="PARAM",
        help="plot: runs differing only in PARAM (e.g. seed) drawn as mean ± sd",
    )
    @argument(
        "--all",
        action="store_true",
        help=f"list every run (default: the newest {NOTEBOOK_LIST_LIMIT})",
    )
    @no_var_expand
    @line_magic
    def prov(self, line: str) -> Any:
        """Browse and manage provenance: status, list, show RUN, diff A B, stale, graph, flush,
        config; verify and annotate the open notebook; tag RUN NAME…, note RUN TEXT."""
        if ("$" in line or "{" in line) and len(line) <= MAX_EXPANDED_LINE_CHARS:
            line = self.extension.shell.var_expand(line, _LINE_EXPANSION_DEPTH)
        args = parsed_line(self.prov, line)
        ext = self.extension
        if args.command == "status":
            print(ext.status_line())
        elif args.command == "flush":
            print(ext.flush())
        elif args.command == "list":
            # Imported here, not at `%load_ext`: listing needs sqlite3 and the index.
            from jupyter_prov4ml.store.index import RunQuery
            from jupyter_prov4ml.views.run_table import run_table

            query = RunQuery(
                kind=args.kind, name=args.name, failed=args.failed, last=args.last, tag=args.tag
            )
            newest = None if args.all else NOTEBOOK_LIST_LIMIT
            return run_table(ext.store_for_reading(), query, newest=newest, wide=True)
        elif args.command == "diff":
            if len(args.args) != 2:
                raise UsageError("usage: %prov diff RUN_A RUN_B")
            from jupyter_prov4ml.views.run_diff import diff_runs

            store = ext.store_for_reading()
            try:
                first, second = (store.find(ref) for ref in args.args)
            except LookupError as error:
                raise UsageError(str(error)) from None
            return diff_runs(first, second, store)
        elif args.command == "show":
            if len(args.args) != 1:
                raise UsageError("usage: %prov show RUN_ID")
            try:
                stored = ext.store_for_reading().find(args.args[0])
            except LookupError as error:
                raise UsageError(str(error)) from None
            try:
                show_stored_run(stored, full=args.full)
            # What the store holds may be damaged (a truncated PROV document, a record edited
            # by hand): say so in one line rather than with a traceback in the notebook.
            except Exception as error:  # noqa: BLE001
                print(
                    f"jupyter_prov4ml: cannot show run {args.args[0]}: {brief(error)}",
                    file=sys.stderr,
                )
        elif args.command == "stale":
            return ext.session_lineage().report()
        elif args.command == "graph":
            return ProvGraph.from_dot(ext.session_lineage().dot(args.last, full=args.full))
        elif args.command == "verify":
            from jupyter_prov4ml.kernel.store_actions import verify_open_notebook

            return verify_open_notebook(ext)
        elif args.command == "annotate":
            from jupyter_prov4ml.kernel.store_actions import annotate_open_notebook

            print(annotate_open_notebook(ext))
        elif args.command == "tag":
            from jupyter_prov4ml.kernel.store_actions import tag_run

            print(tag_run(ext, args.args, args.remove))
        elif args.command == "note":
            from jupyter_prov4ml.kernel.store_actions import note_run

            print(note_run(ext, args.args))
        elif args.command in ("plot", "compare", "energy"):
            from jupyter_prov4ml.views.run_views import run_view

            try:
                return run_view(
                    ext.store_for_reading(),
                    args.command,
                    args.args,
                    metric=args.metric,
                    context=args.context,
                    x=args.x,
                    group_by=args.group_by,
                    name=args.name,
                    notebook_path=ext.notebook_path,
                )
            except LookupError as error:
                raise UsageError(str(error.args[0] if error.args else error)) from None
        elif args.command == "config":
            self._config(args.args)
        return None

    def _config(self, words: list[str]) -> None:
        ext = self.extension
        usage = (
            "usage: %prov config store PATH | carbon-intensity G_PER_KWH | cpu-watts-per-core WATTS"
        )
        if len(words) != 2:
            raise UsageError(usage)
        key, value = words
        if key == "store":
            ext.set_store(Path(value).expanduser().resolve())
            print(f"jupyter_prov4ml: now recording to {ext.store.root}")
            return
        if key not in ("carbon-intensity", "cpu-watts-per-core"):
            raise UsageError(usage)
        config = ext.meter.config
        try:
            number = float(value)
            config = (
                replace(config, carbon_intensity_g_per_kwh=number)
                if key == "carbon-intensity"
                else replace(config, watts_per_core=number)
            )
        except ValueError as error:
            raise UsageError(f"{key}: {error}") from None
        ext.set_energy_config(config)
        print(
            f"jupyter_prov4ml: carbon intensity {config.carbon_intensity_g_per_kwh:g} g/kWh, "
            f"CPU {config.watts_per_core:g} W per core"
        )
