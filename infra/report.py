"""Self-contained HTML pages for `leadflow backtest --html` and `leadflow rules diff --html`.

Each page is one file that makes no request of its own: the CSS is inline, the charts are
inline SVG drawn by matplotlib (text kept as text, so the file stays small and the labels
searchable), and a Content-Security-Policy forbids anything else. Every chart is followed
by its numbers in a table, and every string that comes from the data is escaped.

matplotlib is optional (`pip install 'leadflow[report]'`) and imported only when a page is
drawn. Figures are drawn straight onto an SVG canvas, never through pyplot, so nothing
opens a window and no global backend is switched. The same result gives the same bytes:
the SVG ids are salted per chart and the SVG carries no date.
"""

from __future__ import annotations

import html
import io
import math
import re
from bisect import bisect_right
from collections.abc import Callable, Iterable, Sequence
from datetime import date, datetime
from itertools import pairwise
from pathlib import Path
from typing import Any

__all__ = ["MissingReportDependency", "backtest_page", "diff_page", "write"]

INSTALL_HINT = "pip install 'leadflow[report]'"

MAX_POINTS = 5000  # most dots a scatter plot draws

DASH = "\u2014"  # shown where a figure is missing
ARROW = "\u2192"
NBSP = "\u00a0"


class MissingReportDependency(ImportError):
    """matplotlib, which draws the charts, is not installed."""


# --------------------------------------------------------------------------- formatting


class Markup(str):
    """HTML that is already safe to insert (built here, with the data escaped)."""


def _esc(value: Any) -> str:
    if isinstance(value, Markup):
        return value
    return html.escape("" if value is None else str(value), quote=True)


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and not math.isfinite(value))


def _int(value: Any) -> str:
    """1,303; a missing figure is a dash."""
    if _missing(value):
        return DASH
    return f"{round(value):,}"


def _pct(value: Any, digits: int = 1) -> str:
    """A share 0..1 as "14.1 %"."""
    if _missing(value):
        return DASH
    return f"{value * 100:.{digits}f}{NBSP}%"


def _score(value: Any, digits: int = 2) -> str:
    """A score: 47.5, 35 (no trailing zeros)."""
    if _missing(value):
        return DASH
    text = f"{value:,.{digits}f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def _signed(value: Any, fmt: Callable[[Any], str] = _score) -> str:
    if _missing(value):
        return DASH
    if value > 0:
        return "+" + fmt(value)
    if value < 0:
        return "\u2212" + fmt(-value)
    return fmt(0)


def _number(value: Any, digits: int = 3) -> str:
    if _missing(value):
        return DASH
    return f"{value:.{digits}f}"


def _whole(value: Any) -> str:
    return f"{value:,.0f}"


def _number_1(value: Any) -> str:
    return f"{value:.1f}"


def _plural(count: Any, one: str, many: str | None = None) -> str:
    many = many if many is not None else one + "s"
    return f"{_int(count)} {one if count == 1 else many}"


def _words(count: int) -> str:
    small = {0: "no", 1: "one", 2: "two", 3: "three", 4: "four", 5: "five"}
    return small.get(count, _int(count))


def _join(parts: Sequence[str]) -> str:
    parts = [part for part in parts if part]
    if len(parts) <= 1:
        return "".join(parts)
    return ", ".join(parts[:-1]) + " and " + parts[-1]


def _stage(name: Any) -> str:
    text = "" if name is None else str(name)
    return text.upper() if text.lower() in ("mql", "sql", "sal") else text


def _move(key: Any) -> tuple[str, str]:
    text = str(key)
    for sep in (ARROW, "->", ">"):
        if sep in text:
            before, after = text.split(sep, 1)
            return _stage(before.strip()), _stage(after.strip())
    return _stage(text), ""


def _move_label(key: Any) -> str:
    before, after = _move(key)
    return f"{before} {ARROW} {after}" if after else before


_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def _when(value: Any) -> str:
    """An ISO timestamp as `2026-11-28 00:00 UTC` inside a <time> element."""
    if _missing(value) or value == "":
        return DASH
    raw = str(value)
    try:
        moment = datetime.fromisoformat(raw)
    except ValueError:
        return _esc(raw)
    text = moment.strftime("%Y-%m-%d %H:%M")
    offset = moment.utcoffset()
    if offset is not None:
        zone = moment.strftime("%z")
        text += " UTC" if offset.total_seconds() == 0 else f" {zone[:3]}:{zone[3:5]}"
    return f'<time datetime="{_esc(raw)}">{_esc(text)}</time>'


def _short_date(value: Any) -> str | None:
    try:
        day = date.fromisoformat(str(value)[:10])
    except ValueError:
        return None
    return f"{day.day} {_MONTHS[day.month - 1]}"


def _finite(values: Iterable[Any]) -> list[float]:
    out = []
    for value in values or ():
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            out.append(float(value))
    return out


def _quantile(ordered: Sequence[float], q: float) -> float | None:
    if not ordered:
        return None
    position = (len(ordered) - 1) * q
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def _nice_step(span: float, target: int) -> float:
    raw = span / max(target, 1)
    magnitude = 10 ** math.floor(math.log10(raw))
    for factor in (1, 2, 2.5, 5, 10):
        if raw <= factor * magnitude:
            return factor * magnitude
    return 10 * magnitude


def _bin_edges(values: Sequence[float], target: int = 22) -> tuple[list[float], bool]:
    """Edges on round numbers (…, 40, 50, 60, …) covering every value, and whether the last
    band is open-ended: a long thin tail (beyond the 99th percentile) goes into the last band
    instead of stretching the axis."""
    ordered = sorted(values)
    low, high = ordered[0], ordered[-1]
    top = _quantile(ordered, 0.99)
    open_top = top is not None and high > top + (top - low) * 0.25
    if open_top:
        high = top
    if high - low < 1e-9:  # every score the same: one band
        start = math.floor(low)
        return [start, start + 1], open_top
    step = _nice_step(high - low, target)
    start = math.floor(low / step) * step
    count = max(1, math.ceil((high - start) / step - 1e-9))
    if start + count * step < high:
        count += 1
    return [round(start + i * step, 9) for i in range(count + 1)], open_top


def _histogram(values: Sequence[float], edges: Sequence[float]) -> list[int]:
    counts = [0] * (len(edges) - 1)
    last = len(counts) - 1
    for value in values:
        index = min(max(bisect_right(edges, value) - 1, 0), last)
        counts[index] += 1
    return counts


def _bin_label(edges: Sequence[float], index: int, open_top: bool = False) -> str:
    if open_top and index == len(edges) - 2:
        return f"{_score(edges[index])} or more"
    return f"{_score(edges[index])}\u2013{_score(edges[index + 1])}"


def _interpolate(points: Sequence[tuple[float, float]], x: float) -> float | None:
    if not points:
        return None
    if x <= points[0][0]:
        return points[0][1]
    for (x0, y0), (x1, y1) in pairwise(points):
        if x <= x1:
            return y0 if x1 == x0 else y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    return points[-1][1]


# --------------------------------------------------------------------------- HTML pieces


def _table(caption: str, headers: Sequence[str], rows: Sequence[Sequence[Any]], *,
           numeric: Iterable[int] = (), scroll: bool = False, note: str = "") -> str:
    """A table; cells are escaped unless they are Markup. Columns in `numeric` align right."""
    numeric = set(numeric)

    def cls(index: int) -> str:
        return ' class="n"' if index in numeric else ""

    head = "".join(f'<th scope="col"{cls(i)}>{_esc(h)}</th>' for i, h in enumerate(headers))
    body = []
    for row in rows:
        cells = []
        for i, cell in enumerate(row):
            tag = "th" if i == 0 else "td"
            scope = ' scope="row"' if i == 0 else ""
            cells.append(f"<{tag}{scope}{cls(i)}>{_esc(cell)}</{tag}>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    table = (f"<table>\n<caption>{_esc(caption)}</caption>\n<thead><tr>{head}</tr></thead>\n"
             f"<tbody>\n" + "\n".join(body) + "\n</tbody>\n</table>")
    if note:
        table += f'\n<p class="note">{_esc(note)}</p>'
    if scroll:
        table = f'<div class="scroll" tabindex="0" role="region" aria-label="{_esc(caption)}">{table}</div>'
    return table


