"""CellRun records → W3C PROV documents. The only module that imports `prov`.

Documents are built once per run, at save time, never on the cell hot path (building a prov
document is ~12× slower than plain dicts).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prov.identifier import Namespace, QualifiedName
from prov.model import (
    PROV_LOCATION,
    PROV_TYPE,
    PROV_VALUE,
    ProvActivity,
    ProvAgent,
    ProvDocument,
    ProvEntity,
)

from jupyter_prov4ml.notation import iso_utc, utc_datetime
from jupyter_prov4ml.records import (
    CellRun,
    DataFile,
    DataInput,
    EnergyLedger,
    HardwareSummary,
    LoopStep,
    MetricSummary,
    ModelSummary,
    ParamValue,
    Randomness,
    RunContext,
    SeriesSummary,
    SessionInfo,
)
from jupyter_prov4ml.redaction import redact_json

NS_PREFIX = "p4m"
NS_URI = "https://w3id.org/jupyter-prov4ml/ns#"
FORMATS = ("json", "provn", "xml", "rdf")
_UNSAFE = re.compile(r"[^A-Za-z0-9_.\-]")

# Our largest documents (2,000 cells, 1,000 loop steps) are a few MB.
MAX_DOCUMENT_BYTES = 64 * 2**20


def safe_local(text: str) -> str:
    """A PROV-N-writable local identifier part (prov ≥ 3.3 rejects anything else)."""
    cleaned = _UNSAFE.sub("_", text) or "_"
    if cleaned == text:
        return text
    # A stable suffix (not hash(), which changes per process) keeps ids equal across the
    # kernel's documents and those the CLI rebuilds, and distinct for `a:b` and `a+b`.
    return f"{cleaned}_{hashlib.sha256(text.encode('utf-8', 'surrogatepass')).hexdigest()[:8]}"


class _Builder:
    """Adds sessions and runs to one document, reusing agents and cell entities it has made."""

    def __init__(self) -> None:
        self.doc = ProvDocument()
        self.ns: Namespace = self.doc.add_namespace(NS_PREFIX, NS_URI)
        self._agents: dict[str, tuple[ProvAgent, ProvAgent, ProvEntity]] = {}
        self._cells: dict[str, ProvEntity] = {}
        self._derivations: set[tuple[str, str]] = set()
        self._dask_agents: dict[str, ProvAgent] = {}
        # Environment entities that carry a run's context already (once per document).
        self._contexts: set[str] = set()

    def q(self, local: str) -> QualifiedName:
        return self.ns[local]

    def attrs(self, values: dict[str, Any]) -> dict[Any, Any]:
        return {self.q(k): prov_value(v) for k, v in values.items() if v is not None}

    def entity(self, local: str, kind: str, values: dict[str, Any], **standard: Any) -> ProvEntity:
        """An entity `p4m:<local>` of type `p4m:<kind>` with our attributes (None ones left
        out) and standard PROV ones given by keyword (e.g. value=…)."""
        extra: dict[Any, Any] = {PROV_VALUE: standard["value"]} if "value" in standard else {}
        return self.doc.entity(
            self.q(local), {PROV_TYPE: self.q(kind), **extra, **self.attrs(values)}
        )

    def session(self, info: SessionInfo) -> tuple[ProvAgent, ProvAgent, ProvEntity]:
        if info.session_id in self._agents:
            return self._agents[info.session_id]
        user = self.doc.agent(
            self.q(f"user_{safe_local(info.user)}"),
            {PROV_TYPE: self._prov_type("Person"), **self.attrs({"name": info.user})},
        )
        versions = dict(info.software)
        software = self.doc.agent(
            self.q(f"software_jupyter_prov4ml_{safe_local(versions.get('jupyter_prov4ml', '0'))}"),
            {
                PROV_TYPE: self._prov_type("SoftwareAgent"),
                **self.attrs({f"version_{safe_local(k)}": v for k, v in info.software}),
            },
        )
        environment = self.entity(
            f"environment_{info.session_id}",
            "Environment",
            {
                "session_id": info.session_id,
                "hostname": info.hostname,
                "platform": info.platform,
                "cpu_model": info.cpu_model,
                "cpu_count_logical": info.cpu_count_logical,
                "memory_total_bytes": info.memory_total_bytes,
                "gpus": "; ".join(info.gpus) or "none",
                "notebook_path": info.notebook_path,
                "session_started_at": iso_utc(info.started_at_unix_s),
                # already allow-listed and redacted when captured (environment.py)
                **{f"env_{safe_local(name)}": value for name, value in info.environment},
            },
        )
        self._agents[info.session_id] = (user, software, environment)
        return user, software, environment

    def _prov_type(self, local: str) -> QualifiedName:
        name = self.doc.valid_qualified_name(f"prov:{local}")
        assert name is not None  # the prov namespace is always registered
        return name

    def cell(self, run: CellRun) -> ProvEntity:
        ref = run.cell
        if ref.sha256 not in self._cells:
            self._cells[ref.sha256] = self.entity(
                ref.short_id,
                "CellVersion",
                {
                    "sha256": ref.sha256,
                    "source": ref.source,
                    "cell_id": ref.cell_id,
                    "notebook_path": ref.notebook_path,
                },
            )
        return self._cells[ref.sha256]

    def run(self, run: CellRun, info: SessionInfo | None) -> ProvActivity:
        activity = self.doc.activity(
            self.q(f"run_{run.run_id}"),
            utc_datetime(run.started_at_unix_s),
            utc_datetime(run.ended_at_unix_s),
            {
                PROV_TYPE: self.q("ProvRun" if run.kind == "provrun" else "CellExecution"),
                **self.attrs(
                    {
                        "run_id": run.run_id,
                        "kind": run.kind,
                        "name": run.name,
                        "execution_count": run.cell.execution_count,
                        "status": run.status,
                        "error_type": run.error_type,
                        "wall_time_s": run.wall_time_s,
                        "cpu_time_s": run.cpu_time_s,
                        "kernel_cpu_time_s": run.kernel_cpu_time_s,
                        "loop_steps_total": run.steps_total or None,
                        "loop_steps_documented": len(run.steps) if run.steps_total else None,
                        "loop_steps_completed": (
                            sum(loop.completed for loop in run.loops) if run.loops else None
                        ),
                        **_hardware_attrs(run.hardware),
                        **_energy_attrs(run.energy),
                        **_randomness_attrs(run.randomness),
                    }
                ),
            },
        )
        cell = self.cell(run)
        activity.used(cell)
        derived = run.derived_from_sha256
        if derived is not None and (run.cell.sha256, derived) not in self._derivations:
            # A new version of the same notebook cell (same cell id, new source). Stated once
            # per document: an edit undone and redone recurs, and `prov` writes a repeated
            # relation as a JSON list under one blank id, which PROV-JSON's schema forbids.
            self._derivations.add((run.cell.sha256, derived))
            previous = self.q(f"cell_{derived[:16]}")
            self.doc.wasDerivedFrom(cell, previous)
        for binder, names in run.informed_by:
            self.doc.wasInformedBy(activity, self.q(f"run_{binder}"))
            for name in names:
                # The variable entity lives in the binder's document; PROV lets us refer to it.
                activity.used(self.q(f"var_{binder}_{safe_local(name)}"))
        for variable in run.variables:
            entity = self.entity(
                f"var_{run.run_id}_{safe_local(variable.name)}",
                "Variable",
                {
                    "name": variable.name,
                    # not "type": its local part would read as prov:type to many tools
                    "python_type": variable.type_name,
                    "description": variable.description or None,
                    "value_sha256": variable.value_sha256,
                },
            )
            entity.wasGeneratedBy(activity)
        for param in run.params:
            entity = self.entity(
                f"param_{run.run_id}_{safe_local(param.name)}",
                "Parameter",
                {"name": param.name, "source": param.source},
                value=prov_value(param.value if param.value is not None else "None"),
            )
            activity.used(entity)
        files = {
            data_file.role: self._data_file(activity, run, data_file)
            for data_file in run.data_files
        }
        for metric in run.metrics:
            self._metric(activity, run, metric, files.get("metrics"))
        for step in run.steps:
            self._step(activity, run, step)
        artifacts: dict[str, ProvEntity] = {}
        for artifact in run.artifacts:
            entity = artifacts[artifact.sha256] = self.entity(
                f"artifact_{run.run_id}_{safe_local(artifact.name)}",
                "Artifact",
                {
                    "name": artifact.name,
                    "path": artifact.path,
                    "sha256": artifact.sha256,
                    "size_bytes": artifact.size_bytes,
                    "copied_to": artifact.copied_to,
                },
            )
            entity.wasGeneratedBy(activity)
        for model in run.models:
            entity = self.entity(
                f"model_{run.run_id}_{safe_local(model.name)}", "Model", _model_attrs(model)
            )
            entity.wasGeneratedBy(activity)
            saved = artifacts.get(model.artifact_sha256 or "")
            if saved is not None:
                saved.wasDerivedFrom(entity)
        for data_input in run.inputs:
            entity = self.entity(
                f"input_{run.run_id}_{safe_local(data_input.name)}",
                "DataInput",
                _input_attrs(data_input),
            )
            activity.used(entity)
        if run.cluster is not None:
            self._dask(activity, run)
        if info is not None:
            user, software, environment = self.session(info)
            activity.wasAssociatedWith(user)
            activity.wasAssociatedWith(software)
            activity.used(environment)
            if run.context is not None and info.session_id not in self._contexts:
                self._contexts.add(info.session_id)
                environment.add_attributes(self.attrs(_context_attrs(run.context)))
        elif run.context is not None:
            activity.used(
                self.entity(
                    f"environment_{run.session_id}", "Environment", _context_attrs(run.context)
                )
            )
        return activity

    def _metric(
        self,
        activity: ProvActivity,
        run: CellRun,
        metric: MetricSummary,
        data_file: ProvEntity | None,
    ) -> None:
        entity = self.entity(
            f"metric_{run.run_id}_{safe_local(metric.name)}_{safe_local(metric.context)}",
            "MetricSeries",
            {
                "name": metric.name,
                "context": metric.context,
                "count": metric.count,
                "first": metric.first,
                "last": metric.last,
                "min": metric.min,
                "max": metric.max,
                "step_of_min": metric.step_of_min,
                "step_of_max": metric.step_of_max,
            },
        )
        entity.wasGeneratedBy(activity)
        if data_file is not None:
            # The summary is derived from the points stored in the metrics file.
            entity.wasDerivedFrom(data_file)

    def _dask_agent(self, local: str, kind: str, values: dict[str, Any]) -> ProvAgent:
        """An agent made once per document (a cluster or worker serves many runs)."""
        agents = self._dask_agents
        if local not in agents:
            location = values.pop("location", None)
            attributes: dict[Any, Any] = {PROV_TYPE: self.q(kind), **self.attrs(values)}
            if location:
                attributes[PROV_LOCATION] = location
            agents[local] = self.doc.agent(self.q(local), attributes)
        return agents[local]

    def _dask(self, run_activity: ProvActivity, run: CellRun) -> None:
        """The Dask cluster of a run: its agent, one agent and one activity per worker
        incarnation (acting for the cluster, located on its host), one activity per task
        group; the activities were informed by the run."""
        cluster = run.cluster
        assert cluster is not None
        scheduler = safe_local(cluster.scheduler_id)
        cluster_agent = self._dask_agent(
            f"dask_cluster_{scheduler}",
            "DaskCluster",
            {"scheduler_id": cluster.scheduler_id, "scheduler_address": cluster.scheduler_address},
        )
        run_activity.wasAssociatedWith(cluster_agent)
        run_activity.add_attributes(
            self.attrs(
                {
                    "dask_span_id": cluster.span_id,
                    "dask_workers": len(run.workers),
                    "dask_cpu_time_s": sum(w.cpu_time_s for w in run.workers),
                    "dask_tasks": sum(g.task_count for g in run.task_groups),
                    "dask_tasks_dropped": cluster.tasks_dropped or None,
                }
            )
        )
        for worker in run.workers:
            incarnation = f"{scheduler}_{safe_local(worker.name)}_{worker.pid}"
            local = f"dask_worker_{incarnation}"
            fresh = local not in self._dask_agents
            agent = self._dask_agent(
                local,
                "DaskWorker",
                {
                    "name": worker.name,
                    "address": worker.address,
                    "pid": worker.pid,
                    "nthreads": worker.nthreads,
                    "location": worker.host,
                },
            )
            if fresh:
                agent.actedOnBehalfOf(cluster_agent)
            work = self.doc.activity(
                self.q(f"dask_work_{run.run_id}_{safe_local(worker.name)}_{worker.pid}"),
                utc_datetime(worker.started_at_unix_s),
                utc_datetime(worker.ended_at_unix_s),
                {
                    PROV_TYPE: self.q("DaskWorkerRun"),
                    **self.attrs(
                        {
                            "name": worker.name,
                            "host": worker.host,
                            "status": worker.status,
                            "cpu_time_s": worker.cpu_time_s,
                            "rss_peak_bytes": worker.rss_peak_bytes,
                            "task_count": worker.task_count,
                            "sample_count": worker.sample_count,
                            "gpus": "; ".join(worker.gpu_uuids) or None,
                            "gpu_memory_peak_bytes": worker.gpu_memory_peak_bytes,
                            "gpu_utilization_mean_percent": worker.gpu_utilization_mean_percent,
                            **_energy_attrs(worker.energy),
                        }
                    ),
                },
            )
            work.wasAssociatedWith(agent)
            work.wasInformedBy(run_activity)
        for group in run.task_groups:
            tasks = self.doc.activity(
                self.q(f"dask_tasks_{run.run_id}_{safe_local(group.name)}"),
                other_attributes={
                    PROV_TYPE: self.q("DaskTaskGroup"),
                    **self.attrs(
                        {
                            "name": group.name,
                            "task_count": group.task_count,
                            "compute_time_s": group.compute_time_s,
                            "cpu_time_s": group.cpu_time_s,
                            "erred_count": group.erred_count or None,
                            "workers": ", ".join(group.workers) or None,
                        }
                    ),
                },
            )
            tasks.wasInformedBy(run_activity)

    def _step(self, run_activity: ProvActivity, run: CellRun, step: LoopStep) -> None:
        attrs: dict[str, Any] = {
            "loop": step.loop,
            "index": step.index,
            "wall_time_s": step.wall_time_s,
            "cpu_time_s": step.cpu_time_s,
            "completed": step.completed,
            **{f"inner_{safe_local(n)}_iterations": c for n, c in step.inner_iterations},
            **_energy_attrs(step.energy),
            **_series_attrs(step.hardware),
            **{f"metric_{safe_local(k)}_last": v for k, v in step.metrics_last},
        }
        activity = self.doc.activity(
            self.q(f"step_{run.run_id}_{safe_local(step.loop)}_{step.index}"),
            utc_datetime(step.started_at_unix_s),
            utc_datetime(step.started_at_unix_s + step.wall_time_s),
            {PROV_TYPE: self.q("LoopStep"), **self.attrs(attrs)},
        )
        activity.wasInformedBy(run_activity)

    def _data_file(self, activity: ProvActivity, run: CellRun, data_file: DataFile) -> ProvEntity:
        entity = self.entity(
            f"{safe_local(data_file.role)}_{run.run_id}",
            "DataFile",
            {
                "role": data_file.role,
                "path": data_file.relpath,
                "sha256": data_file.sha256,
                "size_bytes": data_file.size_bytes,
                "media_type": data_file.media_type,
            },
        )
        entity.wasGeneratedBy(activity)
        return entity


def run_document(run: CellRun, info: SessionInfo | None) -> ProvDocument:
    """The PROV document of one run."""
    builder = _Builder()
    builder.run(run, info)
    return builder.doc


def session_document(runs: Iterable[CellRun], info: SessionInfo | None) -> ProvDocument:
    """One PROV document holding many runs of a session (the plain cell records)."""
    builder = _Builder()
    if info is not None:
        builder.session(info)
    for run in runs:
        builder.run(run, info)
    return builder.doc


def redacted_document(doc: ProvDocument) -> ProvDocument:
    """`doc` with every string passed through redaction once more: what leaves the kernel in
    an export is redacted whatever store (or version of us) it was read from."""
    data = redact_json(json.loads(serialize(doc)))
    return ProvDocument.deserialize(content=json.dumps(data), format="json")


def serialize(doc: ProvDocument, fmt: str = "json") -> str:
    """Serialize to `json` (PROV-JSON), `provn`, `xml` (PROV-XML) or `rdf` (Turtle)."""
    if fmt == "provn":
        return str(doc.get_provn())
    if fmt == "rdf":
        return str(doc.serialize(format="rdf", rdf_format="turtle"))
    if fmt == "json":
        return str(doc.serialize(format="json", indent=1))
    if fmt == "xml":
        return str(doc.serialize(format="xml"))
    raise ValueError(f"unknown PROV format {fmt!r}; choose from {', '.join(FORMATS)}")


def load_document(path: Path) -> ProvDocument:
    """Read a PROV-JSON file back; raises ValueError for one too large to read (a store is
    untrusted: `prov` takes ~8 bytes of memory per byte of document)."""
    size = path.stat().st_size
    if size > MAX_DOCUMENT_BYTES:
        raise ValueError(f"too large to read as a document ({size:,} bytes)")
    return ProvDocument.deserialize(content=path.read_text(encoding="utf-8"), format="json")


# -- a neutral view for the graph renderer, so that graph.py never imports prov ------------------


@dataclass(frozen=True, slots=True)
class GraphNode:
    node_id: str
    kind: str  # entity | activity | agent
    label: str
    tooltip: str
    # The element's own type (`LoopStep`, `Parameter`, `DaskWorker`…) and attributes, so that
    # a view can group elements of one type and sum their figures.
    prov_type: str = ""
    values: tuple[tuple[str, Any], ...] = ()


@dataclass(frozen=True, slots=True)
class GraphEdge:
    source: str
    target: str
    relation: str


# PROV-N names of relations, which people know, rather than prov's class names (Usage, ...).
_RELATION_NAMES = {
    "Usage": "used",
    "Generation": "wasGeneratedBy",
    "Association": "wasAssociatedWith",
    "Communication": "wasInformedBy",
    "Derivation": "wasDerivedFrom",
    "Attribution": "wasAttributedTo",
    "Start": "wasStartedBy",
    "End": "wasEndedBy",
    "Invalidation": "wasInvalidatedBy",
    "Delegation": "actedOnBehalfOf",
    "Membership": "hadMember",
}


def graph_elements(doc: ProvDocument) -> tuple[list[GraphNode], list[GraphEdge]]:
    """Nodes and edges of a PROV document, labelled for people."""
    nodes: list[GraphNode] = []
    variables: set[str] = set()
    element_types: Any = (ProvEntity, ProvActivity, ProvAgent)
    for element in doc.get_records(element_types):
        if any(str(kind).endswith(":Variable") for kind in element.get_asserted_types()):
            variables.add(str(element.identifier))
        kind = (
            "activity"
            if isinstance(element, ProvActivity)
            else "agent"
            if isinstance(element, ProvAgent)
            else "entity"
        )
        attrs = {str(k.localpart): v for k, v in element.attributes if k.localpart != "source"}
        nodes.append(
            GraphNode(
                node_id=str(element.identifier),
                kind=kind,
                label=_label(element, attrs),
                tooltip="\n".join(f"{k}: {_short(v)}" for k, v in attrs.items()),
                prov_type=str(attrs.get("type", "")).split(":")[-1],
                values=tuple(attrs.items()),
            )
        )
    edges: list[GraphEdge] = []
    for relation in doc.get_records():
        if relation.is_relation():
            formal = relation.formal_attributes
            if len(formal) >= 2 and formal[0][1] is not None and formal[1][1] is not None:
                kind = str(relation.get_type().localpart)
                edges.append(
                    GraphEdge(str(formal[0][1]), str(formal[1][1]), _RELATION_NAMES.get(kind, kind))
                )
    return _collapse_variables(nodes, edges, variables)


MAX_VARIABLE_NODES = 6


def _collapse_variables(
    nodes: list[GraphNode], edges: list[GraphEdge], variables: set[str]
) -> tuple[list[GraphNode], list[GraphEdge]]:
    """An execution that bound many names gets one node listing them, not one node each."""
    bound_by: dict[str, list[str]] = {}
    for edge in edges:
        if edge.source in variables and edge.relation == "wasGeneratedBy":
            bound_by.setdefault(edge.target, []).append(edge.source)
    merged: dict[str, str] = {}
    labels = {node.node_id: node.label for node in nodes}
    extra: list[GraphNode] = []
    for activity, names in bound_by.items():
        if len(names) <= MAX_VARIABLE_NODES:
            continue
        group = f"{activity}#variables"
        shown = sorted(labels.get(name, name) for name in names)
        merged.update(dict.fromkeys(names, group))
        label = (
            f"{len(names)} variables\n" + ", ".join(shown[:5]) + (", …" if len(shown) > 5 else "")
        )
        extra.append(GraphNode(group, "entity", label, "\n".join(shown), "Variable"))
    if not merged:
        return nodes, edges
    kept = [node for node in nodes if node.node_id not in merged] + extra
    seen: set[tuple[str, str, str]] = set()
    rewired = []
    for edge in edges:
        key = (
            merged.get(edge.source, edge.source),
            merged.get(edge.target, edge.target),
            edge.relation,
        )
        if key not in seen:
            seen.add(key)
            rewired.append(GraphEdge(*key))
    return kept, rewired


def _label(element: Any, attrs: dict[str, Any]) -> str:
    local = str(element.identifier.localpart)
    type_name = str(attrs.get("type", "")).split(":")[-1]
    if type_name == "Parameter":
        return f"{attrs.get('name')} = {_short(attrs.get('value'), 30)}"
    if type_name in ("ProvRun", "CellExecution"):
        name = attrs.get("name") or f"[{attrs.get('execution_count', ' ')}]"
        return f"{name}\n{attrs.get('status')} · {float(attrs.get('wall_time_s', 0)):.2f} s"
    if type_name == "CellVersion":
        return f"cell {str(attrs.get('sha256', ''))[:12]}"
    if type_name == "DataFile":
        return f"{attrs.get('role')}\n{str(attrs.get('path', '')).rsplit('/', 1)[-1]}"
    if type_name == "Environment":
        return f"environment\n{attrs.get('hostname')}"
    if type_name in _DASK_LABELS:
        return str(_DASK_LABELS[type_name](attrs))
    return str(attrs.get("name") or local)


_DASK_LABELS: dict[str, Any] = {
    "DaskCluster": lambda a: f"Dask cluster\n{a.get('scheduler_address')}",
    "DaskWorker": lambda a: f"worker {a.get('name')}\n{a.get('location')}",
    "DaskWorkerRun": lambda a: (
        f"worker {a.get('name')} · {a.get('status')}\n"
        f"{float(a.get('cpu_time_s', 0)):.2f} s CPU · {a.get('task_count')} tasks"
    ),
    "DaskTaskGroup": lambda a: (
        f"{a.get('name')} ×{a.get('task_count')}\n{float(a.get('compute_time_s', 0)):.2f} s"
    ),
}


def _short(value: Any, limit: int = 80) -> str:
    text = str(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


# Which statistics of each sampled column go into the activity (the full series is a file).
_SUMMARY_STATS = {
    "process_cpu_percent": ("mean", "max"),
    "process_rss_bytes": ("max",),
    "system_cpu_percent": ("mean", "max"),
    "system_memory_used_bytes": ("max",),
    "utilization_percent": ("mean", "max"),
    "memory_utilization_percent": ("mean", "max"),
    "memory_used_bytes": ("max",),
    "process_memory_bytes": ("max",),
    "power_w": ("mean", "max"),
    "temperature_c": ("max",),
    "sm_clock_mhz": ("mean",),
}


def _hardware_attrs(hardware: HardwareSummary | None) -> dict[str, Any]:
    if hardware is None:
        return {}
    out: dict[str, Any] = {
        "sample_count": hardware.sample_count,
        "sample_interval_s": hardware.interval_s,
        # >1 when a long run's older samples were thinned to keep memory bounded.
        "sample_downsample_factor": hardware.downsample_factor,
    }
    out.update(_series_attrs(hardware.series))
    return out


def _series_attrs(series: tuple[tuple[str, SeriesSummary], ...]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for column, summary in series:
        field = column.split("_", 1)[1] if column.startswith("gpu") else column
        for stat in _SUMMARY_STATS.get(field, ()):
            out[f"{column}_{stat}"] = getattr(summary, stat)
    return out


def _energy_attrs(energy: EnergyLedger | None) -> dict[str, Any]:
    if energy is None:
        return {}
    out: dict[str, Any] = {
        "energy_total_j": energy.total_j,
        "energy_methods": energy.methods(),
        # CO2 is always an estimate: measured energy times an assumed grid carbon intensity.
        "co2_g": energy.co2_g,
        "co2_method": "estimated",
        "carbon_intensity_g_per_kwh": energy.carbon_intensity_g_per_kwh,
    }
    for reading in energy.readings:
        device = safe_local(reading.device)
        out[f"energy_{device}_j"] = reading.energy_j
        out[f"energy_{device}_method"] = reading.method
        if reading.detail:
            out[f"energy_{device}_detail"] = reading.detail
    return out


def _context_attrs(context: RunContext) -> dict[str, Any]:
    """A run's context as attributes of its session's environment entity: the package list
    by its file and sha256 (not one attribute per package), imported versions, git, CUDA."""
    out: dict[str, Any] = {
        "packages_sha256": context.packages_sha256,
        "packages_file": context.packages_relpath,
        "packages_count": context.packages_count or None,
    }
    git = context.git
    if git is not None:
        out.update(
            {
                "git_commit": git.commit,
                "git_branch": git.branch,
                "git_dirty": git.dirty,
                "git_diff_sha256": git.diff_sha256,
                "git_diff_file": git.diff_relpath,
            }
        )
    out.update({safe_local(name): value for name, value in context.accelerator})
    if context.imported:
        # One text, `name==version` as in the package list: a module's name in an attribute's
        # name would be redacted on export when it reads like a credential (`asttokens`).
        out["imported_modules"] = ", ".join(f"{n}=={v}" for n, v in context.imported)
        out["imported_count"] = len(context.imported)
    return out


def _randomness_attrs(randomness: Randomness | None) -> dict[str, Any]:
    if randomness is None:
        return {}
    out: dict[str, Any] = {}
    counts: dict[str, int] = {}
    for call in randomness.seeds:
        key = "seed_" + safe_local(call.function.replace(".", "_"))
        out[key] = call.value if call.value is not None else "None"  # the last one given
        counts[key] = counts.get(key, 0) + 1
    out.update({f"{key}_calls": count for key, count in counts.items() if count > 1})
    seed = randomness.torch_initial_seed
    # An unsigned 64-bit seed does not fit xsd:long: kept as text.
    out["torch_initial_seed"] = str(seed) if seed is not None and seed >= 2**63 else seed
    out["torch_deterministic_algorithms"] = randomness.torch_deterministic_algorithms
    out["cudnn_deterministic"] = randomness.cudnn_deterministic
    out["cudnn_benchmark"] = randomness.cudnn_benchmark
    return out


def _model_attrs(model: ModelSummary) -> dict[str, Any]:
    return {
        "name": model.name,
        "class_name": model.class_name,
        "framework": model.framework,
        "parameters_total": model.parameters_total,
        "parameters_trainable": model.parameters_trainable,
        "weights_bytes": model.weights_bytes,
        "dtypes": ", ".join(model.dtypes) or None,
        "devices": ", ".join(model.devices) or None,
        "layers": ", ".join(model.layers) or None,
        "layer_count": len(model.layers) or None,
        "weights_sha256": model.weights_sha256,
        "weights_hash_skipped": model.weights_hash_skipped or None,
        "artifact_sha256": model.artifact_sha256,
    }


def _input_attrs(data: DataInput) -> dict[str, Any]:
    return {
        "name": data.name,
        "input_kind": data.kind,
        "class_name": data.class_name,
        "path": data.path,
        "size_bytes": data.size_bytes,
        "sha256": data.sha256,
        "hash_method": data.hash_method,
        "rows": data.rows,
        "columns": ", ".join(data.columns) or None,
        "dtypes": ", ".join(data.dtypes) or None,
        "shape": "x".join(str(n) for n in data.shape) if data.shape else None,
        "length": data.length,
        "batch_size": data.batch_size,
        "num_workers": data.num_workers,
        "shuffle": data.shuffle,
        "drop_last": data.drop_last,
        "dataset_length": data.dataset_length,
        "fingerprint": data.fingerprint,
    }


def prov_value(value: ParamValue | float) -> Any:
    """A value PROV-JSON can carry: non-finite floats become text (JSON has no NaN)."""
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    return value
