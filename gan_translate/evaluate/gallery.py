"""A static HTML page of the results: one row per input, with the file name, the images and per-image scores.

Plain HTML and CSS (no script), image paths relative to the page, so the results folder can be moved, zipped or served
as it is. Every image is shown in a fixed square box, scaled to fit with its aspect ratio kept; a click opens it at
full size.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["GalleryRow", "GallerySection", "write_gallery"]

_CSS = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; background: #fafafa; }
h1 { font-size: 1.4em; margin-bottom: 0.2em; } h2 { font-size: 1.15em; margin-top: 1.6em; }
.meta { color: #555; margin: 0.2em 0; }
.notes li { color: #8a5a00; }
table { border-collapse: collapse; background: #fff; }
th, td { border: 1px solid #ddd; padding: 6px; text-align: center; vertical-align: middle; }
th { background: #f0f0f0; position: sticky; top: 0; }
td.name { text-align: left; font-family: ui-monospace, monospace; font-size: 0.85em; max-width: 14em;
          word-break: break-all; }
td.name .scores { color: #555; margin-top: 0.4em; }
img { width: 256px; height: 256px; object-fit: contain; background: #eee; display: block; }
table.metrics { margin-bottom: 1em; }
table.metrics td, table.metrics th { text-align: right; padding: 4px 10px; position: static; }
"""


@dataclass
class GalleryRow:
    """One input: its name, an image path (relative to the page) per column, and optional per-image scores."""

    name: str
    images: dict[str, str]
    scores: dict[str, float] = field(default_factory=dict)


@dataclass
class GallerySection:
    """A table of rows with the given columns (e.g. input, output, target), for one direction or style run."""

    title: str
    columns: list[str]
    rows: list[GalleryRow]
    metrics: dict[str, Any] = field(default_factory=dict)


def _format(value: Any) -> str:
    if isinstance(value, float):
        return "n/a" if not math.isfinite(value) else f"{value:.4g}"
    return html.escape(str(value))


def _metrics_table(metrics: dict[str, Any]) -> str:
    items = [(k, v) for k, v in metrics.items() if not isinstance(v, (dict, list))]
    if not items:
        return ""
    head = "".join(f"<th>{html.escape(k)}</th>" for k, _ in items)
    values = "".join(f"<td>{_format(v)}</td>" for _, v in items)
    return f'<table class="metrics"><tr>{head}</tr><tr>{values}</tr></table>'


def _cell(src: str | None) -> str:
    if not src:
        return "<td>&mdash;</td>"
    ref = html.escape(src, quote=True)
    return f'<td><a href="{ref}"><img src="{ref}" alt="{ref}" loading="lazy"></a></td>'


def _section(section: GallerySection) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in ["file", *section.columns])
    body = []
    for row in section.rows:
        scores = "<br>".join(f"{html.escape(k)} {_format(v)}" for k, v in row.scores.items())
        name = html.escape(row.name) + (f'<div class="scores">{scores}</div>' if scores else "")
        cells = "".join(_cell(row.images.get(c)) for c in section.columns)
        body.append(f'<tr><td class="name">{name}</td>{cells}</tr>')
    return (f"<h2>{html.escape(section.title)} &middot; {len(section.rows)} images</h2>\n"
            f"{_metrics_table(section.metrics)}\n<table>\n<tr>{head}</tr>\n" + "\n".join(body) + "\n</table>")


def write_gallery(path: str | Path, title: str, sections: list[GallerySection], *, meta: list[str] | None = None,
                  notes: list[str] | None = None) -> Path:
    """Writes the page to ``path`` (index.html) and returns it."""
    path = Path(path)
    meta_html = "".join(f'<p class="meta">{html.escape(m)}</p>' for m in meta or [])
    notes_html = ("<ul class=\"notes\">" + "".join(f"<li>{html.escape(n)}</li>" for n in notes) + "</ul>"
                  if notes else "")
    page = (f"<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<title>{html.escape(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
            f"<h1>{html.escape(title)}</h1>\n{meta_html}\n{notes_html}\n"
            + "\n".join(_section(s) for s in sections) + "\n</body>\n</html>\n")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(path)
    return path
