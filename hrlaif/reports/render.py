"""Blocks -> report.md and report.html (the same blocks, so both always say the same thing)."""
from __future__ import annotations

from pathlib import Path

from hrlaif.core.store import write_text
from hrlaif.reports import tables
from hrlaif.reports.html import render_html


def render_markdown(blocks: list[tuple]) -> str:
    out = []
    for blk in blocks:
        kind = blk[0]
        if kind in ("h1", "h2", "h3"):
            out.append("#" * int(kind[1]) + " " + blk[1] + "\n")
        elif kind in ("p", "ok"):
            out.append(blk[1] + "\n")
        elif kind == "warn":
            out.append(f"> **NOTE** {blk[1]}\n")
        elif kind == "note":
            out.append(f"_{blk[1]}_\n")
        elif kind == "alarms":
            out.append("".join(f"- **ALARM** {m}\n" for m in blk[1]))
        elif kind == "ul":
            out.append("".join(f"- {x}\n" for x in blk[1]))
        elif kind == "table":
            df = blk[1]
            links = blk[3] if len(blk) > 3 else None
            if links:
                df = df.copy()
                for (row, col), href in links.items():
                    df.loc[row, col] = f"[{df.loc[row, col]}]({_md_href(href)})"
            out.append(tables.to_markdown(df))
        elif kind == "img":
            out.append(f"![{blk[2]}]({Path(blk[1]).name})\n")
    return "\n".join(out)


def _md_href(href: str) -> str:
    # The markdown page links to the markdown reports, the HTML page to the HTML ones.
    return href[:-len(".html")] + ".md" if href.endswith(".html") else href


def write_pages(out_dir: Path, stem: str, title: str, blocks: list[tuple]) -> tuple[Path, Path]:
    """OUT/<stem>.md and OUT/<stem>.html from one list of blocks."""
    md, page = Path(out_dir) / f"{stem}.md", Path(out_dir) / f"{stem}.html"
    write_text(md, render_markdown(blocks))
    write_text(page, render_html(title, blocks))
    return md, page
