"""Iterations of a capture: where each repetition of the workload's step starts and ends on each GPU.

An inference engine repeats one step (a forward pass and the sampling after it);
per-iteration numbers need the windows of those steps. They come, in order of
preference, from vLLM's own NVTX range per engine step
(``execute_context_C(T)_generation_G(T)``, projected onto the GPU work its calls
launched), or else from the kernel sequence itself: the period of the per-device
sequence of kernel names (the lag at which the sequence best matches itself), then
a signature kernel that occurs once per period and follows the largest gaps (the
host preparing the next step), whose every instance opens a step. A capture whose
kernel sequence does not repeat gets no windows and says so (method ``none``):
iterations are never invented.

The workload's own ``iteration k`` ranges, where present, group the steps (they
are generate calls of many steps, not steps).

Limits: a step longer than ``MAX_PERIOD`` kernels is not looked for; and a step
whose layers repeat with few other kernels between steps can match itself at one
layer's lag almost as well as at the step's, within ``MATCH_TOLERANCE``, in which
case layers would be taken for steps (the bundled 16-layer captures are far from
it: 84% at the layer's lag against 93% at the step's).

Memory: the period is found on a sample of at most ``SAMPLE`` kernels per device
(the middle of the capture, where the steady state is); the signature's instances
are then collected and step ends found in two streaming passes over the kernels.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from llmprof.analysis import collectives
from llmprof.analysis.grouped import int_column
from llmprof.analysis.metrics import VLLM_STEP, step_phase, time_span

#: Kernels per device on which the period is looked for.
SAMPLE = 1 << 16
#: Longest step looked for, in kernels.
MAX_PERIOD = 4096
#: Share of positions at which the kernel sequence matches itself one period later, below which it does not repeat.
MIN_MATCH = 0.80
#: A lag whose match is within this of the best is as good: the shortest such lag is the period (not a multiple).
MATCH_TOLERANCE = 0.02
#: A signature kernel's count may differ from the number of periods by this share (steps of another kind).
SIGNATURE_SLACK = 0.25
#: Share of steps with the most common kernel count, below which the detected steps are not regular enough.
MIN_REGULARITY = 0.50
#: Above these, a detection is of high confidence.
HIGH_MATCH, HIGH_REGULARITY = 0.90, 0.80
#: The workload's own per-iteration NVTX range (``iteration 3``), which groups steps.
ITERATION_RANGE = re.compile(r"(?:^|:)iteration[ _]?(\d+)$")
READ_ROWS = 1 << 18


@dataclass(frozen=True)
class Detection:
    """How the steps of one device were found from its kernel sequence (or why none were)."""

    device_id: int
    kernels: int
    period: int | None = None  # kernels per step
    match: float | None = None  # share of the sample matching itself one period later
    signature: str | None = None  # the kernel opening each step
    regularity: float | None = None  # share of steps with the most common kernel count
    reason: str | None = None  # why no step was found


@dataclass(frozen=True)
class IterationWindows:
    """The step windows of one device: start and end (ns) of the GPU work of each step, in time order.

    A step starts where it opens (its signature kernel, or the first GPU work its vLLM range
    launched) and ends with the last kernel that starts before the next step opens; the time
    from one step's start to the next's is its latency.
    """

    device_id: int
    start_ns: np.ndarray
    end_ns: np.ndarray
    method: str  # vllm_step_ranges, kernel_sequence
    confidence: str  # high (vLLM's ranges, or a clean repeat), medium
    phase: list[str | None] = field(default_factory=list)  # prefill/decode/mixed where vLLM's ranges say
    detection: Detection | None = None


def kernel_batches(stage: Path, columns: list[str]) -> Iterator[pa.RecordBatch]:
    """The kernels table of an extract folder, a batch at a time (names as dictionaries)."""
    return collectives.kernel_batches(stage / "kernels.parquet", columns)


def _sample(stage: Path) -> dict[int, pd.DataFrame]:
    """Per device: up to about ``SAMPLE`` kernels from the middle of the capture, in start order."""
    span = time_span(stage, ["kernels"])
    rows = pq.ParquetFile(stage / "kernels.parquet").metadata.num_rows
    if span is None or not rows:
        return {}
    low, high = span
    if rows > SAMPLE:
        half = int((high - low) * SAMPLE / rows) // 2
        low, high = (low + high) // 2 - half, (low + high) // 2 + half
    parts = []
    for batch in kernel_batches(stage, ["device_id", "start_ns", "end_ns", "name", "pid", "correlation_id"]):
        start = int_column(batch.column("start_ns"))
        keep = np.flatnonzero((start >= low) & (start <= high))
        if len(keep):
            parts.append(batch.take(pa.array(keep)).to_pandas())
    frame = pd.concat(parts) if parts else pd.DataFrame()
    frame["name"] = frame["name"].astype(str)
    keys = launch_key(frame["pid"].fillna(-1).to_numpy(), frame["correlation_id"].fillna(-1).to_numpy())
    frame["after_wait"] = np.isin(keys, _launches_after_wait(stage, high))
    return {
        int(str(device)): part.sort_values(["start_ns", "end_ns"], kind="stable").head(SAMPLE)
        for device, part in frame.groupby("device_id", sort=True)
    }


def launch_key(pid: np.ndarray, correlation: np.ndarray) -> np.ndarray:
    """(process, correlation id) as one int64: the key joining a GPU operation to the call that launched it."""
    return (pid.astype("int64") << 32) | (correlation.astype("int64") & 0xFFFFFFFF)


def waits_on_gpu(kind: np.ndarray, name: np.ndarray) -> np.ndarray:
    """Which CUDA calls block their thread until the GPU is done: synchronize calls and synchronous copies."""
    names = np.asarray(name, dtype=str)
    synchronize = (kind == "sync") & (np.char.find(names, "Synchronize") >= 0)
    waits: np.ndarray = synchronize | ((kind == "memcpy") & (np.char.find(names, "Async") < 0))
    return waits


def _launches_after_wait(stage: Path, until: int) -> np.ndarray:
    """Keys of the launch calls (until ``until`` ns) that a thread made first after waiting on the GPU: where the
    host starts a step once it has read the previous one back."""
    parts = []
    columns = ["pid", "tid", "start_ns", "correlation_id", "kind", "name"]
    for batch in pq.ParquetFile(stage / "cuda_api.parquet").iter_batches(columns=columns, batch_size=READ_ROWS):
        frame = batch.to_pandas()
        kind = frame["kind"].to_numpy(dtype=object)
        waits = waits_on_gpu(kind, frame["name"].to_numpy(dtype=object))
        launches = np.isin(kind, ["launch", "graph"])
        parts.append(frame.assign(wait=waits)[(waits | launches) & (frame["start_ns"].to_numpy() <= until)])
    calls = pd.concat(parts) if parts else pd.DataFrame(columns=[*columns, "wait"])
    calls = calls.sort_values(["pid", "tid", "start_ns"], kind="stable")
    same_thread = (calls["pid"].diff() == 0) & (calls["tid"].diff() == 0)
    first = (~calls["wait"] & same_thread & calls["wait"].shift(1, fill_value=False)).to_numpy(dtype=bool)
    return np.unique(launch_key(calls["pid"].to_numpy()[first], calls["correlation_id"].to_numpy()[first]))


def sequence_period(codes: np.ndarray) -> tuple[int, float] | None:
    """The shortest lag at which a sequence matches itself about as well as at any lag, and that match.

    None when the sequence is too short to repeat three times.
    """
    longest = min(len(codes) // 3, MAX_PERIOD)
    if longest < 1:
        return None
    lags = range(1, longest + 1)
    match = np.array([np.count_nonzero(codes[lag:] == codes[:-lag]) / (len(codes) - lag) for lag in lags])
    best = float(match.max())
    lag = int(np.flatnonzero(match >= best - MATCH_TOLERANCE)[0]) + 1
    return lag, float(match[lag - 1])


def gaps_before(start: np.ndarray, end: np.ndarray) -> np.ndarray:
    """Idle time on the device before each operation (ops in start order; 0 for the first and for overlaps)."""
    if not len(start):
        return np.zeros(0, dtype="int64")
    running = np.maximum.accumulate(end)
    return np.concatenate([[0], np.maximum(start[1:] - running[:-1], 0)])


def signature_kernel(sample: pd.DataFrame, period: int) -> str | None:
    """The kernel that opens each step: once per period, most often the first launched after the host waited
    on the GPU, and then after the largest gaps (None: no kernel fits)."""
    codes, names = pd.factorize(sample["name"], sort=True)
    gaps = gaps_before(sample["start_ns"].to_numpy("int64"), sample["end_ns"].to_numpy("int64"))
    periods = len(codes) / period
    counts = np.bincount(codes, minlength=len(names))
    fits = np.flatnonzero(np.abs(counts - periods) <= SIGNATURE_SLACK * periods)
    if not len(fits):
        return None
    after_wait = sample["after_wait"].to_numpy(dtype=bool)
    score = np.array([after_wait[codes == code].mean() for code in fits])
    median_gap = np.array([np.median(gaps[codes == code]) for code in fits])
    return str(names[fits[np.lexsort((median_gap, score))[-1]]])


def detect(device: int, sample: pd.DataFrame) -> Detection:
    """Period and signature kernel of one device's sample (``reason`` set when the kernels do not repeat)."""
    codes = pd.factorize(sample["name"])[0]
    found = sequence_period(codes)
    if found is None:
        return Detection(device, len(codes), reason=f"{len(codes)} kernels: too few to repeat three times")
    period, match = found
    if match < MIN_MATCH:
        return Detection(
            device,
            len(codes),
            period,
            match,
            reason=f"the kernel sequence does not repeat "
            f"(best match {match:.0%} at {period} kernels, below {MIN_MATCH:.0%})",
        )
    signature = signature_kernel(sample, period)
    if signature is None:
        return Detection(device, len(codes), period, match, reason="no kernel occurs once per period")
    return Detection(device, len(codes), period, match, signature)


