"""``nsys analyze`` output: each rule's result as nsys writes it, in column, CSV or JSON format.

The values are written as nsys writes them (integers bare, bytes in MB with three
decimals, percentages with one, an absent value empty), so a result file can be
compared with nsys's byte for byte.
"""

from __future__ import annotations

import json
import math

import pandas as pd

from llmprof.analysis.expert import EXPERT_RULES, Column, RuleOptions, RuleResult

FORMATS = ("column", "csv", "json")
_WRAP = 80  # nsys wraps its messages at 80 characters


def _cell(value: object, kind: str) -> str:
    """One value as nsys writes it in CSV and JSON (no digit grouping)."""
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return ""
    if kind == "mb":
        return f"{float(value) / 1e6:.3f}"  # type: ignore[arg-type]
    if kind == "pct":
        return f"{float(value):.1f}"  # type: ignore[arg-type]
    if kind == "int":
        return str(int(value))  # type: ignore[call-overload]
    return str(value)


def _cells(result: RuleResult) -> tuple[tuple[Column, ...], list[list[str]]]:
    columns = EXPERT_RULES[result.rule].columns
    records = result.table[[key for _, key, _ in columns]].itertuples(index=False)
    return columns, [[_cell(v, kind) for v, (_, _, kind) in zip(row, columns)] for row in records]


def _csv_field(text: str) -> str:
    return '"' + text.replace('"', '""') + '"' if ("," in text or "\n" in text or '"' in text) else text


def to_csv(result: RuleResult) -> str:
    """The result as ``nsys analyze --format csv`` writes it; an empty result is an empty file."""
    columns, cells = _cells(result)
    if not cells:
        return ""
    lines = [",".join(_csv_field(header) for header, _, _ in columns)]
    lines += [",".join(_csv_field(c) for c in row) for row in cells]
    return "\n".join(lines) + "\n"


def to_json(result: RuleResult) -> str:
    """The result as ``nsys analyze --format json`` writes it: numbers bare, absent values as ``""``."""
    columns, cells = _cells(result)
    objects = []
    for row in cells:
        fields = [
            f"    {json.dumps(header)}: {value if kind != 'text' and value else json.dumps(value)}"
            for (header, _, kind), value in zip(columns, row)
        ]
        objects.append("  {\n" + ",\n".join(fields) + "\n  }")
    return "[\n" + ",\n".join(objects) + ("\n" if objects else "") + "]\n"


def _grouped(text: str, kind: str) -> str:
    """A number with thousands separators, as nsys's column format shows ids and times."""
    return f"{int(text):,}" if kind == "int" and text else text


def _table(result: RuleResult) -> list[str]:
    columns, cells = _cells(result)
    shown = [[_grouped(v, kind) for v, (_, _, kind) in zip(row, columns)] for row in cells]
    widths = [max([len(h), *(len(r[i]) for r in shown)]) for i, (h, _, _) in enumerate(columns)]
    head = " " + "  ".join(_centered(h, w) for (h, _, _), w in zip(columns, widths))
    rule = " " + "  ".join("-" * w for w in widths)
    body = [
        " " + "  ".join(v.ljust(w) if kind == "text" else v.rjust(w) for v, w, (_, _, kind) in zip(r, widths, columns))
        for r in shown
    ]
    return [head, rule, *body]


def _centered(text: str, width: int) -> str:
    """Centred with the odd space on the right, as nsys centres its headers."""
    left = (width - len(text)) // 2
    return " " * left + text + " " * (width - len(text) - left)


def _wrapped(message: str) -> list[str]:
    return [line for paragraph in message.split("\n") for line in _wrap(paragraph)]


def _wrap(paragraph: str) -> list[str]:
    """Greedy wrapping as nsys does it: a word fits when it and the space after it (none after the
    paragraph's last word) stay within the width; continuation lines are not indented."""
    indent = paragraph[: len(paragraph) - len(paragraph.lstrip(" "))]
    words = paragraph.split()
    lines: list[str] = []
    line = indent
    for index, word in enumerate(words):
        trailing = 0 if index == len(words) - 1 else 1
        joined = f"{line} {word}" if line.strip() else line + word
        if line.strip() and len(joined) + trailing > _WRAP:
            lines.append(line)
            joined = word
        line = joined
    return [*lines, line]


def to_column(result: RuleResult, options: RuleOptions) -> str:
    """The result as nsys prints it to a terminal: title, advice (or the all-clear) and the table."""
    rule = EXPERT_RULES[result.rule]
    values = {"gap": options.gap_ms, "threshold": options.threshold_pct}
    lines = ["", f" ** {rule.title} ({rule.name}):", ""]
    if result.table.empty:
        return "\n".join([*lines, *_wrapped(rule.no_result.format(**values)), ""]) + "\n"
    lines += [*_wrapped(rule.advice.format(**values)), "", *_table(result), ""]
    if 0 < options.rows <= len(result.table):
        shown = "the top result is" if options.rows == 1 else f"the top {options.rows} results are"
        lines += [f"Only {shown} displayed. More data may be available.", "", ""]
    return "\n".join(lines) + "\n"


def render(result: RuleResult, fmt: str, options: RuleOptions) -> str:
    """The result in ``fmt`` (column, csv or json)."""
    if fmt == "csv":
        return to_csv(result)
    if fmt == "json":
        return to_json(result)
    return to_column(result, options)
