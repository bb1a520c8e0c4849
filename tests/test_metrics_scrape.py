"""Real scrapes: every metric the dashboard and the alert rules use exists, ``promtool check
metrics`` is clean, and a real Prometheus (Debian's package) scrapes ``pgwarden run`` itself.

Nothing is faked: a real backup of the embedded PostgreSQL 18 through the real job pool, the
real monitor sampling it and a real PgBouncer, the real HTTP server; Prometheus runs on
loopback with a 1 s scrape interval and is asked through its HTTP API.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg

from pgwarden.control.client import ControlClient
from pgwarden.errors import PgwardenError
from pgwarden.metrics import Metrics, MetricsServer
from pgwarden.metrics.auth import BasicAuth
from pgwarden.metrics.http import tls_context
from pgwarden.monitor.thread import MonitorThread
from pgwarden.service import jobkinds, outcomes
from pgwarden.service.jobs import Job
from pgwarden.service.state import ServiceState
from tests.helpers import daemon_config_text, make_config
from tests.pgbouncer import PgBouncerFactory
from tests.pgservers import PgServer, free_port
from tests.test_metrics import basic, bcrypt_hash, get, self_signed

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "packaging" / "grafana" / "pgwarden.json"
RULES = ROOT / "packaging" / "prometheus" / "pgwarden-rules.yml"
README = ROOT / "README.md"
METRIC_RE = re.compile(r"\bpgwarden_\w+")


def tool(name: str) -> str:
    found = shutil.which(name) or (
        f"/usr/bin/{name}" if os.access(f"/usr/bin/{name}", os.X_OK) else None
    )
    assert found is not None, f"{name} is required (apt-get install prometheus)"
    return found


def dashboard_queries() -> list[str]:
    """Every PromQL expression of the dashboard: panel targets and template variables."""
    doc = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in doc["panels"] for t in p.get("targets", [])]
    for variable in doc["templating"]["list"]:
        query = variable.get("query")
        if isinstance(query, dict):
            exprs.append(query["query"])
    return exprs


def rule_metrics() -> set[str]:
    exprs = re.findall(r"^\s*expr:\s*(>-\n(?:\s{10,}.*\n)+|.*)$", RULES.read_text(), re.MULTILINE)
    return set(METRIC_RE.findall(" ".join(exprs)))


def scraped_names(text: str) -> set[str]:
    return {m.group(1) for m in re.finditer(r"^(pgwarden_\w+?)(?:\{| )", text, re.MULTILINE)}


def promtool_check_metrics(text: str) -> None:
    result = subprocess.run(
        [tool("promtool"), "check", "metrics"],
        input=text.encode(),
        capture_output=True,
        timeout=60,
        check=False,
    )
    output = result.stdout.decode() + result.stderr.decode()
    assert result.returncode == 0, output
    assert output == ""


def run_job(state: ServiceState, job: Job) -> Job:
    """Run a job's real function the way the job pool does, then the daemon's after-job hook."""
    job.started_at = datetime.now(UTC)
    try:
        job.result = jobkinds.job_functions(state)[job.kind](job)
        job.state = "succeeded"
    except PgwardenError as exc:
        job.state, job.error = "failed", str(exc)
    job.finished_at = datetime.now(UTC)
    outcomes.record_job(state, job)
    return job


def test_full_scrape_is_clean_and_has_every_metric_the_dashboard_and_rules_use(
    pg18: PgServer, pgbouncer_factory: PgBouncerFactory, workdir: Path
) -> None:
    pg18.create_database("metrics_full")
    pg18.execute("CREATE TABLE t AS SELECT g AS id FROM generate_series(1, 100) g", "metrics_full")
    bouncer = pgbouncer_factory(default_pool_size=2)
    config = make_config(
        workdir,
        [
            {
                "name": "full",
                "dsn": pg18.uri("metrics_full"),
                "bin_dir": str(pg18.bin_dir),
                "pools": [{"application": "api", "pool_size": 1, "max_overflow": 0}],
            }
        ],
        pgbouncer=[{"name": "main", "dsn": bouncer.admin_dsn()}],
    )
    state = ServiceState.open(config, Metrics())
    monitor = MonitorThread(lambda: config, state.metrics)
    try:
        outcomes.restore_gauges(state)
        backup = run_job(state, Job("backup", "full", config))
        assert backup.state == "succeeded", backup.error
        # the real restore drill and prune job functions, as the daemon runs them
        for kind in ("verify", "prune"):
            job = run_job(state, Job(kind, "full", config))
            assert job.state == "succeeded", job.error
        with (
            psycopg.connect(pg18.dsn("metrics_full"), application_name="api"),
            psycopg.connect(bouncer.dsn("metrics_full"), prepare_threshold=None) as pooled,
        ):
            pooled.execute("SELECT 1")  # PgBouncer shows a pool once a client used it
            monitor.run_once()
        server = MetricsServer(state.metrics, "127.0.0.1", 0, lambda: True)
        server.start()
        try:
            status, text, _ = get(f"http://127.0.0.1:{server.port}/metrics")
        finally:
            server.stop()
    finally:
        monitor.stop()
        state.close()
        pg18.drop_database("metrics_full")
    assert status == 200
    promtool_check_metrics(text)
    names = scraped_names(text)
    used_by_dashboard = set(METRIC_RE.findall(" ".join(dashboard_queries())))
    assert len(used_by_dashboard) >= 30
    # off-site and notification series exist once a destination is configured:
    # tests/test_offsite_ops.py and tests/test_notify_daemon.py scrape them
    offsite = {
        n
        for n in used_by_dashboard | rule_metrics()
        if n.startswith(("pgwarden_offsite_", "pgwarden_notifications_"))
    }
    assert used_by_dashboard - offsite <= names, used_by_dashboard - offsite - names
    assert rule_metrics() - offsite <= names, rule_metrics() - offsite - names
    documented = set(METRIC_RE.findall(README.read_text()))
    assert names <= documented, f"not in {README.name}: {names - documented}"
    assert 'pgwarden_backup_runs_total{result="success",target="full"} 1.0' in text
    assert 'pgwarden_verify_last_run_success{target="full"} 1.0' in text
    assert 'pgwarden_verify_runs_total{result="success",target="full"} 1.0' in text
    assert 'pgwarden_retention_deleted_total{target="full"} 0.0' in text
    assert 'pgwarden_backups{state="complete",target="full"} 1.0' in text
    assert 'pgwarden_pg_dump_compatible{target="full"} 1.0' in text
    assert 'pgwarden_application_pool_saturation_ratio{application="api",target="full"} 1.0' in text


# -- pgwarden run, scraped by a real Prometheus ------------------------------------------


@contextmanager
def pgwarden_run(workdir: Path, text: str) -> Iterator[subprocess.Popen[bytes]]:
    config = workdir / "pgwarden.toml"
    config.write_text(text)
    config.chmod(0o600)
    log = (workdir / "daemon.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "pgwarden.cli", "run", "-c", str(config)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.close()


def wait_started(proc: subprocess.Popen[bytes], workdir: Path, timeout: float = 60) -> None:
    """The control socket is the last thing the daemon opens before READY=1."""
    deadline = time.monotonic() + timeout
    while not (workdir / "ctl.sock").exists():
        log = (workdir / "daemon.log").read_text()
        assert proc.poll() is None, f"pgwarden run exited {proc.returncode}:\n{log[-3000:]}"
        assert time.monotonic() < deadline, f"no control socket in {timeout} s:\n{log[-3000:]}"
        time.sleep(0.1)


def wait_http(url: str, timeout: float = 60, **kwargs: Any) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if get(url, **kwargs)[0] == 200:
                return
        except OSError:
            pass
        assert time.monotonic() < deadline, f"{url} did not answer in {timeout} s"
        time.sleep(0.2)


@contextmanager
def prometheus(workdir: Path, scrape_configs: list[dict[str, Any]]) -> Iterator[str]:
    """A real Prometheus on loopback with the pgwarden rules loaded; yields its base URL."""
    port = free_port()
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(RULES)],
        "scrape_configs": scrape_configs,
    }
    path = workdir / "prometheus.yml"
    path.write_text(json.dumps(config))  # JSON is YAML
    log = (workdir / "prometheus.log").open("wb")
    proc = subprocess.Popen(
        [
            tool("prometheus"),
            f"--config.file={path}",
            f"--web.listen-address=127.0.0.1:{port}",
            f"--storage.tsdb.path={workdir / 'prom-data'}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{base}/-/ready")
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def api(base: str, path: str, **params: str) -> Any:
    url = f"{base}/api/v1/{path}"
    if params:
        url += "?" + urllib.parse.urlencode(params)
    with urllib.request.urlopen(url, timeout=10) as response:
        body = json.loads(response.read())
    assert body["status"] == "success", body
    return body["data"]


def wait_query(base: str, query: str, timeout: float = 60) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        result: list[dict[str, Any]] = api(base, "query", query=query)["result"]
        if result:
            return result
        assert time.monotonic() < deadline, f"no result for {query} in {timeout} s"
        time.sleep(0.5)


def test_prometheus_scrapes_pgwarden_run_and_a_tls_endpoint(pg18: PgServer, workdir: Path) -> None:
    pg18.create_database("metrics_run")
    pg18.execute("CREATE TABLE t AS SELECT g AS id FROM generate_series(1, 50) g", "metrics_run")
    daemon_port = free_port()
    cert, key = self_signed(workdir)
    tls_server = MetricsServer(
        Metrics(),
        "127.0.0.1",
        0,
        lambda: True,
        tls=tls_context(cert, key),
        auth=BasicAuth({"prometheus": bcrypt_hash("pw")}),
    )
    tls_server.start()
    scrape_configs = [
        {"job_name": "pgwarden", "static_configs": [{"targets": [f"127.0.0.1:{daemon_port}"]}]},
        {
            "job_name": "pgwarden-tls",
            "scheme": "https",
            "tls_config": {"ca_file": str(cert)},
            "basic_auth": {"username": "prometheus", "password": "pw"},
            "static_configs": [{"targets": [f"127.0.0.1:{tls_server.port}"]}],
        },
    ]
    try:
        with pgwarden_run(
            workdir, daemon_config_text(workdir, pg18, "metrics_run", daemon_port)
        ) as proc:
            wait_started(proc, workdir)
            wait_http(f"http://127.0.0.1:{daemon_port}/healthz")
            job = ControlClient(workdir / "ctl.sock").call("backup", {"target": "metrics_run"})
            assert job["job"]["state"] in ("queued", "running", "succeeded")
            with prometheus(workdir, scrape_configs) as base:
                # both targets up, as Prometheus's own API says
                deadline = time.monotonic() + 60
                while True:
                    targets = api(base, "targets")["activeTargets"]
                    health = {t["labels"]["job"]: t["health"] for t in targets}
                    if health == {"pgwarden": "up", "pgwarden-tls": "up"}:
                        break
                    assert time.monotonic() < deadline, targets
                    time.sleep(0.5)
                built = wait_query(base, 'pgwarden_build_info{job="pgwarden"}')
                assert built[0]["metric"]["instance"] == f"127.0.0.1:{daemon_port}"
                assert wait_query(base, 'up{job="pgwarden-tls"} == 1')
                # the backup the daemon took, as Prometheus sees it
                ok = 'pgwarden_backup_runs_total{job="pgwarden",target="metrics_run",result="success"} == 1'
                wait_query(base, ok, timeout=120)
                wait_query(base, 'pgwarden_server_up{job="pgwarden"} == 1')
                # every dashboard query is valid PromQL for this server
                for expr in dashboard_queries():
                    if expr.startswith("label_values"):
                        continue
                    query = expr.replace("$instance", ".*").replace("$target", ".*")
                    api(base, "query", query=query)
                # the rules load and evaluate cleanly; nothing fires for a healthy daemon
                groups = api(base, "rules")["groups"]
                rules = [r for g in groups for r in g["rules"]]
                assert len(rules) == len(re.findall(r"- alert:", RULES.read_text()))
                time.sleep(2)
                rules = [r for g in api(base, "rules")["groups"] for r in g["rules"]]
                assert all(r["health"] == "ok" for r in rules), rules
                firing = [a for a in api(base, "alerts")["alerts"] if a["state"] == "firing"]
                assert firing == [], firing
            # promtool on the daemon's own scrape, after a backup
            status, text, _ = get(f"http://127.0.0.1:{daemon_port}/metrics")
            assert status == 200
            promtool_check_metrics(text)
            assert proc.poll() is None
        assert (
            get(
                f"https://127.0.0.1:{tls_server.port}/metrics",
                basic("prometheus", "pw"),
                context=__import__("ssl").create_default_context(cafile=str(cert)),
            )[0]
            == 200
        )
    finally:
        tls_server.stop()
        pg18.drop_database("metrics_run")


def sample(text: str, name: str, labels: str) -> float | None:
    match = re.search(rf"^{name}\{{{re.escape(labels)}\}} (\S+)$", text, re.MULTILINE)
    return None if match is None else float(match[1])


def test_pgwarden_run_restart_keeps_the_history_gauges(pg18: PgServer, workdir: Path) -> None:
    """What the alerts read after a restart is what they read before it."""
    pg18.create_database("metrics_restart")
    pg18.execute("CREATE TABLE t AS SELECT 1 AS id", "metrics_restart")
    port = free_port()
    text = daemon_config_text(workdir, pg18, "metrics_restart", port)
    history = (
        "pgwarden_backup_last_success_timestamp_seconds",
        "pgwarden_backup_last_run_success",
        "pgwarden_backup_last_size_bytes",
        "pgwarden_backup_last_duration_seconds",
        "pgwarden_backup_oldest_timestamp_seconds",
        "pgwarden_backup_stored_bytes",
    )
    labels = 'target="metrics_restart"'
    try:
        with pgwarden_run(workdir, text) as proc:
            wait_started(proc, workdir)
            client = ControlClient(workdir / "ctl.sock")
            job = client.call("backup", {"target": "metrics_restart"})["job"]
            deadline = time.monotonic() + 120
            while True:
                scrape = get(f"http://127.0.0.1:{port}/metrics")[1]
                if sample(scrape, "pgwarden_backups", f'state="complete",{labels}') == 1:
                    break
                assert time.monotonic() < deadline, (job, scrape)
                time.sleep(0.2)
            before = {name: sample(scrape, name, labels) for name in history}
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(30) == 0
        assert None not in before.values(), before
        with pgwarden_run(workdir, text) as proc:
            wait_started(proc, workdir)
            scrape = get(f"http://127.0.0.1:{port}/metrics")[1]
            after = {name: sample(scrape, name, labels) for name in history}
            # counters restart at 0, and exist from the start
            runs = sample(scrape, "pgwarden_backup_runs_total", f'result="success",{labels}')
            assert runs == 0
            promtool_check_metrics(scrape)
    finally:
        pg18.drop_database("metrics_restart")
    assert after == before


def test_dashboard_is_importable() -> None:
    """One uid, unique panel ids, every query on the data source variable, four sections."""
    doc = json.loads(DASHBOARD.read_text())
    assert doc["uid"] == "pgwarden"
    ids = [p["id"] for p in doc["panels"]]
    assert len(ids) == len(set(ids))
    rows = [p["title"] for p in doc["panels"] if p["type"] == "row"]
    assert {"Backups", "Verifications", "Storage", "Saturation"} <= set(rows)
    variables = {v["name"] for v in doc["templating"]["list"]}
    assert variables == {"datasource", "instance", "target"}
    for panel in doc["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["targets"], panel["title"]
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
