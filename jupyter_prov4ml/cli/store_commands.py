"""`jupyter-prov4ml verify | tag | note | rm | gc`: checking a saved notebook against the
store, and keeping the store tidy. Each command parses, delegates to store/, and prints."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

from jupyter_prov4ml.settings import resolve_store_root
from jupyter_prov4ml.store.layout import Store

OpenStore = Callable[[argparse.Namespace], Store]
AddStore = Callable[[argparse.ArgumentParser], argparse.ArgumentParser]


def _say(message: str) -> None:
    print(f"jupyter-prov4ml: {message}", file=sys.stderr)


def cmd_verify(args: argparse.Namespace, open_store: OpenStore) -> int:
    """0: clean; 1: not clean (the first offending cell named); 2: cannot check."""
    from jupyter_prov4ml.store.notebook_file import NotebookError
    from jupyter_prov4ml.store.notebook_runs import verify_notebook

    notebook = Path(args.notebook)
    if not args.store:
        args.store = str(resolve_store_root(os.environ, notebook.resolve().parent))
    if not Path(args.store, "sessions").is_dir():
        _say(f"no provenance store at {args.store} (give --store DIR)")
        return 2
    try:
        report = verify_notebook(open_store(args), notebook)
    except NotebookError as error:
        _say(str(error))
        return 2
    print(json.dumps(report.to_dict(), indent=1) if args.json else repr(report))
    return 0 if report.clean else 1


def cmd_tag(args: argparse.Namespace, open_store: OpenStore) -> int:
    from jupyter_prov4ml.store.annotations import AnnotationError, append_annotations, tag_line

    store = open_store(args)
    run_id = store.find(args.run).run.run_id
    try:
        append_annotations(store.root, [tag_line(run_id, args.tags, args.remove)], store.modes)
    except AnnotationError as error:
        _say(str(error))
        return 2
    tags = store.annotations().tags_of(run_id)
    print(f"{run_id}: {', '.join(tags) if tags else '(no tags)'}")
    return 0


def cmd_note(args: argparse.Namespace, open_store: OpenStore) -> int:
    from jupyter_prov4ml.store.annotations import AnnotationError, append_annotations, note_line

    store = open_store(args)
    run_id = store.find(args.run).run.run_id
    try:
        append_annotations(store.root, [note_line(run_id, args.text)], store.modes)
    except AnnotationError as error:
        _say(str(error))
        return 2
    print(f"{run_id}: note added")
    return 0


def cmd_rm(args: argparse.Namespace, open_store: OpenStore) -> int:
    from jupyter_prov4ml.store.run_deletion import RunToDelete, delete_runs

    store = open_store(args)
    found = [store.find(ref).run for ref in args.runs]  # all found before any is deleted
    runs = list({run.run_id: RunToDelete(run.run_id, run.session_id) for run in found}.values())
    outcome = delete_runs(store, runs)
    _print_deleted(outcome.runs, outcome.files_removed, outcome.sessions_removed)
    return 0


def cmd_gc(args: argparse.Namespace, open_store: OpenStore) -> int:
    from jupyter_prov4ml.store.run_deletion import (
        delete_runs,
        finish_deletes,
        parse_age,
        runs_older_than,
    )

    try:
        age_s = parse_age(args.older_than)
    except ValueError as error:
        _say(str(error))
        return 2
    store = open_store(args)
    runs = runs_older_than(store, age_s, args.keep_tagged)
    if args.dry_run:
        for run in runs:
            print(run.run_id)
        print(f"would delete {len(runs)} run(s)")
        return 0
    if runs:
        outcome = delete_runs(store, runs)
        _print_deleted(outcome.runs, outcome.files_removed, outcome.sessions_removed)
    else:
        files, sessions = finish_deletes(store)  # what an interrupted delete left
        _print_deleted((), files, sessions)
    return 0


def _print_deleted(runs: tuple[str, ...], files: int, sessions: tuple[str, ...]) -> None:
    print(
        f"deleted {len(runs)} run(s); removed {files} file(s) and {len(sessions)} emptied "
        "session(s)"
    )


def add_store_commands(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    with_store: AddStore,
    open_store: OpenStore,
) -> None:
    """The subcommands of this module; `open_store` opens the store an invocation names."""

    def bind(
        parser: argparse.ArgumentParser, command: Callable[[argparse.Namespace, OpenStore], int]
    ) -> None:
        parser.set_defaults(func=lambda args: command(args, open_store))

    verify = with_store(
        sub.add_parser(
            "verify",
            help="whether a saved notebook's outputs come from one clean top-to-bottom run",
        )
    )
    verify.add_argument("notebook", help="the saved .ipynb")
    verify.add_argument("--json", action="store_true", help="JSON, for CI")
    bind(verify, cmd_verify)

    tag = with_store(sub.add_parser("tag", help="tag a run (tags survive `gc --keep-tagged`)"))
    tag.add_argument("run", help="a run id, or a unique end of one")
    tag.add_argument("tags", nargs="+", metavar="TAG")
    tag.add_argument("--remove", action="store_true", help="remove these tags instead")
    bind(tag, cmd_tag)

    note = with_store(sub.add_parser("note", help="add a note to a run"))
    note.add_argument("run", help="a run id, or a unique end of one")
    note.add_argument("text")
    bind(note, cmd_note)

    rm = with_store(sub.add_parser("rm", help="delete runs and their files"))
    rm.add_argument("runs", nargs="+", metavar="RUN", help="run ids, or unique ends of them")
    bind(rm, cmd_rm)

    gc = with_store(sub.add_parser("gc", help="delete old runs"))
    gc.add_argument("--older-than", required=True, metavar="AGE", help="e.g. 30d, 12h, 2w")
    gc.add_argument("--keep-tagged", action="store_true", help="never delete a tagged run")
    gc.add_argument("--dry-run", action="store_true", help="list what would be deleted")
    bind(gc, cmd_gc)