def _signature_starts(stage: Path, signatures: dict[int, str]) -> dict[int, np.ndarray]:
    """Per device, the sorted start times of every instance of its signature kernel."""
    found: dict[int, list[np.ndarray]] = {device: [] for device in signatures}
    for batch in kernel_batches(stage, ["device_id", "start_ns", "name"]):
        device = int_column(batch.column("device_id"))
        names = batch.column("name")
        if not pa.types.is_dictionary(names.type):
            names = pc.dictionary_encode(names)
        codes, start = int_column(names.indices), int_column(batch.column("start_ns"))
        for value, signature in signatures.items():
            code = pc.index(names.dictionary, signature).as_py()  # -1 where this batch lacks the name
            found[value].append(start[(device == value) & (codes == code) & (code >= 0)])
    return {
        device: np.sort(np.concatenate(parts)) if parts else np.zeros(0, "int64") for device, parts in found.items()
    }


def step_of(starts: np.ndarray, times: np.ndarray) -> np.ndarray:
    """Index of the step whose window opened last at or before each time (-1: before the first)."""
    return np.searchsorted(starts, times, side="right") - 1


def window_of(starts: np.ndarray, ends: np.ndarray, times: np.ndarray) -> np.ndarray:
    """Index of the window (``starts``/``ends``, in start order) holding each time, its end included (-1: none)."""
    index = step_of(starts, times)
    inside = (index >= 0) & (times <= ends[np.maximum(index, 0)])
    return np.where(inside, index, -1)