def _empty(text: str) -> str:
    return f'<p class="empty">{_esc(text)}</p>'


def _section(anchor: str, title: str, lede: str, chart: str | None, skipped: str, tables: Sequence[str]) -> str:
    """A chart with its tables beside it (below on a narrow screen), or the reason it is missing."""
    picture = f"<figure>\n{chart}\n</figure>" if chart else _empty(skipped)
    side = "\n".join(t for t in tables if t)
    layout = "figure" if side else "figure wide"
    parts = [f'<section id="{anchor}" aria-labelledby="{anchor}-title">',
             f'<h2 id="{anchor}-title">{_esc(title)}</h2>']
    if lede:
        parts.append(f'<p class="lede">{_esc(lede)}</p>')
    parts.append(f'<div class="{layout}">\n{picture}\n<div class="tables">\n{side}\n</div>\n</div>')
    parts.append("</section>")
    return "\n".join(parts)


def _kpi(label: str, value: str, sub: str = "") -> str:
    extra = f'<dd class="sub">{sub}</dd>' if sub else ""
    return f'<div><dt>{_esc(label)}</dt><dd class="value">{value}</dd>{extra}</div>'


_CSS = """
:root{--font:system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,"Noto Sans",sans-serif;
--mono:ui-monospace,SFMono-Regular,Menlo,Consolas,"Liberation Mono",monospace;
--bg:#ffffff;--surface:#f6f8fa;--fg:#1f2328;--muted:#59636e;--grid:#d1d9e0;--border:#d1d9e0;
color-scheme:light dark}
@media (prefers-color-scheme:dark){:root{--bg:#0d1117;--surface:#151b23;--fg:#e6edf3;--muted:#9198a1;
--grid:#3d444d;--border:#3d444d}}
*,*::before,*::after{box-sizing:border-box}
html{-webkit-text-size-adjust:100%;text-size-adjust:100%}
body{margin:0;background:var(--bg);color:var(--fg);font:15px/1.55 var(--font)}
main{max-width:70rem;margin:0 auto;padding:2rem 1.5rem 3rem}
header p{margin:0}
.kicker{color:var(--muted);font-size:.78rem;font-weight:600;text-transform:uppercase;letter-spacing:.07em}
h1{font-size:1.75rem;line-height:1.25;margin:.15rem 0 .35rem}
h2{font-size:1.2rem;line-height:1.3;margin:0 0 .3rem}
.meta{color:var(--muted);font-size:.9rem}
.meta span+span::before{content:"\\00b7";margin:0 .5em}
section{margin-top:2.25rem;padding-top:1.5rem;border-top:1px solid var(--border)}
.lede{color:var(--muted);margin:0 0 .75rem;max-width:48rem}
.summary p{max-width:50rem;margin:.5rem 0}
.kpis{display:grid;grid-template-columns:repeat(auto-fit,minmax(12.5rem,1fr));gap:.75rem;margin:1.5rem 0 1.25rem}
.kpis>div{background:var(--surface);border:1px solid var(--border);border-radius:8px;padding:.75rem 1rem}
.kpis dt{color:var(--muted);font-size:.75rem;font-weight:600;text-transform:uppercase;letter-spacing:.06em}
.kpis dd{margin:0}
.kpis .value{font-size:1.55rem;font-weight:600;line-height:1.3;font-variant-numeric:tabular-nums}
.kpis .sub{color:var(--muted);font-size:.85rem}
.figure{display:grid;grid-template-columns:minmax(0,3fr) minmax(0,2fr);gap:1.75rem;align-items:start}
.figure.wide{grid-template-columns:minmax(0,1fr)}
figure{margin:0}
svg.chart{display:block;width:100%;height:auto}
svg.chart text{font-family:var(--font)}
svg.chart *{stroke-linejoin:round;stroke-linecap:butt}
table{border-collapse:collapse;width:100%;font-size:.875rem;font-variant-numeric:tabular-nums;margin:0 0 1.25rem}
caption{text-align:left;font-weight:600;padding:0 0 .4rem}
th,td{padding:.3rem .55rem;border-bottom:1px solid var(--border);text-align:left;vertical-align:top}
thead th{color:var(--muted);font-size:.78rem;font-weight:600;border-bottom:2px solid var(--border)}
tbody th{font-weight:500}
.n{text-align:right;white-space:nowrap}
.scroll{max-height:24rem;overflow:auto;margin-bottom:1.25rem}
.scroll table{margin:0}
.scroll thead th{position:sticky;top:0;background:var(--bg)}
.note{color:var(--muted);font-size:.85rem;margin:0 0 1.25rem}
table+.note,.scroll+.note{margin-top:-.75rem}
.empty{margin:0;padding:2rem 1rem;border:1px dashed var(--border);border-radius:8px;color:var(--muted);
text-align:center}
ul.changes{margin:.5rem 0;padding-left:1.25rem}
ul.rules{margin:0;padding:0;list-style:none}
.id,code{font-family:var(--mono);font-size:.82em}
.id{color:var(--muted)}
.up{color:#1a7f37}.down{color:#cf222e}
@media (prefers-color-scheme:dark){.up{color:#3fb950}.down{color:#f85149}}
footer{margin-top:3rem;padding-top:1rem;border-top:1px solid var(--border);color:var(--muted);font-size:.8rem}
@media (max-width:54rem){.figure{grid-template-columns:minmax(0,1fr)}main{padding:1.25rem 1rem 2rem}}
@media print{:root{--bg:#fff;--surface:#fff;--fg:#000;--muted:#444;--grid:#ccc;--border:#bbb}
.up{color:#1a7f37}.down{color:#cf222e}
@page{margin:14mm}
body{font-size:9.5pt}main{max-width:none;padding:0}
.scroll{max-height:none;overflow:visible}
.figure{grid-template-columns:minmax(0,3fr) minmax(0,2fr)}
h2{break-after:avoid}figure,tr,.kpis>div{break-inside:avoid}}
"""

# Only what the page itself carries: no script, no fetch, no remote font or image.
_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"


def _page(title: str, kicker: str, meta: Sequence[str], body: Sequence[str], footer: str) -> str:
    meta_html = "".join(f"<span>{item}</span>" for item in meta if item)
    return "\n".join([
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        '<meta name="color-scheme" content="light dark">',
        '<meta name="generator" content="leadflow">',
        f"<title>{_esc(title)}</title>",
        f"<style>{_CSS}</style>",
        "</head>",
        "<body>",
        "<main>",
        "<header>",
        f'<p class="kicker">{_esc(kicker)}</p>',
        f"<h1>{_esc(title)}</h1>",
        f'<p class="meta">{meta_html}</p>',
        "</header>",
        *body,
        f"<footer>{footer}</footer>",
        "</main>",
        "</body>",
        "</html>",
        "",
    ])


# --------------------------------------------------------------------------- charts

# Colours the page re-themes: in the SVG they become CSS variables, so the charts follow
# dark mode. No data colour may equal one of these.
_FG, _MUTED, _GRID = "#1f2328", "#59636e", "#d1d9e0"
_THEMED = {_FG: "var(--fg, #1f2328)", _MUTED: "var(--muted, #59636e)", _GRID: "var(--grid, #d1d9e0)"}

# Data colours that read on a light and on a dark background; blue against orange stays
# apart for the common colour blindnesses.
BLUE, ORANGE, GREY = "#2f7ec2", "#e08a1e", "#8c959f"
MQL_COLOUR, SQL_COLOUR = "#56a8e0", "#8a5fd1"
UP, DOWN, SAME = BLUE, ORANGE, GREY

