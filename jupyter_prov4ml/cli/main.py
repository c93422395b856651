"""`jupyter-prov4ml`: run notebooks headlessly and read a store from a shell."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jupyter_prov4ml.notices import brief
from jupyter_prov4ml.redaction import redact_text
from jupyter_prov4ml.settings import Settings, resolve_store_root
from jupyter_prov4ml.store.files import write_private
from jupyter_prov4ml.store.guard import store_problems
from jupyter_prov4ml.store.index import parse_count
from jupyter_prov4ml.store.layout import Store, StoredRun, UnsafeStorePath
from jupyter_prov4ml.views.prov_graph import DotUnavailable

EXPORT_FORMATS = ("json", "provn", "xml", "rdf", "dot", "svg", "metrics-csv", "rocrate")

if TYPE_CHECKING:
    from jupyter_prov4ml.views.lineage_graph import SessionLineage


class RunError(Exception):
    """A stored run that cannot be shown or exported as asked; the message says why."""


def _store(args: argparse.Namespace) -> Store:
    settings = Settings.from_environ(warn=_tell_setting)
    root = Path(args.store).expanduser().resolve() if args.store else settings.store_root
    store = Store(root, settings.store_modes, _tell_damage)
    problems = store_problems(root, settings.store_modes)
    if problems:
        # Read it (what is read is untrusted anyway), but write nothing into it.
        _tell_damage(f"{'; '.join(problems)}: not recovering crashed runs into this store")
    else:
        _recover(store)
    return store


def _tell_setting(key: str, message: str) -> None:
    print(f"jupyter-prov4ml: {message}", file=sys.stderr)


def _tell_damage(message: str) -> None:
    print(f"jupyter-prov4ml: warning: {message}", file=sys.stderr)


def _recover(store: Store) -> None:
    """Finalise runs of dead kernels first, so they are listed (as `crashed`)."""
    from jupyter_prov4ml.notices import Notices
    from jupyter_prov4ml.store.recovery import recover_store

    notices = Notices()
    try:
        recovered = recover_store(store, notices)
    except OSError as error:
        notices.warn("recovery", f"could not finalise runs of dead kernels ({error})")
    else:
        if recovered:
            notices.warn("recovered", recovered.describe().replace("%prov list", "list"))
    notices.flush_to_stderr()


def cmd_run(args: argparse.Namespace) -> int:
    from jupyter_prov4ml.cli.parameters import parameters_of
    from jupyter_prov4ml.cli.runner import run_notebook

    notebook = Path(args.notebook)
    if not notebook.is_file():
        print(f"jupyter-prov4ml: no such notebook: {notebook}", file=sys.stderr)
        return 2
    store = Path(args.store) if args.store else None
    outcome = run_notebook(
        notebook,
        output=Path(args.output) if args.output else None,
        store=store,
        kernel_name=args.kernel,
        timeout_s=args.timeout,
        allow_errors=args.allow_errors,
        parameters=parameters_of(args.parameters or ()),
    )
    print(f"executed notebook: {outcome.executed_path}")
    root = store.resolve() if store else resolve_store_root(os.environ, notebook.resolve().parent)
    print(f"provenance store: {root}")
    if not args.no_annotate:
        _annotate(outcome.executed_path, root)
    if outcome.error:
        print(f"jupyter-prov4ml: a cell failed: {outcome.error}", file=sys.stderr)
        return 1
    return 0


def _annotate(notebook: Path, root: Path) -> None:
    """Each cell's figures into the executed notebook's metadata; a failure only warns."""
    from jupyter_prov4ml.store.notebook_file import NotebookError
    from jupyter_prov4ml.store.notebook_runs import annotate_notebook

    settings = Settings.from_environ(warn=_tell_setting)
    try:
        annotate_notebook(Store(root, settings.store_modes, _tell_damage), notebook)
    except (NotebookError, OSError) as error:
        _tell_damage(f"the cells' figures were not written into {notebook}: {error}")


def cmd_list(args: argparse.Namespace) -> int:
    from jupyter_prov4ml.store.index import RunQuery
    from jupyter_prov4ml.views.run_table import RunTable, run_row

    query = RunQuery(
        kind=args.kind, name=args.name, failed=args.failed, last=args.last, tag=args.tag
    )
    rows = [run_row(run) for run in _store(args).query(query)]
    print(json.dumps(rows, indent=1) if args.json else repr(RunTable(rows, wide=args.wide)))
    return 0


def cmd_diff(args: argparse.Namespace) -> int:
    from jupyter_prov4ml.views.run_diff import diff_runs

    store = _store(args)
    difference = diff_runs(store.find(args.run_a), store.find(args.run_b), store)
    print(json.dumps(difference.to_dict(), indent=1) if args.json else repr(difference))
    return 0


def _session_lineage(args: argparse.Namespace) -> SessionLineage:
    """A session's lineage (the newest session by default), replayed from the store."""
    from jupyter_prov4ml.views.lineage_graph import SessionLineage

    store = _store(args)
    runs = store.runs(session_id=args.session) if args.session else store.runs()
    if not runs:
        raise LookupError(f"no runs in {store.root}")
    session = args.session or runs[-1].run.session_id
    return SessionLineage.of([s.run for s in runs if s.run.session_id == session])


