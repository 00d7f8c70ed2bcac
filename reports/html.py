"""One self-contained HTML file: tables via pandas, plots inlined as base64 PNG, no scripts.

The report is built as a list of blocks (see reports.build) so that report.md and report.html
always say the same thing; this module renders the blocks to HTML.
"""
from __future__ import annotations

import base64
import html
from pathlib import Path

import pandas as pd

CSS = """
body { font-family: system-ui, -apple-system, Segoe UI, Roboto, sans-serif; margin: 2em auto;
       max-width: 1250px; padding: 0 1em; color: #222; line-height: 1.45; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ddd; padding-bottom: .2em; margin-top: 1.8em; }
table { border-collapse: collapse; margin: .8em 0; font-size: .88em; }
th, td { border: 1px solid #ccc; padding: .3em .6em; text-align: left; vertical-align: top; }
thead th { background: #f3f3f3; } tbody tr:nth-child(even) { background: #fafafa; }
img { max-width: 100%; border: 1px solid #eee; margin: .5em 0; }
.alarm { background: #fdecea; border-left: 5px solid #d93025; padding: .5em .8em; margin: .4em 0; }
.ok { background: #e6f4ea; border-left: 5px solid #188038; padding: .5em .8em; }
.note { color: #555; font-size: .9em; }
code { background: #f3f3f3; padding: 0 .2em; }
"""


def img_tag(png: Path, alt: str) -> str:
    data = base64.b64encode(Path(png).read_bytes()).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def render_html(title: str, blocks: list[tuple]) -> str:
    """blocks: ("h1"|"h2"|"h3"|"p"|"note", text) | ("alarms", [msg]) | ("ok", text)
    | ("ul", [text]) | ("table", DataFrame, id) | ("img", path, alt)."""
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
        elif kind == "ok":
            out.append(f'<div class="ok">{html.escape(b[1])}</div>')
        elif kind == "alarms":
            out += [f'<div class="alarm">{html.escape(m)}</div>' for m in b[1]]
        elif kind == "ul":
            out.append("<ul>" + "".join(f"<li>{html.escape(x)}</li>" for x in b[1]) + "</ul>")
        elif kind == "table":
            df: pd.DataFrame = b[1]
            # Index name in the header's corner cell instead of a second, mostly empty header row.
            df = df.rename_axis(None).rename_axis(df.index.name, axis="columns")
            if df.empty:
                out.append('<p class="note">no data</p>')
            else:
                out.append(df.to_html(table_id=b[2], border=0, escape=True, na_rep="—"))
        elif kind == "img":
            out.append(img_tag(b[1], b[2]))
        else:
            raise ValueError(f"unknown block kind {kind!r}")
    out.append("</body></html>")
    return "\n".join(out) + "\n"