_RC = {
    "svg.fonttype": "none",
    "svg.image_inline": True,
    "text.parse_math": False,  # a "$" in a label from the data is a dollar sign, not TeX
    "font.family": "sans-serif",
    "font.sans-serif": ["DejaVu Sans"],  # measures the text; the page's font stack shows it
    "font.size": 9.5,
    "axes.labelsize": 9.5,
    "xtick.labelsize": 9,
    "ytick.labelsize": 9,
    "legend.fontsize": 9,
    "text.color": _FG,
    "axes.labelcolor": _FG,
    "axes.edgecolor": _MUTED,
    "axes.linewidth": 0.8,
    "xtick.color": _MUTED,
    "ytick.color": _MUTED,
    "xtick.labelcolor": _FG,
    "ytick.labelcolor": _FG,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.axisbelow": True,
    "axes.grid": False,
    "grid.color": _GRID,
    "grid.linewidth": 0.8,
    "figure.facecolor": "none",
    "axes.facecolor": "none",
    "savefig.facecolor": "none",
    "savefig.edgecolor": "none",
    "legend.frameon": False,
    "axes.titlesize": 10,
    "axes.labelpad": 6,
}


def _matplotlib() -> Any:
    try:
        import matplotlib
    except ImportError as exc:
        raise MissingReportDependency(
            f"HTML reports draw their charts with matplotlib, which is not installed: {INSTALL_HINT}"
        ) from exc
    return matplotlib


def _draw(name: str, label: str, size: tuple[float, float], paint: Callable[[Any], dict | None]) -> str:
    """Run `paint(figure)` and return the figure as an inline <svg> element.

    `paint` may return margins in inches (`right`, `top`) to keep free, e.g. for a legend
    beside the plot. The margins around the axes are fitted to their labels here, without
    a layout engine: that would draw every figure twice."""
    matplotlib = _matplotlib()
    from matplotlib.backends.backend_svg import FigureCanvasSVG
    from matplotlib.figure import Figure

    with matplotlib.rc_context({**_RC, "svg.hashsalt": f"leadflow-{name}"}):
        figure = Figure(figsize=size)
        FigureCanvasSVG(figure)
        try:
            _fit(figure, **(paint(figure) or {}))
            buffer = io.StringIO()
            figure.savefig(buffer, format="svg", metadata={"Date": None})
        finally:
            figure.clear()
    return _inline_svg(buffer.getvalue(), name, label)


def _text_inches(text: str, points: float) -> float:
    """About how wide `text` is in DejaVu Sans at `points` (the font the charts are measured in)."""
    ems = 0.0
    for char in text:
        if char in ",.:;!|' ":
            ems += 0.32
        elif char in "%":
            ems += 0.95
        elif char in "→–—":
            ems += 0.84
        elif char.isupper():
            ems += 0.72
        else:
            ems += 0.62
    return ems * points / 72


def _fit(figure: Any, *, right: float = 0.3, top: float = 0.12) -> None:
    """Margins (inches) that leave room for the tick labels and axis labels of the one axes."""
    width, height = figure.get_size_inches()
    ax = figure.axes[0]
    tick_points = ax.yaxis.get_ticklabels()[0].get_fontsize() if ax.yaxis.get_ticklabels() else 9
    labels = [t.get_text() for t in ax.yaxis.get_ticklabels() if t.get_visible()]
    left = max((_text_inches(t, tick_points) for t in labels), default=0.0) + 0.16
    if ax.get_ylabel():
        left += 0.26
    bottom = 0.14 + tick_points / 72 + (0.28 if ax.get_xlabel() else 0.0)
    left, bottom = left + 0.06, bottom + 0.04
    figure.subplots_adjust(left=left / width, bottom=bottom / height,
                           right=1 - right / width, top=1 - top / height)


def _inline_svg(svg: str, name: str, label: str) -> str:
    """matplotlib's SVG document as an element of the page: no prolog, metadata or ids that
    repeat from chart to chart, the page's fonts and theme colours, and an accessible name."""
    svg = svg[svg.index("<svg"):]
    svg = re.sub(r"<metadata>.*?</metadata>\s*", "", svg, flags=re.DOTALL)
    svg = re.sub(r"<style[^>]*>.*?</style>\s*", "", svg, flags=re.DOTALL)  # the page's CSS says the same
    svg = re.sub(r"<defs>\s*</defs>\s*", "", svg)
    svg = re.sub(r'<g id="[^"]*"', "<g", svg)  # ids such as "figure_1" repeat in every chart
    svg = re.sub(r' transform="rotate\(-?0 [^"]*\)"', "", svg)  # a no-op on every label
    svg = re.sub(r'style="([^"]*)"', _restyle, svg)
    svg = re.sub(r"\n\s+", "\n", svg)
    end = svg.index(">")
    view_box = re.search(r'viewBox="([^"]*)"', svg[:end])
    opening = (f'<svg class="chart" id="chart-{name}" viewBox="{view_box.group(1) if view_box else ""}" '
               f'role="img" aria-label="{_esc(label)}" version="1.1">\n<title>{_esc(label)}</title>')
    return opening + svg[end + 1:].rstrip()


def _restyle(match: re.Match) -> str:
    """One style attribute: the page's font stack instead of matplotlib's, and the themed
    colours as CSS variables (with the light colour as fallback)."""
    rules = [rule.strip() for rule in match.group(1).split(";")]
    rules = [rule for rule in rules if rule and not rule.startswith("font-family:")]
    style = "; ".join(rules)
    for colour, themed in _THEMED.items():
        style = style.replace(colour, themed)
    return f'style="{style}"'


def _score_axes(ax: Any, edges: list[float], open_top: bool, first: list[int], second: list[int]) -> None:
    """The axes of a score histogram of two series: scores across, leads up, the open
    last band marked."""
    ax.set_xlim(edges[0], edges[-1])
    ax.set_ylim(0, max(first + second) * 1.12 or 1)
    ax.set_xlabel("Score")
    ax.set_ylabel("Leads")
    _int_axis(ax.yaxis)
    _y_grid(ax)
    if open_top:
        _mark_open_top(ax, edges, max(first[-1], second[-1]))


def _mark_open_top(ax: Any, edges: Sequence[float], height: float) -> None:
    """Say on the chart that the last band also holds the few scores beyond the axis."""
    ax.annotate("and above", (edges[-1], height), xytext=(-2, 3), textcoords="offset points",
                ha="right", va="bottom", fontsize=8, color=_MUTED)


def _percent_axis(axis: Any, digits: int = 0) -> None:
    from matplotlib.ticker import FuncFormatter

    axis.set_major_formatter(FuncFormatter(lambda value, _pos: f"{value * 100:.{digits}f} %"))


def _y_grid(ax: Any) -> None:
    ax.grid(axis="y", color=_GRID, linewidth=0.8)
    ax.tick_params(axis="both", length=3)


LEGEND_ABOVE = {"top": 0.42}  # inches above the axes for a legend drawn there


def _legend_above(ax: Any, handles: Sequence[Any] | None = None) -> dict:
    """A legend in one row above the plot, where it never hides a bar or a line."""
    kwargs = {"handles": handles} if handles is not None else {}
    count = len(handles) if handles is not None else len(ax.get_legend_handles_labels()[0])
    ax.legend(**kwargs, loc="lower left", bbox_to_anchor=(0, 1.02), ncols=max(count, 1), borderaxespad=0.2,
              handlelength=1.6, columnspacing=1.6)
    return LEGEND_ABOVE


def _int_axis(axis: Any, bins: int = 6) -> None:
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    axis.set_major_locator(MaxNLocator(nbins=bins, steps=[1, 2, 2.5, 5, 10], integer=True))
    axis.set_major_formatter(FuncFormatter(lambda value, _pos: f"{value:,.0f}"))


# --------------------------------------------------------------------------- backtest page

