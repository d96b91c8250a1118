"""Every nsys option that a finding's advice suggests exists in the pinned nsys (2025.3), with a value it accepts.

The option list is the real ``nsys profile --help`` of Nsight Systems 2025.3.1 (tests/data). Advice is taken
two ways: from every string the advice-writing modules hold (so a rule that never fires on the fixtures is
still checked) and from the findings the rules actually produce on every real capture.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
from conftest import CAPTURES, DATA, ROOT

from llmprof.analysis.findings import findings
from llmprof.common.records import load_metrics

HELP = DATA / "nsys-2025.3.1-profile-help.txt"
#: Modules whose strings become finding titles, evidence or next steps.
ADVICE_MODULES = ("analysis/findings.py", "analysis/study.py", "analysis/timing.py", "render/report.py")
OPTION = re.compile(r"(?<![\w-])(--[a-z][a-z0-9-]*)(?:=([A-Za-z0-9_,:\[\]-]+))?")
OPTION_HEADER = re.compile(r"^\t(?:\(Experimental\) )?(?:-\w, )?(--[a-z][a-z0-9\[\]|-]*)", re.MULTILINE)


def nsys_options(text: str) -> dict[str, set[str] | None]:
    """Option name → the values its help lists (None: any value), from ``nsys profile --help``."""
    lines = [line for line in text.splitlines() if not line.startswith("#")]
    body = "\n".join(lines)
    headers = list(OPTION_HEADER.finditer(body))
    options: dict[str, set[str] | None] = {}
    for header, following in zip(headers, [*headers[1:], None]):
        section = body[header.end() : following.start() if following else len(body)]
        names = _expand(header.group(1))
        values = _possible_values(section)
        options.update(dict.fromkeys(names, values))
    return options


def _expand(name: str) -> list[str]:
    """``--nvtx-domain-[include|exclude]`` → both names."""
    choice = re.search(r"\[([a-z|]+)\]", name)
    if choice is None:
        return [name]
    return [name[: choice.start()] + part + name[choice.end() :] for part in choice.group(1).split("|")]


def _possible_values(section: str) -> set[str] | None:
    """The values of every 'Possible values ... are ...' sentence of an option's help, or None (free value)."""
    sentences = re.findall(r"Possible values(?: for <[\w ]+>)? are (.*?)\.(?:\s|$)", " ".join(section.split()))
    if not sentences:
        return None
    values: set[str] = set()
    for sentence in sentences:
        quoted = re.findall(r"'([^']+)'", sentence)
        values |= set(quoted) if quoted else {v.strip() for v in re.split(r",|\bor\b", sentence) if v.strip()}
    return values


def option_problems(text: str, options: dict[str, set[str] | None]) -> list[str]:
    """What is wrong with each ``--option[=value]`` that a text names, checked against the nsys option list."""
    problems = []
    for name, value in OPTION.findall(text):
        if name not in options:
            problems.append(f"{name}: not an option of nsys profile 2025.3")
            continue
        allowed = options[name]
        if not value or allowed is None:
            continue
        for part in value.rstrip(".:,").split(","):
            granularity = part.split(":")[0]
            if granularity not in allowed:
                problems.append(f"{name}={value}: {granularity!r} is not one of {sorted(allowed)}")
    return problems


def _strings(path: Path) -> list[str]:
    """Every string literal of a module, f-string parts included, except docstrings."""
    tree = ast.parse(path.read_text())
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    return [
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings
    ]


@pytest.fixture(scope="module")
def options() -> dict[str, set[str] | None]:
    return nsys_options(HELP.read_text())


def test_the_help_is_parsed(options: dict[str, set[str] | None]) -> None:
    """The parser reads the options and values that the advice relies on, so a check below can fail."""
    assert len(options) > 60
    assert options["--sample"] == {"process-tree", "system-wide", "none"}
    assert {"cuda", "nvtx", "osrt", "python-gil", "none"} <= (options["--trace"] or set())
    assert options["--capture-range"] == {"none", "cudaProfilerApi", "nvtx", "hotkey"}
    assert {"graph", "node"} <= (options["--cuda-graph-trace"] or set())
    assert options["--output"] is None and "--nvtx-domain-include" in options
    assert option_problems("profile it with --sample=cpu.", options) == [
        "--sample=cpu: 'cpu' is not one of ['none', 'process-tree', 'system-wide']"
    ]
    assert option_problems("use --cpu-sampling", options) == ["--cpu-sampling: not an option of nsys profile 2025.3"]
    assert option_problems("--trace=cuda,nvtx. --cuda-graph-trace=node:host-only", options) == []


@pytest.mark.parametrize("module", ADVICE_MODULES)
def test_every_option_in_advice_strings_is_valid(module: str, options: dict[str, set[str] | None]) -> None:
    texts = _strings(ROOT / "src" / "llmprof" / module)
    named = [text for text in texts if OPTION.search(text)]
    assert all(not option_problems(text, options) for text in named), [
        problem for text in named for problem in option_problems(text, options)
    ]


def test_every_option_in_produced_findings_is_valid(
    extracted: dict[str, Path], options: dict[str, set[str] | None]
) -> None:
    produced = [f for capture in CAPTURES for f in findings(load_metrics(extracted[capture.id]))]
    texts = [f"{f.title} {f.evidence} {f.next_step}" for f in produced]
    assert any(OPTION.search(text) for text in texts)  # the rules do name options on real data
    assert [p for text in texts for p in option_problems(text, options)] == []
