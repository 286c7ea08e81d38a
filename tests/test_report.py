"""`python -m cluster report`: the HTML is self-contained and its charts render in headless Chromium."""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from cluster.cli import main
from cluster.messages import Fill, Order, OrderStatus, OrderType, Side
from cluster.portfolio import Portfolio
from cluster.state_store import StateStore
from dashboards.analytics import analyze
from dashboards.progress import Progress
from dashboards.report import CHARTS, write_report
from dashboards.system_tools import ensure_tool

S = 1_000_000_000


def history(n: int = 60) -> list[Fill]:
    """Two strategies, two symbols, a buy-sell rhythm with a drift: realized wins and losses, fees."""
    t0 = time.time_ns() - 600 * S
    out = []
    for i in range(n):
        strat, sym, base = ("mm", "BTCUSDT", 60000.0) if i % 3 else ("obi", "ETHUSDT", 3000.0)
        side = Side.BUY if i % 2 == 0 else Side.SELL
        px = base * (1 + 0.001 * ((i * 7) % 11 - 5))
        out.append(Fill(client_order_id=f"c{i}", trade_id=f"t{i}", strategy=strat, venue="paper", symbol=sym,
                        side=side, price=px, qty=0.01, fee=px * 0.01 * 0.0005, ts_ns=t0 + i * 10 * S))
    return out


def seed(store: StateStore, fills: list[Fill]) -> None:
    pf = Portfolio()
    for f in fills:
        order = Order(client_order_id=f.client_order_id, strategy=f.strategy, venue=f.venue, symbol=f.symbol,
                      side=f.side, qty=f.qty, order_type=OrderType.LIMIT, price=f.price, status=OrderStatus.FILLED,
                      filled_qty=f.qty)
        pos = pf.apply_fill(f)
        store.record_fill(order, f, pos, pf.max_abs_net(f.symbol))
    store.set_marks({"BTCUSDT": 60100.0, "ETHUSDT": 2990.0})


def test_report_files_are_self_contained(tmp_path: Path) -> None:
    perf = analyze(history(), {"BTCUSDT": 60100.0, "ETHUSDT": 2990.0}, bar_s=30)
    paths = write_report(perf, tmp_path, "paper", show_progress=False)
    page = (tmp_path / "report.html").read_text()
    assert {p.name for p in paths} == {"report.html", "summary.json"} | {f"{c}.png" for c in CHARTS}
    for c in CHARTS:
        assert (tmp_path / f"{c}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f'data-chart="{c}"' in page
    assert page.count('src="data:image/png;base64,') == len(CHARTS)
    assert not re.search(r'(src|href)="(https?:)?//', page)  # nothing fetched from anywhere
    assert "Sharpe" in page and "mm" in page and "ETHUSDT" in page


def test_progress_bar_prints_quarters_off_a_terminal() -> None:
    import io

    buf = io.StringIO()
    with Progress(8, "report", stream=buf) as p:
        for _ in range(8):
            p.update(1)
    assert buf.getvalue().splitlines() == ["report: 1/8 (12%)", "report: 2/8 (25%)", "report: 4/8 (50%)",
                                           "report: 6/8 (75%)", "report: 8/8 (100%)"]


@pytest.fixture(scope="module")
def chromium() -> str:
    path, why = ensure_tool("chromium")
    if path is None:
        if os.geteuid() != 0:
            pytest.skip(why)
        pytest.fail(why)
    return path


def test_report_command_renders_charts_in_headless_chromium(redis_url: str, tmp_path: Path, chromium: str,
                                                            capsys) -> None:
    cfg = yaml.safe_load((Path(__file__).resolve().parents[1] / "configs" / "paper.yaml").read_text())
    cfg["redis"] = {"url": redis_url}
    cfg["cluster"]["name"] = "reporttest"
    config = tmp_path / "cfg.yaml"
    config.write_text(yaml.safe_dump(cfg))
    seed(StateStore.from_url(redis_url, "reporttest"), history())
    out = tmp_path / "report"
    assert main(["report", "--config", str(config), "--out", str(out), "--no-progress"]) == 0
    assert "report:" in capsys.readouterr().out and "60 fills" in (out / "report.html").read_text()
    # Image decoding runs in real time, not Chromium's virtual time: on a loaded machine the DOM can be
    # dumped before it finishes, so a render is tried up to three times before the test fails.
    for _attempt in range(3):
        with tempfile.TemporaryDirectory() as profile:
            proc = subprocess.run(
                [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
                 "--run-all-compositor-stages-before-draw", "--virtual-time-budget=10000", "--dump-dom",
                 (out / "report.html").as_uri()],
                capture_output=True, text=True, timeout=60)
        dom = proc.stdout
        assert proc.returncode == 0, proc.stderr[-2000:]
        body = re.search(r"<body[^>]*>", dom)
        assert body is not None
        assert "data-charts-error" not in body.group(0), body.group(0)
        if "data-charts-loaded" in body.group(0):
            break
    assert f'data-charts-loaded="{len(CHARTS)}"' in body.group(0), body.group(0)
    widths = re.findall(r'<img class="chart"[^>]*data-width="(\d+)"', dom)
    assert len(widths) == len(CHARTS) and all(int(w) == 900 for w in widths)  # 9 in x 100 dpi, decoded


def test_report_without_a_cluster_is_one_clear_line(tmp_path: Path, capsys) -> None:
    config = tmp_path / "cfg.yaml"
    cfg = yaml.safe_load((Path(__file__).resolve().parents[1] / "configs" / "paper.yaml").read_text())
    cfg["cluster"]["data_dir"] = str(tmp_path / "runs")
    config.write_text(yaml.safe_dump(cfg))
    assert main(["report", "--config", str(config), "--out", str(tmp_path / "r")]) == 2
    assert "no running cluster" in capsys.readouterr().err
