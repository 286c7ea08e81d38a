"""`python -m cluster report --out DIR`: a self-contained HTML performance report (and PNG charts)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

DEFAULT_CONFIG = "configs/paper.yaml"


def register(sub: Any) -> None:
    p = sub.add_parser("report", help="write an HTML performance report with charts from the fill journal")
    p.add_argument("--config", default=DEFAULT_CONFIG)
    p.add_argument("--out", required=True, help="folder for report.html, the PNG charts and summary.json")
    p.add_argument("--bar", type=float, default=None, help="bar length in seconds for returns (default: auto)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--run", default=None, metavar="DIR|last",
                   help="a stopped run: its folder, or `last` (its Redis is started again from the run's files)")
    p.set_defaults(func=cmd_report)


def cmd_report(args: argparse.Namespace) -> int:
    from cluster.cli import CliError, open_store
    from cluster.config import load_config
    from dashboards.report import write_report
    from dashboards.status_reader import StatusReader

    if args.bar is not None and args.bar <= 0:
        raise CliError("--bar must be > 0 seconds")
    cfg = load_config(args.config)
    with open_store(cfg, args.run) as store:
        perf = StatusReader(store, live=not args.run).performance(args.bar)
    out = Path(args.out)
    try:
        paths = write_report(perf, out, cfg.cluster.name, show_progress=not args.no_progress)
    except OSError as exc:
        raise CliError(f"cannot write the report to {out}: {exc.strerror}") from None
    t = perf.total
    print(f"report: {paths[0]}  ({t.fills} fills, net P&L {t.net_pnl:.4f}, charts: "
          f"{', '.join(p.name for p in paths[2:])})")
    return 0
