"""`python -m cluster dashboards build|push`: the Grafana dashboards, as files or into a Grafana."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

DASHBOARDS_DIR = Path(__file__).resolve().parents[2] / "dashboards"


def register(sub: Any) -> None:
    p = sub.add_parser("dashboards", help="write the Grafana dashboards' JSON or push them to a Grafana")
    dsub = p.add_subparsers(dest="dashboards_command", required=True)
    b = dsub.add_parser("build", help="(re)generate dashboards/json/*.json and the provisioning files")
    b.add_argument("--out", default=str(DASHBOARDS_DIR), help="folder to write into (default: dashboards/)")
    b.add_argument("--dashboards-path", default="/var/lib/grafana/dashboards/rsc",
                   help="where Grafana will find the JSON files (written into the provisioning file)")
    b.add_argument("--prometheus-url", default="http://localhost:9090", help="datasource URL for provisioning")
    b.set_defaults(func=cmd_build)
    push = dsub.add_parser("push", help="create/update the dashboards in a running Grafana")
    push.add_argument("--grafana-url", required=True, help="e.g. http://localhost:3000")
    push.add_argument("--token-env", default="GRAFANA_TOKEN",
                      help="environment variable holding a Grafana service-account token (default GRAFANA_TOKEN)")
    push.add_argument("--prometheus-url", default="",
                      help="also create the 'rsc-prometheus' datasource pointing here if it is missing")
    push.set_defaults(func=cmd_push)


def cmd_build(args: argparse.Namespace) -> int:
    from dashboards.grafana import write_all

    for path in write_all(Path(args.out), args.dashboards_path, args.prometheus_url):
        print(f"wrote {path}")
    return 0


def cmd_push(args: argparse.Namespace) -> int:
    from urllib.parse import urlparse

    from cluster.cli import CliError
    from dashboards.grafana_push import GrafanaPushError, push_dashboards

    parsed = urlparse(args.grafana_url)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise CliError(f"--grafana-url {args.grafana_url!r} must be an http(s):// URL")
    token = os.environ.get(args.token_env, "")
    if not token and not (parsed.username and parsed.password):
        raise CliError(f"no Grafana token: set the environment variable {args.token_env} to a service-account "
                       "token (Administration > Service accounts, role Editor)")
    try:
        result = push_dashboards(args.grafana_url, token, args.prometheus_url)
    except GrafanaPushError as exc:
        raise CliError(str(exc)) from None
    if result.folder_created:
        print(f"created folder 'rsc' in {args.grafana_url}")
    if result.datasource:
        print(f"datasource rsc-prometheus: {result.datasource}")
    for url in result.dashboards:
        print(f"pushed {args.grafana_url.rstrip('/')}{url if url.startswith('/') else '/d/' + url}")
    return 0
