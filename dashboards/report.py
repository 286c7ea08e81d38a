"""A self-contained HTML performance report with charts, and the same charts as PNG files.

Charts are drawn with matplotlib (Agg, no display) and embedded in the HTML as
base64 PNG `<img>`s, so the file needs nothing else to open. A small script in
the page sets `data-charts-loaded` on `<body>` to the number of charts that
decoded, which the headless-Chromium test reads.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import io
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from dashboards.analytics import CONVENTIONS, Performance, PerformanceStats
from dashboards.progress import Progress

CHARTS = ("equity", "drawdown", "pnl_by_strategy", "pnl_by_symbol", "fills_over_time")


@dataclass
class Chart:
    name: str
    title: str
    png: bytes


def _figure() -> tuple[object, object]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 3.6), dpi=100)
    ax.grid(True, alpha=0.3)
    return fig, ax


def _png(fig: object) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.tight_layout()  # type: ignore[attr-defined]
    fig.savefig(buf, format="png")  # type: ignore[attr-defined]
    plt.close(fig)  # type: ignore[arg-type]
    return buf.getvalue()


def _times(ts_ns: np.ndarray) -> list[dt.datetime]:
    return [dt.datetime.fromtimestamp(t / 1e9, dt.timezone.utc) for t in ts_ns.tolist()]


def equity_chart(perf: Performance) -> bytes:
    fig, ax = _figure()
    for key, curve in perf.curves.items():
        if key == "total" or key.startswith("strategy:"):
            ax.step(_times(curve.ts_ns), curve.equity, where="post", label=key.removeprefix("strategy:"),  # type: ignore[attr-defined]
                    linewidth=2.0 if key == "total" else 1.0)
    ax.set_ylabel("net P&L")  # type: ignore[attr-defined]
    ax.legend(loc="best", fontsize=8)  # type: ignore[attr-defined]
    return _png(fig)


def drawdown_chart(perf: Performance) -> bytes:
    fig, ax = _figure()
    c = perf.curves["total"]
    t = _times(c.ts_ns)
    ax.fill_between(t, -c.drawdown(), 0.0, step="post", color="tab:red", alpha=0.4)  # type: ignore[attr-defined]
    ax.set_ylabel("drawdown")  # type: ignore[attr-defined]
    return _png(fig)


def _pnl_bars(groups: dict[str, PerformanceStats]) -> bytes:
    fig, ax = _figure()
    names = list(groups) or ["(none)"]
    x = np.arange(len(names))
    real = [groups[n].realized_pnl if n in groups else 0.0 for n in names]
    unreal = [groups[n].unrealized_pnl if n in groups else 0.0 for n in names]
    fees = [-groups[n].fees if n in groups else 0.0 for n in names]
    net = [groups[n].net_pnl if n in groups else 0.0 for n in names]
    w = 0.2
    ax.bar(x - 1.5 * w, real, w, label="realized")  # type: ignore[attr-defined]
    ax.bar(x - 0.5 * w, unreal, w, label="unrealized")  # type: ignore[attr-defined]
    ax.bar(x + 0.5 * w, fees, w, label="-fees")  # type: ignore[attr-defined]
    ax.bar(x + 1.5 * w, net, w, label="net")  # type: ignore[attr-defined]
    ax.set_xticks(x, names)  # type: ignore[attr-defined]
    ax.axhline(0.0, color="black", linewidth=0.5)  # type: ignore[attr-defined]
    ax.legend(fontsize=8)  # type: ignore[attr-defined]
    return _png(fig)


def fills_chart(perf: Performance) -> bytes:
    """Fills per time bucket, one line per strategy (polars does the bucketing)."""
    fig, ax = _figure()
    df = perf.fills
    if df.height:
        span_s = max((int(df["ts_ns"].max()) - int(df["ts_ns"].min())) / 1e9, 1.0)
        bucket_s = max(1, int(span_s / 60))
        counts = (df.with_columns(pl.from_epoch(pl.col("ts_ns"), time_unit="ns").alias("t"))
                  .sort("t")
                  .group_by_dynamic("t", every=f"{bucket_s}s", group_by="strategy")
                  .agg(pl.len().alias("fills")))
        for (name,), part in counts.group_by(["strategy"], maintain_order=True):
            ax.plot(part["t"].to_list(), part["fills"].to_list(), marker=".", label=str(name))  # type: ignore[attr-defined]
        ax.set_ylabel(f"fills per {bucket_s}s")  # type: ignore[attr-defined]
        ax.legend(fontsize=8)  # type: ignore[attr-defined]
    return _png(fig)


def build_charts(perf: Performance, progress: Progress | None = None) -> list[Chart]:
    makers: list[tuple[str, str, Callable[[], bytes]]] = [
        ("equity", "Equity curve (net P&L)", lambda: equity_chart(perf)),
        ("drawdown", "Drawdown", lambda: drawdown_chart(perf)),
        ("pnl_by_strategy", "P&L by strategy", lambda: _pnl_bars(perf.by_strategy)),
        ("pnl_by_symbol", "P&L by symbol", lambda: _pnl_bars(perf.by_symbol)),
        ("fills_over_time", "Fills over time", lambda: fills_chart(perf)),
    ]
    out = []
    for name, title, make in makers:
        out.append(Chart(name, title, make()))
        if progress is not None:
            progress.update(1, name)
    return out


def _fmt(v: float | int | None, digits: int = 4) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, int):
        return str(v)
    return f"{v:,.{digits}f}"


_COLUMNS = [("fills", "fills"), ("turnover", "turnover"), ("realized_pnl", "realized"), ("fees", "fees"),
            ("unrealized_pnl", "unrealized"), ("net_pnl", "net P&L"), ("sharpe", "Sharpe"), ("sortino", "Sortino"),
            ("volatility", "volatility"), ("max_drawdown", "max DD"), ("max_drawdown_duration_s", "max DD (s)"),
            ("win_rate", "win rate")]


def _table(rows: dict[str, PerformanceStats]) -> str:
    head = "".join(f"<th>{html.escape(label)}</th>" for _, label in _COLUMNS)
    body = "".join(f"<tr><th>{html.escape(name)}</th>" + "".join(
        f"<td>{_fmt(getattr(s, key))}</td>" for key, _ in _COLUMNS) + "</tr>" for name, s in rows.items())
    return f"<table><thead><tr><th></th>{head}</tr></thead><tbody>{body}</tbody></table>"


_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }}
th, td {{ border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: right; }}
figure {{ margin: 1.5em 0; }} img.chart {{ max-width: 100%; border: 1px solid #eee; }}
.conv {{ font-size: 0.8em; color: #555; max-width: 60em; }}
</style></head>
<body data-charts="{n}">
<h1>{title}</h1>
<p>Cluster <b>{cluster}</b>, as of {as_of} UTC; {fills} fills; returns over {bar_s:g}-second bars.</p>
<h2>Summary</h2>
{total}
<h2>By strategy</h2>
{by_strategy}
<h2>By symbol</h2>
{by_symbol}
<h2>Charts</h2>
{figures}
<p class="conv">Conventions: {conventions}</p>
<script>
(function () {{
  var imgs = Array.prototype.slice.call(document.querySelectorAll("img.chart"));
  Promise.all(imgs.map(function (img) {{ return img.decode().then(function () {{ return img; }}); }}))
    .then(function () {{
      imgs.forEach(function (img) {{ img.setAttribute("data-width", String(img.naturalWidth)); }});
      document.body.setAttribute("data-charts-loaded", String(imgs.length));
    }}, function (err) {{ document.body.setAttribute("data-charts-error", String(err)); }});
}})();
</script>
</body></html>
"""