_LABEL_SOURCES = {
    "won": ("Won (recorded by sales or an import)", "converted"),
    "customer": ("Customer stage", "converted"),
    "lost": ("Lost (recorded by sales or an import)", "not converted"),
    "rejected": ("Rejected by sales", "not converted"),
    "disqualified": ("Disqualified by sales", "not converted"),
    "csv": ("outcomes.csv", "either"),
}


def _criteria_sentence(stage: str, figures: dict[str, Any]) -> str:
    volume, share = figures.get("volume"), figures.get("share")
    precision, recall = figures.get("precision"), figures.get("recall")
    if _missing(volume):
        return f"At the {stage} criteria there is not enough data to say how many leads qualify."
    qualify = f"{_int(volume)} {'lead' if volume == 1 else 'leads'}"
    if not _missing(share):
        qualify += f" ({_pct(share)})"
    verb = "qualifies" if volume == 1 else "qualify"
    tail = []
    if not _missing(precision):
        tail.append(f"{_pct(precision, 0)} of them converted")
    if not _missing(recall):
        tail.append(f"{_pct(recall, 0)} of all conversions")
    sentence = f"At the {stage} criteria {qualify} {verb}"
    return sentence + ("; " + ", ".join(tail) if tail and volume else "") + "."


def _backtest_summary(result: dict[str, Any]) -> str:
    leads, labelled = result.get("leads"), result.get("labelled")
    converted, not_converted = result.get("converted"), result.get("not_converted")
    unlabelled = result.get("unlabelled")
    auc = result.get("auc")
    criteria = result.get("criteria") or {}
    rate = converted / labelled if not _missing(converted) and labelled else None

    cards = [_kpi("AUC", _esc(_number(auc)),
                  "0.5 is a coin toss, 1.0 a perfect order" if not _missing(auc)
                  else "needs converted and not converted leads"),
             _kpi("Conversion rate", _esc(_pct(rate)),
                  _esc(f"{_int(converted)} of {_int(labelled)} leads with an outcome"))]
    for key, figures in criteria.items():
        figures = figures or {}
        sub = (f"{_pct(figures.get('share'))} of leads \u00b7 {_pct(figures.get('precision'), 0)} converted "
               f"\u00b7 {_pct(figures.get('recall'), 0)} of conversions")
        cards.append(_kpi(f"{_stage(key)} volume", _esc(_int(figures.get("volume"))), _esc(sub)))

    source = result.get("outcomes_from")
    source_text = {None: "Outcomes are those on record.",
                   "records": "Outcomes are those recorded on the leads: won or lost, customer stage, "
                              "rejected or disqualified by sales."}.get(source, f"Outcomes come from {source}.")
    sentences = [(
        f"{_plural(leads, 'lead')} {'was' if leads == 1 else 'were'} scored; {_int(labelled)} "
        f"{'has' if labelled == 1 else 'have'} a known outcome "
        f"({_int(converted)} converted, {_int(not_converted)} did not) and {_int(unlabelled)} "
        f"{'is' if unlabelled == 1 else 'are'} still open. {source_text}"
    )]
    if _missing(auc):
        sentences.append("The AUC needs leads that converted and leads that did not, so it is not given here.")
    else:
        sentences.append(f"AUC {_number(auc)}: a lead that converted, picked at random, outscores one that "
                         f"did not {_pct(auc)} of the time (0.5 would be a coin toss).")
    for key, figures in criteria.items():
        sentences.append(_criteria_sentence(_stage(key), figures or {}))
    paragraphs = "\n".join(f"<p>{_esc(s)}</p>" for s in sentences)
    return ('<section class="summary" aria-label="Summary">\n<dl class="kpis">\n' + "\n".join(cards)
            + f"\n</dl>\n{paragraphs}\n</section>")


def _distribution_section(result: dict[str, Any]) -> str:
    scores = result.get("scores") or {}
    converted = _finite(scores.get("converted"))
    not_converted = _finite(scores.get("not_converted"))
    lede = ("How scores spread among leads that converted and leads that did not. "
            "The less the two overlap, the better the score tells them apart.")
    if not converted and not not_converted:
        return _section("distribution", "Score distribution by outcome", lede, None,
                        "No scored lead has a known outcome yet, so there is no distribution to compare.", [])
    edges, open_top = _bin_edges(converted + not_converted)
    yes, no = _histogram(converted, edges), _histogram(not_converted, edges)
    median_yes = _quantile(sorted(converted), 0.5)
    median_no = _quantile(sorted(not_converted), 0.5)
    label = (f"Histogram of scores: {_int(len(converted))} leads that converted (median score "
             f"{_score(median_yes)}) and {_int(len(not_converted))} that did not (median {_score(median_no)}).")

    def paint(figure: Any) -> dict | None:
        ax = figure.add_subplot()
        handles = []
        for counts, colour, name in ((no, ORANGE, "Not converted"), (yes, BLUE, "Converted")):
            if sum(counts):
                ax.stairs(counts, edges, fill=True, color=colour, alpha=0.22, linewidth=0)
                handles.insert(0, ax.stairs(counts, edges, color=colour, linewidth=1.8,
                                            label=f"{name} ({sum(counts):,} leads)"))
        _score_axes(ax, edges, open_top, yes, no)
        return _legend_above(ax, handles)

    chart = _draw("distribution", label, (6.4, 3.8), paint)
    rows = []
    for i in range(len(edges) - 1):
        total = yes[i] + no[i]
        rate = yes[i] / total if total else None
        rows.append([_bin_label(edges, i, open_top), _int(yes[i]), _int(no[i]), _pct(rate, 0)])
    table = _table("Leads by score band", ["Score", "Converted", "Not converted", "Rate"], rows,
                   numeric=(0, 1, 2, 3), scroll=len(rows) > 14)
    if open_top:
        table += '\n<p class="note">The last band also holds the few highest scores.</p>'
    medians = _table("Median score", ["Outcome", "Leads", "Median"],
                     [["Converted", _int(len(converted)), _score(median_yes)],
                      ["Not converted", _int(len(not_converted)), _score(median_no)]], numeric=(1, 2))
    return _section("distribution", "Score distribution by outcome", lede, chart, "", [medians, table])


