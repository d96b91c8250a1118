"""Figures that don't mislead: value axes from 0, legends beside the data (never over a bar or line), totals with
counts, traced and untraced latency side by side, and study tables in words with units."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import pytest
from conftest import SAMPLES
from matplotlib.axes import Axes
from matplotlib.collections import QuadMesh
from matplotlib.figure import Figure

from llmprof.analysis.metrics import grouped_sums
from llmprof.analysis.study import STUDY_SCHEMA, RunEntry, study_findings, study_table, swept_parameter
from llmprof.render.document import to_html, to_markdown
from llmprof.render.figures import FIGURES, STUDY_FIGURES, THEME
from llmprof.render.study import study_blocks

RUN_CAPTURES = ["samples/vllm-llama1b-bs16", "nsys2026_two_gpus_nccl/mfu_2gpu_after", "vllm_inproc_h100_3iter/vllm"]
SAMPLE_RUNS = ("vllm-llama1b-bs1", "vllm-llama1b-bs16")


@contextmanager
def drawn(draw: object, size: tuple[float, float], *args: object) -> Iterator[Figure]:
    """A figure drawn as the figures stage draws it (theme, size, layout), laid out and ready to measure."""
    with plt.rc_context(THEME):
        fig = plt.figure(figsize=size, layout="constrained")
        try:
            draw(*args, fig)  # type: ignore[operator]
            fig.canvas.draw()
            yield fig
        finally:
            plt.close(fig)


def _data_axes(fig: Figure) -> list[Axes]:
    """Axes that plot values: not colour bars, heatmaps or 'no data' notes."""
    return [
        ax
        for ax in fig.axes
        if (ax.patches or ax.lines)
        and not any(isinstance(c, QuadMesh) for c in ax.collections)
        and ax.get_label() != "<colorbar>"
    ]


def check_honest(fig: Figure, name: str) -> None:
    axes = _data_axes(fig)
    assert axes, name
    for ax in axes:
        assert 0 in (ax.get_xlim()[0], ax.get_ylim()[0]), (name, ax.get_xlim(), ax.get_ylim())  # value axis from 0
    legends = [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None] + list(fig.legends)
    for legend in legends:
        box = legend.get_window_extent()
        for ax in axes:
            assert not box.overlaps(ax.get_window_extent()), f"{name}: the legend covers data"


@pytest.fixture(scope="module")
def study(extracted: dict[str, Path]) -> tuple[pd.DataFrame, str | None, list[RunEntry]]:
    entries = [
        RunEntry(name, extracted[f"samples/{name}"], SAMPLES / name / "run.json", SAMPLES / name / "baseline.json")
        for name in SAMPLE_RUNS
    ]
    table = study_table(entries)
    return table, swept_parameter(table), entries


@pytest.mark.parametrize("capture", RUN_CAPTURES)
@pytest.mark.parametrize("name", list(FIGURES))
def test_run_figures_start_at_0_with_legends_beside_the_data(
    extracted: dict[str, Path], capture: str, name: str
) -> None:
    draw, size, _ = FIGURES[name]
    with drawn(draw, size, extracted[capture]) as fig:
        check_honest(fig, name)


@pytest.mark.parametrize("name", list(STUDY_FIGURES))
def test_study_figures_start_at_0_with_legends_beside_the_data(
    study: tuple[pd.DataFrame, str | None, list[RunEntry]], name: str
) -> None:
    draw, size, _ = STUDY_FIGURES[name]
    if name == "top_kernels":
        pytest.skip("a heatmap: no value axis")
    if name == "serving":
        pytest.skip("the demo study has no serving run")
    with drawn(draw, size, *study) as fig:
        check_honest(fig, name)


def test_top_kernels_show_totals_with_launch_counts(extracted: dict[str, Path]) -> None:
    folder = extracted["samples/vllm-llama1b-bs16"]
    draw, size, _ = FIGURES["top_kernels"]
    sums = grouped_sums(folder / "kernels.parquet", ["name"], ["duration_ns"]).sort_values("duration_ns")
    with drawn(draw, size, folder) as fig:
        notes = [t.get_text() for t in fig.axes[0].texts]
        widths = [p.get_width() for p in fig.axes[0].patches]
    assert len(notes) == len(widths) == 15
    top = sums.iloc[::-1].head(15)
    for note, width, (_, row) in zip(notes, widths, top.iterrows()):
        assert note.startswith(f"{row['duration_ns'] / 1e6:,.2f} ms") and note.endswith(f" · {row['count']:,}×"), note
        assert width == pytest.approx(row["duration_ns"] / 1e6)  # a total, not a mean with a whisker


def test_study_latency_shows_untraced_beside_traced(study: tuple[pd.DataFrame, str | None, list[RunEntry]]) -> None:
    table = study[0]
    draw, size, _ = STUDY_FIGURES["latency"]
    with drawn(draw, size, *study) as fig:
        ax = fig.axes[0]
        labels = [t.get_text() for t in ax.get_legend().get_texts()]
        heights = sorted(round(p.get_height(), 6) for p in ax.patches)
    assert labels == ["without nsys", "under nsys"]
    expected = [*table["mean_iteration_latency_s"], *table["mean_iteration_latency_s_untraced"]]
    assert heights == sorted(round(1e3 * v, 6) for v in expected)
    assert table["mean_iteration_latency_s_untraced"].notna().all()
    assert (table["mean_iteration_latency_s_untraced"] < table["mean_iteration_latency_s"]).all()


def test_study_tables_speak_words_with_units_and_fit_the_page(
    study: tuple[pd.DataFrame, str | None, list[RunEntry]],
) -> None:
    table, parameter, _ = study
    blocks = study_blocks(table, study_findings(table), parameter, [])
    markdown, page = to_markdown(blocks), to_html(blocks, "study")
    headers = [line for line in markdown.splitlines() if line.startswith("| run |")]
    assert len(headers) == 2  # two narrower tables, not one of sixteen columns
    for header in headers:
        assert len(header.split("|")) - 2 <= 9
        assert not re.search(r"\b[a-z]+_[a-z_]+\b", header), header  # no raw column keys
    assert "output tok/s without nsys" in markdown and "H2D copies (MB)" in markdown
    assert {f.name for f in STUDY_SCHEMA} & set(re.findall(r"[a-z_]+", " ".join(headers))) <= {"run", "status", "mode"}
    assert page.count('<div class="table"><table>') == 2 and "overflow-x:auto" in page
