"""Create or update the maskgan Grafana dashboard (cluster/dashboard.json) through Grafana's HTTP API.

    GRAFANA_TOKEN=... python -m cluster.grafana https://grafana.example.com

The token (a Grafana service-account token) is sent as a Bearer header and never printed or put in an error.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from urllib.parse import urlsplit

import requests
from grafana_api.grafana_api import GrafanaException
from grafana_api.grafana_face import GrafanaFace

DASHBOARD_PATH = Path(__file__).with_name("dashboard.json")


class GrafanaPushError(RuntimeError):
    """One line saying which Grafana failed and how; safe to print (no token)."""

    user_error = True


def dashboard_exprs(path=DASHBOARD_PATH) -> list[str]:
    """Every PromQL expression in the dashboard, rows' nested panels included."""
    exprs, panels = [], list(json.loads(Path(path).read_text())["panels"])
    while panels:
        panel = panels.pop(0)
        panels += panel.get("panels", [])
        exprs += [t["expr"] for t in panel.get("targets", []) if t.get("expr")]
    return exprs


def push_dashboard(url: str, token: str | None = None, dashboard_path=DASHBOARD_PATH) -> dict:
    """Create or overwrite the dashboard (matched by uid) at the Grafana at ``url``; returns Grafana's answer."""
    token = token or os.environ.get("GRAFANA_TOKEN")
    parts = urlsplit(url)
    # Name the URL in errors without any user:password@ it might carry.
    where = f"{parts.scheme}://{parts.hostname}{f':{parts.port}' if parts.port else ''}{parts.path}"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise GrafanaPushError(f"not a Grafana URL (want http[s]://host[:port][/prefix]): {where}")
    if not token:
        raise GrafanaPushError(f"no token for Grafana at {where}: pass one or set GRAFANA_TOKEN")
    dashboard = json.loads(Path(dashboard_path).read_text())
    prefix = parts.path.strip("/")
    face = GrafanaFace(
        auth=token,
        host=parts.hostname,
        port=parts.port,
        protocol=parts.scheme,
        url_path_prefix=f"{prefix}/" if prefix else "",
        timeout=10.0,
    )
    try:
        return face.dashboard.update_dashboard({"dashboard": dashboard, "overwrite": True, "folderId": 0})
    except GrafanaException as e:
        detail = f"HTTP {e.status_code}: {e.message}"
    except ValueError:  # requests' JSONDecodeError: a 2xx answer that is not JSON
        detail = "the answer was not JSON (is this Grafana?)"
    except requests.exceptions.RequestException as e:
        detail = f"unreachable ({type(e).__name__})"
    # Error bodies come from the server; make sure none of them can echo the token back into a log.
    detail = " ".join(detail.replace(token, "***").split())
    raise GrafanaPushError(f"pushing dashboard {dashboard.get('uid')} to Grafana at {where} failed: {detail}")


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: GRAFANA_TOKEN=... python -m cluster.grafana GRAFANA_URL", file=sys.stderr)
        return 2
    try:
        answer = push_dashboard(argv[0])
    except GrafanaPushError as e:
        print(e, file=sys.stderr)
        return 1
    print(f"dashboard {answer.get('uid')} {answer.get('status')}: {answer.get('url')}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
