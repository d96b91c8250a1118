"""The JSON documents llmprof writes and reads, as typed records, and their loaders.

``metrics.json`` (extract), ``run.json`` (workload and profile), ``model.json``
(model), ``provenance.json`` (provenance), ``findings.json`` (report and study)
and the study manifest. Stages read metrics and run records through the
loaders here, so a missing or broken file is reported the same way everywhere.

Optional keys are declared in a ``total=False`` subclass of the required ones,
which keeps the records readable on every Python the package supports.
"""

from __future__ import annotations

import json
import types
from pathlib import Path
from typing import Any, TypedDict, Union, cast, get_args, get_origin, get_type_hints, is_typeddict

from llmprof.common.errors import InputError, brief

#: A value of a sweep or a setting: what JSON and YAML scalars read as.
Scalar = str | int | float | bool | None


# metrics.json: the headline metrics of one capture


class SourceRecord(TypedDict):
    """The export the metrics were computed from."""

    file: str
    size_bytes: int
    nsys_version: str | None
    export_schema_version: str | None


class CaptureWindow(TypedDict):
    """The analysed span: first to last CUDA call or GPU operation (``basis`` says which events gave it)."""

    basis: str  # cuda, nvtx, osrt or none
    start_ns: int
    end_ns: int
    duration_ns: int


class GpuRecord(TypedDict):
    """One GPU of the capturing machine, as the export describes it (absent facts are None)."""

    device_id: int
    name: str | None
    bus_location: str | None
    total_memory_bytes: int | None
    sm_count: int | None
    compute_capability: str | None
    memory_bandwidth_bytes_per_s: int | None
    clock_rate_hz: int | None


class Gap(TypedDict):
    """A time with no GPU operation running on a device."""

    start_ns: int
    duration_ns: int


class DeviceActivity(TypedDict):
    """Busy time of one device: the union of its kernels, copies and memsets."""

    device_id: int
    operations: int
    busy_ns: int
    busy_fraction: float
    idle_fraction: float
    largest_gaps: list[Gap]


class GpuActivity(TypedDict):
    """Busy time of every device; ``captured`` is false when the capture holds no GPU operation."""

    captured: bool
    devices: list[DeviceActivity]
    busy_ns: int
    busy_fraction: float
    idle_fraction: float | None


class BusyTime(TypedDict):
    """Time (ns) during which at least one operation of each kind ran on a device."""

    kernel_ns: int  # the SMs: any kernel running
    copy_ns: int  # the copy engines: any copy running
    memset_ns: int
    union_ns: int  # anything running
    copy_directions_ns: dict[str, int]  # H2D, D2H, D2D, P2P, H2H, other


class IterationBusy(BusyTime):
    """The busy split of one device in one iteration window."""

    index: int
    start_ns: int
    end_ns: int


class DeviceBusy(BusyTime):
    """The busy split of one device over the capture window."""

    device_id: int
    kernel_fraction: float  # of the capture window: compute busy
    copy_fraction: float
    union_fraction: float
    copy_only_ns: int  # something ran, but no kernel: copies or memsets alone
    copy_bytes: dict[str, int]  # bytes copied per direction
    pageable_host_bytes: int  # host-to-device and device-to-host bytes from or to pageable memory
    iterations: list[IterationBusy]


class BusyMetrics(TypedDict):
    """Compute, copy and memset busy time per device and per iteration."""

    window_ns: int
    iterations_source: str | None  # nvtx_iteration_ranges, given, or None without iteration windows
    idle_gap_min_ns: int  # SM gaps from this long are explained (see IdleMetrics)
    devices: list[DeviceBusy]


class IdleGap(TypedDict):
    """One gap with no kernel running on a device, and what the host and GPU did meanwhile."""

    device_id: int
    start_ns: int
    duration_ns: int
    iteration: int | None
    cause: str  # the class holding most of the gap
    next_operation: str | None  # what ended the gap (kernel short name, memcpy H2D, memset)
    next_call: str | None  # the CUDA call that launched it
    classes: dict[str, int]  # class → ns of the gap