def _gain_section(result: dict[str, Any]) -> str:
    points = sorted(
        (float(p["share"]), float(p["captured"])) for p in result.get("gain") or ()
        if isinstance(p, dict) and not _missing(p.get("share")) and not _missing(p.get("captured"))
    )
    criteria = result.get("criteria") or {}
    converted, labelled = result.get("converted"), result.get("labelled")
    base = converted / labelled if not _missing(converted) and labelled else None

    criteria_rows = []
    markers = []
    for key, figures in criteria.items():
        figures = figures or {}
        criteria_rows.append([_stage(key), _int(figures.get("volume")), _pct(figures.get("share")),
                              _int(figures.get("converted")), _pct(figures.get("precision")),
                              _pct(figures.get("recall"))])
        share, recall = figures.get("share"), figures.get("recall")
        if _missing(recall) and not _missing(share):
            recall = _interpolate(points, share)
        if not _missing(share) and not _missing(recall):
            markers.append((_stage(key), float(share), float(recall)))
    lede = ("Contacting leads in score order, highest first: the share of all conversions reached after a given "
            "share of leads. The dashed diagonal is a random order, the dotted line a perfect one"
            + (f"; the dots mark the {_join([m[0] for m in markers])} criteria." if markers else "."))
    criteria_table = _table("At the criteria", ["Stage", "Leads", "Share", "Converted", "Precision", "Recall"],
                            criteria_rows, numeric=(1, 2, 3, 4, 5),
                            note="Precision: share of qualifying leads that converted. "
                                 "Recall: share of all conversions that qualified.") if criteria_rows else ""
    if len(points) < 2:
        return _section("gain", "Cumulative gain", lede, None,
                        "Not enough leads with a known outcome to draw a gain curve.", [criteria_table])

    marks = [0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0]
    gain_rows = []
    for share in marks:
        captured = _interpolate(points, share)
        lift = captured / share if captured is not None and share else None
        gain_rows.append([f"Top {_pct(share, 0)}", _pct(captured), "\u00d7" + _number(lift, 2) if lift else DASH])
    gain_table = _table("Conversions captured by the top-scored leads",
                        ["Leads contacted", "Conversions", "Lift"], gain_rows, numeric=(1, 2),
                        note="Lift: how many times better than contacting leads in random order.")
    at_20 = _interpolate(points, 0.2)
    label = (f"Cumulative gain curve: the top 20 % of leads by score hold {_pct(at_20, 0)} of conversions"
             + "".join(f"; {name} at {_pct(share, 0)} of leads captures {_pct(recall, 0)}"
                       for name, share, recall in markers) + ".")

    def paint(figure: Any) -> dict | None:
        ax = figure.add_subplot()
        handles = ax.plot([p[0] for p in points], [p[1] for p in points], color=BLUE, linewidth=2.2,
                          label="In score order", zorder=3)
        handles += ax.plot([0, 1], [0, 1], linestyle=(0, (4, 3)), color=GREY, linewidth=1.2, label="Random order")
        if base:
            handles += ax.plot([0, base, 1], [0, 1, 1], linestyle=(0, (1, 2)), color=GREY, linewidth=1.4,
                               label="Perfect order")
        colours = {"MQL": MQL_COLOUR, "SQL": SQL_COLOUR}
        for name, share, recall in markers:
            ax.plot([share], [recall], "o", color=colours.get(name, _FG), markersize=8, markeredgecolor=_FG,
                    markeredgewidth=0.8, zorder=4)
            right = share > 0.65
            ax.annotate(f"{name}: {share * 100:.0f} % of leads,\n{recall * 100:.0f} % of conversions",
                        (share, recall), xytext=(-12 if right else 12, -12), textcoords="offset points",
                        fontsize=8.5, va="top", ha="right" if right else "left", color=_FG)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        _percent_axis(ax.xaxis)
        _percent_axis(ax.yaxis)
        ax.set_xlabel("Leads contacted, highest scores first")
        ax.set_ylabel("Conversions captured")
        ax.grid(color=_GRID, linewidth=0.8)
        ax.tick_params(length=3)
        ax.legend(handles=handles, loc="lower right")

    chart = _draw("gain", label, (6.4, 4.3), paint)
    return _section("gain", "Cumulative gain", lede, chart, "", [criteria_table, gain_table])


def _deciles_section(result: dict[str, Any]) -> str:
    deciles = sorted((d for d in result.get("deciles") or () if isinstance(d, dict)),
                     key=lambda d: -(d.get("decile") or 0))
    converted, labelled = result.get("converted"), result.get("labelled")
    base = converted / labelled if not _missing(converted) and labelled else None
    lede = ("Leads split into ten equal groups by score; decile 10 holds the highest scores. "
            "A good score puts the high rates on the left and falls steadily to the right.")
    rows = [[_int(d.get("decile")), f"{_score(d.get('min_score'))}\u2013{_score(d.get('max_score'))}",
             _int(d.get("leads")), _int(d.get("converted")), _pct(d.get("rate"))] for d in deciles]
    table = _table("Conversion by score decile", ["Decile", "Scores", "Leads", "Converted", "Rate"], rows,
                   numeric=(0, 1, 2, 3, 4)) if rows else ""
    drawn = [d for d in deciles if not _missing(d.get("rate"))]
    if not drawn:
        return _section("deciles", "Conversion rate by score decile", lede, None,
                        "Not enough leads with a known outcome to compare deciles.", [table])
    label = ("Bar chart of conversion rate by score decile: "
             + ", ".join(f"decile {_int(d.get('decile'))} {_pct(d.get('rate'), 0)}" for d in drawn) + ".")

    def paint(figure: Any) -> dict | None:
        ax = figure.add_subplot()
        positions = {d.get("decile"): i for i, d in enumerate(deciles)}
        xs = [positions[d.get("decile")] for d in drawn]
        rates = [d["rate"] for d in drawn]
        bars = ax.bar(xs, rates, width=0.68, color=BLUE)
        ax.bar_label(bars, labels=[f"{r * 100:.0f} %" for r in rates], padding=2, fontsize=8.5, color=_FG)
        if base is not None:
            ax.axhline(base, color=_MUTED, linestyle=(0, (4, 3)), linewidth=1.1,
                       label=f"All leads with an outcome: {base * 100:.1f} %")
        ax.set_xticks(range(len(deciles)), [_int(d.get("decile")) for d in deciles])
        ax.set_xlabel("Score decile (10 = highest scores)")
        ax.set_ylabel("Conversion rate")
        ax.set_ylim(0, min(1.08, max(rates + [base or 0]) * 1.18) or 1)
        _percent_axis(ax.yaxis)
        _y_grid(ax)
        return _legend_above(ax) if base is not None else None

    chart = _draw("deciles", label, (6.4, 3.8), paint)
    return _section("deciles", "Conversion rate by score decile", lede, chart, "", [table])


def _weeks_section(result: dict[str, Any]) -> str:
    weeks = [w for w in result.get("weeks") or () if isinstance(w, dict)]
    lede = "How many leads these rules would have made MQL and SQL each week."
    if not weeks:
        return _section("weeks", "MQL and SQL volume per week", lede, None,
                        "There are no weekly figures for this backtest.", [])
    rows = [[str(w.get("week") or DASH), str(w.get("start") or DASH), _int(w.get("mql")), _int(w.get("sql"))]
            for w in weeks]
    table = _table("Volume per week", ["Week", "Starts", "MQL", "SQL"], rows, numeric=(2, 3), scroll=len(rows) > 14)
    mql = [0 if _missing(w.get("mql")) else w["mql"] for w in weeks]
    sql = [0 if _missing(w.get("sql")) else w["sql"] for w in weeks]
    label = (f"Bar chart of MQL and SQL volume for {_plural(len(weeks), 'week')} from {weeks[0].get('week')} "
             f"to {weeks[-1].get('week')}: {_int(sum(mql))} MQL and {_int(sum(sql))} SQL in all.")

    def paint(figure: Any) -> dict | None:
        ax = figure.add_subplot()
        xs = list(range(len(weeks)))
        if len(weeks) <= 20:
            width = 0.38
            ax.bar([x - width / 2 for x in xs], mql, width=width, color=MQL_COLOUR, label="MQL")
            ax.bar([x + width / 2 for x in xs], sql, width=width, color=SQL_COLOUR, label="SQL")
        else:
            ax.plot(xs, mql, color=MQL_COLOUR, linewidth=2, label="MQL")
            ax.plot(xs, sql, color=SQL_COLOUR, linewidth=2, label="SQL")
        every = max(1, math.ceil(len(weeks) / 10))
        ticks = xs[::every]
        ax.set_xticks(ticks, [_short_date(weeks[i].get("start")) or str(weeks[i].get("week") or "")
                              for i in ticks])
        ax.set_xlim(-0.6, len(weeks) - 0.4)
        ax.set_xlabel("Week starting")
        ax.set_ylabel("Leads")
        ax.set_ylim(0, max(mql + sql + [1]) * 1.12)
        _int_axis(ax.yaxis)
        _y_grid(ax)
        return _legend_above(ax)

    chart = _draw("weeks", label, (6.4, 3.7), paint)
    return _section("weeks", "MQL and SQL volume per week", lede, chart, "", [table])


