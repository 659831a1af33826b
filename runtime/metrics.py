"""The agent's Prometheus metrics: a tiny registry and a text-format HTTP endpoint.

No client library: the agent exports a dozen numbers, and the text exposition format (0.0.4)
is a few lines of code. The server binds 127.0.0.1 only (a node-local scrape or a sidecar
forwards it); port 0 picks a free port, :attr:`MetricsServer.port` says which.

>>> m = Metrics()
>>> m.observe_reconcile("applied", 0.25, {"rules": 3}, mode="full")
>>> print("\\n".join(l for l in m.render().splitlines() if l.startswith("tortie_loaded_rules")))
tortie_loaded_rules 3
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

__all__ = ["CONTENT_TYPE", "Metrics", "MetricsServer", "serve"]

logger = logging.getLogger(__name__)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
RESULTS = ("applied", "unchanged", "error")


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class Metrics:
    """Thread-safe: the reconcile loop writes, the HTTP thread reads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.reconciles = dict.fromkeys(RESULTS, 0)
        self.applies = {"full": 0, "sets": 0}
        self.duration_sum = 0.0
        self.duration_count = 0
        self.last_duration = 0.0
        self.last_reconcile = 0.0
        self.last_success = 0.0
        self.last_error = ""
        self.last_error_time = 0.0
        self.loaded: dict[str, int] = {}
        self.drift = 0
        self.drift_repairs = 0
        self.stage_last: dict[str, float] = {}  # stage -> seconds in the last reconcile
        self.stage_sum: dict[str, float] = {}
        self.stage_count: dict[str, int] = {}
        self.paths: dict[str, int] = {}  # compile path -> reconciles
        self.drift_checks: dict[str, int] = {}  # "generation" (cheap) | "full" -> checks
        self.record_writes = 0  # full records written after set-only fast updates
        self.record_write_seconds = 0.0

    def observe_reconcile(
        self,
        result: str,
        seconds: float,
        counts: Mapping[str, int] | None = None,
        *,
        mode: str = "none",
        error: str = "",
    ) -> None:
        with self._lock:
            self.reconciles[result] = self.reconciles.get(result, 0) + 1
            if mode in self.applies and result == "applied":
                self.applies[mode] += 1
            self.duration_sum += seconds
            self.duration_count += 1
            self.last_duration = seconds
            self.last_reconcile = time.time()
            if result == "error":
                self.last_error = error or "unknown error"
                self.last_error_time = self.last_reconcile
            else:
                self.last_error = ""
                self.last_success = self.last_reconcile
            if counts is not None:
                self.loaded = {k: int(v) for k, v in counts.items() if k != "tables"}

    def observe_stages(self, timings: Mapping[str, float], path: str = "") -> None:
        """Seconds per stage of one reconcile (load, compile, render, diff, apply, verify, total) and
        how it compiled ("incremental" or "full"; "" when it failed before compiling)."""
        with self._lock:
            self.stage_last = {k: float(v) for k, v in timings.items()}
            for k, v in timings.items():
                self.stage_sum[k] = self.stage_sum.get(k, 0.0) + float(v)
                self.stage_count[k] = self.stage_count.get(k, 0) + 1
            if path:
                self.paths[path] = self.paths.get(path, 0) + 1

    def observe_drift(self, drifted: bool, repaired: bool = False) -> None:
        with self._lock:
            self.drift = int(drifted)
            self.drift_repairs += int(repaired)

    def observe_drift_check(self, kind: str) -> None:
        """One drift check: "generation" (the nf_tables generation id was unchanged, nothing
        listed) or "full" (the kernel was read and compared with the record)."""
        with self._lock:
            self.drift_checks[kind] = self.drift_checks.get(kind, 0) + 1

    def observe_record_write(self, seconds: float) -> None:
        with self._lock:
            self.record_writes += 1
            self.record_write_seconds += seconds

    def render(self) -> str:
        with self._lock:
            out: list[str] = []

            def metric(name: str, kind: str, help_: str, samples: list[tuple[str, float]]) -> None:
                out.append(f"# HELP {name} {help_}")
                out.append(f"# TYPE {name} {kind}")
                for labels, value in samples:
                    out.append(f"{name}{labels} {value!r}")

            metric(
                "tortie_reconciles_total",
                "counter",
                "Reconciles by result (applied, unchanged, error).",
                [(f'{{result="{r}"}}', n) for r, n in sorted(self.reconciles.items())],
            )
            metric(
                "tortie_applies_total",
                "counter",
                "Kernel updates by kind (full transaction or set elements only).",
                [(f'{{mode="{m}"}}', n) for m, n in sorted(self.applies.items())],
            )
            out.append("# HELP tortie_reconcile_duration_seconds Time per reconcile.")
            out.append("# TYPE tortie_reconcile_duration_seconds summary")
            out.append(f"tortie_reconcile_duration_seconds_sum {self.duration_sum:.6f}")
            out.append(f"tortie_reconcile_duration_seconds_count {self.duration_count}")
            metric(
                "tortie_last_reconcile_duration_seconds",
                "gauge",
                "Duration of the last reconcile.",
                [("", round(self.last_duration, 6))],
            )
            metric(
                "tortie_last_reconcile_timestamp_seconds",
                "gauge",
                "Unix time of the last reconcile.",
                [("", round(self.last_reconcile, 3))],
            )
            metric(
                "tortie_last_success_timestamp_seconds",
                "gauge",
                "Unix time of the last reconcile without error.",
                [("", round(self.last_success, 3))],
            )
            errors: list[tuple[str, float]] = [("", 1 if self.last_error else 0)]
            metric(
                "tortie_last_error",
                "gauge",
                "1 when the last reconcile failed (the previous state stays in force).",
                errors,
            )
            if self.last_error:
                metric(
                    "tortie_last_error_info",
                    "gauge",
                    "The last reconcile's error message.",
                    [(f'{{message="{_label(self.last_error[:500])}"}}', 1)],
                )
            metric(
                "tortie_drift",
                "gauge",
                "1 when the kernel no longer matched the last apply at the last check.",
                [("", self.drift)],
            )
            metric(
                "tortie_drift_repairs_total",
                "counter",
                "Full re-applies caused by drift.",
                [("", self.drift_repairs)],
            )
            if self.drift_checks:
                metric(
                    "tortie_drift_checks_total",
                    "counter",
                    "Drift checks by kind (generation: nf_tables generation id unchanged, "
                    "nothing listed; full: kernel read and compared).",
                    [(f'{{kind="{_label(k)}"}}', n) for k, n in sorted(self.drift_checks.items())],
                )
            if self.record_writes:
                metric(
                    "tortie_record_writes_total",
                    "counter",
                    "Full artifacts rendered and recorded after set-only fast updates.",
                    [("", self.record_writes)],
                )
                metric(
                    "tortie_record_write_seconds_total",
                    "counter",
                    "Time spent writing those records (render, kernel read-back, state dir).",
                    [("", round(self.record_write_seconds, 6))],
                )
            if self.paths:
                metric(
                    "tortie_compiles_total",
                    "counter",
                    "Reconciles by compile path (incremental: only what the change affects).",
                    [(f'{{path="{_label(p)}"}}', n) for p, n in sorted(self.paths.items())],
                )
            if self.stage_sum:
                out.append(
                    "# HELP tortie_reconcile_stage_seconds Time per reconcile stage "
                    "(load, compile, render, diff, apply, total)."
                )
                out.append("# TYPE tortie_reconcile_stage_seconds summary")
                for k in sorted(self.stage_sum):
                    out.append(
                        f'tortie_reconcile_stage_seconds_sum{{stage="{_label(k)}"}} '
                        f"{self.stage_sum[k]:.6f}"
                    )
                    out.append(
                        f'tortie_reconcile_stage_seconds_count{{stage="{_label(k)}"}} '
                        f"{self.stage_count[k]}"
                    )
                metric(
                    "tortie_last_reconcile_stage_seconds",
                    "gauge",
                    "Time per stage in the last reconcile.",
                    [
                        (f'{{stage="{_label(k)}"}}', round(v, 6))
                        for k, v in sorted(self.stage_last.items())
                    ],
                )
            for key, value in sorted(self.loaded.items()):
                metric(
                    f"tortie_loaded_{key}",
                    "gauge",
                    f"{key.capitalize()} loaded in the kernel (read back after the last apply).",
                    [("", value)],
                )
            return "\n".join(out) + "\n"


class _Handler(BaseHTTPRequestHandler):
    metrics: Metrics

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        if self.path.split("?")[0] not in ("/metrics", "/"):
            self.send_error(404)
            return
        body = self.server.metrics.render().encode()  # type: ignore[attr-defined]
        self.send_response(200)
        self.send_header("Content-Type", CONTENT_TYPE)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        logger.debug("metrics: " + format, *args)


class MetricsServer:
    def __init__(self, metrics: Metrics, host: str, port: int) -> None:
        self.httpd = ThreadingHTTPServer((host, port), _Handler)
        self.httpd.daemon_threads = True
        self.httpd.metrics = metrics  # type: ignore[attr-defined]
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, name="tortie-metrics", daemon=True
        )
        self.thread.start()

    @property
    def port(self) -> int:
        return int(self.httpd.server_address[1])

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


def serve(metrics: Metrics, port: int, host: str = "127.0.0.1") -> MetricsServer:
    """Serve ``metrics`` at ``http://host:port/metrics`` from a daemon thread."""
    server = MetricsServer(metrics, host, port)
    logger.info("metrics on http://%s:%d/metrics", host, server.port)
    return server
