"""One self-contained HTML file: tables, plots inlined as base64 PNG, no scripts.

A report is built as a list of blocks (see hrlaif.reports.build) so that its .md and .html always say
the same thing; this module renders the blocks to HTML. Table cells with fewer than
hrlaif.core.stats.MIN_N_CI items (marked FEW by hrlaif.reports.tables) are greyed, and rows made only of
such cells are folded into a <details> below their table.
"""
from __future__ import annotations

import base64
import html
from pathlib import Path

import pandas as pd

from hrlaif.core.console import DASH
from hrlaif.reports.tables import FEW

CSS = """
body { font-family: system-ui, -apple-system, Segoe UI, Roboto, sans-serif; margin: 2em auto;
       max-width: 1250px; padding: 0 1em; color: #222; line-height: 1.45; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ddd; padding-bottom: .2em; margin-top: 1.8em; }
table { border-collapse: collapse; margin: .8em 0; font-size: .88em; }
th, td { border: 1px solid #ccc; padding: .3em .6em; text-align: left; vertical-align: top; }
thead th { background: #f3f3f3; } tbody tr:nth-child(even) { background: #fafafa; }
td.few { color: #999; background: #f4f4f4; }
details.few summary { color: #777; cursor: pointer; font-size: .9em; }
img { max-width: 100%; border: 1px solid #eee; margin: .5em 0; }
.alarm { background: #fdecea; border-left: 5px solid #d93025; padding: .5em .8em; margin: .4em 0; }
.warn { background: #fef7e0; border-left: 5px solid #f9ab00; padding: .5em .8em; margin: .4em 0; }
.ok { background: #e6f4ea; border-left: 5px solid #188038; padding: .5em .8em; }
.note { color: #555; font-size: .9em; }
code { background: #f3f3f3; padding: 0 .2em; }
"""


def img_tag(png: Path, alt: str) -> str:
    data = base64.b64encode(Path(png).read_bytes()).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _table(df: pd.DataFrame, table_id: str, links: dict) -> str:
    def td(row, col, x) -> str:
        text = DASH if x is None or (isinstance(x, float) and x != x) else str(x)
        body = html.escape(text)
        if (row, col) in links:
            body = f'<a href="{html.escape(links[(row, col)])}">{body}</a>'
        return f'<td class="few">{body}</td>' if FEW in text else f"<td>{body}</td>"

    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in [df.index.name or "", *df.columns])
    body = "".join("<tr><th>" + html.escape(str(i)) + "</th>" + "".join(td(i, c, x) for c, x in row.items())
                   + "</tr>" for i, row in df.iterrows())
    return f'<table id="{html.escape(table_id)}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def table_html(df: pd.DataFrame, table_id: str, links: dict | None = None) -> str:
    """A table; rows whose every cell is FEW (or missing) fold into a <details> under it."""
    if df.empty:
        return '<p class="note">no data</p>'
    links = links or {}
    cells = df.astype(str)
    few = [i for i, row in cells.iterrows() if any(FEW in x for x in row) and all(FEW in x or x == DASH for x in row)]
    out = _table(df.drop(index=few), table_id, links) if len(few) < len(df) else ""
    if few:
        out += (f'<details class="few"><summary>{len(few)} row(s) with fewer than 5 items (no CI): '
                f'{html.escape(", ".join(map(str, few)))}</summary>{_table(df.loc[few], table_id + "_few", links)}'
                "</details>")
    return out


def render_html(title: str, blocks: list[tuple]) -> str:
    """blocks: ("h1"|"h2"|"h3"|"p"|"note", text) | ("alarms", [msg]) | ("ok"|"warn", text)
    | ("ul", [text]) | ("table", DataFrame, id[, {(row, col): href}]) | ("img", path, alt)."""
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           f"<title>{html.escape(title)}</title>", f"<style>{CSS}</style></head><body>"]
    for b in blocks:
        kind = b[0]
        if kind in ("h1", "h2", "h3"):
            out.append(f"<{kind}>{html.escape(b[1])}</{kind}>")
        elif kind == "p":
            out.append(f"<p>{html.escape(b[1])}</p>")
        elif kind == "note":
            out.append(f'<p class="note">{html.escape(b[1])}</p>')
        elif kind in ("ok", "warn"):
            out.append(f'<div class="{kind}">{html.escape(b[1])}</div>')
        elif kind == "alarms":
            out += [f'<div class="alarm">{html.escape(m)}</div>' for m in b[1]]
        elif kind == "ul":
            out.append("<ul>" + "".join(f"<li>{html.escape(x)}</li>" for x in b[1]) + "</ul>")
        elif kind == "table":
            out.append(table_html(b[1], b[2], b[3] if len(b) > 3 else None))
        elif kind == "img":
            out.append(img_tag(b[1], b[2]))
        else:
            raise ValueError(f"unknown block kind {kind!r}")
    out.append("</body></html>")
    return "\n".join(out) + "\n"
