"""The package's shape: short functions, nsys export schema knowledge in llmprof.nsys only, the layer contract."""

from __future__ import annotations

import ast
import io
import re
import shutil
import subprocess
import tokenize
from pathlib import Path

import pytest
from conftest import ROOT

PACKAGE = ROOT / "src" / "llmprof"
SCHEMA_OWNER = PACKAGE / "nsys"
MAX_FUNCTION_LINES = 60

#: What only llmprof.nsys may know of an nsys SQLite export: its table and column names and how a globalTid
#: packs the process and thread ids. Matched in code and string literals (SQL), not in comments or docstrings.
SCHEMA_PATTERNS = {
    "CUPTI activity table": re.compile(r"\bCUPTI_ACTIVITY_KIND_\w*"),
    "StringIds table": re.compile(r"\bStringIds\b"),
    "NVTX_EVENTS table": re.compile(r"\bNVTX_EVENTS\b"),
    "OSRT_API table": re.compile(r"\bOSRT_API\b"),
    "TARGET_INFO_ table": re.compile(r"\bTARGET_INFO_\w+"),
    "ENUM_ table": re.compile(r"\bENUM_\w+"),
    "META_DATA_EXPORT table": re.compile(r"\bMETA_DATA_EXPORT\b"),
    "EXPORT_META_DATA table": re.compile(r"\bEXPORT_META_DATA\b"),
    "ThreadNames table": re.compile(r"\bThreadNames\b"),
    "PROCESSES table": re.compile(r"""(?:\b(?:FROM|JOIN|INTO|TABLE)\s+|["'])PROCESSES\b"""),
    "PROFILER_OVERHEAD table": re.compile(r"\bPROFILER_OVERHEAD\b"),
    "globalTid column": re.compile(r"\bglobalTid\b"),
    "globalPid column": re.compile(r"\bglobalPid\b"),
    "globalTid pid shift": re.compile(r">>\s*24\b"),
    "globalTid id mask": re.compile(r"\b0[xX][fF]{6}(?:[fF]{4}0{6})?\b"),
    "globalTid mask name": re.compile(r"PID_MASK\b"),
}


def modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def long_functions(path: Path) -> list[str]:
    """Functions and methods of a module longer than the limit, from their ``def`` line to their last line."""
    tree = ast.parse(path.read_text(), str(path))
    return [
        f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for node in ast.walk(tree)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
        and node.end_lineno is not None
        and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES
    ]


def docstring_rows(tree: ast.AST) -> set[int]:
    rows: set[int] = set()
    for node in ast.walk(tree):
        if not isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        if ast.get_docstring(node, clean=False) is not None:
            first = node.body[0]
            rows.update(range(first.lineno, (first.end_lineno or first.lineno) + 1))
    return rows


def code_lines(path: Path) -> dict[int, str]:
    """A module's lines by number, comments and docstrings blanked (string literals kept: SQL lives in them)."""
    text = path.read_text()
    lines = dict(enumerate(text.splitlines(), 1))
    for token in tokenize.generate_tokens(io.StringIO(text).readline):
        if token.type == tokenize.COMMENT:
            row, column = token.start
            lines[row] = lines[row][:column]
    for row in docstring_rows(ast.parse(text, str(path))):
        lines[row] = ""
    return lines


def schema_mentions(path: Path) -> list[str]:
    return [
        f"{path.relative_to(ROOT)}:{row} {what}: {line.strip()}"
        for row, line in code_lines(path).items()
        for what, pattern in SCHEMA_PATTERNS.items()
        if pattern.search(line)
    ]


def test_no_function_is_longer_than_the_limit() -> None:
    offenders = [offender for path in modules() for offender in long_functions(path)]
    assert not offenders, f"over {MAX_FUNCTION_LINES} lines:\n" + "\n".join(offenders)


def test_export_schema_is_known_to_the_nsys_readers_only() -> None:
    outside = [path for path in modules() if not path.is_relative_to(SCHEMA_OWNER)]
    offenders = [mention for path in outside for mention in schema_mentions(path)]
    assert not offenders, "nsys export schema outside llmprof.nsys:\n" + "\n".join(offenders)


@pytest.mark.parametrize(
    ("code", "what"),
    [
        ("FROM CUPTI_ACTIVITY_KIND_KERNEL AS k", "CUPTI activity table"),
        ("LEFT JOIN StringIds s ON s.id = t.nameId", "StringIds table"),
        ('TableReader("nvtx", "NVTX_EVENTS")', "NVTX_EVENTS table"),
        ('OSRT = "OSRT_API"', "OSRT_API table"),
        ('table = "TARGET_INFO_GPU"', "TARGET_INFO_ table"),
        ('export.enum_labels("ENUM_CUDA_MEM_KIND")', "ENUM_ table"),
        ("SELECT value FROM META_DATA_EXPORT", "META_DATA_EXPORT table"),
        ("SELECT value FROM EXPORT_META_DATA", "EXPORT_META_DATA table"),
        ('export.has("ThreadNames", "nameId")', "ThreadNames table"),
        ("LEFT JOIN PROCESSES p ON p.pid = seen.pid", "PROCESSES table"),
        ('export.has("PROCESSES", "pid")', "PROCESSES table"),
        ("SELECT duration FROM PROFILER_OVERHEAD", "PROFILER_OVERHEAD table"),
        ("SELECT t.globalTid FROM t", "globalTid column"),
        ('keys = ("globalPid",)', "globalPid column"),
        ("pid = (tid >> 24) & mask", "globalTid pid shift"),
        ("tid = tid & 0xFFFFFF", "globalTid id mask"),
        ('BITS = "0xFFFFFFFFFF000000"', "globalTid id mask"),
        ("BITS = np.int64(~0xFFFFFF)", "globalTid id mask"),
        ("(gtid & GLOBAL_PID_MASK)", "globalTid mask name"),
        ("PROCESSES = pa.schema([])", None),
        ('{"processes": PROCESSES}', None),
        ("x = y >> 240", None),
        ("mask = 0xFFFFFFFF", None),
        ("global_tid = table['global_tid']", None),
    ],
)
def test_schema_patterns_are_precise(code: str, what: str | None) -> None:
    """Each pattern finds its schema name in code like the readers', and names that are not the schema stay out."""
    found = [name for name, pattern in SCHEMA_PATTERNS.items() if pattern.search(code)]
    assert found == ([what] if what else [])


def test_layer_contract_holds(cli_env: dict[str, str]) -> None:
    """cli over evidence over render over analysis and capture over nsys over common, and no import cycles."""
    lint_imports = shutil.which("lint-imports", path=cli_env["PATH"])
    if lint_imports is None:
        pytest.skip("import-linter not installed (pip install -e '.[test]')")
    result = subprocess.run(
        [lint_imports, "--no-cache"], cwd=ROOT, env=cli_env, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
