"""Figures and reports: deterministic files that say what metrics.json says, and honest empty cases."""

from __future__ import annotations

import base64
import hashlib
import html
import json
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import SAMPLES

from llmprof.analysis.categories import kernel_label
from llmprof.analysis.findings import findings
from llmprof.cli import main
from llmprof.common.records import Metrics, load_metrics, load_run_record
from llmprof.render.figures import FIGURES, FORMATS, draw_figures
from llmprof.render.report import write_report

DEMO = "vllm_inproc_h100_3iter/vllm"
NO_KERNELS = "capture_without_kernels/report1"


def _digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.name[0] != "."}


def _svg_texts(path: Path) -> list[str]:
    """The texts drawn in an SVG figure (glyphs are paths; matplotlib keeps each text in a comment)."""
    return [html.unescape(t) for t in re.findall(r"<!-- (.*?) -->", path.read_text())]


def _numbers(pattern: str, text: str) -> list[float]:
    """Every number the pattern's group matches in the text, thousands separators dropped."""
    return [float(n.replace(",", "")) for n in re.findall(pattern, text)]


@pytest.fixture(scope="module")
def demo(extracted: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo's figures and report, drawn and written the way the workflow does: figures/ and report/."""
    root = tmp_path_factory.mktemp("demo")
    draw_figures(extracted[DEMO], root / "figures")
    arguments = [str(extracted[DEMO]), "-o", str(root / "report"), "--figures", str(root / "figures")]
    result = CliRunner().invoke(main, ["report", *arguments, "--run", "demo", "--quiet"])
    assert result.exit_code == 0, result.output
    return root


def _headline(markdown: str) -> dict[str, str]:
    """The rows of the report's headline table."""
    table = markdown.split("## Headline numbers")[1].split("\n\n")[1]
    return dict(re.findall(r"^\| (.+?) \| (.+?) \|$", table, re.MULTILINE)[1:])  # after the header


def test_figures_are_complete_and_deterministic(extracted: dict[str, Path], demo: Path, tmp_path: Path) -> None:
    draw_figures(extracted[DEMO], tmp_path / "again")
    assert sorted(_digests(demo / "figures")) == sorted(f"{n}.{f}" for n in FIGURES for f in FORMATS)
    assert _digests(demo / "figures") == _digests(tmp_path / "again")


def test_figures_hold_their_titles_and_the_top_kernels(extracted: dict[str, Path], demo: Path) -> None:
    m = load_metrics(extracted[DEMO])
    texts = {name: _svg_texts(demo / "figures" / f"{name}.svg") for name in FIGURES}
    assert "Top 15 kernels by GPU time" in texts["top_kernels"]
    for kernel in m["kernels"]["top"]:
        label = kernel_label(kernel["name"], kernel["short_name"])
        assert any(t.startswith(label[:59]) for t in texts["top_kernels"]), label
    assert "GPU time by kernel category" in texts["kernel_categories"]
    for category in m["kernels"]["categories"]:
        assert category["category"] in texts["kernel_categories"]
        note = f"{100 * category['share']:.1f}%, {category['time_ns'] / 1e6:,.2f} ms, {category['count']:,} kernels"
        assert note in texts["kernel_categories"], note
    assert {"CUDA API time share", "cudaGraphLaunch_v10000"} <= set(texts["cuda_api"])
    assert {"Bytes by direction", "Copy time by direction", "H2D", "D2H", "D2D"} <= set(texts["memcpy"])
    assert {"GPU kernel activity over the capture (NVTX ranges shaded)", "GPU 0"} <= set(texts["timeline"])
    assert ":iteration 2" in texts["timeline"]


@pytest.mark.parametrize("capture_id", [NO_KERNELS, "nsys2020_no_enum_tables/cupy"])
def test_figures_draw_for_sparse_captures(extracted: dict[str, Path], tmp_path: Path, capture_id: str) -> None:
    written = draw_figures(extracted[capture_id], tmp_path / "figs")
    assert all(p.stat().st_size > 0 for p in written)


def test_figures_of_a_capture_without_kernels_say_so(extracted: dict[str, Path], tmp_path: Path) -> None:
    folder = tmp_path / "figures"
    draw_figures(extracted[NO_KERNELS], folder)
    for name in ("top_kernels", "kernel_categories", "timeline"):
        assert _svg_texts(folder / f"{name}.svg") == ["No GPU kernels in this capture"], name
    assert _svg_texts(folder / "memcpy.svg") == ["No memory copies", "in this capture"]
    assert "CUDA API time share" in _svg_texts(folder / "cuda_api.svg")


def test_headline_numbers_are_the_metrics(extracted: dict[str, Path], demo: Path) -> None:
    m = load_metrics(extracted[DEMO])
    markdown, page = (demo / "report" / "report.md").read_text(), (demo / "report" / "report.html").read_text()
    rows = _headline(markdown)
    assert _numbers(r"([\d,.]+) ms", rows["Capture window"]) == [round(m["capture_window"]["duration_ns"] / 1e6, 2)]
    kernels = rows["Kernels"]
    assert _numbers(r"^([\d,]+) ", kernels) == [m["kernels"]["count"]] == [40_755]
    assert _numbers(r"\(([\d,.]+) ms", kernels) == [round(m["kernels"]["time_ns"] / 1e6, 2)]
    raw = rows["GPU busy, traced window (raw)"]
    assert _numbers(r"([\d.]+)%", raw) == [round(100 * m["gpu_activity"]["busy_fraction"], 1)]
    assert rows["GPU busy, untraced iteration (corrected)"] == "not measured (see the basis below)"
    assert _numbers(r"^([\d,]+)", rows["CUDA API calls"]) == [m["cuda_api"]["count"]]
    assert rows["GPUs"] == m["gpus"][0]["name"]
    assert _numbers(r"([\d,]+)", rows["NVTX ranges"]) == [m["nvtx"]["range_count"]]
    for metric, value in rows.items():
        assert f"<tr><td>{html.escape(metric)}</td><td>{html.escape(value)}</td></tr>" in page


def _ms(ns: float) -> float:
    return round(ns / 1e6, 2)


WINDOW_NS = 647_378_608  # the demo's capture window

#: Per finding of the demo: the numbers in its title and evidence, read back, and the same numbers from the metrics.
EVIDENCE: dict[str, Callable[[str, Metrics], tuple[list[float], list[float]]]] = {
    "gpu_idle": lambda text, m: (
        _numbers(r"([\d.]+)% of the capture", text) + _numbers(r"([\d,.]+) ms", text),
        [
            round(100 * ((m["gpu_activity"]["idle_fraction"] or 0) - m["profiler"]["gpu_idle_ns"] / WINDOW_NS), 1),
            _ms(m["gpu_activity"]["busy_ns"]),
            _ms(m["capture_window"]["duration_ns"]),
            _ms(m["profiler"]["gpu_idle_ns"]),
            _ms(max(g["duration_ns"] for g in m["gpu_activity"]["devices"][0]["largest_gaps"])),
        ],
    ),
    "dominant_kernel_family": lambda text, m: (
        _numbers(r"GEMM kernels ([\d.]+)%", text) + _numbers(r"([\d,]+) gemm kernels", text),
        [round(100 * m["kernels"]["categories"][0]["share"], 1), m["kernels"]["categories"][0]["count"]],
    ),
    "launch_bound_steps": lambda text, m: (
        _numbers(r"host ([\d,]+) µs per step", text)
        + _numbers(r"against ([\d,]+) µs on the GPU", text)
        + _numbers(r"; (\d+) kernels per step launched outside", text),
        [round(m["steps"]["per_step"][key] / 1e3) for key in ("host_ns", "gpu_ns")]
        + [m["steps"]["per_step"]["nongraph_kernels"]],
    ),
    "idle_cause": lambda text, m: (
        _numbers(r"mostly .*: ([\d.]+)% of", text) + _numbers(r"host code ([\d,.]+) ms", text),
        [
            round(100 * m["idle"]["devices"][0]["classes"]["host"] / m["idle"]["devices"][0]["idle_ns"], 1),
            _ms(m["idle"]["devices"][0]["classes"]["host"]),
        ],
    ),
    "short_kernels": lambda text, m: (
        _numbers(r"mean ([\d.]+) µs", text) + _numbers(r"over ([\d,]+) kernels", text),
        [round((m["kernels"]["mean_duration_ns"] or 0) / 1e3, 1), m["kernels"]["count"]],
    ),
    "cpu_threads_waiting": lambda text, m: (
        _numbers(r"([\d.]+) ms", text),
        [_ms(call["time_ns"]) for call in m["osrt"]["top"][:3]],
    ),
    "profiler_work": lambda text, m: (
        _numbers(r"work: ([\d,.]+) ms", text) + _numbers(r"cover ([\d,.]+) ms", text),
        [_ms(m["profiler"]["in_window_ns"]), _ms(m["profiler"]["gpu_idle_ns"])],
    ),
    "nsys_expert_rules": lambda text, m: (
        _numbers(r"lowest ([\d.]+)%", text) + _numbers(r"over ([\d.]+) ms", text),
        [m["nsys_rules"][-1]["top"][0]["in_use_pct"], _ms(m["nsys_rules"][-1]["top"][0]["duration_ns"])],
    ),
}


def test_findings_are_the_rules_and_their_numbers_the_metrics(extracted: dict[str, Path], demo: Path) -> None:
    m = load_metrics(extracted[DEMO])
    markdown, page = (demo / "report" / "report.md").read_text(), (demo / "report" / "report.html").read_text()
    written = json.loads((demo / "report" / "findings.json").read_text())
    assert written == [f.to_dict() for f in findings(m)]
    assert [f["id"] for f in written] == list(EVIDENCE)
    for finding in written:
        marker = "⚠" if finding["severity"] == "warning" else "ℹ"
        assert f"### {marker} {finding['title']}\n\n**Evidence.** {finding['evidence']}\n" in markdown
        assert f"<h3>{marker} {html.escape(finding['title'])}</h3>" in page
        assert f"<p><strong>Evidence.</strong> {html.escape(finding['evidence'])}</p>" in page
        read, expected = EVIDENCE[finding["id"]](f"{finding['title']} {finding['evidence']}", m)
        assert read == expected, finding["id"]


def test_every_figure_is_linked_with_its_caption(demo: Path) -> None:
    markdown, page = (demo / "report" / "report.md").read_text(), (demo / "report" / "report.html").read_text()
    for name, (_, _, caption) in FIGURES.items():
        assert (demo / "figures" / f"{name}.png").exists()
        assert f"![{caption}](../figures/{name}.png)\n\n*{caption}*" in markdown
        embedded = base64.b64encode((demo / "figures" / f"{name}.png").read_bytes()).decode()
        assert (  # the page carries its figures: it reads the same mailed or opened from any folder
            f'<figure><img src="data:image/png;base64,{embedded}" alt="{html.escape(caption)}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>"
        ) in page
    assert markdown.count("![") == page.count("<figure>") == len(FIGURES)
    assert page.startswith("<!DOCTYPE html>")


def test_report_with_run_records_shows_the_workload(extracted: dict[str, Path], tmp_path: Path) -> None:
    folder = SAMPLES / "vllm-llama1b-bs16"
    traced, untraced = load_run_record(folder / "run.json"), load_run_record(folder / "baseline.json")
    found = write_report(
        extracted["samples/vllm-llama1b-bs16"],
        tmp_path,
        run="bs16",
        record=folder / "run.json",
        baseline=folder / "baseline.json",
        force=True,
    )
    assert found == findings(load_metrics(extracted["samples/vllm-llama1b-bs16"]), traced, untraced)
    markdown = (tmp_path / "report.md").read_text()
    assert f"| Throughput traced | {traced['output_tokens_per_s']:,.0f} output tok/s |" in markdown
    assert f"| Throughput untraced | {untraced['output_tokens_per_s']:,.0f} output tok/s |" in markdown
    assert "| Profiler overhead | 44.8% |" in markdown and "## Figures" not in markdown
    assert f"| Kernels captured | {traced['nsys']['kernels_captured']:,} |" in markdown
    for iteration in traced["iterations"]:
        assert f"| {iteration['index']} | {iteration['latency_s'] * 1e3:,.1f} ms | 512 |" in markdown


def test_report_of_a_capture_without_gpu_work(extracted: dict[str, Path], tmp_path: Path) -> None:
    write_report(extracted[NO_KERNELS], tmp_path / "report", run="wsl")
    markdown = (tmp_path / "report" / "report.md").read_text()
    assert "No GPU work captured" in markdown and "NVTX ranges absent" in markdown
    assert "--capture-range=cudaProfilerApi" in markdown
    assert _headline(markdown)["GPU busy, traced window (raw)"] == "no GPU work captured"
    assert "No kernels." in markdown and "## Figures" not in markdown


def test_report_needs_an_extract(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["report", str(tmp_path), "-o", str(tmp_path / "r"), "--quiet"])
    assert result.exit_code == 1 and "metrics.json" in result.output and "llmprof extract" in result.output


def test_kernels_sharing_a_name_keep_a_bar_each_and_the_figure_its_bytes(
    extracted: dict[str, Path], tmp_path: Path
) -> None:
    folder = extracted["nsys2024_cloverleaf_a100/perlmutter-cloverleaf-cuda"]  # 13 of the top 15 share a name
    draw_figures(folder, tmp_path / "a")
    draw_figures(folder, tmp_path / "b")
    assert _digests(tmp_path / "a") == _digests(tmp_path / "b")
    labels = _svg_texts(tmp_path / "a" / "top_kernels.svg")
    assert "par_ranged2d_kernel" in labels and "par_ranged2d_kernel (14)" in labels
