"""Figures stage: the only module that draws. Extracted tables in, PNG and SVG out.

Every figure is drawn with a fixed theme, fixed size and DPI, category colours
from one palette and no timestamps in the files, so the same tables give the
same bytes. A figure whose data is absent says so on the canvas instead of
being skipped, so the set of files never depends on the capture.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

from llmprof.analysis.categories import CATEGORY_ORDER, kernel_label  # noqa: E402
from llmprof.analysis.metrics import grouped_sums, records, step_phase, time_span  # noqa: E402
from llmprof.analysis.study import RunEntry, measured_column, modes_of, which_run  # noqa: E402
from llmprof.common.errors import InputError, brief  # noqa: E402
from llmprof.common.outputs import staged_directory  # noqa: E402
from llmprof.common.records import Metrics, load_metrics  # noqa: E402

FORMATS = ("png", "svg")
DPI = 120
TOP_N = 15
TIMELINE_BINS = 400
LABELLED_RANGES = 30
PALETTE = dict(zip(CATEGORY_ORDER, sns.color_palette("tab10", len(CATEGORY_ORDER)).as_hex()))
THEME: dict[Any, Any] = {
    **sns.axes_style("whitegrid"),
    **sns.plotting_context("notebook"),
    "svg.hashsalt": "llmprof",
    "svg.fonttype": "path",
    "figure.dpi": DPI,
    "font.family": "DejaVu Sans",
}
SAVE_METADATA = {"png": {"Software": None}, "svg": {"Date": None, "Creator": None}}


def _path(extract_dir: Path, table: str) -> Path:
    path = extract_dir / f"{table}.parquet"
    if not path.exists():
        raise InputError(f"{path}: missing; run `llmprof extract` first")
    return path


def _read(extract_dir: Path, table: str, columns: list[str] | None = None) -> pd.DataFrame:
    """A small table (summaries, NVTX ranges) read whole."""
    frame: pd.DataFrame = pq.read_table(_path(extract_dir, table), columns=columns).to_pandas()
    return frame


def _sums(extract_dir: Path, table: str, keys: list[str], values: list[str]) -> pd.DataFrame:
    """Per-key row count and sums of a table, streamed (memory does not grow with the rows)."""
    return grouped_sums(_path(extract_dir, table), keys, values)


def _label(name: str, width: int = 60) -> str:
    return name if len(name) <= width else name[: width - 1] + "…"


def _no_data(ax: Axes, message: str) -> None:
    ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes, fontsize=12, color="0.4")
    ax.set_xticks([])
    ax.set_yticks([])


def _legend_outside(ax: Axes, handles: list[Any], labels: list[str], **options: Any) -> None:
    """The legend right of the axes, where it covers no bar or line."""
    ax.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.01, 1), borderaxespad=0, fontsize=9, **options)


def _category_legend(ax: Axes, categories: Iterable[str]) -> None:
    """One swatch per kernel category shown, in the categories' fixed order, outside the axes."""
    shown = set(categories)
    present = [c for c in CATEGORY_ORDER if c in shown]
    _legend_outside(ax, [Rectangle((0, 0), 1, 1, color=PALETTE[c]) for c in present], present, title="category")


def _barh_totals(ax: Axes, labels: list[str], totals: np.ndarray, notes: list[str], colours: list[str]) -> None:
    """Horizontal bars of totals from 0, in the order given (top first), each with its note at its end."""
    rows = np.arange(len(labels))
    ax.barh(rows, totals, color=colours)
    ax.set_yticks(rows, labels)
    ax.invert_yaxis()
    for row, total, note in zip(rows, totals, notes):
        ax.annotate(note, (total, row), xytext=(4, 0), textcoords="offset points", va="center", fontsize=8)
    ax.set_xlim(0, 1.45 * float(max(totals.max(), 0)) or 1)  # from 0, with room for the notes


def _distinct(labels: list[str]) -> list[str]:
    """Labels made distinct in order (``name (2)``, ...): kernels that share a short name keep a bar each."""
    seen: dict[str, int] = {}
    distinct = []
    for label in labels:
        seen[label] = seen.get(label, 0) + 1
        distinct.append(label if seen[label] == 1 else f"{label} ({seen[label]})")
    return distinct