class IterationIdle(TypedDict):
    index: int
    classes: dict[str, int]  # class → ns of the device's gaps in the iteration window


class DeviceIdle(TypedDict):
    """One device's idle time, explained by class (see ``llmprof.analysis.idle``)."""

    device_id: int
    sm_idle_ns: int  # capture window without a kernel running
    idle_ns: int  # capture window with nothing running (no kernel, copy or memset)
    gaps: int  # SM gaps at least gap_min_ns long, classified
    gap_ns: int
    short_gap_ns: int  # SM idle time in shorter gaps: counted, not classified
    classes: dict[str, int]  # class → ns, over the classified gaps
    explained_ns: int  # idle time given a host-side class (profiler, rank_wait, sync, launch, cuda_api, host)
    explained_share: float | None  # of idle_ns
    dominant: str | None  # the host-side class (or unattributed) with the most time
    iterations: list[IterationIdle]


class IdleMetrics(TypedDict):
    gap_min_ns: int
    classes: list[str]  # in the order a gap's time is given to them
    devices: list[DeviceIdle]
    largest: list[IdleGap]  # the longest gaps over every device


class ProfilerWindow(TypedDict):
    """One stretch of the profiler's own work on a thread."""

    name: str | None  # CUDA profiling data flush on cudaProfilerStop, TLS allocation, ...
    pid: int | None
    tid: int | None
    start_ns: int
    duration_ns: int
    in_window: bool  # overlaps the capture window


class ProfilerName(TypedDict):
    name: str
    count: int
    time_ns: int


class ProfilerMetrics(TypedDict):
    """The profiler's own work (PROFILER_OVERHEAD), and how much GPU idle time it covers."""

    recorded: bool  # the export holds such rows
    count: int
    time_ns: int  # summed over windows (threads' windows may overlap in time)
    union_ns: int  # wall time with at least one window open
    in_window_ns: int  # ... inside the capture window
    gpu_idle_ns: int  # GPU idle time (all devices) the idle analysis gave to the profiler
    by_name: list[ProfilerName]
    largest: list[ProfilerWindow]


class KernelCategory(TypedDict):
    """GPU time of one kernel family (gemm, attention, ...)."""

    category: str
    time_ns: int
    count: int
    share: float


class TopKernel(TypedDict):
    """One of the kernels with the most GPU time."""

    name: str
    short_name: str
    category: str
    time_ns: int
    count: int
    share: float
    tensor_core: bool


class KernelMetrics(TypedDict):
    count: int
    time_ns: int
    mean_duration_ns: float | None
    categories: list[KernelCategory]
    tensor_core_share_of_gemm: float | None
    top: list[TopKernel]


class ApiKind(TypedDict):
    """Host time of one kind of CUDA call (sync, launch, memcpy, ...)."""

    time_ns: int
    count: int
    share: float


class CudaApiMetrics(TypedDict):
    count: int
    time_ns: int
    kinds: dict[str, ApiKind]
    sync_share: float | None
    memcpy_share: float | None
    launch_share: float | None


class CopyDirection(TypedDict):
    """Copies in one direction (H2D, D2H, D2D, ...)."""

    bytes: int
    time_ns: int
    count: int


class MemcpyMetrics(TypedDict):
    directions: dict[str, CopyDirection]
    total_bytes: int


class NvtxRange(TypedDict):
    """One NVTX range name and style: its instances, its time and the GPU work its CUDA calls launched."""

    name: str
    style: str
    instances: int
    range_ns: int
    gpu_projected_ns: int
    gpu_time_ns: int
    gpu_ops: int


class NvtxMetrics(TypedDict):
    range_count: int
    ranges: list[NvtxRange]


class PhaseRecord(TypedDict):
    """GPU work of the vLLM engine steps of one phase (prefill, decode or mixed)."""

    phase: str
    steps: int
    gpu_time_ns: int
    gpu_ops: int


class PhaseMetrics(TypedDict):
    source: str | None  # vllm_step_ranges, or None when the capture has no engine-step range
    phases: list[PhaseRecord]


class OsrtCall(TypedDict):
    name: str
    time_ns: int
    count: int


