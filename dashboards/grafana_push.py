"""Provision the dashboards into a running Grafana through its HTTP API (`grafana-client`).

The token is a Grafana service-account token read from an environment variable
(never a command-line argument, which other users can see). Every failure is a
`GrafanaPushError` with one clear line: Grafana missing or unreachable, token
refused, dashboard rejected. Nothing here runs in the trading path.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dashboards.grafana import DATASOURCE_UID, FOLDER_TITLE, FOLDER_UID, build_dashboards


class GrafanaPushError(RuntimeError):
    pass


@dataclass
class PushResult:
    folder_created: bool
    datasource: str  # "created", "exists" or "" (not asked)
    dashboards: list[str]  # uid -> url


def push_dashboards(url: str, token: str, prometheus_url: str = "", timeout_s: float = 10.0) -> PushResult:
    from grafana_client import GrafanaApi
    from grafana_client.client import (
        GrafanaClientError,
        GrafanaException,
        GrafanaServerError,
        GrafanaUnauthorizedError,
    )

    try:
        import niquests

        conn_errors: tuple[type[BaseException], ...] = (niquests.exceptions.RequestException, OSError)
    except ImportError:  # pragma: no cover
        conn_errors = (OSError,)
    api = GrafanaApi.from_url(url, credential=token or None, timeout=timeout_s)
    step = "connect"
    try:
        api.health.check()
        step = "folder"
        folder_created = False
        try:
            api.folder.get_folder(FOLDER_UID)
        except GrafanaClientError as exc:
            if getattr(exc, "status_code", None) != 404:
                raise
            api.folder.create_folder(FOLDER_TITLE, uid=FOLDER_UID)
            folder_created = True
        datasource = ""
        if prometheus_url:
            step = "datasource"
            try:
                api.datasource.get_datasource_by_uid(DATASOURCE_UID)
                datasource = "exists"
            except GrafanaClientError as exc:
                if getattr(exc, "status_code", None) != 404:
                    raise
                api.datasource.create_datasource({"name": "rsc-prometheus", "uid": DATASOURCE_UID,
                                                  "type": "prometheus", "access": "proxy", "url": prometheus_url,
                                                  "jsonData": {"timeInterval": "5s"}})
                datasource = "created"
        urls = []
        for d in build_dashboards():
            step = f"dashboard {d.uid}"
            resp: Any = api.dashboard.update_dashboard({"dashboard": d.model(), "folderUid": FOLDER_UID,
                                                        "overwrite": True, "message": "python -m cluster dashboards push"})
            urls.append(str((resp or {}).get("url") or d.uid))
        return PushResult(folder_created, datasource, urls)
    except GrafanaUnauthorizedError:
        raise GrafanaPushError(f"Grafana at {url} refused the token (401) at step '{step}'; check the service "
                               "account token and its Editor role") from None
    except (GrafanaClientError, GrafanaServerError) as exc:
        raise GrafanaPushError(f"Grafana at {url} rejected step '{step}': {exc}") from None
    except GrafanaException as exc:
        raise GrafanaPushError(f"Grafana at {url} failed at step '{step}': {exc}") from None
    except conn_errors as exc:
        raise GrafanaPushError(f"cannot reach Grafana at {url}: {type(exc).__name__}: {exc}") from None