def render_html(perf: Performance, charts: list[Chart], cluster: str) -> str:
    figures = "\n".join(
        f'<figure id="chart-{c.name}"><figcaption>{html.escape(c.title)}</figcaption>'
        f'<img class="chart" alt="{html.escape(c.title)}" data-chart="{c.name}" '
        f'src="data:image/png;base64,{base64.b64encode(c.png).decode()}"></figure>' for c in charts)
    as_of = dt.datetime.fromtimestamp(perf.as_of_ns / 1e9, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
    return _PAGE.format(title=f"Performance report: {html.escape(cluster)}", cluster=html.escape(cluster),
                        n=len(charts), as_of=as_of, fills=perf.total.fills, bar_s=perf.total.bar_s,
                        total=_table({"total": perf.total}), by_strategy=_table(perf.by_strategy),
                        by_symbol=_table(perf.by_symbol), figures=figures, conventions=html.escape(CONVENTIONS))


def write_report(perf: Performance, out_dir: Path, cluster: str, show_progress: bool = True) -> list[Path]:
    """report.html (self-contained), one PNG per chart and summary.json in `out_dir`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    with Progress(len(CHARTS) + 1, "report", enabled=show_progress) as progress:
        charts = build_charts(perf, progress)
        written = []
        for c in charts:
            path = out_dir / f"{c.name}.png"
            path.write_bytes(c.png)
            written.append(path)
        page = out_dir / "report.html"
        page.write_text(render_html(perf, charts, cluster), encoding="utf-8")
        summary = out_dir / "summary.json"
        summary.write_text(json.dumps(perf.to_dict(), indent=2))
        progress.update(1, "html")
    return [page, summary, *written]