class OsrtMetrics(TypedDict):
    count: int
    time_ns: int
    waiting_share: float | None
    top: list[OsrtCall]


class CaptureMetrics(TypedDict):
    """Everything measured in one capture's tables."""

    source: SourceRecord
    capture_window: CaptureWindow
    gpus: list[GpuRecord]
    gpu_activity: GpuActivity
    kernels: KernelMetrics
    cuda_api: CudaApiMetrics
    memcpy: MemcpyMetrics
    sync_events: int
    nvtx: NvtxMetrics
    phases: PhaseMetrics
    osrt: OsrtMetrics


class LatencySpread(TypedDict):
    """Per-iteration latency of one run's captured (or timed) generate calls, in seconds."""

    median_s: float
    min_s: float
    max_s: float


class IterationTiming(TypedDict):
    """The GPU's busy share of an iteration, raw (traced window) and corrected (untraced latency), side by side.

    ``basis`` says which share the findings use: ``untraced`` (corrected), ``traced window`` (raw only) or
    ``none``; ``note`` says why in words, ``assumption`` what the correction takes for granted.
    """

    iterations: int | None  # captured iterations, from the traced record
    devices: int  # devices whose busy time is averaged
    busy_ns_per_iteration: float | None  # mean per-device busy time / captured iterations
    traced_latency: LatencySpread | None
    untraced_latency: LatencySpread | None
    iteration_overhead: float | None  # traced median / untraced median - 1 (of overhead_unit)
    overhead_unit: str  # "iteration", or "output token" for a serving run (its median TPOT)
    busy_share_raw: float | None  # busy / traced capture window
    busy_share_corrected: float | None  # busy per iteration / untraced median latency, capped at 1
    cuda_graph_trace: str | None  # --cuda-graph-trace of the traced record (None: not recorded)
    basis: str
    note: str
    assumption: str


class StepDevice(TypedDict):
    """How the steps of one device were found (or why none were)."""

    device_id: int
    method: str  # vllm_step_ranges, kernel_sequence or none
    confidence: str | None  # high, medium; None without steps
    steps: int
    steady_steps: int
    period_kernels: int | None  # kernels per step in the repeating sequence (kernel_sequence)
    match: float | None  # share of the sequence matching itself one period later
    signature: str | None  # the kernel opening each step
    regularity: float | None  # share of steps with the most common kernel count
    reason: str | None  # why no step was found


class StepSpread(TypedDict):
    """Latency of the steady steps (start to the next step's start), in ns; spread = (p90 - p10) / median."""

    median_ns: float
    p10_ns: float
    p90_ns: float
    min_ns: float
    max_ns: float
    spread: float


class LaunchCost(TypedDict):
    """A kernel launched outside CUDA graphs in steady steps, and what its launches cost the host."""

    name: str
    per_step: float  # launches per steady step
    host_ns_per_step: float  # launch calls and the host time before each, per steady step
    launch_call_ns_per_launch: float  # time inside the launch call
    host_ns_per_launch: float  # the launch call and the host time since the previous launch of the step
    kernel_ns_per_launch: float  # the kernel's GPU time


class StepMetrics(TypedDict):
    """Iterations (engine steps) and what bounds them: ``steps.parquet`` summed over the steady steps."""

    method: str  # vllm_step_ranges, kernel_sequence, both joined by +, or none
    confidence: str | None  # the lowest over devices
    devices: list[StepDevice]
    steps: int
    steady_steps: int  # the fewest over devices with steps (0 without steps)
    marked_iterations: int  # the workload's own ``iteration k`` ranges, which group steps
    steps_per_iteration: float | None  # median steps in a marked iteration (None without marks)
    latency: StepSpread | None
    per_step: dict[str, float]  # medians over the steady steps (host times: over host_known_steps; absent without)
    critical_path: str | None  # host, gpu, communication or copy: the largest median over steady steps
    critical_margin: float | None  # (first - runner-up) / first, of those medians
    host_known_steps: int  # steady steps whose every kernel was joined to its launch call
    host_critical_share: float | None  # share of those whose own critical path is the host
    nongraph_launches: list[LaunchCost]  # most host time first


