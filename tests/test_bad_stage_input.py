"""Bad input to the figures, report and study stages: one error line naming the file, no output."""

from __future__ import annotations

import json
import shutil
import urllib.parse
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import SAMPLES

from llmprof.cli import main
from llmprof.render.figures import FIGURES


def _run(*args: str | Path) -> tuple[int, str]:
    result = CliRunner().invoke(main, [*map(str, args), "--quiet"])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.output


def _one_line_error(code: int, output: str, *names: str) -> None:
    assert code == 1 and output.count("\n") == 1 and output.startswith("Error: "), output
    for name in names:
        assert name in output, (name, output)


@pytest.fixture
def demo_extract(extracted: dict[str, Path], tmp_path: Path) -> Path:
    """A writable copy of a real extract folder."""
    folder = tmp_path / "extract"
    shutil.copytree(extracted["vllm_inproc_h100_3iter/vllm"], folder)
    return folder


def test_a_damaged_parquet_table_given_to_figures(demo_extract: Path, tmp_path: Path) -> None:
    table = demo_extract / "kernels.parquet"
    table.write_bytes(table.read_bytes()[:100])
    _one_line_error(*_run("figures", demo_extract, "-o", tmp_path / "figures"), "extract", "llmprof extract")
    assert not (tmp_path / "figures").exists()


@pytest.mark.parametrize("key", ["kernels", "gpu_activity", "capture_window"])
def test_metrics_without_a_key_given_to_report(demo_extract: Path, tmp_path: Path, key: str) -> None:
    path = demo_extract / "metrics.json"
    metrics = json.loads(path.read_text())
    del metrics[key]
    path.write_text(json.dumps(metrics))
    _one_line_error(*_run("report", demo_extract, "-o", tmp_path / "report"), "metrics.json", f"{key} is missing")
    assert not (tmp_path / "report").exists()


@pytest.mark.parametrize("record", ["metrics.json", "not-json"], ids=["another-document", "not-json"])
def test_a_wrong_record_given_to_report(demo_extract: Path, tmp_path: Path, record: str) -> None:
    path = demo_extract / record
    if record == "not-json":
        path.write_text("{not json")
    code, output = _run("report", demo_extract, "-o", tmp_path / "report", "--record", path)
    _one_line_error(code, output, record)
    assert not (tmp_path / "report").exists()


@pytest.mark.parametrize(
    ("manifest", "expected"),
    [('[{"run": "x"}]', "0/extract is missing"), ('{"run": "x"}', "non-empty list"), ("[", "not valid JSON")],
)
def test_a_malformed_study_manifest(tmp_path: Path, manifest: str, expected: str) -> None:
    _one_line_error(*_run("study", "--manifest", manifest, "-o", tmp_path / "study"), "study manifest", expected)
    assert not (tmp_path / "study").exists()


def test_report_with_a_figures_folder_that_is_missing(demo_extract: Path, tmp_path: Path) -> None:
    code, output = _run("report", demo_extract, "-o", tmp_path / "report", "--figures", tmp_path / "nowhere")
    _one_line_error(code, output, "nowhere", "llmprof figures")
    assert not (tmp_path / "report").exists()


def test_report_links_work_from_folders_with_spaces_and_accents(demo_extract: Path, tmp_path: Path) -> None:
    figures, report = tmp_path / "run 1 é" / "my figures", tmp_path / "run 1 é" / "the report"
    assert _run("figures", demo_extract, "-o", figures)[0] == 0
    record = SAMPLES / "vllm-llama1b-bs16" / "run.json"
    assert _run("report", demo_extract, "-o", report, "--figures", figures, "--record", record)[0] == 0
    html, markdown = (report / "report.html").read_text(), (report / "report.md").read_text()
    for name in FIGURES:
        link = f"../my%20figures/{name}.png"
        assert f"({link})" in markdown and link not in html  # the page embeds its figures
        assert (report / urllib.parse.unquote(link)).is_file()


def test_the_study_page_carries_its_figures(demo_study: Path) -> None:
    from llmprof.render.figures import STUDY_FIGURES

    page = (demo_study / "results" / "study" / "report.html").read_text()
    assert page.count('src="data:image/png;base64,') == len(STUDY_FIGURES)
    assert 'src="figures/' not in page