def top_kernels(extract_dir: Path, fig: Figure) -> None:
    """The kernels with the most GPU time: each one's total and launch count, coloured by family."""
    ax = fig.subplots()
    per_name = _sums(extract_dir, "kernels", ["name", "short_name", "category"], ["duration_ns"])
    if per_name.empty:
        return _no_data(ax, "No GPU kernels in this capture")
    total = per_name["duration_ns"].sum()
    top = per_name.sort_values(["duration_ns", "name"], ascending=[False, True]).head(TOP_N)
    labels = _distinct([_label(kernel_label(n, s)) for n, s in zip(top["name"], top["short_name"])])
    notes = [f"{d / 1e6:,.2f} ms · {100 * d / total:.1f}% · {c:,}×" for d, c in zip(top["duration_ns"], top["count"])]
    _barh_totals(ax, labels, top["duration_ns"].to_numpy() / 1e6, notes, [PALETTE[c] for c in top["category"]])
    ax.set(xlabel="total GPU time (ms); notes: total · share of kernel time · launches", ylabel="")
    ax.set(title=f"Top {len(top)} kernels by GPU time")
    _category_legend(ax, top["category"])


def kernel_categories(extract_dir: Path, fig: Figure) -> None:
    """GPU kernel time per family (GEMM, attention, ...): total, share and kernel count."""
    ax = fig.subplots()
    per_category = _sums(extract_dir, "kernels", ["category"], ["duration_ns"])
    if per_category.empty:
        return _no_data(ax, "No GPU kernels in this capture")
    sums = per_category.set_index("category").reindex(CATEGORY_ORDER, fill_value=0)
    totals = sums["duration_ns"].to_numpy()
    notes = [
        f"{100 * t / totals.sum():.1f}%, {t / 1e6:,.2f} ms, {int(c):,} kernels" for t, c in zip(totals, sums["count"])
    ]
    _barh_totals(ax, list(CATEGORY_ORDER), totals / 1e6, notes, [PALETTE[c] for c in CATEGORY_ORDER])
    ax.set(xlabel="total GPU kernel time (ms)", ylabel="", title="GPU time by kernel category")


def cuda_api(extract_dir: Path, fig: Figure) -> None:
    """Host time of the CUDA API functions: total, share and call count."""
    ax = fig.subplots()
    summary = _read(extract_dir, "cuda_api_sum", ["name", "time_pct", "total_ns", "num_calls"])
    if summary.empty:
        return _no_data(ax, "No CUDA API calls in this capture")
    top = summary.sort_values(["total_ns", "name"], ascending=[False, True]).head(TOP_N)
    notes = [f"{p:.1f}%, {n:,} calls" for p, n in zip(top["time_pct"], top["num_calls"])]
    colour = sns.color_palette("tab10").as_hex()[0]
    _barh_totals(ax, list(top["name"]), top["total_ns"].to_numpy() / 1e6, notes, [colour] * len(top))
    ax.set(xlabel="total host time in the call (ms)", ylabel="", title="CUDA API time share")


def memcpy(extract_dir: Path, fig: Figure) -> None:
    """Bytes and GPU time of copies per direction, each bar with its copy count."""
    left, right = fig.subplots(1, 2)
    copies = _read(extract_dir, "memcpy", ["direction", "size_bytes", "duration_ns"])
    if copies.empty:
        _no_data(left, "No memory copies")
        return _no_data(right, "in this capture")
    by_direction = (
        copies.groupby("direction", as_index=False)
        .agg(
            megabytes=("size_bytes", lambda b: b.sum() / 1e6),
            time_ms=("duration_ns", lambda d: d.sum() / 1e6),
            copies=("size_bytes", "size"),
        )
        .sort_values("direction")
    )
    palette = sns.color_palette("tab10").as_hex()
    for ax, column, colour, label, title in (
        (left, "megabytes", palette[1], "MB copied", "Bytes by direction"),
        (right, "time_ms", palette[2], "GPU time (ms)", "Copy time by direction"),
    ):
        ax.bar(by_direction["direction"], by_direction[column], color=colour)
        for x, (value, count) in enumerate(zip(by_direction[column], by_direction["copies"])):
            ax.annotate(
                f"{count:,} copies", (x, value), xytext=(0, 3), textcoords="offset points", ha="center", fontsize=8
            )
        ax.set_ylim(0, 1.15 * float(by_direction[column].max()) or 1)
        ax.set(xlabel="", ylabel=label, title=title)