class ExpertRuleRecord(TypedDict):
    """One of Nsight Systems' expert rules (``nsys analyze``) run on the capture with nsys's defaults."""

    rule: str
    title: str
    rows: int  # every row the rule found (nsys shows the first 50)
    skipped: str | None  # why the export cannot give it, as nsys words it
    top: list[dict[str, int | float | str | None]]  # the first rows, columns as in the rule's table (ns, bytes)


class Metrics(CaptureMetrics):
    """``metrics.json``: the capture's metrics and what extraction wrote beside them."""

    timing: IterationTiming  # raw busy share, and the corrected one when extraction was given the run records
    tables: dict[str, int]  # table name → rows written
    skipped_summaries: dict[str, str]  # summary name → why the export cannot give it
    schema_version: int
    multi_gpu: MultiGpuMetrics  # per device and process, and collectives matched across ranks
    busy: BusyMetrics  # compute, copy and memset busy time per device and iteration
    idle: IdleMetrics  # SM gaps classified by what the host did
    profiler: ProfilerMetrics  # the profiler's own work recorded in the export
    steps: StepMetrics  # iterations found (step ranges or kernel sequence) and what bounds them
    nsys_rules: list[ExpertRuleRecord]  # nsys analyze's expert rules, with its thresholds


# model.json and run.json: what was run, and how fast


class FileRecord(TypedDict):
    """One file, identified by content."""

    path: str
    bytes: int
    sha256: str


class ArchitectureRecord(TypedDict):
    file: str
    sha256: str


class _ModelRequired(TypedDict):
    name: str
    source: str  # synthetic, huggingface or local
    path: str
    files: list[FileRecord]


class ModelRecord(_ModelRequired, total=False):
    """``model.json``: a model folder and where its files came from (the keys after ``files`` depend on the source)."""

    architecture: ArchitectureRecord
    dtype: str
    seed: int
    parameters: int
    repo: str
    revision: str


class EngineSettings(TypedDict):
    dtype: str
    tensor_parallel_size: int
    gpu_memory_utilization: float
    max_model_len: int
    enforce_eager: bool
    seed: int


class WorkloadSettings(TypedDict):
    batch_size: int
    input_len: int
    output_len: int
    warmup_iters: int
    profile_iters: int
    prompts: str  # synthetic, or a JSONL file
    seed: int


class ServeSettings(TypedDict):
    """The serving load of a run in mode serve (config/schema.yaml, runs.{run}.serve)."""

    client: str  # vllm or builtin
    request_rate: float | None  # requests/s; None: every request at once
    max_concurrency: int | None
    num_prompts: int
    warmup_requests: int
    port: int  # 0: a free one
    ready_timeout_s: float
    client_timeout_s: float
    stop_timeout_s: float
    server_command: list[str]
    client_command: list[str]
    extra_args: list[str]  # further server arguments


class NsysSettings(TypedDict):
    trace: str
    cuda_graph_trace: str
    trace_fork_before_exec: bool
    sample: str
    cpuctxsw: str
    extra_args: list[str]


class SweepRecord(TypedDict):
    """The sweep a run belongs to and the values it sets."""

    name: str
    values: dict[str, Scalar]


class _RunSpecRequired(TypedDict):
    run: str
    model: str
    capture_mode: str  # vllm_hook or in_process
    engine: EngineSettings
    workload: WorkloadSettings
    nsys: NsysSettings


class RunSpec(_RunSpecRequired, total=False):
    """A profiled run's settings with every default filled (``llmprof.common.config.run_spec``).

    ``mode`` and ``serve`` are absent from records written before serving runs existed (mode offline).
    """

    description: str
    sweep: SweepRecord
    mode: str  # offline or serve
    serve: ServeSettings


class LatencyPercentiles(TypedDict):
    """One per-request latency of a serving load, in milliseconds, as ``vllm bench serve`` reports it."""

    mean_ms: float | None
    p50_ms: float | None
    p90_ms: float | None
    p99_ms: float | None


