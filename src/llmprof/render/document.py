"""The document model of reports: a list of blocks rendered to Markdown and to standalone HTML.

A report is built once as blocks (headings, paragraphs, tables, figures) and
rendered twice, so the Markdown and the HTML never disagree.
"""

from __future__ import annotations

import base64
import html
import os
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Heading:
    text: str
    level: int = 2


@dataclass(frozen=True)
class Paragraph:
    """Text with two inline marks: **bold** and `code`."""

    text: str


@dataclass(frozen=True)
class Table:
    header: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]


@dataclass(frozen=True)
class Figure:
    path: str  # relative to the document
    caption: str


Block = Heading | Paragraph | Table | Figure


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def to_markdown(blocks: list[Block]) -> str:
    out: list[str] = []
    for b in blocks:
        if isinstance(b, Heading):
            out.append(f"{'#' * b.level} {b.text}")
        elif isinstance(b, Paragraph):
            out.append(b.text)
        elif isinstance(b, Table):
            out.append("| " + " | ".join(b.header) + " |")
            out.append("|" + "|".join("---" for _ in b.header) + "|")
            out += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in b.rows]
        else:
            out.append(f"![{b.caption}]({b.path})\n\n*{b.caption}*")
        out.append("")
    return "\n".join(out)


def _inline_html(text: str) -> str:
    """Escape, then render the two inline marks the blocks use: **bold** and `code`."""
    parts = html.escape(text).split("`")
    rendered = [p if i % 2 == 0 else f"<code>{p}</code>" for i, p in enumerate(parts)]
    bold = "".join(rendered).split("**")
    return "".join(p if i % 2 == 0 else f"<strong>{p}</strong>" for i, p in enumerate(bold))


def _html_block(b: Block, images: Mapping[str, bytes]) -> str:
    if isinstance(b, Heading):
        return f"<h{b.level}>{html.escape(b.text)}</h{b.level}>"
    if isinstance(b, Paragraph):
        return f"<p>{_inline_html(b.text)}</p>"
    if isinstance(b, Table):
        head = "".join(f"<th>{html.escape(h)}</th>" for h in b.header)
        rows = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in b.rows)
        return f'<div class="table"><table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table></div>'
    image = images.get(b.path)
    source = f"data:image/png;base64,{base64.b64encode(image).decode()}" if image is not None else html.escape(b.path)
    return (
        f'<figure><img src="{source}" alt="{html.escape(b.caption)}">'
        f"<figcaption>{html.escape(b.caption)}</figcaption></figure>"
    )


def embedded_images(blocks: list[Block], folder: Path) -> dict[str, bytes]:
    """The bytes of every figure the blocks show, their (percent-encoded) paths taken from ``folder``."""
    found = {}
    for block in blocks:
        if isinstance(block, Figure):
            path = Path(os.path.normpath(folder / urllib.parse.unquote(block.path)))
            if path.is_file():
                found[block.path] = path.read_bytes()
    return found


STYLE = (
    "body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}"
    "div.table{overflow-x:auto;max-width:100%}"  # a wide table scrolls inside the page instead of overflowing it
    "table{border-collapse:collapse;margin:1em 0;font-size:0.9em}"
    "td,th{border:1px solid #ccc;padding:4px 8px;text-align:left}"
    "th{background:#f0f0f0}img{max-width:100%}code{background:#f4f4f4;padding:0 3px}"
)


def to_html(blocks: list[Block], title: str, images: Mapping[str, bytes] | None = None) -> str:
    """A self-contained HTML page (inline style, no script) of the blocks.

    ``images``: figure path → PNG bytes, embedded in the page, so it reads the same mailed, attached or
    opened from any folder; a figure without bytes stays a link.
    """
    body = "\n".join(_html_block(b, images or {}) for b in blocks)
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{STYLE}</style></head><body>\n" + body + "\n</body></html>\n"
    )
