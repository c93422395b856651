"""One run as an RO-Crate: its PROV-JSON, data files, artifacts, cell source and the session's
cells as recorded, described in JSON-LD (`jupyter-prov4ml export RUN --format rocrate -o
DIR_OR_ZIP`).

The crate follows the Process Run Crate profile loosely: the root dataset describes the run
and mentions a `CreateAction` for it, whose instrument is jupyter_prov4ml, whose object is the
cell's code, the cells run before it and the parameters, and whose result is the files the run
produced (its PROV, data files and logged artifacts).

What leaves the store here is treated like everything else that leaves the kernel:
- every file passes redaction: PROV-JSON and notebooks as JSON, text files as text; a file
  that cannot be checked (an unreadable data file, a text over 16 MiB) is left out, with a
  warning;
- the store is untrusted: every path read from it must resolve inside the store root, or
  that file is left out with a warning; names in the crate are made from safe characters;
- the notebook file on disk is never read unless named with `--notebook` (it may have been
  edited since the run, and holds outputs): the crate carries the cells as the store
  recorded them instead;
- the crate's files are written 0600 (its folders 0700), whatever the umask.
Every file carries its sha256; where the store recorded one for it, it is checked against
the bytes read from the store. The only module that imports `rocrate`.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any
from urllib.parse import quote

from jupyter_prov4ml.identity import file_sha256
from jupyter_prov4ml.notation import iso_utc
from jupyter_prov4ml.records import Artifact, CellRun
from jupyter_prov4ml.redaction import redact_json, redact_source, redact_text, redact_value
from jupyter_prov4ml.store.layout import Store, StoredRun

PROCESS_RUN_CRATE = "https://w3id.org/ro/wfrun/process/0.5"
PROV_JSON = "https://www.w3.org/Submission/2013/SUBM-prov-json-20130424/"
_MEDIA_TYPES = {
    ".json": "application/json",
    ".parquet": "application/vnd.apache.parquet",
    ".ipynb": "application/x-ipynb+json",
    ".py": "text/x-python",
}
# A text file is redacted in memory; past this it cannot be checked and is left out.
MAX_TEXT_BYTES = 16 << 20
# A notebook named with --notebook is read whole.
MAX_NOTEBOOK_BYTES = 64 << 20
_BINARY_SNIFF_BYTES = 8_192
_UNSAFE_NAME_CHARS = re.compile(r"[^A-Za-z0-9._-]+")
_FILE_MODE = 0o600
_FOLDER_MODE = 0o700


class CrateError(Exception):
    """The crate cannot be written where asked (e.g. a folder that holds other files)."""


@dataclass(frozen=True, slots=True)
class CrateFile:
    """A file put into the crate: where it is in the crate, and its checksums."""

    crate_path: str
    role: str
    sha256: str  # of the bytes in the crate
    recorded_sha256: str | None  # what the store recorded for it, when it did
    read_sha256: str | None = None  # of the bytes read from the store, when they differ
    redacted: bool = False  # credentials were redacted from it at export

    @property
    def matches_record(self) -> bool:
        source = self.read_sha256 or self.sha256
        return self.recorded_sha256 is None or self.recorded_sha256 == source


@dataclass(frozen=True, slots=True)
class ExportedCrate:
    """What `export_rocrate` wrote."""

    output: Path
    files: tuple[CrateFile, ...]
    missing: tuple[str, ...]  # data files the record names but the store no longer has
    refused: tuple[str, ...] = ()  # files left out, and why (one warning each)

    @property
    def mismatched(self) -> tuple[CrateFile, ...]:
        return tuple(f for f in self.files if not f.matches_record)


def _warn_on_stderr(message: str) -> None:
    print(f"jupyter-prov4ml: warning: {message}", file=sys.stderr)


def export_rocrate(
    store: Store,
    stored: StoredRun,
    output: Path,
    notebook: Path | None = None,
    warn: Callable[[str], None] = _warn_on_stderr,
) -> ExportedCrate:
    """Write `stored` as an RO-Crate folder, or a zip file when `output` ends in `.zip`.

    `notebook`: a notebook file to include as well (a headless run's executed copy), read now
    and redacted. `warn` is told, once per file, why a file was left out."""
    from rocrate.rocrate import ROCrate

    as_zip = output.suffix.lower() == ".zip"
    _check_output(output, as_zip)
    crate = ROCrate()
    with tempfile.TemporaryDirectory(prefix="prov4ml-crate-") as scratch:
        builder = _CrateBuilder(crate, store, stored, Path(scratch), warn)
        builder.build(notebook)
        with _private_umask():
            if as_zip:
                _write_zip(crate, output)
            else:
                created = not output.exists()
                crate.write(output)
                _make_private(output, created)
    return ExportedCrate(
        output, tuple(builder.files), tuple(builder.missing), tuple(builder.refused)
    )


class _CrateBuilder:
    """Collects the crate's files (checked, redacted, under safe names) and entities."""

    def __init__(
        self,
        crate: Any,
        store: Store,
        stored: StoredRun,
        scratch: Path,
        warn: Callable[[str], None],
    ) -> None:
        self.crate = crate
        self.store = store
        self.stored = stored
        self.run = stored.run
        self.scratch = scratch
        self.warn = warn
        self.root = store.root.resolve()
        self.files: list[CrateFile] = []
        self.missing: list[str] = []
        self.refused: list[str] = []
        self._names: set[str] = set()

    # -- the crate -------------------------------------------------------------------------

    def build(self, notebook: Path | None) -> None:
        from rocrate.model.contextentity import ContextEntity

        run = self.run
        results = [self._prov()]
        results += [entity for entity in self._data_files() if entity is not None]
        results += self._artifacts()
        inputs = [self._cell_source(), self._recorded_cells()]
        if notebook is not None:
            inputs.append(self._given_notebook(notebook))
        for param in run.params:
            entity = ContextEntity(
                self.crate,
                f"#param-{quote(run.run_id, safe='')}-{quote(param.name, safe='')}",
                properties={"@type": "PropertyValue", "name": redact_text(param.name)},
            )
            if param.value is not None:
                entity["value"] = redact_value(param.name, param.value)
            inputs.append(self.crate.add(entity))
        _describe(self.crate, ContextEntity, self.stored, inputs, results)

    def _prov(self) -> Any:
        """The run's PROV: its own file when it has one (in the store), else (plain cells share
        documents of many cells) the document built from its record, as `export --format
        json` gives it; redacted as JSON."""
        from jupyter_prov4ml import provmodel

        run = self.run
        name = self._name(f"{run.run_id}.prov.json")
        path = self.stored.prov_path
        if path is not None and path.parent.name == "runs" and self._inside(path) is not None:
            try:
                return self._add_json(path, path.read_text(encoding="utf-8"), name, "prov")
            except (OSError, UnicodeDecodeError, ValueError, RecursionError) as error:
                self._refuse(
                    f"{path.name} cannot be read ({type(error).__name__}); the crate's "
                    "PROV-JSON is built from the run's record instead"
                )
        built = provmodel.serialize(provmodel.run_document(run, self.stored.session))
        return self._add_json(None, built, name, "prov")

    def _data_files(self) -> Iterator[Any]:
        for data_file in self.run.data_files:
            try:
                source = self.store.resolve(data_file.relpath)
            except ValueError as unsafe:  # UnsafeStorePath, and a relpath that is not text
                self._refuse(f"data file {str(data_file.relpath)!r:.80} refused: {unsafe}")
                continue
            if not source.is_file():
                self.missing.append(data_file.relpath)
                continue
            problem = _unredactable_table(source)
            if problem is not None:
                self._refuse(f"data file {source.name} left out: {problem}")
                continue
            yield self._add(
                source,
                self._name(source.name),
                data_file.role,
                data_file.sha256,
                description=f"{data_file.role.replace('_', ' ')} of the run",
            )

    def _artifacts(self) -> list[Any]:
        """Logged artifacts: a copy the store kept is included (redacted if it is text); one
        that was not copied is described by name, size and sha256 only — nothing outside the
        store is ever read."""
        from rocrate.model.contextentity import ContextEntity

        entities = []
        for index, artifact in enumerate(self.run.artifacts):
            copy = self._artifact_copy(artifact) if artifact.copied_to else None
            if copy is not None:
                shown = redact_text(artifact.name)
                entity = self._add_checked_text(
                    copy,
                    self._name(f"artifacts/{_safe_name(shown)}"),
                    "artifact",
                    artifact.sha256,
                    name=shown,
                    description="an artifact the run logged (log_artifact, copy=True): the "
                    "copy the store kept",
                )
                if entity is not None:
                    entities.append(entity)
                    continue
            described = (
                "not copied into the store (log_artifact without copy=True), so not in this crate"
                if not artifact.copied_to
                else "its copy in the store is missing or was left out"
            )
            entities.append(
                self.crate.add(
                    ContextEntity(
                        self.crate,
                        f"#artifact-{quote(self.run.run_id, safe='')}-{index}",
                        properties={
                            "@type": "CreativeWork",
                            "name": redact_text(artifact.name),
                            "sha256": artifact.sha256,
                            "contentSize": str(artifact.size_bytes),
                            "description": "an artifact the run logged, identified by its "
                            f"sha256: {described}",
                        },
                    )
                )
            )
        return entities

    def _artifact_copy(self, artifact: Artifact) -> Path | None:
        """The store's copy of an artifact: where the store puts it for this run, else where
        the record says, if that is inside the store; None (with a warning) otherwise."""
        candidates: list[Path] = []
        with contextlib.suppress(ValueError):  # an id that is not one, a name leading out
            folder = self.store.run_path(self.run, ".artifacts")
            candidates.append(self.store.resolve(self.store.relpath(folder / artifact.name)))
        recorded = self._inside(Path(str(artifact.copied_to)))
        if recorded is not None:
            candidates.append(recorded)
        found = next((path for path in candidates if path.is_file()), None)
        if found is None:
            self._refuse(
                f"artifact {redact_text(artifact.name)!r:.80}: no copy of it inside the store "
                f"{self.store.root}; described by its sha256 only"
            )
        return found

    def _cell_source(self) -> Any:
        run = self.run
        code = self.scratch / "cell.py"
        code.write_text(redact_source(run.cell.source), encoding="utf-8")
        return self._add(
            code,
            self._name(f"cell-{_safe_name(run.cell.sha256[:12])}.py"),
            "cell",
            None,
            name=f"cell source (sha256 {run.cell.sha256[:12]}…)",
            description="the executed cell's source, as recorded by jupyter_prov4ml "
            "(credentials redacted)",
        )

    def _recorded_cells(self) -> Any:
        """The cells the run's kernel session executed up to and including the run, in
        execution order, as the store recorded them: a notebook without outputs."""
        import nbformat

        run = self.run
        session_runs = [s.run for s in self.store.runs(session_id=run.session_id)]
        earlier = sorted(
            (r for r in session_runs if r.started_at_unix_s <= run.started_at_unix_s),
            key=lambda r: r.started_at_unix_s,
        )
        cells = [r for r in earlier if r.run_id != run.run_id] + [run]
        notebook = nbformat.v4.new_notebook()
        notebook.metadata["jupyter_prov4ml"] = {
            "what": "cells as recorded by jupyter_prov4ml (credentials redacted), not the "
            "notebook file",
            "session_id": run.session_id,
            "run_id": run.run_id,
        }
        notebook.cells = [
            nbformat.v4.new_code_cell(
                source=redact_source(cell.cell.source),
                execution_count=cell.cell.execution_count,
                metadata={"jupyter_prov4ml": _cell_facts(cell)},
                id=f"recorded-{index:05d}",
            )
            for index, cell in enumerate(cells)
        ]
        text = nbformat.writes(nbformat.from_dict(redact_json(dict(notebook))))
        path = self.scratch / "recorded-cells.ipynb"
        path.write_text(text, encoding="utf-8")
        return self._add(
            path,
            self._name(f"recorded-cells-{_safe_name(run.run_id)}.ipynb"),
            "recorded_cells",
            None,
            name="cells as recorded by jupyter_prov4ml",
            description=(
                f"the {len(cells)} cells this kernel session executed up to and including "
                "this run, in execution order, as jupyter_prov4ml recorded them (sources "
                "with credentials redacted, no outputs). Not the notebook file: cells that "
                "never ran, and edits made after the run, are not in it."
            ),
        )

    def _given_notebook(self, notebook: Path) -> Any:
        """The notebook named with --notebook, read now: cells and metadata redacted (code as
        code, the rest as text), outputs and attachments left out."""
        try:
            if notebook.stat().st_size > MAX_NOTEBOOK_BYTES:
                raise CrateError(f"{notebook} is over {MAX_NOTEBOOK_BYTES >> 20} MiB")
            content = json.loads(notebook.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError, RecursionError) as error:
            raise CrateError(f"cannot read notebook {notebook} ({type(error).__name__})") from None
        if not isinstance(content, dict):
            raise CrateError(f"{notebook} is not a notebook")
        redacted = _redacted_notebook(content)
        path = self.scratch / "given-notebook.ipynb"
        path.write_text(json.dumps(redacted, indent=1, ensure_ascii=False), encoding="utf-8")
        return self._add(
            path,
            self._name(_safe_name(redact_text(notebook.name))),
            "notebook",
            None,
            description="the notebook given with --notebook, as it was on disk at export time, "
            "with credentials redacted and its outputs left out; it may differ from what the "
            "run executed",
        )

    # -- adding files ----------------------------------------------------------------------

    def _add_json(self, source: Path | None, text: str, crate_path: str, role: str) -> Any:
        """A PROV-JSON file, redacted as JSON; the bytes read are kept when that changes
        nothing."""
        props: dict[str, Any] = {
            "description": "W3C PROV-JSON provenance of the run",
            "conformsTo": {"@id": PROV_JSON},
        }
        content = json.loads(text)
        redacted = redact_json(content)
        if redacted == content:
            if source is None:
                source = self.scratch / f"{len(self.files)}.json"
                source.write_text(text, encoding="utf-8")
            return self._add(source, crate_path, role, None, **props)
        path = self.scratch / f"{len(self.files)}.json"
        path.write_text(json.dumps(redacted, indent=2, ensure_ascii=False), encoding="utf-8")
        read = file_sha256(source) if source is not None else None
        return self._add(path, crate_path, role, None, read_sha256=read, redacted=True, **props)

    def _add_checked_text(
        self, source: Path, crate_path: str, role: str, recorded: str | None, **props: Any
    ) -> Any | None:
        """A file from the store: text is redacted (a copy is made when that changes it),
        binary is copied as it is; a text too large to check is left out (None)."""
        kind = _file_kind(source)
        if kind == "binary":
            return self._add(source, crate_path, role, recorded, **props)
        if kind == "large-text":
            self._refuse(
                f"{crate_path}: a text over {MAX_TEXT_BYTES >> 20} MiB cannot be "
                "checked for credentials; left out"
            )
            return None
        text = source.read_bytes().decode("utf-8")
        redacted = redact_text(text)
        if redacted == text:
            return self._add(source, crate_path, role, recorded, **props)
        path = self.scratch / f"{len(self.files)}.redacted"
        path.write_text(redacted, encoding="utf-8")
        return self._add(
            path,
            crate_path,
            role,
            recorded,
            read_sha256=file_sha256(source),
            redacted=True,
            **props,
        )

    def _add(
        self,
        source: Path,
        crate_path: str,
        role: str,
        recorded: str | None,
        read_sha256: str | None = None,
        redacted: bool = False,
        **props: Any,
    ) -> Any:
        sha256 = file_sha256(source)
        self.files.append(CrateFile(crate_path, role, sha256, recorded, read_sha256, redacted))
        description = props.pop("description", "")
        if redacted:
            description += " (credentials redacted at export"
            description += f"; sha256 read from the store {read_sha256})" if read_sha256 else ")"
        suffix = Path(crate_path).suffix
        properties = {
            "name": props.pop("name", Path(crate_path).name),
            "encodingFormat": _MEDIA_TYPES.get(suffix, "application/octet-stream"),
            "contentSize": str(source.stat().st_size),
            "sha256": sha256,
            "description": description,
            **props,
        }
        return self.crate.add_file(source, dest_path=crate_path, properties=properties)

    def _name(self, wanted: str) -> str:
        """A crate path made of safe characters, unique in the crate."""
        folder, _, base = wanted.rpartition("/")
        base = _safe_name(base)
        stem, dot, suffix = base.partition(".")
        candidate, number = base, 1
        while f"{folder}/{candidate}".lstrip("/") in self._names:
            number += 1
            candidate = f"{stem}-{number}{dot}{suffix}"
        name = f"{folder}/{candidate}".lstrip("/")
        self._names.add(name)
        return name

    def _inside(self, path: Path) -> Path | None:
        """`path` resolved, if it lies inside the store (links followed); else None."""
        try:
            resolved = path.resolve()
        except (OSError, RuntimeError, ValueError):
            return None
        return resolved if resolved.is_relative_to(self.root) else None

    def _refuse(self, message: str) -> None:
        self.refused.append(message)
        self.warn(message)


def _cell_facts(run: CellRun) -> dict[str, Any]:
    """What the store recorded of one execution, for the recorded-cells notebook."""
    return {
        "run_id": run.run_id,
        "kind": run.kind,
        "status": run.status,
        "cell_id": run.cell.cell_id,
        "sha256": run.cell.sha256,
        "started_at": iso_utc(run.started_at_unix_s),
    }


def _safe_name(text: str) -> str:
    """A file name of `[A-Za-z0-9._-]` characters, not starting with a dot, never empty."""
    name = _UNSAFE_NAME_CHARS.sub("_", text).lstrip(".")[:120]
    return name or "file"


def _file_kind(path: Path) -> str:
    """`binary` (NUL bytes, or not UTF-8), `text`, or `large-text` (too large to check)."""
    with path.open("rb") as handle:
        head = handle.read(_BINARY_SNIFF_BYTES)
    if b"\x00" in head:
        return "binary"
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as error:
        if error.start < len(head) - 4:  # not a character cut at the sniffed end
            return "binary"
    if path.stat().st_size > MAX_TEXT_BYTES:
        return "large-text"
    try:
        path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        return "binary"
    return "text"


def _unredactable_table(path: Path) -> str | None:
    """Why a data file (Parquet) cannot go into a crate, or None: every text in it (column
    names, metric names and contexts, loop names) must pass redaction unchanged."""
    from jupyter_prov4ml.store.series_files import read_parquet

    try:
        columns: dict[str, list[Any]] = read_parquet(path)
    # pyarrow's own errors cannot be named outside the series-files codec
    except Exception as error:  # noqa: BLE001
        return f"it cannot be read ({type(error).__name__}), so not checked for credentials"
    texts = set(columns)
    for values in columns.values():
        texts.update(v for v in set(values) if isinstance(v, str))
    if any(redact_text(text) != text for text in texts):
        return "it holds text that looks like a credential"
    return None


def _redacted_notebook(content: dict[str, Any]) -> dict[str, Any]:
    """A notebook (nbformat 4 JSON) with code redacted as code, markdown and raw cells as
    text, metadata as JSON, and no outputs: an output can print a secret in a form no rule
    recognises (`print(password)`), so none leaves."""
    redacted: dict[str, Any] = redact_json({k: v for k, v in content.items() if k != "cells"})
    cells = []
    for cell in content.get("cells") or []:
        if not isinstance(cell, dict):
            continue
        kind = cell.get("cell_type")
        source = cell.get("source", "")
        if isinstance(source, list):
            source = "".join(part for part in source if isinstance(part, str))
        if not isinstance(source, str):
            source = ""
        kept = {key: cell[key] for key in ("cell_type", "id", "metadata") if key in cell}
        out: dict[str, Any] = redact_json(kept)
        out["source"] = redact_source(source) if kind == "code" else redact_text(source)
        if kind == "code":
            out["outputs"] = []
            out["execution_count"] = cell.get("execution_count")
        cells.append(out)
    redacted["cells"] = cells
    return redacted


def _describe(
    crate: Any,
    context_entity: Any,
    stored: StoredRun,
    inputs: Sequence[Any],
    results: Sequence[Any],
) -> None:
    """The root dataset, the profile, and the run's CreateAction with its agents."""
    run = stored.run
    title = redact_text(run.name or f"{run.kind} {run.run_id}")
    root = crate.root_dataset
    root["name"] = f"jupyter_prov4ml run {title}"
    cost = f"{run.wall_time_s:.3f} s wall, {run.cpu_time_s:.3f} s CPU"
    if run.energy is not None and run.energy.readings:
        cost += f", {run.energy.total_j:.3g} J ({run.energy.methods()})"
    root["description"] = (
        f"Provenance of the {run.kind} run {run.run_id} ({run.status}; {cost}), recorded by "
        "jupyter_prov4ml in a Jupyter kernel."
    )
    profile = crate.add(
        context_entity(
            crate,
            PROCESS_RUN_CRATE,
            properties={"@type": "CreativeWork", "name": "Process Run Crate", "version": "0.5"},
        )
    )
    root["conformsTo"] = profile
    version = _version()
    instrument = crate.add(
        context_entity(
            crate,
            "https://w3id.org/jupyter-prov4ml",
            properties={
                "@type": "SoftwareApplication",
                "name": "jupyter_prov4ml",
                "softwareVersion": version,
            },
        )
    )
    action_props: dict[str, Any] = {
        "@type": "CreateAction",
        "name": f"execution of {title}",
        "startTime": iso_utc(run.started_at_unix_s),
        "endTime": iso_utc(run.ended_at_unix_s),
        "actionStatus": {
            "@id": "http://schema.org/"
            + ("CompletedActionStatus" if run.status == "ok" else "FailedActionStatus")
        },
    }
    if run.error_type:
        action_props["error"] = redact_text(run.error_type)
    action = crate.add_action(
        instrument,
        identifier=f"#run-{quote(run.run_id, safe='')}",
        object=list(inputs),
        result=list(results),
        properties=action_props,
    )
    if stored.session is not None:
        user = redact_text(stored.session.user)
        agent = crate.add(
            context_entity(
                crate,
                f"#user-{quote(user, safe='')}",
                properties={"@type": "Person", "name": user},
            )
        )
        action["agent"] = agent
    root["mentions"] = [action]


def _check_output(output: Path, as_zip: bool) -> None:
    if as_zip:
        if output.is_dir():
            raise CrateError(f"{output} is a folder, not a zip file")
        return
    if output.exists() and not output.is_dir():
        raise CrateError(f"{output} exists and is not a folder")
    if output.is_dir():
        entries = {entry.name for entry in output.iterdir()}
        if entries and "ro-crate-metadata.json" not in entries:
            raise CrateError(f"{output} holds other files; give an empty or new folder")


@contextlib.contextmanager
def _private_umask() -> Iterator[None]:
    """New files 0600 and folders 0700 while the crate is written (the CLI's one thread)."""
    previous = os.umask(0o077)
    try:
        yield
    finally:
        os.umask(previous)


def _write_zip(crate: Any, output: Path) -> None:
    """The zip written 0600 beside `output`, then moved into place (an existing file of that
    name is replaced, never written through)."""
    output.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{output.name}.", suffix=".zip", dir=output.parent)
    os.close(fd)
    try:
        crate.write_zip(tmp)
        os.chmod(tmp, _FILE_MODE)
        os.replace(tmp, output)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _make_private(folder: Path, created: bool) -> None:
    """Every file of the written crate 0600, its subfolders 0700 (the folder itself too when
    this export created it): files of an earlier export keep their mode when rewritten."""
    if created:
        os.chmod(folder, _FOLDER_MODE)
    for path in folder.rglob("*"):
        if path.is_symlink():
            continue
        os.chmod(path, _FOLDER_MODE if path.is_dir() else _FILE_MODE)


def _version() -> str:
    try:
        return metadata.version("jupyter_prov4ml")
    except metadata.PackageNotFoundError:
        return "unknown"