def _labels_section(result: dict[str, Any]) -> str:
    sources = result.get("label_sources") or {}
    total = sum(v for v in sources.values() if not _missing(v))
    rows = []
    for key, count in sources.items():
        name, counts_as = _LABEL_SOURCES.get(key, (str(key), DASH))
        rows.append([name, counts_as, _int(count), _pct(count / total if total and not _missing(count) else None)])
    sources_table = (_table("Where the outcomes come from", ["Source", "Counts as", "Leads", "Share"], rows,
                            numeric=(2, 3)) if rows else _empty("No lead has a known outcome."))
    reasons = sorted(((str(k), v) for k, v in (result.get("reject_reasons") or {}).items()),
                     key=lambda item: (-(item[1] or 0), item[0]))
    reasons_table = (_table("Reasons sales gave for rejecting", ["Reason", "Leads"],
                            [[k, _int(v)] for k, v in reasons], numeric=(1,), scroll=len(reasons) > 14)
                     if reasons else '<p class="note">Sales gave no reason for a rejection.</p>')
    return ('<section id="labels" aria-labelledby="labels-title">\n<h2 id="labels-title">Outcomes</h2>\n'
            '<p class="lede">Which leads count as converted, and how that is known.</p>\n'
            f'<div class="figure">\n<div>{sources_table}</div>\n<div>{reasons_table}</div>\n</div>\n</section>')


def backtest_page(result: dict) -> str:
    """The `leadflow backtest --html` page: how well the rules' score and criteria would have
    picked the leads that converted."""
    _matplotlib()
    title = str(result.get("title") or "Backtest")
    meta = [
        f"Rules {_esc(result.get('rules_version') or DASH)}",
        f"Scored as of {_when(result.get('as_of'))}",
        f"{_esc(_plural(result.get('leads'), 'lead'))}",
    ]
    body = [
        _backtest_summary(result),
        _distribution_section(result),
        _gain_section(result),
        _deciles_section(result),
        _weeks_section(result),
        _labels_section(result),
    ]
    footer = f"Generated by <code>leadflow backtest</code> on {_when(result.get('generated_at'))}."
    return _page(title, "Backtest", meta, body, footer)


# --------------------------------------------------------------------------- diff page


def _moves(result: dict[str, Any]) -> list[tuple[str, int]]:
    moves = [(str(k), v) for k, v in (result.get("moves") or {}).items() if not _missing(v) and v]
    return sorted(moves, key=lambda item: -item[1])


def _alerts_sentence(alerts: dict[str, Any] | None) -> str:
    if not alerts:
        return ""
    count, summary = alerts.get("alerts") or 0, alerts.get("summary") or 0
    if alerts.get("announce"):
        text = f"With announce on, sales gets {_plural(count, 'alert')}"
        if summary:
            text += f" and {_words(summary)} summary {'message' if summary == 1 else 'messages'}"
        return text + "."
    if not count and not summary:
        return "With announce off, sales gets no message."
    messages = f"{_words(summary)} summary {'message' if summary == 1 else 'messages'}"
    if count:
        return f"With announce off, sales gets {messages} instead of {_plural(count, 'alert')}."
    return f"With announce off, sales gets {messages}."


def _volume_phrase(stage: str, figures: dict[str, Any], first: bool) -> str:
    before, after = figures.get("before"), figures.get("after")
    if _missing(before) or _missing(after):
        return f"{stage} volume: {DASH}"
    change = after - before
    if not change:
        return f"{stage} volume stays at {_int(before)}" if first else f"{stage} stays at {_int(before)}"
    detail = _signed(change, _int)
    if before:
        detail += ", " + _signed(change / before * 100, _whole) + NBSP + "%"
    lead = f"{stage} volume goes" if first else stage
    return f"{lead} from {_int(before)} to {_int(after)} ({detail})"


def _diff_summary(result: dict[str, Any]) -> str:
    moves = _moves(result)
    moved = result.get("moved_leads")
    if _missing(moved):
        moved = sum(v for _, v in moves)
    volume = result.get("volume") or {}
    alerts = result.get("alerts")
    score, grade = result.get("score") or {}, result.get("grade") or {}
    below = {k: v for k, v in (result.get("below_criteria") or {}).items() if not _missing(v)}

    cards = [_kpi("Would move forward", _esc(_int(moved)), _esc(f"of {_plural(result.get('leads'), 'lead')}"))]
    for key, figures in volume.items():
        figures = figures or {}
        change = (figures.get("after") - figures.get("before")
                  if not _missing(figures.get("after")) and not _missing(figures.get("before")) else None)
        cards.append(_kpi(f"{_stage(key)} volume",
                          _esc(f"{_int(figures.get('before'))} {ARROW} {_int(figures.get('after'))}"),
                          _esc(f"{_signed(change, _int)} leads") if change is not None else ""))
    if alerts:
        if alerts.get("announce"):
            cards.append(_kpi("Sales alerts", _esc(_int(alerts.get("alerts"))), "announce on"))
        else:
            instead = f": instead of {_plural(alerts.get('alerts'), 'alert')}" if alerts.get("alerts") else ""
            cards.append(_kpi("Summary messages to sales", _esc(_int(alerts.get("summary"))),
                              _esc(f"announce off{instead}")))

    sentences = []
    if moved:
        parts = [f"{_int(v)} {_move_label(k)}" for k, v in moves]
        sentences.append(f"{_plural(moved, 'lead')} would move forward"
                         + (": " + _join(parts) if parts else "") + ".")
    else:
        sentences.append("No lead would move to another stage.")
    alert_text = _alerts_sentence(alerts)
    if alert_text:
        sentences.append(alert_text)
    if score:
        text = (f"Scores go up for {_plural(score.get('up'), 'lead')}, down for {_int(score.get('down'))} "
                f"and stay the same for {_int(score.get('same'))}")
        if grade:
            text += (f"; grades go up for {_int(grade.get('up'))}, down for {_int(grade.get('down'))} "
                     f"and stay the same for {_int(grade.get('same'))}")
        sentences.append(text + ".")
    if volume:
        phrases = [_volume_phrase(_stage(k), v or {}, i == 0) for i, (k, v) in enumerate(volume.items())]
        sentences.append("; ".join(phrases) + ".")
    if below:
        nonzero = [(k, v) for k, v in below.items() if v]
        if nonzero:
            total = sum(v for _, v in nonzero)
            where = _join([f"{_int(v)} at {_stage(k)}" for k, v in nonzero])
            sentences.append(
                f"Under the new rules {_plural(total, 'lead')} already in a stage no longer "
                f"{'meets' if total == 1 else 'meet'} the stage's criteria ({where}); they stay where they are, "
                "because automatic moves only go forward.")
        else:
            sentences.append("Every lead already in a stage still meets its criteria under the new rules.")
    paragraphs = "\n".join(f"<p>{_esc(s)}</p>" for s in sentences)

    changes = [c for c in result.get("rule_changes") or () if c is not None]
    if changes:
        change_list = ("<h2>What changes in the rules</h2>\n<ul class=\"changes\">\n"
                       + "\n".join(f"<li>{_esc(c)}</li>" for c in changes) + "\n</ul>")
    else:
        change_list = ('<h2>What changes in the rules</h2>\n'
                       '<p class="note">No rule differs between the two versions.</p>')
    return ('<section class="summary" aria-label="Summary">\n<dl class="kpis">\n' + "\n".join(cards)
            + f"\n</dl>\n{paragraphs}\n</section>\n<section id=\"changes\">\n{change_list}\n</section>")


def _score_pairs(result: dict[str, Any]) -> list[tuple[float, float]]:
    pairs = []
    for pair in result.get("score_pairs") or ():
        try:
            before, after = pair
        except (TypeError, ValueError):
            continue
        values = _finite([before, after])
        if len(values) == 2:
            pairs.append((values[0], values[1]))
    return pairs


