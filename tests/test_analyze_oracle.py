"""``llmprof analyze`` against what ``nsys analyze`` 2025.3.1 wrote for every export in tests/data.

The oracles were made on the GPU machine from the same files (see each folder's PROVENANCE.md):
CSV and JSON of the six rules with default options, CSV with other options, the terminal output
and the SKIPPED messages. Every byte must match, except the input path in the progress lines.
"""

from __future__ import annotations

import re
import shutil
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import DATA, data_export

from llmprof.analysis.expert import EXPERT_RULES, RuleOptions, parse_rules, run_rule
from llmprof.cli import main
from llmprof.nsys.export import open_export
from llmprof.render.expert import render

ORACLES = sorted(DATA.glob("*/nsys-analyze/*"))
RULE_ORDER = "cuda_api_sync,cuda_memcpy_sync,cuda_memcpy_async,cuda_memset_sync,gpu_gaps,gpu_time_util"
OPTION_SPECS = (
    "gpu_gaps:gap=1",
    "gpu_time_util:threshold=90:chunks=100",
    "cuda_api_sync:rows=-1",
    "cuda_memcpy_async:rows=-1",
    "cuda_memcpy_sync:rows=-1",
)


def _export(oracle: Path) -> Path:
    return data_export(oracle.parent.parent, oracle.name)


def _skipped(oracle: Path) -> dict[str, str]:
    """Rule -> the SKIPPED message nsys printed for it (with the export path as EXPORT)."""
    text = (oracle / "stdout_csv.txt").read_text()
    found = re.findall(r"rules/(\w+)\.py\][^\n]*\n\nSKIPPED: ([^\n]*)", text)
    return dict(found)


def test_every_export_has_oracles() -> None:
    assert len(ORACLES) == 14
    assert sum(len(_skipped(oracle)) for oracle in ORACLES) == 23  # the SKIPPED messages are read


@pytest.mark.parametrize("oracle", ORACLES, ids=lambda p: p.name)
def test_default_options_equal_nsys(oracle: Path) -> None:
    skipped = _skipped(oracle)
    with open_export(_export(oracle)) as export:
        for rule in EXPERT_RULES:
            result = run_rule(export, rule)
            if rule in skipped:
                assert result.error is not None and result.error.replace(str(export.path), "EXPORT") == skipped[rule]
                continue
            assert result.error is None, rule
            assert render(result, "csv", RuleOptions()) == (oracle / f"csv_{rule}.csv").read_text(), rule
            assert render(result, "json", RuleOptions()) == (oracle / f"json_{rule}.json").read_text(), rule


@pytest.mark.parametrize("oracle", ORACLES, ids=lambda p: p.name)
def test_rule_options_equal_nsys(oracle: Path) -> None:
    with open_export(_export(oracle)) as export:
        for spec in OPTION_SPECS:
            [(rule, options, tag)] = parse_rules(spec)
            expected = oracle / f"opt_{tag}.csv"
            result = run_rule(export, rule, options)
            if result.error is None:
                assert render(result, "csv", options) == expected.read_text(), spec


def _normalized(text: str) -> str:
    return re.sub(r"Processing \[[^\]]*\] with \[[^\]]*?(\w+)(?:\.py)?\]", r"Processing [EXPORT] with [\1]", text)


@pytest.mark.parametrize("oracle", ORACLES, ids=lambda p: p.name)
def test_terminal_output_equals_nsys(oracle: Path) -> None:
    export = _export(oracle)
    result = CliRunner().invoke(main, ["analyze", str(export), "-r", RULE_ORDER])
    assert result.exit_code == 0, result.output
    expected = (oracle / "column.txt").read_text()
    assert _normalized(result.output.replace(str(export), "EXPORT")) == _normalized(expected)


def test_files_are_named_as_nsys_names_them(tmp_path: Path) -> None:
    oracle = DATA / "nsys2024_cloverleaf_a100" / "nsys-analyze" / "perlmutter-cloverleaf-cuda"
    prefix = tmp_path / "opt"
    args = ["analyze", str(_export(oracle)), "-r", "gpu_gaps:gap=1,cuda_api_sync:rows=-1", "-o", str(prefix)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    for name in ("opt_gpu_gaps_gap=1.csv", "opt_cuda_api_sync_rows=-1.csv"):
        assert (tmp_path / name).read_text() == (oracle / name).read_text()


@pytest.mark.parametrize("spec", ["nope", "gpu_gaps:gap=x", "cuda_api_sync:gap=3", "gpu_time_util:chunks"])
def test_bad_rule_specs_are_one_line_errors(spec: str) -> None:
    export = DATA / "vllm_inproc_h100_3iter" / "vllm.sqlite"
    result = CliRunner().invoke(main, ["analyze", str(export), "-r", spec])
    assert result.exit_code == 1
    assert result.output.count("\n") == 1 and result.output.startswith("Error: ")


def test_chunks_out_of_range_is_reported_as_nsys_reports_it() -> None:
    with open_export(DATA / "vllm_inproc_h100_3iter" / "vllm.sqlite") as export:
        result = run_rule(export, "gpu_time_util", RuleOptions(chunks=0))
    assert result.error is not None and "between 1 and 1000" in result.error


@pytest.mark.parametrize(
    ("rule", "dropped", "asks"),
    [
        ("cuda_api_sync", "CUPTI_ACTIVITY_KIND_RUNTIME", "Does the application use CUDA runtime APIs?"),
        ("cuda_memcpy_sync", "CUPTI_ACTIVITY_KIND_RUNTIME", "Does the application use CUDA runtime APIs?"),
        ("cuda_memcpy_sync", "CUPTI_ACTIVITY_KIND_MEMCPY", "Does the application use CUDA memcpy APIs?"),
    ],
)
def test_a_missing_table_is_named_for_what_it_holds(tmp_path: Path, rule: str, dropped: str, asks: str) -> None:
    """Each rule's SKIPPED message asks about the data that is missing, not about another rule's."""
    export = tmp_path / "dropped.sqlite"
    shutil.copy(DATA / "vllm_inproc_h100_3iter" / "vllm.sqlite", export)
    with sqlite3.connect(export) as db:
        db.execute(f"DROP TABLE {dropped}")
    with open_export(export) as opened:
        result = run_rule(opened, rule)
    assert result.error is not None and result.error.endswith(asks), result.error
