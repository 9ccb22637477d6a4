"""Prometheus metrics and the HTTP listener that exposes them.

Configured like TF Serving: ``--monitoring_config_file`` holds a
``MonitoringConfig`` text proto (``prometheus_config { enable: true, path:
"/monitoring/prometheus/metrics" }``) and ``--rest_api_port`` is the HTTP port
the metrics are served on. Metric names carry this project's prefix rather than
TF Serving's ``:tensorflow:serving:*`` names, so dashboards are not silently
mixed up with the real server's.
"""

from __future__ import annotations

import http.server
import logging
import threading
from typing import Any

import prometheus_client

from serving.config_protos import MonitoringConfig, parse_text_file

logger = logging.getLogger(__name__)

PREFIX = "interest_graph_serving"
# Milliseconds-scale buckets: the model calls take ~1-50 ms on the target machine.
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


def load_monitoring_config(path: str | None) -> Any:
    """Reads ``--monitoring_config_file``; None gives an empty (disabled) config."""
    return MonitoringConfig() if path is None else parse_text_file(path, MonitoringConfig)


class Metrics:
    """The server's metrics, in a registry of their own (several servers may share a process in tests)."""

    def __init__(self) -> None:
        """Creates the metrics."""
        self.registry = prometheus_client.CollectorRegistry()
        self.requests = prometheus_client.Counter(
            f"{PREFIX}_requests",
            "RPCs answered, by model, signature, method and gRPC status",
            ["model", "signature", "method", "status"],
            registry=self.registry,
        )
        self.latency = prometheus_client.Histogram(
            f"{PREFIX}_request_latency_seconds",
            "RPC latency inside the server, by model and signature",
            ["model", "signature"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.loaded_versions = prometheus_client.Gauge(
            f"{PREFIX}_loaded_versions",
            "Versions AVAILABLE per model",
            ["model"],
            registry=self.registry,
        )
        self.batch_requests = prometheus_client.Histogram(
            f"{PREFIX}_batch_requests",
            "Requests merged into one signature call, by model and signature",
            ["model", "signature"],
            buckets=BATCH_BUCKETS,
            registry=self.registry,
        )

    def observe_request(self, model: str, signature: str, method: str, status: str, seconds: float) -> None:
        """Counts one answered RPC and records its latency."""
        self.requests.labels(model, signature, method, status).inc()
        self.latency.labels(model, signature).observe(seconds)

    def set_loaded_versions(self, counts: dict[str, int]) -> None:
        """Sets the loaded-versions gauge; models no longer configured are dropped."""
        self.loaded_versions.clear()
        for model, count in counts.items():
            self.loaded_versions.labels(model).set(count)


class MetricsHttpServer:
    """Serves the metrics at one path on an HTTP port (in a daemon thread)."""

    def __init__(self, metrics: Metrics, host: str, port: int, path: str) -> None:
        """Binds and starts serving.

        Args:
            metrics: The metrics to expose.
            host: Interface to bind.
            port: Port (0 picks a free one).
            path: URL path of the metrics page; anything else answers 404.
        """
        registry = metrics.registry

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                if self.path.split("?", 1)[0] != path:
                    self.send_error(404, f"metrics are served at {path}")
                    return
                body = prometheus_client.generate_latest(registry)
                self.send_response(200)
                self.send_header("Content-Type", prometheus_client.CONTENT_TYPE_LATEST)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - http.server's signature
                logger.debug(format, *args)

        self._server = http.server.ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name="metrics-http", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stops serving and closes the socket."""
        self._server.shutdown()
        self._server.server_close()