def _scatter_cells(pairs: Sequence[tuple[float, float]], low: float, high: float
                   ) -> tuple[list[tuple[float, float, int, int]], int]:
    """Pairs merged on a fine grid: one dot per cell and direction (score up, down or the
    same), sized by its leads. At most MAX_POINTS dots, the busiest, ties broken by position,
    so the same input draws the same dots. Also: how many dots were left out."""
    step = (high - low) / 200 if high > low else 1.0
    cells: dict[tuple[int, int, int], int] = {}
    for before, after in pairs:
        key = (round((before - low) / step), round((after - low) / step), (after > before) - (after < before))
        cells[key] = cells.get(key, 0) + 1
    ordered = sorted(cells.items(), key=lambda item: (-item[1], item[0]))
    kept = [(low + x * step, low + y * step, count, direction) for (x, y, direction), count in ordered[:MAX_POINTS]]
    return kept, max(0, len(ordered) - MAX_POINTS)


LEGEND_WIDTH = 1.5  # inches beside the scatter plot for its legends

_SIZE_CLASSES = ((1, 1, 3.2, "1 lead"), (2, 4, 4.6, "2\u20134"), (5, 19, 6.2, "5\u201319"),
                 (20, 99, 8.2, "20\u201399"), (100, math.inf, 10.5, "100 or more"))


def _scatter_section(result: dict[str, Any], pairs: list[tuple[float, float]]) -> str:
    score = result.get("score") or {}
    grade = result.get("grade") or {}
    lede = ("Each lead's score under the current rules (across) and the proposed ones (up). "
            "Dots above the diagonal gain points, dots below lose them; a bigger dot stands for more leads.")
    change_rows = [[name, _int(score.get(key)), _int(grade.get(key))]
                   for key, name in (("up", "Up"), ("down", "Down"), ("same", "Unchanged"))]
    change_table = _table("Leads whose score and grade change", ["Change", "Score", "Grade"], change_rows,
                          numeric=(1, 2)) if score or grade else ""
    if not pairs:
        return _section("scores", "Score before and after", lede, None,
                        "There are no scores to compare.", [change_table])
    values = [v for pair in pairs for v in pair]
    low, high = min(values), max(values)
    cells, left_out = _scatter_cells(pairs, low, high)
    up = sum(1 for b, a in pairs if a > b)
    down = sum(1 for b, a in pairs if a < b)
    label = (f"Scatter plot of {_plural(len(pairs), 'lead')}: score under the current rules across, under the "
             f"proposed rules up; {_int(up)} score higher, {_int(down)} lower, "
             f"{_int(len(pairs) - up - down)} the same.")
    note = "In the chart, leads with nearly the same scores share a dot."
    if left_out:
        note = f"The chart draws the {MAX_POINTS:,} busiest dots and leaves out {_int(left_out)} lone ones."

    def paint(figure: Any) -> dict | None:
        from matplotlib.lines import Line2D

        ax = figure.add_subplot()
        pad = (high - low) * 0.04 or 1.0
        ax.plot([low - pad, high + pad], [low - pad, high + pad], color=_MUTED, linewidth=1,
                linestyle=(0, (4, 3)), zorder=1)
        groups = (("Up", UP, 1), ("Down", DOWN, -1), ("Unchanged", SAME, 0))
        for _, colour, direction in groups:
            for smallest, largest, size, _ in _SIZE_CLASSES:
                chosen = [(b, a) for b, a, n, d in cells if d == direction and smallest <= n <= largest]
                if chosen:
                    ax.plot([c[0] for c in chosen], [c[1] for c in chosen], "o", linestyle="none",
                            markersize=size, color=colour, alpha=0.55, markeredgewidth=0, zorder=2)
        ax.set_xlim(low - pad, high + pad)
        ax.set_ylim(low - pad, high + pad)
        ax.set_aspect("equal", adjustable="box")
        ax.set_anchor("W")
        ax.set_xlabel(f"Score, current rules ({(result.get('current') or {}).get('version') or 'current'})")
        ax.set_ylabel(f"Score, proposed rules ({(result.get('proposed') or {}).get('version') or 'proposed'})")
        ax.grid(color=_GRID, linewidth=0.8)
        ax.tick_params(length=3)
        colours = [Line2D([], [], marker="o", linestyle="none", color=c, markersize=7, markeredgewidth=0, label=n)
                   for n, c, _ in groups]
        counts = {n for _, _, n, _ in cells}
        sizes = [Line2D([], [], marker="o", linestyle="none", color=GREY, markersize=s, markeredgewidth=0, label=t)
                 for lo, hi, s, t in _SIZE_CLASSES if any(lo <= n <= hi for n in counts)]
        width, height = figure.get_size_inches()
        anchor = 1 - (LEGEND_WIDTH - 0.05) / width
        first = figure.legend(handles=colours, title="Score", loc="upper left", alignment="left",
                              bbox_to_anchor=(anchor, 1 - 0.1 / height))
        first.get_title().set_color(_FG)
        if len(sizes) > 1:
            second = figure.legend(handles=sizes, title="Leads per dot", loc="upper left", alignment="left",
                                   labelspacing=0.9, bbox_to_anchor=(anchor, 0.56))
            second.get_title().set_color(_FG)
        return {"right": LEGEND_WIDTH}

    chart = _draw("scores", label, (6.2, 4.5), paint)
    after_values = sorted(a for _, a in pairs)
    before_values = sorted(b for b, _ in pairs)
    stats = [(name, q) for name, q in (("Lowest", 0.0), ("25th percentile", 0.25), ("Median", 0.5),
                                       ("75th percentile", 0.75), ("Highest", 1.0))]
    stat_rows = [[name, _score(_quantile(before_values, q)), _score(_quantile(after_values, q))] for name, q in stats]
    stat_rows.append(["Mean", _score(sum(before_values) / len(before_values), 1),
                      _score(sum(after_values) / len(after_values), 1)])
    stats_table = _table("Scores of all leads", ["Score", "Current", "Proposed"], stat_rows, numeric=(1, 2),
                         note=note)
    return _section("scores", "Score before and after", lede, chart, "", [change_table, stats_table])


def _shift_section(result: dict[str, Any], pairs: list[tuple[float, float]]) -> str:
    lede = "How many leads fall in each score band under the current and the proposed rules."
    if not pairs:
        return _section("shift", "Score distribution, current and proposed", lede, None,
                        "There are no scores to compare.", [])
    before = [b for b, _ in pairs]
    after = [a for _, a in pairs]
    edges, open_top = _bin_edges(before + after)
    counts_before, counts_after = _histogram(before, edges), _histogram(after, edges)
    label = (f"Histogram of {_plural(len(pairs), 'lead')}' scores under the current and the proposed rules; "
             f"median {_score(_quantile(sorted(before), 0.5))} before and "
             f"{_score(_quantile(sorted(after), 0.5))} after.")
    current = (result.get("current") or {}).get("version") or "current"
    proposed = (result.get("proposed") or {}).get("version") or "proposed"

    def paint(figure: Any) -> dict | None:
        ax = figure.add_subplot()
        ax.stairs(counts_before, edges, fill=True, color=GREY, alpha=0.28, linewidth=0)
        ax.stairs(counts_before, edges, color=GREY, linewidth=1.8, label=f"Current ({current})")
        ax.stairs(counts_after, edges, fill=True, color=BLUE, alpha=0.16, linewidth=0)
        ax.stairs(counts_after, edges, color=BLUE, linewidth=1.8, label=f"Proposed ({proposed})")
        _score_axes(ax, edges, open_top, counts_before, counts_after)
        return _legend_above(ax)

    chart = _draw("shift", label, (6.4, 3.7), paint)
    rows = [[_bin_label(edges, i, open_top), _int(counts_before[i]), _int(counts_after[i]),
             _signed(counts_after[i] - counts_before[i], _int)] for i in range(len(edges) - 1)]
    table = _table("Leads by score band", ["Score", "Current", "Proposed", "Change"], rows,
                   numeric=(0, 1, 2, 3), scroll=len(rows) > 14)
    if open_top:
        table += '\n<p class="note">The last band also holds the few highest scores.</p>'
    return _section("shift", "Score distribution, current and proposed", lede, chart, "", [table])