def cmd_graph(args: argparse.Namespace) -> int:
    from jupyter_prov4ml.views.prov_graph import render_svg

    text = _session_lineage(args).dot(args.last, full=args.full)
    if args.format == "svg":
        text = render_svg(text)
    _write(text, args.output)
    return 0


def cmd_stale(args: argparse.Namespace) -> int:
    print(repr(_session_lineage(args).report()))
    return 0


def _write(text: str, output: str | None) -> None:
    if output:
        write_private(Path(output), text.encode("utf-8"))
    else:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")


def cmd_show(args: argparse.Namespace) -> int:
    from jupyter_prov4ml.views.run_table import run_row

    stored = _store(args).find(args.run_id)
    try:
        row = run_row(stored)
    except (TypeError, ValueError, OverflowError) as error:  # a record edited or damaged
        raise RunError(f"the record of run {stored.run.run_id} is damaged ({error})") from None
    width = max(len(k) for k in row)
    for key, value in row.items():
        print(f"{key:>{width}}: {value}")
    for data_file in stored.run.data_files:
        print(f"{'data file':>{width}}: {data_file.relpath} ({data_file.size_bytes} bytes)")
    annotations = _store(args).annotations()
    tags = annotations.tags_of(stored.run.run_id)
    if tags:
        print(f"{'tags':>{width}}: {', '.join(tags)}")
    for note in annotations.notes.get(stored.run.run_id, ()):
        print(f"{'note':>{width}}: {redact_text(note.text)}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from jupyter_prov4ml import provmodel

    store = _store(args)
    if args.session:
        return _export_session(args, store)
    stored = store.find(args.run_id)
    if args.format == "rocrate":
        return _export_rocrate(args, store, stored)
    if args.notebook:
        print("jupyter-prov4ml: --notebook is for --format rocrate", file=sys.stderr)
        return 2
    if args.format == "metrics-csv":
        text = _metrics_csv(store, stored)
    elif args.format in ("dot", "svg"):
        document = _document(stored)
        from jupyter_prov4ml.views.prov_graph import dot_source, readable_dot_source, render_svg

        source = dot_source if args.full else readable_dot_source
        text = source(document, title=stored.run.name)
        if args.format == "svg":
            text = render_svg(text)
    else:
        document = _document(stored)
        try:
            text = provmodel.serialize(document, args.format)
        except ValueError as error:  # e.g. PROV-XML refuses control characters in a name
            run_id, fmt = stored.run.run_id, args.format
            raise RunError(f"run {run_id} cannot be written as {fmt}: {error}") from None
    _write(text, args.output)
    return 0


def _export_session(args: argparse.Namespace, store: Store) -> int:
    """Every run of one kernel session in one PROV document (plain cells are stored as
    journal lines; this is where they come out together, with their lineage)."""
    from jupyter_prov4ml import provmodel

    if args.format in ("rocrate", "metrics-csv") or args.notebook:
        print(
            "jupyter-prov4ml: --session exports json, xml, rdf, provn, dot or svg", file=sys.stderr
        )
        return 2
    runs = store.runs(session_id=args.run_id)
    if not runs:
        raise LookupError(f"no session {args.run_id!r} in {store.root}")
    document = provmodel.redacted_document(
        provmodel.session_document([stored.run for stored in runs], runs[0].session)
    )
    if args.format in ("dot", "svg"):
        from jupyter_prov4ml.views.prov_graph import dot_source, readable_dot_source, render_svg

        source = dot_source if args.full else readable_dot_source
        text = source(document, title=f"session {args.run_id}")
        if args.format == "svg":
            text = render_svg(text)
    else:
        try:
            text = provmodel.serialize(document, args.format)
        except ValueError as error:
            message = f"session {args.run_id} cannot be written as {args.format}: {error}"
            raise RunError(message) from None
    _write(text, args.output)
    return 0


def _document(stored: StoredRun) -> Any:
    """The run's PROV document; rebuilt from its journal record where its file is damaged."""
    from jupyter_prov4ml import provmodel

    try:
        return provmodel.redacted_document(stored.document())
    # `prov` and `json` parse whatever bytes the file holds now, and fail in many ways.
    except Exception as error:  # noqa: BLE001
        failure = error
    try:
        document = provmodel.redacted_document(provmodel.run_document(stored.run, stored.session))
    except Exception:  # noqa: BLE001 - the record itself is damaged too
        raise RunError(f"run {stored.run.run_id} cannot be exported ({brief(failure)})") from None
    print(
        f"jupyter-prov4ml: warning: {stored.prov_path} cannot be read ({brief(failure)}); "
        "exported from the run's journal record instead",
        file=sys.stderr,
    )
    return document


def _export_rocrate(args: argparse.Namespace, store: Store, stored: StoredRun) -> int:
    from jupyter_prov4ml.cli.rocrate import CrateError, export_rocrate

    if not args.output:
        print("jupyter-prov4ml: --format rocrate needs -o DIR_OR_ZIP", file=sys.stderr)
        return 2
    notebook = Path(args.notebook) if args.notebook else None
    if notebook is not None and not notebook.is_file():
        print(f"jupyter-prov4ml: no such notebook: {notebook}", file=sys.stderr)
        return 2
    try:
        crate = export_rocrate(store, stored, Path(args.output), notebook=notebook)
    except CrateError as error:
        print(f"jupyter-prov4ml: {error}", file=sys.stderr)
        return 2
    for relpath in crate.missing:
        print(f"jupyter-prov4ml: warning: {relpath} is missing from the store", file=sys.stderr)
    for changed in crate.mismatched:
        print(
            f"jupyter-prov4ml: warning: {changed.crate_path} changed since it was recorded "
            f"(sha256 {changed.sha256[:12]}…, recorded {str(changed.recorded_sha256)[:12]}…)",
            file=sys.stderr,
        )
    return 0


def _metrics_csv(store: Store, stored: StoredRun) -> str:
    """The run's metric points as CSV (name, context, step, value, time_s); values are
    written with repr, so floats (NaN and infinities included) read back exactly."""
    import csv
    import io

    from jupyter_prov4ml.store.series_files import MetricsFileError, read_metrics_file

    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["name", "context", "step", "value", "time_s"])
    for data_file in stored.run.data_files:
        if data_file.role == "metrics":
            try:
                columns = read_metrics_file(store.resolve(data_file.relpath))
            except (MetricsFileError, UnsafeStorePath) as error:
                print(
                    f"jupyter-prov4ml: warning: {error}; its points are left out", file=sys.stderr
                )
                continue
            for row in zip(*columns.values(), strict=True):
                name, context = redact_text(str(row[0])), redact_text(str(row[1]))
                writer.writerow([name, context, row[2], repr(row[3]), repr(row[4])])
    return out.getvalue()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jupyter-prov4ml", description="Provenance of ML notebooks as W3C PROV."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    def with_store(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument(
            "--store", help="store folder (default: $JUPYTER_PROV4ML_STORE or ./prov4ml)"
        )
        return p

    run = with_store(sub.add_parser("run", help="execute a notebook headlessly in a real kernel"))
    run.add_argument("notebook")
    run.add_argument("-o", "--output", help="executed notebook (default: NAME.executed.ipynb)")
    run.add_argument("--kernel", help="kernel name (default: the notebook's)")
    run.add_argument("--timeout", type=int, default=None, help="per-cell timeout in seconds")
    run.add_argument("--allow-errors", action="store_true", help="keep going after a failure")
    run.add_argument(
        "-p",
        "--parameter",
        dest="parameters",
        nargs=2,
        action="append",
        metavar=("NAME", "VALUE"),
        help="inject a parameter as papermill does (typed like papermill's -p); repeatable",
    )
    run.add_argument(
        "--no-annotate",
        action="store_true",
        help="do not write each cell's time, peak RSS and energy into its metadata",
    )
    run.set_defaults(func=cmd_run)

    lst = with_store(sub.add_parser("list", help="list recorded runs"))
    lst.add_argument("--json", action="store_true", help="a JSON array instead of a table")
    lst.add_argument("--kind", choices=("cell", "provrun"), help="only runs of this kind")
    lst.add_argument("--last", type=parse_count, metavar="N", help="only the last N runs")
    lst.add_argument("--name", metavar="X", help="only runs named X (a glob: 'base*')")
    lst.add_argument("--failed", action="store_true", help="only runs that did not end ok")
    lst.add_argument("--wide", action="store_true", help="add energy and parameters to the table")
    lst.add_argument("--tag", metavar="TAG", help="only runs tagged TAG (see `tag`)")
    lst.set_defaults(func=cmd_list)

    diff = with_store(sub.add_parser("diff", help="what changed between two runs"))
    diff.add_argument("run_a", help="the reference run (an id, or a unique end of one)")
    diff.add_argument("run_b", help="the run compared with it")
    diff.add_argument("--json", action="store_true", help="JSON instead of text")
    diff.set_defaults(func=cmd_diff)

    graph = with_store(sub.add_parser("graph", help="a session's lineage between cells"))
    graph.add_argument("--session", help="session id (default: the newest)")
    graph.add_argument("--last", type=parse_count, metavar="N", help="only the last N executions")
    graph.add_argument("--format", "-f", choices=("dot", "svg"), default="dot")
    graph.add_argument("-o", "--output", help="write here instead of stdout")
    graph.add_argument("--full", action="store_true", help="every cell, none folded into blocks")
    graph.set_defaults(func=cmd_graph)

    stale = with_store(sub.add_parser("stale", help="cells whose output may be stale"))
    stale.add_argument("--session", help="session id (default: the newest)")
    stale.set_defaults(func=cmd_stale)

    show = with_store(sub.add_parser("show", help="details of one run"))
    show.add_argument("run_id", help="a run id, or a unique end of one")
    show.set_defaults(func=cmd_show)

    export = with_store(
        sub.add_parser("export", help="a run's provenance in a PROV format, or as an RO-Crate")
    )
    export.add_argument(
        "run_id", help="a run id, or a unique end of one (with --session: a session id)"
    )
    export.add_argument(
        "--session",
        action="store_true",
        help="export every run of the session RUN_ID names, plain cells included, as one document",
    )
    export.add_argument("--format", "-f", choices=EXPORT_FORMATS, default="json")
    export.add_argument(
        "-o",
        "--output",
        help="write here instead of stdout (rocrate: a folder, or a file ending in .zip)",
    )
    export.add_argument(
        "--notebook",
        help="rocrate: a notebook to add (read now, redacted, outputs left out); the crate "
        "always holds the cells as the store recorded them",
    )
    export.add_argument(
        "--full",
        action="store_true",
        help="dot/svg: every element of the run (default: steps, parameters… folded)",
    )
    export.set_defaults(func=cmd_export)
    from jupyter_prov4ml.cli.store_commands import add_store_commands

    add_store_commands(sub, with_store, _store)
    from jupyter_prov4ml.cli.view_commands import add_view_commands

    add_view_commands(sub, with_store, _store)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except LookupError as error:
        print(f"jupyter-prov4ml: {error.args[0] if error.args else error}", file=sys.stderr)
        return 2
    except DotUnavailable as error:
        print(f"jupyter-prov4ml: {error}", file=sys.stderr)
        return 3
    except RunError as error:
        print(f"jupyter-prov4ml: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
