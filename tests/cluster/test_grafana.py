"""The Grafana dashboard: its push against a fake Grafana on 127.0.0.1, and its PromQL against our metric names."""

import json
import re
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

import maskgan.metrics as metrics
from cluster.grafana import DASHBOARD_PATH, GrafanaPushError, dashboard_exprs, push_dashboard

TOKEN = "glsa_test-token-0123456789"


class FakeGrafana(ThreadingHTTPServer):
    """Answers POST /api/dashboards/db like Grafana; records what it was sent."""

    def __init__(self):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.requests = []
        self.status, self.answer = 200, None

    @property
    def url(self):
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
        uid = body["dashboard"]["uid"]
        answer = self.server.answer or {"status": "success", "uid": uid, "url": f"/d/{uid}/x", "version": 1}
        data = json.dumps(answer).encode()
        self.send_response(self.server.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):  # keep pytest output clean
        pass


@pytest.fixture
def grafana():
    server = FakeGrafana()
    # A short poll interval so shutdown() at teardown does not wait out the default 0.5 s.
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_push_creates_or_overwrites_the_dashboard(grafana):
    answer = push_dashboard(grafana.url, token=TOKEN)
    assert answer["status"] == "success" and answer["uid"] == "maskgan-training"
    (req,) = grafana.requests
    assert req["path"] == "/api/dashboards/db"
    assert req["headers"]["Authorization"] == f"Bearer {TOKEN}"
    assert req["body"]["overwrite"] is True
    sent, on_disk = req["body"]["dashboard"], json.loads(DASHBOARD_PATH.read_text())
    assert (sent["uid"], sent["title"], sent["panels"]) == ("maskgan-training", "maskgan training", on_disk["panels"])


def test_push_takes_the_token_from_the_environment_and_keeps_a_path_prefix(grafana, monkeypatch):
    monkeypatch.setenv("GRAFANA_TOKEN", TOKEN)
    push_dashboard(grafana.url + "/grafana/")
    (req,) = grafana.requests
    assert req["path"] == "/grafana/api/dashboards/db"
    assert req["headers"]["Authorization"] == f"Bearer {TOKEN}"


def test_unreachable_grafana_gives_one_clear_line_without_the_token():
    with socket.socket() as s:  # a port nobody listens on once closed
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(GrafanaPushError) as info:
        push_dashboard(f"http://127.0.0.1:{port}", token=TOKEN)
    message = str(info.value)
    assert f"http://127.0.0.1:{port}" in message and "unreachable" in message
    assert TOKEN not in message and "\n" not in message


@pytest.mark.parametrize("status", [401, 412, 500])
def test_http_errors_name_the_url_and_status_but_not_the_token(grafana, status):
    grafana.status = status
    grafana.answer = {"message": f"rejected token {TOKEN}\nsee logs"}  # even a server that echoes it
    with pytest.raises(GrafanaPushError) as info:
        push_dashboard(grafana.url, token=TOKEN)
    message = str(info.value)
    assert grafana.url in message and str(status) in message
    assert TOKEN not in message and "\n" not in message


def test_missing_token_is_an_error_before_any_request(grafana, monkeypatch):
    monkeypatch.delenv("GRAFANA_TOKEN", raising=False)
    with pytest.raises(GrafanaPushError, match="GRAFANA_TOKEN"):
        push_dashboard(grafana.url)
    assert grafana.requests == []


# --- the dashboard's PromQL ---------------------------------------------------------------------------------------

_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "bool", "offset"}


def metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression: identifiers that are not functions, keywords or label names."""
    expr = re.sub(r'"[^"]*"', "", expr)  # label values
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)  # label lists
    names = re.findall(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\b(?!\s*\()", expr)
    return {n for n in names if n not in _KEYWORDS}


def test_metric_name_parser():
    assert metric_names('max by (run, row) (ray_a{run=~".*"}) or on() vector(0)') == {"ray_a"}


def test_every_expr_reads_known_metrics_only():
    exprs = dashboard_exprs()
    assert exprs
    for expr in exprs:
        names = metric_names(expr)
        assert names, expr
        for name in names:
            # A ray_maskgan_* name must be one we export (a typo would be an empty panel); else a Ray built-in.
            if name.startswith("ray_maskgan_"):
                assert name in metrics.METRIC_NAMES, expr
            else:
                assert name.startswith("ray_node_"), expr


def test_every_project_metric_has_a_panel():
    used = set().union(*(metric_names(e) for e in dashboard_exprs()))
    assert set(metrics.METRIC_NAMES) <= used


def test_exprs_are_instant_reads_of_gauges():
    # rate()/increase() over a gauge is meaningless, and a $variable would need Grafana to expand it.
    for expr in dashboard_exprs():
        assert not re.search(r"\b(rate|irate|increase|delta)\s*\(|\$", expr), expr


def test_dashboard_identity():
    dash = json.loads(DASHBOARD_PATH.read_text())
    assert (dash["uid"], dash["title"]) == ("maskgan-training", "maskgan training")
    assert len({p["id"] for p in dash["panels"]}) == len(dash["panels"])


def test_train_metrics_feed_every_dashboard_metric(monkeypatch):
    """TrainMetrics maps the trainer's flat keys onto the gauges the dashboard reads (no Ray: gauges faked)."""
    recorded = {}

    class FakeGauge:
        def __init__(self, name):
            self.name = name

        def set(self, value, tags):
            recorded.setdefault(f"ray_{self.name}", []).append((value, tags))

    monkeypatch.setattr(metrics, "_gauge", FakeGauge)
    log = metrics.TrainMetrics("run-1")
    log.log(
        {
            "train/images_per_s": 512.0,
            "train/data_wait_s": 0.01,
            "train/gen_ce": 1.5,
            "train/head_loss": 0.7,
            "checkpoint/upload_s": 3.0,
            "acc/val/generated": 0.25,
            "acc/val": 1.0,  # not acc/<split>/<row>
            "val/something_else": 2.0,  # unknown key
        },
        step=10,
    )
    log.close()
    assert set(recorded) == set(metrics.METRIC_NAMES)
    assert recorded["ray_maskgan_accuracy"] == [(0.25, {"run": "run-1", "split": "val", "row": "generated"})]
    assert recorded["ray_maskgan_images_per_second"] == [(512.0, {"run": "run-1"})]


def test_dashboard_ships_with_the_package():
    assert DASHBOARD_PATH == Path(__file__).resolve().parents[2] / "cluster" / "dashboard.json"
