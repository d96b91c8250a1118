"""Study analysis: every run of a study side by side in one table, and the findings that compare them.

Input is a manifest (one entry per run: its extract folder, run records and
sweep values). A run whose outputs are missing is kept as a failed row with the
reason from its logs, never silently dropped, so a sweep finished with
``snakemake --keep-going`` still yields a study that says what failed. The
study's report and figures are drawn by :mod:`llmprof.render.study`.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple, cast

import pandas as pd
import pyarrow as pa
import yaml

from llmprof.analysis.categories import CATEGORY_ORDER
from llmprof.analysis.findings import Finding, Observation, Rule, pct, profiler_overhead, run_rules
from llmprof.analysis.metrics import records
from llmprof.analysis.serving import engine_steps, mean_batch_requests
from llmprof.analysis.timing import iteration_timing, serving
from llmprof.common.errors import InputError, brief
from llmprof.common.records import (
    ManifestEntry,
    RunRecord,
    ServingRecord,
    load_metrics,
    load_run_record,
    shape_problem,
)

#: Run parameters compared across runs, from the run record's settings (in this order).
PARAMETERS = (
    ("request_rate", "serve", pa.float64()),
    ("max_concurrency", "serve", pa.int64()),
    ("num_prompts", "serve", pa.int64()),
    ("batch_size", "workload", pa.int64()),
    ("input_len", "workload", pa.int64()),
    ("output_len", "workload", pa.int64()),
    ("capture_mode", None, pa.string()),
    ("enforce_eager", "engine", pa.bool_()),
    ("tensor_parallel_size", "engine", pa.int64()),
)
#: Parameters a serving run does not have: the request rate, not a batch, sets its load.
OFFLINE_ONLY = frozenset({"batch_size"})
#: What a run must share with another to be placed on one axis with it: runs differing in any of these are
#: split into comparison groups (their values, from the traced run record, are columns of the study table).
GROUP_FIELDS = ("mode", "capture_mode", "nsys_arguments", "model", "gpu_name", "vllm_version")
#: A serving run's client measurements in the study table, traced and untraced: column stem → (latency, key).
SERVING_COLUMNS = {
    "ttft_p50_ms": ("ttft", "p50_ms"),
    "ttft_p99_ms": ("ttft", "p99_ms"),
    "tpot_p50_ms": ("tpot", "p50_ms"),
    "itl_p50_ms": ("itl", "p50_ms"),
    "itl_p99_ms": ("itl", "p99_ms"),
}
#: A kernel category's share of GPU time must move this much between the ends of a sweep to be reported.
SHARE_CHANGE = 0.05

STUDY_SCHEMA = pa.schema(
    [
        pa.field("run", pa.string()),
        pa.field("status", pa.string()),  # ok or failed
        pa.field("reason", pa.string()),
        pa.field("sweep", pa.string()),
        pa.field("swept_values", pa.string()),  # JSON object of the swept keys
        pa.field("mode", pa.string()),  # offline or serve
        *(pa.field(name, kind) for name, _, kind in PARAMETERS),
        pa.field("model", pa.string()),
        pa.field("gpu_name", pa.string()),
        pa.field("vllm_version", pa.string()),
        pa.field("nsys_arguments", pa.string()),  # JSON list, as the traced record has them
        pa.field("comparison_group", pa.string()),  # the group's differing fields, e.g. capture_mode=in_process
        pa.field("output_tok_per_s_traced", pa.float64()),
        pa.field("output_tok_per_s_untraced", pa.float64()),
        pa.field("profiler_overhead", pa.float64()),
        pa.field("mean_iteration_latency_s", pa.float64()),  # under nsys
        pa.field("mean_iteration_latency_s_untraced", pa.float64()),  # the same workload without nsys
        pa.field("kernel_count", pa.int64()),
        pa.field("kernel_time_ns", pa.int64()),
        pa.field("iteration_overhead", pa.float64()),  # traced / untraced median latency - 1: iteration or TPOT
        pa.field("busy_share_raw", pa.float64()),  # GPU busy / traced capture window
        pa.field("busy_share_corrected", pa.float64()),  # GPU busy per iteration / untraced median latency
        *(pa.field(f"share_{c.replace('/', '_')}", pa.float64()) for c in CATEGORY_ORDER),
        pa.field("sync_share", pa.float64()),
        pa.field("h2d_bytes", pa.int64()),
        pa.field("top_kernel", pa.string()),
        pa.field("top_kernel_share", pa.float64()),
        *(
            pa.field(f"{stem}_{which}", pa.float64())
            for stem in ("request_per_s", *SERVING_COLUMNS)
            for which in ("traced", "untraced")
        ),
        pa.field("mean_batch_requests", pa.float64()),  # requests per engine step (steps that scheduled any)
    ]
)


@dataclass(frozen=True)
class RunEntry:
    """One run of the study: where its outputs are and how it was made."""

    run: str
    extract: Path
    record: Path | None = None
    baseline: Path | None = None
    logs: Path | None = None
    sweep: Mapping[str, object] = field(default_factory=dict)  # its SweepRecord; empty outside a sweep

    @classmethod
    def from_dict(cls, item: ManifestEntry) -> RunEntry:
        def path(given: str | None) -> Path | None:
            return Path(given) if given else None

        return cls(
            item["run"],
            Path(item["extract"]),
            path(item.get("record")),
            path(item.get("baseline")),
            path(item.get("logs")),
            item.get("sweep") or {},
        )


def load_manifest(source: str) -> list[RunEntry]:
    """Runs of a study from a manifest file (YAML or JSON): a list of {run, extract, record?, baseline?, logs?,
    sweep?}. Inline JSON (text starting with ``[`` or ``{``) is read as the manifest itself."""
    where = "study manifest"
    text = source
    if source.lstrip()[:1] not in ("[", "{"):
        where = f"{source}: study manifest"
        try:
            text = Path(source).read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise InputError(f"{where} cannot be read ({brief(exc)})") from exc
    try:
        items = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise InputError(f"{where}: not valid JSON or YAML ({brief(exc)})") from exc
    if not isinstance(items, list) or not items:
        raise InputError(f"{where}: expected a non-empty list of runs")
    problem = shape_problem(items, list[ManifestEntry])
    if problem is not None:
        raise InputError(f"{where}: {problem}; each run needs at least run and extract")
    return [RunEntry.from_dict(i) for i in cast(list[ManifestEntry], items)]


def failure_reason(entry: RunEntry) -> str:
    """The last error line in the run's logs, or what is missing."""
    lines: list[str] = []
    if entry.logs is not None and entry.logs.is_dir():
        for log in sorted(entry.logs.glob("*.log")):
            lines += [
                f"{log.stem}: {line.strip()}"
                for line in log.read_text(errors="replace").splitlines()
                if "error" in line.lower()
            ]
    return lines[-1][:500] if lines else f"{entry.extract / 'metrics.json'} was not produced"


def _record(path: Path | None) -> RunRecord | None:
    """A run record, or None where the run has none (a capture without records, a failed run)."""
    return load_run_record(path) if path is not None and path.exists() else None


def _mean_latency(record: RunRecord) -> float | None:
    """The mean latency of a record's iterations (s), None without any."""
    latencies = [i["latency_s"] for i in record["iterations"]]
    return statistics.fmean(latencies) if latencies else None


def _record_columns(traced: RunRecord | None, untraced: RunRecord | None) -> dict[str, object]:
    """The study columns read from a run's records: its parameters, throughput and latency."""
    row: dict[str, object] = {}
    if traced is not None:
        spec = traced["spec"]
        row["mode"] = spec.get("mode", "offline")
        sections: dict[str | None, Mapping[str, object]] = {
            None: spec,
            "workload": spec["workload"],
            "engine": spec["engine"],
            "serve": spec.get("serve", {}) if row["mode"] == "serve" else {},
        }
        for name, section, _ in PARAMETERS:
            applies = row["mode"] != "serve" or name not in OFFLINE_ONLY
            row[name] = sections[section].get(name) if applies else None
        row["output_tok_per_s_traced"] = traced["output_tokens_per_s"]
        row.update(
            model=traced["model"]["name"], gpu_name=traced["gpu"]["name"], vllm_version=traced["versions"]["vllm"]
        )
        nsys = traced.get("nsys")
        row["nsys_arguments"] = json.dumps(nsys["arguments"]) if nsys is not None else None
        row["mean_iteration_latency_s"] = _mean_latency(traced)
    if untraced is not None:
        row["output_tok_per_s_untraced"] = untraced["output_tokens_per_s"]
        row["mean_iteration_latency_s_untraced"] = _mean_latency(untraced)
    if traced is not None and untraced is not None:
        row["profiler_overhead"] = profiler_overhead(traced, untraced)
    for which, record in (("traced", traced), ("untraced", untraced)):
        row.update(_serving_columns(serving(record), which))
    return row


def _serving_columns(load: ServingRecord | None, which: str) -> dict[str, object]:
    """A serving load's throughput and latency percentiles as study columns (none for offline runs)."""
    if load is None:
        return {}
    row: dict[str, object] = {f"request_per_s_{which}": load["request_throughput_per_s"]}
    for stem, (metric, key) in SERVING_COLUMNS.items():
        row[f"{stem}_{which}"] = load[metric][key]  # type: ignore[literal-required]
    return row


def run_row(entry: RunEntry) -> dict[str, object]:
    """The study row of one run (status failed, with its reason, when its outputs are missing)."""
    row: dict[str, object] = {f.name: None for f in STUDY_SCHEMA}
    row.update(
        run=entry.run,
        sweep=entry.sweep.get("name"),
        swept_values=json.dumps(entry.sweep.get("values", {}), sort_keys=True),
    )
    if not (entry.extract / "metrics.json").exists():
        return {**row, "status": "failed", "reason": failure_reason(entry)}
    m = load_metrics(entry.extract)
    traced, untraced = _record(entry.record), _record(entry.baseline)
    row.update(_record_columns(traced, untraced))
    timing = iteration_timing(m, traced, untraced)
    row.update({key: timing[key] for key in ("iteration_overhead", "busy_share_raw", "busy_share_corrected")})
    for category in m["kernels"]["categories"]:
        row[f"share_{category['category'].replace('/', '_')}"] = category["share"]
    top = m["kernels"]["top"][0] if m["kernels"]["top"] else None
    if row.get("mode") == "serve":
        row["mean_batch_requests"] = mean_batch_requests(engine_steps(entry.extract))
    row.update(
        status="ok",
        kernel_count=m["kernels"]["count"],
        kernel_time_ns=m["kernels"]["time_ns"],
        sync_share=m["cuda_api"]["sync_share"],
        h2d_bytes=m["memcpy"]["directions"]["H2D"]["bytes"],
        top_kernel=top["short_name"] if top else None,
        top_kernel_share=top["share"] if top else None,
    )
    return row


def _differing_arguments(table: pd.DataFrame) -> pd.Series:
    """Per run, its nsys arguments that not every complete run shares (what tells the groups apart)."""
    given = [json.loads(a) if isinstance(a, str) else [] for a in table["nsys_arguments"]]
    ok = [args for args, status in zip(given, table["status"]) if status == "ok"]
    shared = set.intersection(*(set(a) for a in ok)) if ok else set()
    return pd.Series([" ".join(a for a in args if a not in shared) for args in given], index=table.index)


def comparison_groups(table: pd.DataFrame) -> pd.Series:
    """Each complete run's comparison group: its values of the group fields that differ across the complete runs.

    ``all`` when the runs differ in none of them; None for failed runs.
    """
    ok = table["status"] == "ok"
    values = table[list(GROUP_FIELDS)].astype(object).where(table[list(GROUP_FIELDS)].notna(), "unknown")
    values["nsys_arguments"] = _differing_arguments(table).where(table["nsys_arguments"].notna(), "unknown")
    differing = [f for f in GROUP_FIELDS if values.loc[ok, f].nunique() > 1]
    names = [", ".join(f"{f}={row[f] or 'none'}" for f in differing) or "all" for _, row in values.iterrows()]
    return pd.Series(names, index=table.index, dtype=object).where(ok, None)


def study_table(entries: list[RunEntry]) -> pd.DataFrame:
    """One row per run, in manifest order, with the comparison group each complete run belongs to."""
    table = pa.Table.from_pylist([run_row(e) for e in entries], schema=STUDY_SCHEMA)
    nullable = {pa.int64(): pd.Int64Dtype(), pa.bool_(): pd.BooleanDtype()}
    frame: pd.DataFrame = table.to_pandas(types_mapper=nullable.get)
    frame["comparison_group"] = comparison_groups(frame)
    return frame


def swept_parameter(table: pd.DataFrame) -> str | None:
    """The run parameter that differs across the successful runs (the first, if several); never a group field."""
    ok = table[table["status"] == "ok"]
    for name, _, _ in PARAMETERS:
        if name not in GROUP_FIELDS and ok[name].notna().all() and ok[name].nunique() > 1:
            return name
    return None


def modes_of(runs: pd.DataFrame) -> str:
    """The modes of these runs: offline, serve, or both (a run without a record has none)."""
    modes = set(runs["mode"].dropna())
    return "both" if len(modes) > 1 else "serve" if modes == {"serve"} else "offline"


@dataclass(frozen=True)
class Sweep:
    """The complete runs of one comparison group ordered along a numeric swept parameter, first value to last."""

    parameter: str
    runs: pd.DataFrame
    group: str = "all"

    @property
    def first(self) -> pd.Series:
        return self.runs.iloc[0]

    @property
    def last(self) -> pd.Series:
        return self.runs.iloc[-1]

    @property
    def label(self) -> str:
        return self.parameter.replace("_", " ")

    @property
    def where(self) -> str:
        """What a finding's title adds to name the group, when the study was split."""
        return "" if self.group == "all" else f" ({self.group})"


def group_names(table: pd.DataFrame) -> list[str]:
    """The comparison groups of the complete runs, in the order of their first run."""
    return list(dict.fromkeys(table.loc[table["status"] == "ok", "comparison_group"].dropna()))


def numeric_sweeps(table: pd.DataFrame) -> tuple[Sweep, ...]:
    """Per comparison group, the sweep its findings follow: at least two complete runs along a numeric parameter."""
    sweeps = []
    for group in group_names(table):
        runs = table[(table["status"] == "ok") & (table["comparison_group"] == group)]
        parameter = swept_parameter(runs)
        if parameter is not None and len(runs) >= 2 and pd.api.types.is_numeric_dtype(runs[parameter]):
            sweeps.append(Sweep(parameter, runs.sort_values([parameter, "run"]), group))
    return tuple(sweeps)


class StudyResults(NamedTuple):
    """What the study's rules read: the study table and the numeric sweep of each comparison group that has one."""

    table: pd.DataFrame
    sweeps: tuple[Sweep, ...]


def run_failed(study: StudyResults) -> Iterator[Observation]:
    for row in records(study.table[study.table["status"] == "failed"]):
        yield Observation(
            "warning",
            f"Run {row['run']} failed",
            str(row["reason"]),
            "Read the run's logs under logs/{run}/; a GPU out-of-memory error calls for a smaller batch or "
            "max_model_len, or a lower gpu_memory_utilization.",
        )


def comparison_split(study: StudyResults) -> Iterator[Observation]:
    """Runs that differ in how or on what they ran are compared only within their group."""
    groups = group_names(study.table)
    if len(groups) < 2:
        return
    ok = study.table[study.table["status"] == "ok"]
    fields = list(dict.fromkeys(part.partition("=")[0] for group in groups for part in group.split(", ")))
    members = "; ".join(f"{group}: {', '.join(ok.loc[ok['comparison_group'] == group, 'run'])}" for group in groups)
    yield Observation(
        "info",
        f"Runs split into {len(groups)} comparison groups by {', '.join(fields)}",
        f"{members}. Runs that differ in mode (offline or serve), capture mode, nsys arguments, model, GPU or vLLM "
        "version are not placed on one axis; trends are found within each group.",
        "Sweep one parameter at a time with the rest of the setup fixed, so that every run lands in one group.",
    )


def _busy_basis(sweep: Sweep) -> tuple[str, str, str]:
    """The busy-share column the idle trend reads, the title's words for it and the evidence's.

    The corrected share where every run of the group has it; else the raw one, said to be inflated.
    """
    if sweep.runs["busy_share_corrected"].notna().all():
        span = "load" if modes_of(sweep.runs) == "serve" else "iteration"
        return "busy_share_corrected", f"share of an untraced {span}", f"Busy share of an untraced {span} per run"
    return (
        "busy_share_raw",
        "share of the traced window, inflated by the tracer",
        "Busy share of the traced window per run (raw: inflated by the tracer by an unknown amount, since not "
        "every run of the group has an untraced run)",
    )


def idle_trend(study: StudyResults) -> Iterator[Observation]:
    for sweep in study.sweeps:
        column, title_basis, evidence_basis = _busy_basis(sweep)
        first, last, label = sweep.first, sweep.last, sweep.label
        if pd.isna(first[column]) or pd.isna(last[column]):
            continue
        idle_a, idle_b = 1 - first[column], 1 - last[column]
        runs = records(sweep.runs)
        shares = ", ".join(f"{r['run']} {pct(r[column])}" for r in runs if pd.notna(r[column]))
        raw = ", ".join(f"{r['run']} {pct(r['busy_share_raw'])}" for r in runs if pd.notna(r["busy_share_raw"]))
        beside = f"; of the traced window (raw, inflated by the tracer): {raw}" if column != "busy_share_raw" else ""
        yield Observation(
            "info",
            f"GPU idle {'falls' if idle_b < idle_a else 'rises'} from {pct(idle_a)} at {label} "
            f"{first[sweep.parameter]} to {pct(idle_b)} at {label} {last[sweep.parameter]}{sweep.where} "
            f"({title_basis})",
            f"{evidence_basis}: {shares}{beside}.",
            "Where idle stays high at the largest setting, the host side (scheduling, sampling, Python) bounds "
            "throughput: look at the CPU with nsys --sample=process-tree.",
        )


def served_rate(sweep: Sweep) -> Iterator[Observation]:
    """Along a request-rate sweep, throughput follows the offered rate until the server saturates: how much of the
    highest rate it served says whether the sweep reached the knee."""
    served = measured_column(sweep.runs, "request_per_s")
    if served is None:
        return
    offered, achieved = float(sweep.last["request_rate"]), float(sweep.last[served])
    each = "; ".join(f"{r['request_rate']:g} offered: {r[served]:,.2f} served" for _, r in sweep.runs.iterrows())
    yield Observation(
        "info",
        f"Served {achieved:,.1f} of {offered:g} requests/s offered at the highest rate ({pct(achieved / offered)})"
        f"{sweep.where}",
        f"Requests/s per run ({which_run(served)}): {each}. An open-loop load sets throughput by its rate "
        "until the server saturates, so throughput alone does not show the server's speed; latency does. With few "
        "requests a run's Poisson arrivals stray from the offered rate by chance.",
        "A served rate well below the offered one, with TTFT climbing, marks saturation; until the sweep reaches "
        "it, add higher rates (and more requests per run) to find the knee of the latency-throughput curve.",
    )


def throughput_scaling(study: StudyResults) -> Iterator[Observation]:
    """Throughput from the first to the last run of each sweep: untraced where measured, else traced; for a
    request-rate sweep, the share of the offered rate served."""
    for sweep in study.sweeps:
        if sweep.parameter == "request_rate":
            yield from served_rate(sweep)
            continue
        first, last, parameter, label = sweep.first, sweep.last, sweep.parameter, sweep.label
        for column, which in (("output_tok_per_s_untraced", "untraced"), ("output_tok_per_s_traced", "traced")):
            if pd.notna(first[column]) and pd.notna(last[column]) and first[column] > 0:
                yield Observation(
                    "info",
                    f"Throughput grows {last[column] / first[column]:.1f}× from {label} "
                    f"{first[parameter]} to {last[parameter]} ({which}){sweep.where}",
                    f"{first[column]:,.0f} → {last[column]:,.0f} output tok/s; "
                    f"{label} grows {last[parameter] / first[parameter]:.1f}×.",
                    "Sublinear scaling marks where the GPU saturates; pick the batch size (or request rate) at the "
                    "knee for latency-bound serving.",
                )
                break


def category_shift(study: StudyResults) -> Iterator[Observation]:
    for sweep in study.sweeps:
        for category in CATEGORY_ORDER:
            column = f"share_{category.replace('/', '_')}"
            a, b = sweep.first[column], sweep.last[column]
            if pd.notna(a) and pd.notna(b) and abs(b - a) >= SHARE_CHANGE:
                yield Observation(
                    "info",
                    f"{category}'s share of GPU time {'grows' if b > a else 'falls'} from "
                    f"{pct(a)} to {pct(b)} with {sweep.label}{sweep.where}",
                    f"{sweep.first['run']}: {pct(a)}; {sweep.last['run']}: {pct(b)}.",
                    "Optimise the family whose share grows with the setting you will deploy.",
                )


def overhead_range(study: StudyResults) -> Iterator[Observation]:
    """The profiler's overhead across each sweep: throughput lost and iteration slowdown, or for serving runs the
    median TPOT's (the request rate sets their throughput, traced or not)."""
    for sweep in study.sweeps:
        overheads, slowdowns = sweep.runs["profiler_overhead"], sweep.runs["iteration_overhead"]
        if overheads.isna().all():
            continue
        lost, longer = (f"{pct(v.min())}–{pct(v.max())}" for v in (overheads, slowdowns))
        if modes_of(sweep.runs) == "serve":
            yield Observation(
                "info",
                f"Profiler overhead: median TPOT {longer} longer under nsys across runs{sweep.where}",
                f"Traced against untraced median time per output token of the same load: {lost} of the per-token "
                "speed lost. A fixed request rate sets the throughput traced or not, so throughput shows none of it.",
                "Compare runs on their untraced latencies; use traced timings for where the time goes, not how much.",
            )
            continue
        latency = f" Per-iteration latency {longer} longer traced." if slowdowns.notna().any() else ""
        yield Observation(
            "info",
            f"Profiler overhead {lost} across runs{sweep.where}",
            f"Traced against untraced output tok/s of the same workload.{latency}",
            "Compare runs on untraced throughput; use traced timings for where the time goes, not how much.",
        )


def which_run(column: str) -> str:
    """untraced or traced: which run a ``*_untraced`` / ``*_traced`` study column measures."""
    return column.rsplit("_", 1)[1]


def measured_column(runs: pd.DataFrame, stem: str) -> str | None:
    """The column of ``stem`` every one of ``runs`` has: ``stem_untraced`` where all have it, else ``stem_traced``;
    None when neither is complete."""
    for which in ("untraced", "traced"):
        if runs[f"{stem}_{which}"].notna().all():
            return f"{stem}_{which}"
    return None


def latency_throughput(study: StudyResults) -> Iterator[Observation]:
    """Along a serving sweep: how request throughput and latency move together, and the GPU's busy share."""
    for sweep in study.sweeps:
        rate, ttft, tpot = (measured_column(sweep.runs, s) for s in ("request_per_s", "ttft_p99_ms", "tpot_p50_ms"))
        if rate is None or ttft is None or tpot is None:
            continue
        runs, label, busy = records(sweep.runs), sweep.label, _busy_basis(sweep)[0]
        points = "; ".join(
            f"{label} {r[sweep.parameter]}: {r[rate]:,.2f} requests/s, TTFT p99 {r[ttft]:,.1f} ms, TPOT p50 "
            f"{r[tpot]:,.2f} ms, GPU busy {pct(r[busy]) if r[busy] is not None else 'n/a'}"
            for r in runs
        )
        first, last = sweep.first, sweep.last
        yield Observation(
            "info",
            f"From {label} {first[sweep.parameter]} to {last[sweep.parameter]}{sweep.where}: requests/s "
            f"{last[rate] / first[rate]:.1f}×, TTFT p99 {last[ttft] / first[ttft]:.1f}×, "
            f"TPOT p50 {last[tpot] / first[tpot]:.1f}×",
            f"{points} ({which_run(rate)} latency; busy: {busy.replace('_', ' ')}).",
            "Where requests/s stops growing while TTFT keeps rising, the server is saturated: serve below that "
            "rate, or raise its capacity (batch limits, CUDA graphs, more GPUs) and sweep again.",
        )


#: The rules that compare the runs of a study, in the order their findings are listed (after warnings).
STUDY_RULES: tuple[Rule[StudyResults], ...] = (
    Rule("run_failed", "A run of the study left no metrics; its logs say why.", {}, run_failed),
    Rule(
        "comparison_split",
        "Runs that differ in mode, capture mode, nsys arguments, model, GPU or vLLM version are compared apart.",
        {},
        comparison_split,
    ),
    Rule(
        "idle_trend",
        "How the GPU's idle share moves along the sweep (of an untraced iteration where every run has one).",
        {},
        idle_trend,
    ),
    Rule("throughput_scaling", "How output throughput grows along the sweep.", {}, throughput_scaling),
    Rule(
        "latency_throughput",
        "Along a serving sweep: request throughput, TTFT and TPOT together, and the GPU's busy share.",
        {},
        latency_throughput,
    ),
    Rule(
        "category_shift",
        "A kernel family's share of GPU time moves between the ends of the sweep.",
        {"share_change": SHARE_CHANGE},
        category_shift,
    ),
    Rule("overhead_range", "The profiler's overhead across the runs of the sweep.", {}, overhead_range),
)


def study_findings(table: pd.DataFrame) -> list[Finding]:
    """Findings that compare runs: failures, idle and throughput trends, shifting kernel families."""
    return run_rules(STUDY_RULES, StudyResults(table, numeric_sweeps(table)))
