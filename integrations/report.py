"""The demo's self-contained HTML report and its ``summary.json``.

A report is a list of :class:`Section`s; each carries text, tables (lists of dict rows), figures
(PNG files written beside the report and also embedded as base64, so the HTML stands alone) and
the numbers that go into ``summary.json``. Files are written atomically.
"""

from __future__ import annotations

import base64
import html
import json
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Section", "write_report", "atomic_write_text", "figure", "save_figure"]


@dataclass
class Section:
    """One part of the report: a title, paragraphs, tables, figures and summary numbers."""

    key: str
    title: str
    text: list[str] = field(default_factory=list)
    tables: list[tuple[str, list[dict]]] = field(default_factory=list)
    figures: list[tuple[str, Path]] = field(default_factory=list)
    summary: dict = field(default_factory=dict)
    status: str = "ok"  # "ok" | "skipped" | "failed" | "interrupted" | "pending" | "not run"


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically (:func:`lawful.kernels.modelfile.atomic_write`)."""
    from lawful.kernels.modelfile import atomic_write

    with atomic_write(path) as fh:
        fh.write(text.encode("utf-8"))


def figure(ncols: int = 1, width: float = 5.5, height: float = 4.0, **kwargs):
    """A headless matplotlib figure with ``ncols`` axes side by side: ``(fig, axes)``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, ncols, figsize=(width * ncols, height), **kwargs)
    return fig, axes


def save_figure(fig, path) -> Path:
    """Lay out, save (PNG, written atomically) and close ``fig``; return the path."""
    import io

    import matplotlib.pyplot as plt

    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    from lawful.kernels.modelfile import atomic_write

    with atomic_write(path) as fh:
        fh.write(buf.getvalue())
    return Path(path)


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return html.escape(str(v))


def _table_html(caption: str, rows: list[dict]) -> str:
    if not rows:
        return ""
    cols = list(dict.fromkeys(k for r in rows for k in r))
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td>{_fmt(r.get(c, ''))}</td>" for c in cols) + "</tr>" for r in rows)
    return f"<table><caption>{html.escape(caption)}</caption><tr>{head}</tr>{body}</table>"


def _figure_html(caption: str, png: Path) -> str:
    data = base64.b64encode(Path(png).read_bytes()).decode()
    return (f'<figure><img alt="{html.escape(caption)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{html.escape(caption)} ({html.escape(Path(png).parent.name + '/' + Path(png).name)})"
            "</figcaption></figure>")


_CSS = """body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #bbb;padding:3px 8px;text-align:right}
caption{font-weight:bold;text-align:left}img{max-width:100%}figure{margin:1em 0}
.skipped,.failed,.interrupted{color:#a00}.pending,.not{color:#888}
.banner{background:#fde2e1;border:2px solid #a00;padding:0.6em 1em;font-weight:bold}"""


def write_report(out_dir: Path, title: str, sections: list[Section], meta: dict,
                 refresh_s: int | None = None) -> tuple[Path, Path]:
    """Write ``report.html`` and ``summary.json`` into ``out_dir``; return both paths.

    ``meta["note"]``, when set, is shown as a banner above everything else (and kept in
    ``summary.json``'s meta): what a reader must know before reading any number.

    ``refresh_s``: while a run is still going, the page asks the browser to reload itself every
    this many seconds (None: a finished report, no reload).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    refresh = f"<meta http-equiv='refresh' content='{int(refresh_s)}'>" if refresh_s else ""
    parts = [f"<!doctype html><html><head><meta charset='utf-8'>{refresh}<title>{html.escape(title)}</title>"
             f"<style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1>"]
    if meta.get("note"):        # e.g. a demo in a pipeline-test mode: said before any number
        parts.append(f"<p class='banner'>{html.escape(str(meta['note']))}</p>")
    parts.append(_table_html("Run", [{k: v for k, v in meta.items() if not isinstance(v, dict)}]))
    for k, v in meta.items():
        if isinstance(v, dict):
            parts.append(_table_html(k, [v]))
    for s in sections:
        parts.append(f"<h2 class='{s.status}'>{html.escape(s.title)}"
                     f"{'' if s.status == 'ok' else ' — ' + s.status}</h2>")
        parts.extend(f"<p>{html.escape(t)}</p>" for t in s.text)
        parts.extend(_table_html(c, rows) for c, rows in s.tables)
        parts.extend(_figure_html(c, p) for c, p in s.figures if Path(p).exists())
    parts.append("</body></html>")
    report = out_dir / "report.html"
    atomic_write_text(report, "\n".join(parts))
    summary = {"meta": meta, "sections": {s.key: {"status": s.status, **s.summary} for s in sections}}
    summary_path = out_dir / "summary.json"
    atomic_write_text(summary_path, json.dumps(summary, indent=2, default=float) + "\n")
    return report, summary_path