class ServingRecord(TypedDict):
    """What a serving load measured on the client (the result of ``vllm bench serve`` or ``llmprof loadgen``).

    TTFT: time to the first token; TPOT: time per output token after the first (per request);
    ITL: time between successive streamed tokens (per token); E2EL: the whole request.
    """

    client: str
    num_prompts: int
    completed: int
    failed: int
    request_rate: float | None  # configured; None: every request at once
    max_concurrency: int | None
    duration_s: float
    total_input_tokens: int
    total_output_tokens: int
    request_throughput_per_s: float
    output_tokens_per_s: float
    ttft: LatencyPercentiles
    tpot: LatencyPercentiles
    itl: LatencyPercentiles
    e2el: LatencyPercentiles


class IterationRecord(TypedDict):
    """One timed generate call."""

    index: int
    latency_s: float
    output_tokens: int
    output_tokens_per_s: float


class GpuSummary(TypedDict):
    name: str
    count: int


class VersionsRecord(TypedDict):
    llmprof: str
    vllm: str
    torch: str
    cuda: str | None
    driver: str | None
    python: str


class NsysRecord(TypedDict):
    """What ``llmprof profile`` adds to the workload's record."""

    version: str | None
    arguments: list[str]
    kernels_captured: int


class _WorkloadRequired(TypedDict):
    run: str
    profiled: bool
    capture_mode: str
    config_digest: str
    spec: RunSpec
    model: ModelRecord
    engine_start_s: float
    warmup_latency_s: list[float]
    iterations: list[IterationRecord]
    output_tokens: int
    output_tokens_per_s: float | None
    gpu: GpuSummary
    versions: VersionsRecord


class WorkloadRecord(_WorkloadRequired, total=False):
    """What one workload run writes: settings, model, timings and software versions.

    The wall-clock times are optional: shared records may have them removed with the host's details.
    """

    started_at: str
    finished_at: str


class RunRecord(WorkloadRecord, total=False):
    """``run.json``: the workload's record; a profiled run's also says how nsys captured it.

    A serving run's record holds the load as its one iteration (the load's duration and output tokens)
    and the client's latency percentiles in ``serving``.
    """

    nsys: NsysRecord
    serving: ServingRecord


# provenance.json


class GitState(TypedDict):
    commit: str | None
    dirty: bool | None


class ContainerRecord(TypedDict):
    image: str | None
    name: str | None
    digest: str | None


class RunStack(TypedDict, total=False):
    """The machine and software of a profiled run, from its run record (empty without one)."""

    gpu: GpuSummary | None
    versions: VersionsRecord | None
    nsys: str | None
    started_at: str | None
    finished_at: str | None


class ProvenanceRecord(TypedDict):
    """``provenance.json``: what made a run's or a study's artifacts, and the sha256 of each."""

    name: str
    config_digest: str
    config: dict[str, object]  # the config entry (a run's) or the whole config (a study's), as written
    packages: dict[str, str | None]
    git: GitState
    container: ContainerRecord
    host: str
    platform: str
    created_at: str
    run: RunStack
    artifacts: list[FileRecord]


# findings.json and the study manifest


class FindingRecord(TypedDict):
    """One entry of ``findings.json``."""

    id: str
    severity: str  # warning or info
    title: str
    evidence: str
    next_step: str
    numbers: dict[str, float | int | str]  # the values the rule compared, units in the keys
    thresholds: dict[str, float]  # the rule's thresholds
    confidence: str  # high (measured), medium (from traced timings), low (data missing)


class _ManifestRequired(TypedDict):
    run: str
    extract: str


class ManifestEntry(_ManifestRequired, total=False):
    """One run of the list ``llmprof study --manifest`` takes (paths as strings; absent or null when missing)."""

    record: str | None
    baseline: str | None
    logs: str | None
    sweep: SweepRecord | None


def load_json(path: Path, made_by: str = "the stage that writes it") -> dict[str, Any]:
    """A JSON object from a file, or an InputError naming the file and the stage that makes it."""
    if not path.exists():
        raise InputError(f"{path}: missing; run {made_by} first")
    try:
        data: dict[str, Any] = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: not valid JSON ({brief(exc)}); run {made_by} again") from exc
    except OSError as exc:
        raise InputError(f"{path}: cannot be read ({brief(exc)})") from exc
    return data