def _moves_section(result: dict[str, Any]) -> str:
    moves = _moves(result)
    lede = "Leads the proposed rules would move forward now, by the stage they leave and the stage they reach."
    if not moves:
        return _section("moves", "Moves by stage", lede, None,
                        "No lead would move forward, so there is nothing to chart.", [])
    rows = [[_move(k)[0], _move(k)[1] or DASH, _int(v)] for k, v in moves]
    total = sum(v for _, v in moves)
    rows.append([Markup("<strong>All moves</strong>"), "", Markup(f"<strong>{_esc(_int(total))}</strong>")])
    table = _table("Leads moving forward", ["From", "To", "Leads"], rows, numeric=(2,))
    label = "Horizontal bar chart of leads moving forward: " + ", ".join(
        f"{_move_label(k)} {_int(v)}" for k, v in moves) + "."

    def paint(figure: Any) -> dict | None:
        ax = figure.add_subplot()
        ys = list(range(len(moves)))[::-1]
        bars = ax.barh(ys, [v for _, v in moves], height=0.6, color=BLUE)
        ax.bar_label(bars, labels=[f"{v:,}" for _, v in moves], padding=4, fontsize=9, color=_FG)
        ax.set_yticks(ys, [_move_label(k) for k, _ in moves])
        ax.set_xlim(0, max(v for _, v in moves) * 1.15)
        ax.set_xlabel("Leads")
        _int_axis(ax.xaxis, bins=4)
        ax.grid(axis="x", color=_GRID, linewidth=0.8)
        ax.tick_params(length=3)
        ax.tick_params(axis="y", length=0)

    chart = _draw("moves", label, (6.4, max(1.7, 0.9 + 0.45 * len(moves))), paint)
    return _section("moves", "Moves by stage", lede, chart, "", [table])


def _volume_section(result: dict[str, Any]) -> str:
    volume = [(str(k), v or {}) for k, v in (result.get("volume") or {}).items()]
    current = (result.get("current") or {}).get("version") or "current"
    proposed = (result.get("proposed") or {}).get("version") or "proposed"
    lede = "Leads at each stage now and if the proposed rules were applied today."
    if not volume:
        return _section("volume", "Volume before and after", lede, None, "There are no stage volumes to compare.", [])
    rows = []
    for key, figures in volume:
        before, after = figures.get("before"), figures.get("after")
        change = after - before if not _missing(before) and not _missing(after) else None
        pct = change / before if change is not None and before else None
        rows.append([_stage(key), _int(before), _int(after), _signed(change, _int),
                     _signed(pct * 100, _number_1) + NBSP + "%" if pct is not None else DASH])
    table = _table("Volume by stage", ["Stage", "Current", "Proposed", "Change", "Change %"], rows,
                   numeric=(1, 2, 3, 4))
    drawable = [(k, f) for k, f in volume if not _missing(f.get("before")) or not _missing(f.get("after"))]
    if not drawable:
        return _section("volume", "Volume before and after", lede, None, "The volumes are not known.", [table])
    label = "Grouped bar chart of volume by stage, current and proposed: " + "; ".join(
        f"{_stage(k)} {_int(f.get('before'))} to {_int(f.get('after'))}" for k, f in drawable) + "."

    def paint(figure: Any) -> dict | None:
        ax = figure.add_subplot()
        xs = list(range(len(drawable)))
        width = 0.36
        before = [0 if _missing(f.get("before")) else f["before"] for _, f in drawable]
        after = [0 if _missing(f.get("after")) else f["after"] for _, f in drawable]
        first = ax.bar([x - width / 2 for x in xs], before, width=width, color=GREY, label=f"Current ({current})")
        second = ax.bar([x + width / 2 for x in xs], after, width=width, color=BLUE, label=f"Proposed ({proposed})")
        ax.bar_label(first, labels=[_int(f.get("before")) for _, f in drawable], padding=2, fontsize=9, color=_FG)
        ax.bar_label(second, labels=[_int(f.get("after")) for _, f in drawable], padding=2, fontsize=9, color=_FG)
        ax.set_xticks(xs, [_stage(k) for k, _ in drawable])
        ax.set_xlim(-0.8, len(xs) - 0.2)
        ax.set_ylim(0, max(before + after + [1]) * 1.18)
        ax.set_ylabel("Leads")
        _int_axis(ax.yaxis)
        _y_grid(ax)
        ax.tick_params(axis="x", length=0)
        return _legend_above(ax)

    chart = _draw("volume", label, (6.4, 3.5), paint)
    return _section("volume", "Volume before and after", lede, chart, "", [table])


def _examples_section(result: dict[str, Any]) -> str:
    examples = [e for e in result.get("examples") or () if isinstance(e, dict)]
    moved = result.get("moved_leads")
    lede = "Leads that would move, with the rules whose points changed for them."
    head = '<section id="examples" aria-labelledby="examples-title">\n<h2 id="examples-title">Examples</h2>'
    if not examples:
        nothing = _empty("No lead would move, so there is no example.")
        return f'{head}\n<p class="lede">{_esc(lede)}</p>\n{nothing}\n</section>'
    rows = []
    for example in examples:
        label, lead_id = example.get("label"), example.get("lead_id")
        who = f"<strong>{_esc(label)}</strong><br>" if label else ""
        who += f'<span class="id">{_esc(lead_id)}</span>' if lead_id else ""
        move = f"{_esc(_stage(example.get('from')))} {ARROW} {_esc(_stage(example.get('to')))}"
        before, after = example.get("score_before"), example.get("score_after")
        change = after - before if not _missing(before) and not _missing(after) else None
        score = f"{_esc(_score(before))} {ARROW} {_esc(_score(after))}"
        if change:
            score += f' <span class="{"up" if change > 0 else "down"}">({_esc(_signed(change))})</span>'
        items = []
        for rule in example.get("rules") or ():
            if not isinstance(rule, dict):
                continue
            r_before, r_after = rule.get("before"), rule.get("after")
            r_change = r_after - r_before if not _missing(r_before) and not _missing(r_after) else None
            delta = f" ({_esc(_signed(r_change))})" if r_change else ""
            items.append(f"<li><code>{_esc(rule.get('rule'))}</code> {_esc(_score(r_before))} {ARROW} "
                         f"{_esc(_score(r_after))}{delta}</li>")
        rules = f'<ul class="rules">{"".join(items)}</ul>' if items else DASH
        rows.append([Markup(who or DASH), Markup(move), Markup(score), Markup(rules)])
    note = ""
    if not _missing(moved) and moved > len(examples):
        note = f"{len(examples):,} of the {moved:,} leads that would move."
    table = _table("Leads that would move", ["Lead", "Move", "Score", "Points by rule, current \u2192 proposed"],
                   rows, numeric=(2,), note=note)
    return f'{head}\n<p class="lede">{_esc(lede)}</p>\n{table}\n</section>'


def diff_page(result: dict) -> str:
    """The `leadflow rules diff --html` page: what the proposed rules would change, lead by lead."""
    _matplotlib()
    current = (result.get("current") or {}).get("version")
    proposed = (result.get("proposed") or {}).get("version")
    title = str(result.get("title") or f"Rules {current or 'current'} {ARROW} {proposed or 'proposed'}")
    pairs = _score_pairs(result)
    meta = [
        f"Current {_esc(current or DASH)}",
        f"Proposed {_esc(proposed or DASH)}",
        f"{_esc(_plural(result.get('leads'), 'lead'))} as of {_when(result.get('as_of'))}",
    ]
    body = [
        _diff_summary(result),
        _moves_section(result),
        _volume_section(result),
        _scatter_section(result, pairs),
        _shift_section(result, pairs),
        _examples_section(result),
    ]
    footer = f"Generated by <code>leadflow rules diff</code> on {_when(result.get('generated_at'))}."
    return _page(title, "Rules diff", meta, body, footer)


def write(path: str | Path, page: str) -> None:
    """Write a page as UTF-8, creating the folders it goes in."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(page.encode("utf-8"))