def _busy_per_bin(starts: np.ndarray, ends: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Kernel time falling in each time bin (ns), by splitting intervals at bin edges."""
    bins = len(edges) - 1
    width = edges[1] - edges[0]
    first = np.clip(((starts - edges[0]) // width).astype(int), 0, bins - 1)
    last = np.clip(((ends - edges[0]) // width).astype(int), 0, bins - 1)
    same = first == last
    busy = np.bincount(first[same], weights=(ends - starts)[same], minlength=bins).astype(float)
    split = ~same
    busy += np.bincount(first[split], weights=edges[first[split] + 1] - starts[split], minlength=bins)
    busy += np.bincount(last[split], weights=ends[split] - edges[last[split]], minlength=bins)
    full = np.bincount(first[split] + 1, minlength=bins + 1) - np.bincount(last[split], minlength=bins + 1)
    result: np.ndarray = busy + np.cumsum(full)[:bins] * width
    return result


def _phase_ranges(ranges: pd.DataFrame, most: int = LABELLED_RANGES) -> pd.DataFrame:
    """The deepest NVTX nesting level with at most ``most`` ranges (e.g. iterations inside generate)."""
    if ranges.empty:
        return ranges
    counts = ranges.groupby("level").size()
    sizes = {int(str(lv)): int(n) for lv, n in counts.items()}
    level = max((lv for lv, n in sizes.items() if n <= most), default=min(sizes))
    return ranges[ranges["level"] == level].sort_values(["proj_start_ns", "name"])


def _busy_by_device(extract_dir: Path, edges: np.ndarray) -> dict[int, np.ndarray]:
    """Kernel time per time bin (ns) of each device, streamed over the kernels table."""
    busy: dict[int, np.ndarray] = {}
    kernels = pq.ParquetFile(_path(extract_dir, "kernels"))
    for batch in kernels.iter_batches(columns=["device_id", "start_ns", "end_ns"], batch_size=1 << 20):
        frame = batch.to_pandas()
        for device, rows in frame.groupby("device_id"):
            part = _busy_per_bin(rows["start_ns"].to_numpy(float), rows["end_ns"].to_numpy(float), edges)
            busy[int(device)] = busy.get(int(device), 0) + part
    return busy


def _shade_phases(ax: Axes, phases: pd.DataFrame, origin: float, labelled: bool) -> None:
    """NVTX phase ranges as shaded spans: named one by one when few, by prefill/decode kind when many."""
    if len(phases) <= LABELLED_RANGES:  # few ranges (generate, iterations): one colour and a label each
        colours = sns.color_palette("pastel", max(len(phases), 1))
        for i, row in enumerate(records(phases)):
            start_ms, end_ms = (row["proj_start_ns"] - origin) / 1e6, (row["proj_end_ns"] - origin) / 1e6
            ax.axvspan(start_ms, end_ms, color=colours[i], alpha=0.4, lw=0)
            if labelled:
                ax.text(start_ms, 103, _label(str(row["name"]), 24), fontsize=8, va="bottom")
        return
    kinds = [step_phase(str(n)) or "NVTX range" for n in phases["name"]]  # many ranges (vLLM engine steps)
    colours = dict(zip(["prefill", "decode", "mixed", "NVTX range"], sns.color_palette("pastel", 4)))
    for kind, row in zip(kinds, records(phases)):
        ax.axvspan(
            (row["proj_start_ns"] - origin) / 1e6,
            (row["proj_end_ns"] - origin) / 1e6,
            color=colours[kind],
            alpha=0.4,
            lw=0,
            label=kind,
        )
    handles, labels = ax.get_legend_handles_labels()
    unique = dict(zip(labels, handles))
    _legend_outside(ax, list(unique.values()), list(unique.keys()))


def timeline(extract_dir: Path, fig: Figure) -> None:
    """GPU busy share over the capture, one lane per device, with NVTX phase ranges shaded."""
    span = time_span(extract_dir, ["kernels"])
    if span is None:
        return _no_data(fig.subplots(), "No GPU kernels in this capture")
    origin, end = span
    edges = np.linspace(origin, max(end, origin + TIMELINE_BINS), TIMELINE_BINS + 1)
    busy = _busy_by_device(extract_dir, edges)
    centres_ms = ((edges[:-1] + edges[1:]) / 2 - origin) / 1e6
    width = edges[1] - edges[0]
    lanes = list(fig.subplots(len(busy), 1, sharex=True, squeeze=False)[:, 0]) if len(busy) > 1 else [fig.subplots()]
    phases = _phase_ranges(_read(extract_dir, "nvtx_gpu", ["name", "level", "proj_start_ns", "proj_end_ns"]))
    for ax, (device, values) in zip(lanes, sorted(busy.items())):
        ax.plot(centres_ms, 100 * np.minimum(values / width, 1.0), label=f"GPU {device}", linewidth=1)
        _shade_phases(ax, phases, origin, labelled=ax is lanes[0])
        ax.set(ylabel="GPU busy (%)" if len(lanes) == 1 else f"GPU {device}\nbusy (%)", ylim=(0, 112))
        if len(phases) <= LABELLED_RANGES:
            _legend_outside(ax, *ax.get_legend_handles_labels())
    lanes[-1].set(xlabel="time since first kernel (ms)")
    lanes[0].set(title="GPU kernel activity over the capture (NVTX ranges shaded)")


def _gpu_time_parts(m: Metrics) -> pd.DataFrame:
    """Per GPU: the capture window split into collective wait, collective transfer, other busy time and idle (ms)."""
    multi = m["multi_gpu"]
    ranks = [rank for kind in multi["collectives"]["kinds"] for rank in kind["ranks"]]
    rows = []
    for device in multi["devices"]:
        mine = [r for r in ranks if r["rank"]["device_id"] == device["device_id"]]
        wait, transfer = sum(r["wait_ns"] for r in mine), sum(r["transfer_ns"] for r in mine)
        other = max(device["busy_ns"] - wait - transfer, 0)
        idle = max(multi["window_ns"] - device["busy_ns"], 0)
        parts = {"collective: waiting": wait, "collective: transfer": transfer, "other GPU work": other, "idle": idle}
        rows += [{"gpu": f"GPU {device['device_id']}", "part": part, "ms": ns / 1e6} for part, ns in parts.items()]
    return pd.DataFrame(rows, columns=["gpu", "part", "ms"])


GPU_PARTS = {
    "collective: waiting": "#d62728",
    "collective: transfer": "#ff7f0e",
    "other GPU work": "#1f77b4",
    "idle": "#d9d9d9",
}


def gpus(extract_dir: Path, fig: Figure) -> None:
    """Each GPU's capture window: waiting in collectives, moving data in them, other work, idle."""
    ax = fig.subplots()
    parts = _gpu_time_parts(load_metrics(extract_dir))
    if parts.empty:
        return _no_data(ax, "No GPU work in this capture")
    table = parts.pivot(index="gpu", columns="part", values="ms").reindex(columns=list(GPU_PARTS))
    left = np.zeros(len(table))
    for part, colour in GPU_PARTS.items():
        values = table[part].to_numpy()
        ax.barh(table.index, values, left=left, color=colour, label=part)
        left += values
    ax.invert_yaxis()
    title = "Each GPU: collectives (waiting, transfer), other work, idle"
    ax.set(xlabel="time in the capture window (ms)", title=title)
    fig.legend(loc="outside lower center", ncols=len(GPU_PARTS), fontsize=8, frameon=False)


#: Every figure of a run: name → drawing function, figure size (inches) and caption.
FIGURES: dict[str, tuple[Callable[[Path, Figure], None], tuple[float, float], str]] = {
    "top_kernels": (top_kernels, (11, 6), "Top kernels by GPU time"),
    "kernel_categories": (kernel_categories, (8, 4.5), "GPU time by kernel category"),
    "cuda_api": (cuda_api, (9, 5.5), "CUDA API time share"),
    "memcpy": (memcpy, (10, 4), "Memory copies by direction"),
    "timeline": (timeline, (12, 4.5), "GPU activity over the capture, NVTX phases shaded"),
    "gpus": (gpus, (10, 3.5), "Each GPU's capture window: collective wait and transfer, other work, idle"),
}


def _save(draw: Callable[[Figure], None], size: tuple[float, float], folder: Path, name: str) -> None:
    """Draw one figure at a fixed size and write it in every format, without timestamps (theme set by the caller)."""
    fig = plt.figure(figsize=size, layout="constrained")
    try:
        draw(fig)
        for fmt in FORMATS:
            fig.savefig(folder / f"{name}.{fmt}", format=fmt, metadata=SAVE_METADATA[fmt])
    finally:
        plt.close(fig)


def draw_figures(extract_dir: str | Path, out: str | Path, *, force: bool = False) -> list[Path]:
    """Draw every figure of one run from its extract folder into ``out`` (PNG and SVG).

    Returns:
        The files written, in a fixed order.
    """
    extract_dir = Path(extract_dir)
    with staged_directory(Path(out), force, "figures") as stage, plt.rc_context(THEME):
        for name, (draw, size, _) in FIGURES.items():
            try:
                _save(functools.partial(draw, extract_dir), size, stage, name)
            except (pa.ArrowInvalid, OSError, KeyError) as exc:  # a table damaged, cut short or of another version
                reason = f"the {name} figure's tables cannot be read ({brief(exc)})"
                raise InputError(f"{extract_dir}: {reason}; run `llmprof extract` again") from exc
    return [Path(out) / f"{name}.{fmt}" for name in FIGURES for fmt in FORMATS]


def figure_links(figures: Mapping[str, tuple[object, object, str]], folder: str) -> list[tuple[str, str]]:
    """(PNG path in ``folder``, caption) of each figure, in drawing order: what a report shows."""
    return [(f"{folder}/{name}.png", caption) for name, (_, _, caption) in figures.items()]


def _split(ok: pd.DataFrame) -> bool:
    """Whether the runs fall in several comparison groups, which the figures then draw apart."""
    return bool(ok["comparison_group"].nunique() > 1)


def _study_x(table: pd.DataFrame, parameter: str | None) -> tuple[pd.DataFrame, str]:
    """Successful runs ordered along the swept parameter (or by name), one x position each, and the axis label.

    Runs sharing a value of the parameter (a sweep over several) keep a position each, named with the run, so no
    point is an average of runs."""
    ok = table[table["status"] == "ok"].copy()
    if parameter is None:
        return ok.assign(x=ok["run"]).sort_values("run"), "run"
    ok = ok.sort_values([parameter, "run"])
    values = ok[parameter].astype(str)
    shared = values.duplicated(keep=False)
    x = [f"{v}\n{r}" if twin else v for v, r, twin in zip(values, ok["run"], shared)]
    return ok.assign(x=x), parameter.replace("_", " ")


def _run_names(ok: pd.DataFrame, label: str) -> list[str]:
    """Each run's name with its swept value and, when runs are split, its comparison group."""
    names = [f"{r} ({label} {x})" if label != "run" else str(r) for r, x in zip(ok["run"], ok["x"])]
    if _split(ok):
        names = [f"{n}, {g}" for n, g in zip(names, ok["comparison_group"])]
    return [n.replace("\n", " ") for n in names]


def study_throughput(table: pd.DataFrame, parameter: str | None, entries: list[RunEntry], fig: Figure) -> None:
    """Output tokens per second, traced and untraced, along the swept parameter, from 0."""
    ax = fig.subplots()
    ok, label = _study_x(table, parameter)
    long = ok.melt(
        id_vars=["x", "comparison_group"],
        value_vars=["output_tok_per_s_traced", "output_tok_per_s_untraced"],
        var_name="measure",
        value_name="tok_s",
    ).dropna()
    if long.empty:
        return _no_data(ax, "No run records: throughput was not measured")
    long["measure"] = long["measure"].map(
        {"output_tok_per_s_traced": "under nsys", "output_tok_per_s_untraced": "without nsys"}
    )
    order = ["without nsys", "under nsys"]
    if _split(ok):  # one line per measure and comparison group: groups are never joined on one line
        long["measure"] = long["measure"] + " · " + long["comparison_group"]
        order = [f"{m} · {g}" for g in dict.fromkeys(ok["comparison_group"]) for m in order]
        order = [o for o in order if o in set(long["measure"])]
    sns.pointplot(long, x="x", y="tok_s", hue="measure", hue_order=order, order=list(ok["x"]), errorbar=None, ax=ax)
    ax.set_ylim(0, 1.1 * float(long["tok_s"].max()))
    ax.set(xlabel=label, ylabel="output tokens / s", title="Output throughput with and without nsys")
    _legend_outside(ax, *ax.get_legend_handles_labels())


#: The latency the study compares, traced and untraced: a generate call's (offline) or an output token's (serving,
#: whose load lasts as long as its request rate says, traced or not): measure → (offline column in s, serving in ms).
LATENCY_COLUMNS = {
    "without nsys": ("mean_iteration_latency_s_untraced", "tpot_p50_ms_untraced"),
    "under nsys": ("mean_iteration_latency_s", "tpot_p50_ms_traced"),
}


def _latency_ms(ok: pd.DataFrame) -> dict[str, np.ndarray]:
    serving = (ok["mode"] == "serve").to_numpy()
    return {
        measure: np.where(serving, ok[tpot].to_numpy(dtype=float), ok[call].to_numpy(dtype=float) * 1e3)
        for measure, (call, tpot) in LATENCY_COLUMNS.items()
    }


#: The latency figure's axis label by the modes of its runs.
LATENCY_LABELS = {
    "offline": "mean latency per generate call (ms)",
    "serve": "median time per output token (ms)",
    "both": "latency (ms): generate call, TPOT p50 when serving",
}


def study_latency(table: pd.DataFrame, parameter: str | None, entries: list[RunEntry], fig: Figure) -> None:
    """Latency per run, without and under nsys side by side, from 0: of a generate call, or for a serving run of an
    output token (median TPOT)."""
    ax = fig.subplots()
    ok, label = _study_x(table, parameter)
    latency = _latency_ms(ok)
    measured = ~np.all([np.isnan(v) for v in latency.values()], axis=0)
    ok, latency = ok[measured], {m: v[measured] for m, v in latency.items()}
    if ok.empty:
        return _no_data(ax, "No run records: latency was not measured")
    positions, width = np.arange(len(ok)), 0.38
    palette = sns.color_palette("tab10").as_hex()
    for offset, colour, (measure, ms) in zip((-width / 2, width / 2), palette, latency.items()):
        ax.bar(positions + offset, np.nan_to_num(ms), width, color=colour, label=measure)
        for x, value in zip(positions + offset, ms):
            note = "n/a" if np.isnan(value) else f"{value:,.1f}" if value >= 10 else f"{value:,.2f}"
            ax.annotate(note, (x, np.nan_to_num(value)), xytext=(0, 3), textcoords="offset points", ha="center")
    ax.set_xticks(positions, _run_names(ok, label) if _split(ok) else list(ok["x"]))
    ax.set_ylim(0, 1.15 * float(np.nanmax(np.concatenate(list(latency.values())))))
    ax.set(xlabel=label, ylabel=LATENCY_LABELS[modes_of(ok)], title="Latency without and under nsys")
    _legend_outside(ax, *ax.get_legend_handles_labels())


def study_categories(table: pd.DataFrame, parameter: str | None, entries: list[RunEntry], fig: Figure) -> None:
    """GPU kernel time by category, stacked per run."""
    ax = fig.subplots()
    ok, label = _study_x(table, parameter)
    if ok.empty:
        return _no_data(ax, "No complete run")
    bottom = np.zeros(len(ok))
    names = _run_names(ok, label)
    for category in CATEGORY_ORDER:
        values = 100 * ok[f"share_{category.replace('/', '_')}"].fillna(0).to_numpy()
        ax.barh(names, values, left=bottom, color=PALETTE[category], label=category)
        bottom += values
    ax.set(xlabel="share of GPU kernel time (%)", xlim=(0, 100), title="GPU time by kernel category per run")
    _legend_outside(ax, *ax.get_legend_handles_labels(), title="category")


def study_top_kernels(table: pd.DataFrame, parameter: str | None, entries: list[RunEntry], fig: Figure) -> None:
    """Share of GPU time of the kernels that lead in any run, per run."""
    ax = fig.subplots()
    ok, _ = _study_x(table, parameter)
    shares = {}
    for entry in entries:
        if entry.run not in set(ok["run"]):
            continue
        sums = grouped_sums(entry.extract / "kernels.parquet", ["name", "short_name"], ["duration_ns"])
        total = sums["duration_ns"].sum()
        labels = [kernel_label(n, s) for n, s in zip(sums["name"], sums["short_name"])]
        shares[entry.run] = pd.Series(100 * sums["duration_ns"].to_numpy() / total, index=labels).groupby(level=0).sum()
    if not shares:
        return _no_data(ax, "No complete run")
    matrix = pd.DataFrame(shares).fillna(0.0)
    order = matrix.max(axis=1).sort_values(ascending=False, kind="stable").index[:TOP_N]
    matrix = matrix.loc[order, [r for r in ok["run"] if r in matrix.columns]]
    matrix.index = [_label(str(i), 50) for i in matrix.index]
    sns.heatmap(matrix, annot=True, fmt=".1f", cmap="Blues", cbar_kws={"label": "% of GPU kernel time"}, ax=ax)
    ax.set(xlabel="", ylabel="", title="Top kernels: share of GPU time per run")


def study_serving(table: pd.DataFrame, parameter: str | None, entries: list[RunEntry], fig: Figure) -> None:
    """Serving runs: latency against request throughput (the latency-throughput curve), and GPU busy share."""
    ok, label = _study_x(table, parameter)
    runs = ok[ok["mode"] == "serve"]
    rate = measured_column(runs, "request_per_s") if not runs.empty else None
    if rate is None:
        return _no_data(fig.subplots(), "No serving runs in this study")
    left, right = fig.subplots(1, 2)
    for stem, name in (("ttft_p50_ms", "TTFT p50"), ("ttft_p99_ms", "TTFT p99"), ("tpot_p50_ms", "TPOT p50")):
        found = measured_column(runs, stem)
        if found is not None:
            left.plot(runs[rate], runs[found], marker="o", label=f"{name} ({which_run(found)})")
    tail = measured_column(runs, "ttft_p99_ms")
    for x, y, value in zip(runs[rate], runs[tail or rate], runs["x"]):
        left.annotate(f"{label} {value}", (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
    left.set(xlabel=f"requests / s ({which_run(rate)})", ylabel="latency (ms)", title="Latency against throughput")
    left.legend(fontsize=8)
    busy = runs["busy_share_corrected"].where(runs["busy_share_corrected"].notna(), runs["busy_share_raw"])
    right.bar(runs["x"].astype(str), 100 * busy.fillna(0).to_numpy(), color=PALETTE["gemm"])
    right.set(xlabel=label, ylabel="GPU busy (% of the load)", ylim=(0, 100), title="GPU busy share")


#: A study figure: drawn from the study table, the swept parameter (None: runs by name) and the runs.
StudyDrawing = Callable[[pd.DataFrame, str | None, list[RunEntry], Figure], None]

#: Study figures: name → drawing function, size (inches) and caption.
STUDY_FIGURES: dict[str, tuple[StudyDrawing, tuple[float, float], str]] = {
    "throughput": (study_throughput, (9, 4.5), "Throughput with and without nsys along the swept parameter"),
    "latency": (
        study_latency,
        (9, 4.5),
        "Latency without and under nsys: of a generate call, or of an output token (median TPOT) for serving runs",
    ),
    "categories": (study_categories, (11, 4.5), "GPU time by kernel category per run"),
    "top_kernels": (study_top_kernels, (11, 7), "Top kernels' share of GPU time per run"),
    "serving": (study_serving, (12, 4.5), "Serving runs: latency against request throughput, and GPU busy share"),
}


def draw_study_figures(table: pd.DataFrame, parameter: str | None, entries: list[RunEntry], out: Path) -> list[Path]:
    """Draw the study figures into ``out`` (PNG and SVG), deterministically, along the swept ``parameter``."""
    out.mkdir(parents=True, exist_ok=True)
    with plt.rc_context(THEME):
        for name, (draw, size, _) in STUDY_FIGURES.items():
            _save(functools.partial(draw, table, parameter, entries), size, out, name)
    return [out / f"{name}.{fmt}" for name in STUDY_FIGURES for fmt in FORMATS]