def shape_problem(data: object, kind: Any, where: str = "") -> str | None:
    """The first way ``data`` (parsed JSON) falls short of the record type ``kind``, or None.

    Checks that every required key of each TypedDict is present and that objects and lists are
    where the type has them; scalar values are taken as they are.
    """
    if is_typeddict(kind):
        if not isinstance(data, dict):
            return f"{where or 'the document'} is not an object"
        for key in sorted(kind.__required_keys__):
            if key not in data:
                return f"{where}{key} is missing"
        hints = get_type_hints(kind)
        problems = (shape_problem(value, hints[key], f"{where}{key}/") for key, value in data.items() if key in hints)
        return next((p for p in problems if p is not None), None)
    origin = get_origin(kind)
    if origin in (Union, types.UnionType):
        if data is None and type(None) in get_args(kind):
            return None
        structured = [arg for arg in get_args(kind) if is_typeddict(arg) or get_origin(arg) in (list, dict)]
        return shape_problem(data, structured[0], where) if structured else None
    if origin is list:
        if not isinstance(data, list):
            return f"{where.rstrip('/') or 'the document'} is not a list"
        return next((p for i, v in enumerate(data) if (p := shape_problem(v, get_args(kind)[0], f"{where}{i}/"))), None)
    if origin is dict and not isinstance(data, dict):
        return f"{where.rstrip('/') or 'the document'} is not an object"
    return None


def _checked(data: object, kind: Any, path: Path, what: str, made_by: str) -> Any:
    problem = shape_problem(data, kind)
    if problem is not None:
        raise InputError(f"{path}: not {what} ({problem}); give the file {made_by} writes, or run it again")
    return data


def load_metrics(extract_dir: Path) -> Metrics:
    """The ``metrics.json`` of an extract folder, checked to hold every key the report reads."""
    path, made_by = extract_dir / "metrics.json", "`llmprof extract`"
    return cast(Metrics, _checked(load_json(path, made_by), Metrics, path, "an llmprof metrics.json", made_by))


def load_run_record(path: Path) -> RunRecord:
    """A run record (``run.json`` of a profiled run, or the baseline's record), checked like metrics."""
    made_by = "`llmprof profile` or `llmprof baseline`"
    return cast(RunRecord, _checked(load_json(path, made_by), RunRecord, path, "a run record", made_by))


# the multi-GPU view of metrics.json: per device, per process, collectives across ranks


class Rank(TypedDict):
    """One rank: a device and the process that drove it (pid None where the export lacks it)."""

    device_id: int
    pid: int | None


class RankCollectives(TypedDict):
    """One rank's part in one collective kind; times are GPU time on that rank."""

    rank: Rank
    instances: int  # collective kernels of the kind on this rank
    unmatched_leading: int  # before the first matched instance (the capture began inside the sequence)
    unmatched_trailing: int  # after the last matched one
    time_ns: int  # every instance, setup included
    median_duration_ns: float
    transfer_ns: int  # steady matched instances: the fastest rank's duration of each
    wait_ns: int  # steady matched instances: duration beyond the fastest rank's
    last_arrivals: int  # steady matched instances this rank started last
    caused_wait_ns: int  # the other ranks' wait in those instances


class RankWait(TypedDict):
    """Time ``waiting`` spent in collectives that ``straggler`` started last (steady matched instances)."""

    waiting: Rank
    straggler: Rank
    wait_ns: int
    instances: int


class SetupCollective(TypedDict):
    """A collective instance far above its kind's median: setup, not steady state."""

    kind: str
    instance: int | None  # None: an unmatched kernel
    start_ns: int
    duration_ns: int  # its longest rank's
    kind_median_ns: float
    ranks: list[Rank]


