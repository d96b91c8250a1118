"""Extract stage: an nsys SQLite export in, typed Parquet tables and ``metrics.json`` out.

Every event table is read with one query (:data:`llmprof.nsys.events.EVENT_QUERIES`)
that selects only the columns it needs and labels enums inside SQLite; names are
resolved once per distinct id, and rows stream as Arrow batches into a Parquet
writer, so memory does not grow with the export. Columns that older nsys versions
lack are read as NULL. Event rows keep the export's own order, which is fixed for
a given file: sorting tens of millions of rows inside SQLite would cost more than
the extraction itself.

The summaries are fed from the same batches as they pass (:class:`EventScan`, on
its own thread): calls are read first, then GPU operations are joined to them, so
the export is scanned once. Past fixed budgets, calls, operations and grouped
values wait on disk in the staging folder and come back a partition or key range at
a time, so memory stays bounded whatever the size of the export.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from llmprof.analysis import tables
from llmprof.analysis.busy import GpuTime, gpu_time
from llmprof.analysis.categories import API_KIND, Classifier, kernel_classifier
from llmprof.analysis.collectives import write_collectives
from llmprof.analysis.devices import multi_gpu_metrics
from llmprof.analysis.expert import expert_rule_records
from llmprof.analysis.grouped import GroupedValues
from llmprof.analysis.idle import explain_idle
from llmprof.analysis.iterations import write_steps
from llmprof.analysis.launches import LaunchResults, LaunchScan
from llmprof.analysis.metrics import capture_window, compute_metrics
from llmprof.analysis.overhead import profiler_work
from llmprof.analysis.stats import REPORTS, ReportSkipped, SharedScans, report_table
from llmprof.analysis.timing import iteration_timing
from llmprof.common.errors import InputError, brief
from llmprof.common.outputs import OrderedWorker, ParquetSink, staged_directory, write_json, write_table
from llmprof.common.progress import Progress
from llmprof.common.records import Metrics, load_run_record
from llmprof.nsys import events
from llmprof.nsys.events import EventQuery, NameResolver
from llmprof.nsys.export import Export, conform, open_export
from llmprof.nsys.schema import pids, tids

log = logging.getLogger(__name__)


def _classified(batch: pa.RecordBatch, column: str, classifier: Classifier, detail: str | None = None) -> pa.Array:
    """Classify each distinct value of ``column`` once (``detail`` is tried where it matches nothing)."""
    codes, uniques = pd.factorize(batch.column(column).to_pandas(), use_na_sentinel=False)
    if detail is None:
        labels = classifier.map(list(uniques))
    else:
        _, first = np.unique(codes, return_index=True)
        details = batch.column(detail).take(pa.array(first)).to_pylist()
        labels = classifier.map(list(uniques), details)
    return pa.array(np.asarray(labels, dtype=object)[codes], type=pa.string())


def _derive_kernel_category(batch: pa.RecordBatch, classifier: Classifier) -> pa.RecordBatch:
    index = batch.schema.get_field_index("category")
    return batch.set_column(index, "category", _classified(batch, "short_name", classifier, detail="name"))


def _derive_api_kind(batch: pa.RecordBatch, classifier: Classifier) -> pa.RecordBatch:
    return batch.set_column(batch.schema.get_field_index("kind"), "kind", _classified(batch, "name", API_KIND))


Derive = Callable[[pa.RecordBatch, Classifier], pa.RecordBatch]
#: Columns computed from each batch of a table after it is read.
DERIVED: dict[str, Derive] = {"kernels": _derive_kernel_category, "cuda_api": _derive_api_kind}


class EventScan:
    """The summaries computed from the event batches as they stream, instead of scanning the export again.

    Calls are read before GPU operations, so each operation is joined to its call as it passes
    (see ``launches``); kernel and call durations are grouped by name id on the way.
    """

    ORDER = ("cuda_api", "memcpy", "memset", "kernels")  # calls first; kernels last, then the calls go
    DURATIONS = ("kernels", "cuda_api")

    def __init__(self, export: Export, spill: Path) -> None:
        """``spill``: a scratch folder for the grouped values (8 bytes per value), removed by :meth:`finish`."""
        self.spill = spill
        self.launches = LaunchScan(export, events.nvtx_ranges(export), spill)
        self.durations = {name: GroupedValues(("name_id",), ("value",), spill) for name in self.DURATIONS}
        self.worker: OrderedWorker[tuple[str, pa.RecordBatch]] = OrderedWorker(
            lambda item: self._feed(*item), name="event-scan"
        )

    def feed(self, table: str, batch: pa.RecordBatch) -> None:
        """One raw batch of an event table, names still as StringIds ids (consumed on the scan's thread)."""
        self.worker.submit((table, batch))

    def _feed(self, table: str, batch: pa.RecordBatch) -> None:
        if table == "cuda_api":
            self.launches.add_calls(batch)
        elif table in ("kernels", "memcpy", "memset"):
            self.launches.add_operations(batch, kernels=table == "kernels")
        if table in self.durations:
            self.durations[table].add_batch(
                pa.record_batch({"name_id": batch.column("name"), "value": batch.column("duration_ns")})
            )

    def close(self) -> None:
        """Wait until every batch fed has been consumed."""
        self.worker.close()

    def finish(self, export: Export) -> tuple[dict[str, pd.DataFrame], LaunchResults]:
        """The duration statistics per name id of the tables that hold rows, and the launch join."""
        self.close()
        with ThreadPoolExecutor(max_workers=1) as beside:  # the sorts release the GIL: overlap them
            frames = {
                name: beside.submit(grouped.frame)
                for name, grouped in self.durations.items()
                if events.has_events(export, name)
            }
            launches = self.launches.finish()
            durations = {name: frame.result() for name, frame in frames.items()}
        shutil.rmtree(self.spill, ignore_errors=True)
        return durations, launches


def _resolved(raw: pa.RecordBatch, schema: pa.Schema, resolvers: Mapping[str, NameResolver]) -> pa.RecordBatch:
    """A raw batch cut to the table's columns, its StringIds ids resolved to names and cast to the schema."""
    columns = list(raw.columns)[: len(schema)]
    for column, resolve in resolvers.items():
        index = schema.get_field_index(column)
        columns[index] = resolve(columns[index])
    return conform(pa.RecordBatch.from_arrays(columns, names=schema.names), schema)


def _write_events(
    export: Export,
    query: EventQuery,
    path: Path,
    classifier: Classifier,
    progress: bool,
    scan: EventScan | None = None,
) -> int:
    """Stream one event table into its Parquet file (and the scan); the number of rows written."""
    schema = tables.EVENT_TABLES[query.name]
    derive = DERIVED.get(query.name)
    sql = query.rows_sql(export)
    counting = progress and sql is not None
    sink = ParquetSink(path, schema)
    with Progress(query.name, query.source_rows(export) if counting else None, enabled=counting) as counter:
        try:
            resolvers = {column: NameResolver(export, transform) for column, transform in query.names.items()}
            for raw in export.arrow_batches(sql) if sql is not None else ():
                if scan is not None and query.name in EventScan.ORDER:
                    names = [*schema.names, *query.extra]
                    scan.feed(query.name, pa.RecordBatch.from_arrays(raw.columns, names=names))
                try:
                    batch = _resolved(raw, schema, resolvers)
                except pa.ArrowInvalid as exc:  # a NULL time, a text where a number belongs
                    source = query.source or query.name
                    raise InputError(
                        f"{export.path}: rows of {source} do not fit the {query.name} table ({brief(exc)}); "
                        "the export is damaged: export the capture again"
                    ) from exc
                sink.write(batch if derive is None else derive(batch, classifier))
                counter.advance(raw.num_rows)
        finally:
            sink.close()
    return sink.rows


def _write_nvtx_gpu(launches: LaunchResults, path: Path) -> int:
    """Per NVTX range: the GPU work its CUDA calls launched (phase attribution)."""
    projected = launches.projected
    if projected is None or projected.empty:
        write_table(path, tables.NVTX_GPU.empty_table())
        return 0
    global_tid = projected["global_tid"].to_numpy(dtype="int64")
    projected = projected.assign(pid=pids(global_tid), tid=tids(global_tid)).sort_values(
        ["start_ns", "pid", "tid", "name"], kind="stable"
    )
    write_table(
        path, pa.Table.from_pandas(projected[tables.NVTX_GPU.names], schema=tables.NVTX_GPU, preserve_index=False)
    )
    return len(projected)


def _write_event_tables(
    export: Export, stage: Path, classifier: Classifier, progress: bool
) -> tuple[dict[str, int], SharedScans, GpuTime]:
    """Every event table, calls first; the rows per table, the scans the summaries share, GPU busy time."""
    row_counts: dict[str, int] = {}
    scan = EventScan(export, stage / ".scan")
    order = {name: i for i, name in enumerate(EventScan.ORDER)}
    queries = sorted(events.EVENT_QUERIES, key=lambda q: order.get(q.name, len(order)))
    try:
        for query in queries:
            row_counts[query.name] = _write_events(
                export, query, stage / f"{query.name}.parquet", classifier, progress, scan
            )
    finally:
        scan.close()  # also on failure: no thread is left behind
    with ThreadPoolExecutor(max_workers=1) as beside:  # GPU busy time needs only the tables written
        activity = beside.submit(gpu_time, stage, capture_window(stage))
        durations, launches = scan.finish(export)
        activity_result = activity.result()
    row_counts = {query.name: row_counts[query.name] for query in events.EVENT_QUERIES}
    row_counts["nvtx_gpu"] = _write_nvtx_gpu(launches, stage / "nvtx_gpu.parquet")
    return row_counts, SharedScans(export, durations, launches), activity_result


def _write_summaries(scans: SharedScans, stage: Path, label: str) -> tuple[dict[str, int], dict[str, str]]:
    """Every nsys-equal summary as Parquet (empty where nsys would skip it); rows per summary, why skipped."""
    row_counts: dict[str, int] = {}
    skipped: dict[str, str] = {}
    for name, report in REPORTS.items():
        try:
            frame = report.run(scans)
        except ReportSkipped as reason:
            frame, skipped[name] = report.empty(), str(reason).replace(str(scans.export.path), label)
        write_table(stage / f"{name}.parquet", report_table(report, frame))
        row_counts[name] = len(frame)
    return row_counts, skipped


def extract(
    sqlite: str | Path,
    out: str | Path,
    *,
    categories: Mapping[str, str] | None = None,
    record: str | Path | None = None,
    baseline: str | Path | None = None,
    force: bool = False,
    progress: bool = False,
) -> Metrics:
    """Extract every table, the nsys-equal summaries and the headline metrics of one export.

    Args:
        sqlite: an nsys SQLite export (any nsys from 2020.3 on).
        out: the output folder; it appears only when everything was written.
        categories: kernel category → regular expression, replacing the defaults.
        record: the profiled run's record (captured iterations, traced latency), for ``metrics["timing"]``.
        baseline: the same workload's record without nsys (untraced latency: the corrected busy share).
        force: replace ``out`` if it exists.
        progress: report rows read per table against its total (a bar or periodic log lines).

    Returns:
        The metrics written to ``out/metrics.json``.
    """
    classifier = kernel_classifier(categories)
    traced = load_run_record(Path(record)) if record is not None else None
    untraced = load_run_record(Path(baseline)) if baseline is not None else None
    with open_export(sqlite) as export, staged_directory(Path(out), force, "extract") as stage:
        nsys_rules = expert_rule_records(export)  # first: it sorts whole devices, with nothing else held
        row_counts, scans, gpu = _write_event_tables(export, stage, classifier, progress)
        summary_rows, skipped = _write_summaries(scans, stage, Path(sqlite).name)
        del scans  # the shared scans hold every duration: free them before the analyses that follow
        row_counts["collectives"] = write_collectives(stage)  # from the kernels table just written
        idle = explain_idle(stage, gpu, stage / "idle_gaps.parquet")
        row_counts["idle_gaps"] = sum(d["gaps"] for d in idle["devices"])
        row_counts["steps"], steps = write_steps(stage)
        capture = compute_metrics(export, stage, classifier, gpu.activity)
        metrics: Metrics = {
            **capture,
            "timing": iteration_timing(capture, traced, untraced),
            "tables": {**row_counts, **summary_rows},
            "skipped_summaries": skipped,
            "schema_version": tables.SCHEMA_VERSION,
            "multi_gpu": multi_gpu_metrics(stage),
            "busy": gpu.busy,
            "idle": idle,
            "profiler": profiler_work(stage, capture["capture_window"], idle),
            "steps": steps,
            "nsys_rules": nsys_rules,
        }
        write_json(stage / "metrics.json", metrics)
    return metrics
