"""One run as an RO-Crate: its PROV-JSON, data files, cell source and notebook, described in
JSON-LD (`jupyter-prov4ml export RUN --format rocrate -o DIR_OR_ZIP`).

The crate follows the Process Run Crate profile loosely: the root dataset describes the run
and mentions a `CreateAction` for it, whose instrument is jupyter_prov4ml, whose object is the
cell's code and parameters, and whose result is the files the run produced in the store.
Every file carries its sha256 (the one the store recorded, checked against the file's bytes).
The only module that imports `rocrate`.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any
from urllib.parse import quote

from jupyter_prov4ml.identity import file_sha256
from jupyter_prov4ml.notation import iso_utc
from jupyter_prov4ml.store.layout import Store, StoredRun

PROCESS_RUN_CRATE = "https://w3id.org/ro/wfrun/process/0.5"
PROV_JSON = "https://www.w3.org/Submission/2013/SUBM-prov-json-20130424/"
_MEDIA_TYPES = {
    ".json": "application/json",
    ".parquet": "application/vnd.apache.parquet",
    ".ipynb": "application/x-ipynb+json",
    ".py": "text/x-python",
}


class CrateError(Exception):
    """The crate cannot be written where asked (e.g. a folder that holds other files)."""


@dataclass(frozen=True, slots=True)
class CrateFile:
    """A file put into the crate: where it is in the crate, and its checksums."""

    crate_path: str
    role: str
    sha256: str
    recorded_sha256: str | None  # what the store recorded for it, when it did

    @property
    def matches_record(self) -> bool:
        return self.recorded_sha256 is None or self.recorded_sha256 == self.sha256


@dataclass(frozen=True, slots=True)
class ExportedCrate:
    """What `export_rocrate` wrote."""

    output: Path
    files: tuple[CrateFile, ...]
    missing: tuple[str, ...]  # data files the record names but the store no longer has

    @property
    def mismatched(self) -> tuple[CrateFile, ...]:
        return tuple(f for f in self.files if not f.matches_record)


def find_notebook(notebook_path: str | None, store: Store) -> Path | None:
    """The notebook a run's record names, if it exists: as given, or relative to the working
    folder or to the folder that holds the store (the default store sits beside it)."""
    if not notebook_path:
        return None
    given = Path(notebook_path).expanduser()
    candidates = [given] if given.is_absolute() else [Path.cwd() / given, store.root.parent / given]
    return next((c for c in candidates if c.is_file()), None)


def export_rocrate(
    store: Store, stored: StoredRun, output: Path, notebook: Path | None = None
) -> ExportedCrate:
    """Write `stored` as an RO-Crate folder, or a zip file when `output` ends in `.zip`.

    `notebook` overrides the notebook the record names (a headless run's executed copy).
    """
    from rocrate.model.contextentity import ContextEntity
    from rocrate.rocrate import ROCrate

    from jupyter_prov4ml import provmodel

    as_zip = output.suffix.lower() == ".zip"
    _check_output(output, as_zip)
    run = stored.run
    crate = ROCrate()
    files: list[CrateFile] = []
    missing: list[str] = []
    with tempfile.TemporaryDirectory(prefix="prov4ml-crate-") as scratch:

        def add(
            source: Path, crate_path: str, role: str, recorded: str | None, **props: Any
        ) -> Any:
            sha256 = file_sha256(source)
            files.append(CrateFile(crate_path, role, sha256, recorded))
            return crate.add_file(
                source,
                dest_path=crate_path,
                properties={
                    "name": props.pop("name", Path(crate_path).name),
                    "encodingFormat": _MEDIA_TYPES.get(source.suffix, "application/octet-stream"),
                    "contentSize": str(source.stat().st_size),
                    "sha256": sha256,
                    **props,
                },
            )

        # The run's PROV: its own file when it has one, else (plain cells share documents of
        # many cells) the document built from its record, as `export --format json` gives it.
        prov_source = stored.prov_path
        if prov_source is None or prov_source.parent.name != "runs" or not prov_source.is_file():
            prov_source = Path(scratch) / f"{run.run_id}.prov.json"
            document = stored.document()
            prov_source.write_text(provmodel.serialize(document), encoding="utf-8")
        results = [
            add(
                prov_source,
                f"{run.run_id}.prov.json",
                "prov",
                None,
                description="W3C PROV-JSON provenance of the run",
                conformsTo={"@id": PROV_JSON},
            )
        ]
        for data_file in run.data_files:
            source = store.root / data_file.relpath
            if not source.is_file():
                missing.append(data_file.relpath)
                continue
            results.append(
                add(
                    source,
                    Path(data_file.relpath).name,
                    data_file.role,
                    data_file.sha256,
                    description=f"{data_file.role.replace('_', ' ')} of the run",
                )
            )
        code = Path(scratch) / f"cell-{run.cell.sha256[:12]}.py"
        code.write_text(run.cell.source, encoding="utf-8")
        inputs: list[Any] = [
            add(
                code,
                code.name,
                "cell",
                None,
                name=f"cell source (sha256 {run.cell.sha256[:12]}…)",
                description="the executed cell's source, as stored (credentials redacted)",
            )
        ]
        notebook = notebook or find_notebook(run.cell.notebook_path, store)
        if notebook is not None and notebook.is_file():
            add(notebook, notebook.name, "notebook", None, description="the executed notebook")
        for param in run.params:
            entity = ContextEntity(
                crate,
                f"#param-{run.run_id}-{quote(param.name, safe='')}",
                properties={"@type": "PropertyValue", "name": param.name},
            )
            if param.value is not None:
                entity["value"] = param.value
            inputs.append(crate.add(entity))
        _describe(crate, ContextEntity, stored, inputs, results)
        if as_zip:
            output.parent.mkdir(parents=True, exist_ok=True)
            crate.write_zip(output)
        else:
            crate.write(output)
    return ExportedCrate(output, tuple(files), tuple(missing))


def _describe(
    crate: Any,
    context_entity: Any,
    stored: StoredRun,
    inputs: Sequence[Any],
    results: Sequence[Any],
) -> None:
    """The root dataset, the profile, and the run's CreateAction with its agents."""
    run = stored.run
    title = run.name or f"{run.kind} {run.run_id}"
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
        action_props["error"] = run.error_type
    action = crate.add_action(
        instrument,
        identifier=f"#run-{run.run_id}",
        object=list(inputs),
        result=list(results),
        properties=action_props,
    )
    if stored.session is not None:
        agent = crate.add(
            context_entity(
                crate,
                f"#user-{quote(stored.session.user, safe='')}",
                properties={"@type": "Person", "name": stored.session.user},
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


def _version() -> str:
    try:
        return metadata.version("jupyter_prov4ml")
    except metadata.PackageNotFoundError:
        return "unknown"