class CollectiveKind(TypedDict):
    """One kind of collective across ranks. ``transfer_ns + wait_ns`` is the GPU time of the steady matched
    instances summed over ranks; ``time_ns`` adds the unmatched and setup ones."""

    kind: str
    names: list[str]  # kernel short names seen
    ranks: list[RankCollectives]
    matched_instances: int  # steady ones: setup instances are counted apart
    setup_instances: int
    time_ns: int
    transfer_ns: int
    wait_ns: int
    unmatched_ns: int  # steady kernels no other rank's instance could be matched to
    setup_ns: int
    transfer_share: float | None  # of transfer + wait
    instance_transfer_ns: int  # sum over instances of the fastest rank's duration: wall time of the transfers
    median_skew_ns: float | None  # last start minus first start, per instance
    median_end_spread_ns: float | None  # last end minus first end: small when the alignment is right
    straggler: Rank | None  # the rank whose late arrival caused the most waiting
    waits: list[RankWait]


class CollectivesSummary(TypedDict):
    """Every collective kind, and the sums over kinds (same meaning as in :class:`CollectiveKind`)."""

    kinds: list[CollectiveKind]
    time_ns: int
    transfer_ns: int
    wait_ns: int
    unmatched_ns: int
    setup_ns: int
    transfer_share: float | None
    waits: list[RankWait]
    setup: list[SetupCollective]


class CollectiveVerdict(TypedDict):
    """What may be said of the collectives. ``transfer``: transfer time dominates, so "communication-bound"
    may be said; ``skew``: collective time is mostly waiting, ``waiting`` waits for ``straggler``;
    ``none``: no instance was matched across ranks (no collective, or one rank only)."""

    verdict: str
    transfer_ns: int
    wait_ns: int
    transfer_share: float | None
    waiting: Rank | None
    straggler: Rank | None
    pair_wait_ns: int  # waiting's wait in instances straggler started last
    pair_instances: int
    waiting_collective_ns: int  # waiting's steady matched collective time (transfer + wait)
    kind: str | None  # the kind in which that pair's wait is largest


class CategoryTime(TypedDict):
    category: str
    time_ns: int
    count: int
    share: float  # of the steady-state kernel time


class DeviceTopKernel(TypedDict):
    name: str | None
    label: str  # short name, qualified where generic
    category: str | None
    time_ns: int
    count: int
    share: float  # of the steady-state kernel time


class SetupKernel(TypedDict):
    """A kernel instance far above its name's median over all devices: setup, not steady state."""

    device_id: int
    pid: int | None
    name: str | None
    label: str
    category: str | None
    start_ns: int
    duration_ns: int
    name_median_ns: float


class KernelView(TypedDict):
    """Kernels of a device or of one process on it; categories and top kernels exclude setup kernels."""

    kernels: int
    kernel_time_ns: int  # summed durations, setup included
    setup_kernel_time_ns: int
    categories: list[CategoryTime]
    top_kernels: list[DeviceTopKernel]


class ProcessView(KernelView):
    pid: int | None
    process_name: str | None
    busy_ns: int | None  # union of its kernels, copies and memsets; None past MAX_SLOTS processes on a device


class DeviceView(KernelView):
    """One GPU. Overlap is of steady-state kernels: setup kernels are neither collective nor compute time."""

    device_id: int
    gpu_name: str | None
    busy_ns: int  # union of kernels, copies and memsets
    busy_fraction: float  # of the capture window
    idle_fraction: float
    collective_kernel_time_ns: int  # summed durations of collective kernels, setup included
    collective_ns: int  # wall time with a steady collective kernel running
    overlapped_ns: int  # ... and a compute (non-collective) kernel running beside it
    overlap_fraction: float | None  # overlapped_ns / collective_ns
    processes: list[ProcessView]


class MultiGpuThresholds(TypedDict):
    setup_ratio: int
    setup_min_ns: int
    transfer_dominates: float


class MultiGpuMetrics(TypedDict):
    """The multi-GPU section of an extract folder's metrics: JSON-ready, deterministic."""

    window_ns: int  # the capture window that busy fractions divide
    devices: list[DeviceView]
    setup_kernels: list[SetupKernel]
    collectives: CollectivesSummary
    verdict: CollectiveVerdict
    thresholds: MultiGpuThresholds