def _segment_ends_and_counts(stage: Path, starts: dict[int, np.ndarray]) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Per device: the latest kernel end and the kernel count of each segment opened by a signature."""
    out = {device: (s.copy(), np.zeros(len(s), dtype="int64")) for device, s in starts.items()}
    for batch in kernel_batches(stage, ["device_id", "start_ns", "end_ns"]):
        device = int_column(batch.column("device_id"))
        start, end = int_column(batch.column("start_ns")), int_column(batch.column("end_ns"))
        for value, (ends, counts) in out.items():
            mine = device == value
            step = step_of(starts[value], start[mine])
            inside = step >= 0
            np.maximum.at(ends, step[inside], end[mine][inside])
            counts += np.bincount(step[inside], minlength=len(counts))
    return out


def _confidence(match: float, regularity: float) -> str:
    if match >= HIGH_MATCH and regularity >= HIGH_REGULARITY:
        return "high"
    return "medium"


def kernel_sequence_windows(stage: Path) -> tuple[dict[int, IterationWindows], list[Detection]]:
    """Steps found from each device's kernel sequence, and how (or why not) for every device."""
    detections = [detect(device, sample) for device, sample in _sample(stage).items()]
    signatures = {d.device_id: d.signature for d in detections if d.signature is not None}
    starts = _signature_starts(stage, signatures)
    segments = _segment_ends_and_counts(stage, starts)
    windows: dict[int, IterationWindows] = {}
    for i, found in enumerate(detections):
        match = found.match
        if found.signature is None or match is None:
            continue
        ends, counts = segments[found.device_id]
        regularity = float(np.mean(counts == np.bincount(counts).argmax())) if len(counts) >= 2 else 0.0
        detections[i] = found = replace(found, regularity=regularity)
        if len(counts) < 2 or regularity < MIN_REGULARITY:
            detections[i] = replace(
                found,
                reason=f"steps opened by {found.signature} are irregular ({regularity:.0%} "
                f"share one kernel count, below {MIN_REGULARITY:.0%})",
            )
            continue
        confidence = _confidence(match, regularity)
        windows[found.device_id] = IterationWindows(
            found.device_id, starts[found.device_id], ends, "kernel_sequence", confidence, [None] * len(ends), found
        )
    return windows, detections


def _device_of_pid(stage: Path) -> dict[int, int]:
    """The device each process ran most of its kernels on."""
    frame = pq.read_table(stage / "kernels.parquet", columns=["pid", "device_id"]).to_pandas()
    counts = frame.value_counts().reset_index()
    counts = counts.sort_values(["pid", "count", "device_id"], ascending=[True, False, True])
    return {int(p): int(d) for p, d in counts.drop_duplicates("pid")[["pid", "device_id"]].itertuples(index=False)}


def step_range_windows(stage: Path) -> dict[int, IterationWindows]:
    """Steps from vLLM's engine-step NVTX ranges: each opens where the GPU work its calls launched starts.

    A step keeps every kernel up to the next step's start (sampling runs after vLLM's range closes),
    so its end is that of its last kernel, as for steps found from the kernel sequence.
    """
    ranges = pq.read_table(stage / "nvtx_gpu.parquet", columns=["name", "pid", "proj_start_ns"]).to_pandas()
    steps = np.array([VLLM_STEP.search(str(name)) is not None for name in ranges["name"]], dtype=bool)
    ranges = ranges[steps & ranges["proj_start_ns"].notna().to_numpy()]
    if ranges.empty:
        return {}
    devices = _device_of_pid(stage)
    ranges = ranges.assign(device_id=[devices.get(int(p), -1) for p in ranges["pid"]])
    ranges = ranges[ranges["device_id"] >= 0].sort_values(["device_id", "proj_start_ns"], kind="stable")
    starts = {int(d): part["proj_start_ns"].to_numpy("int64") for d, part in ranges.groupby("device_id", sort=True)}
    segments = _segment_ends_and_counts(stage, starts)
    return {
        device: IterationWindows(
            device,
            starts[device],
            segments[device][0],
            "vllm_step_ranges",
            "high",
            [step_phase(str(n)) for n in ranges.loc[ranges["device_id"] == device, "name"]],
        )
        for device in starts
    }


@dataclass(frozen=True)
class StepWindows:
    """Every device's step windows, how they were found, and the devices where none were."""

    devices: dict[int, IterationWindows]
    detections: list[Detection]

    @property
    def method(self) -> str:
        methods = sorted({w.method for w in self.devices.values()})
        return "+".join(methods) if methods else "none"


def step_windows(stage: Path) -> StepWindows:
    """The step windows of an extract folder: vLLM's step ranges where present, else the kernel sequence."""
    ranged = step_range_windows(stage)
    if ranged:
        return StepWindows(ranged, [])
    detected, detections = kernel_sequence_windows(stage)
    return StepWindows(detected, detections)


def iteration_windows(stage: Path) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Per device: start and end (ns) of each iteration (engine step) found in an extract folder.

    Iterations come from vLLM's step ranges or, without them, from the repeating kernel
    sequence (see the module docstring); a device without a repeating step is left out.
    """
    return {device: (w.start_ns, w.end_ns) for device, w in step_windows(stage).devices.items()}


def _numbered(frame: pd.DataFrame, start: str, end: str) -> pd.DataFrame:
    """The ``iteration k`` rows of a frame of ranges: iteration, start_ns, end_ns, in start order."""
    numbers = frame["name"].astype(str).str.extract(ITERATION_RANGE)[0]
    marked = frame.assign(iteration=pd.to_numeric(numbers)).dropna(subset=["iteration", start, end])
    marked = marked.sort_values(start, kind="stable")
    return pd.DataFrame(
        {
            "iteration": marked["iteration"].astype("int64").to_numpy(),
            "start_ns": marked[start].astype("int64").to_numpy(),
            "end_ns": marked[end].astype("int64").to_numpy(),
        }
    )


def marked_iterations(stage: Path) -> pd.DataFrame:
    """The workload's own ``iteration k`` ranges: iteration, start_ns, end_ns.

    Projected onto the GPU work their calls launched (in-process captures); where their process
    launched none (the engine runs in another process), their host span, which holds its steps.
    """
    projected = pq.read_table(stage / "nvtx_gpu.parquet", columns=["name", "proj_start_ns", "proj_end_ns"])
    marked = _numbered(projected.to_pandas(), "proj_start_ns", "proj_end_ns")
    if len(marked):
        return marked
    host = pq.read_table(stage / "nvtx.parquet", columns=["name", "start_ns", "end_ns"])
    return _numbered(host.to_pandas(), "start_ns", "end_ns")
