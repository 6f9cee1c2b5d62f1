"""Prometheus metrics (one registry per app), JSON log lines, request ids, and the ASGI middleware tying them.

Metrics (``GET /metrics``):
  brainforge_requests_total{route,method,status,model}              counter
  brainforge_request_duration_seconds{route,method,status,model}    histogram
  brainforge_batch_size{model,version}                              histogram of windows per forward pass
  brainforge_batch_requests{model,version}                          histogram of requests per forward pass
  brainforge_inference_seconds{model,version}                       histogram of forward-pass time
  brainforge_queue_depth{model,version}                             gauge of admitted requests
  brainforge_forward_cpu_seconds_total{model,version}                counter of CPU time of the inference thread
                                                                    in forward passes (time.thread_time)
  brainforge_stage_seconds{model,version,stage}                     histogram of each request's time per stage:
      parse (body -> arrays), preprocess (-> model windows), queue_wait (windows queued -> their forward pass
      starts; a request split over several passes: until its last one starts), forward (the forward passes that
      held its windows, whole, shared with the other requests in them)
``route`` is the route template (``/v2/models/{name}/infer``), never the raw path, so fuzzed paths cannot blow
up the label set; ``model`` is set only once a handler has found the model in the registry.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import sys
import time
import uuid
from datetime import UTC, datetime

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)

request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")
REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
STAGE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
STAGES = ("parse", "preprocess", "queue_wait", "forward")
log = logging.getLogger("brainforge.serve.access")


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        # the process_*, python_info and python_gc_* series prometheus_client's default registry carries
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        GCCollector(registry=r)
        self.requests = Counter("brainforge_requests", "HTTP requests", ["route", "method", "status", "model"], registry=r)
        self.latency = Histogram("brainforge_request_duration_seconds", "HTTP request latency",
                                 ["route", "method", "status", "model"], buckets=LATENCY_BUCKETS, registry=r)
        self.batch_size = Histogram("brainforge_batch_size", "windows per forward pass", ["model", "version"],
                                    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512), registry=r)
        self.batch_requests = Histogram("brainforge_batch_requests", "requests per forward pass", ["model", "version"],
                                        buckets=(1, 2, 4, 8, 16, 32, 64), registry=r)
        self.inference = Histogram("brainforge_inference_seconds", "forward-pass time", ["model", "version"],
                                   buckets=LATENCY_BUCKETS, registry=r)
        self.stage = Histogram("brainforge_stage_seconds", "per-request time in each stage (see the module docstring)",
                               ["model", "version", "stage"], buckets=STAGE_BUCKETS, registry=r)
        self.forward_cpu = Counter("brainforge_forward_cpu_seconds", "CPU time of the inference thread in forward passes",
                                   ["model", "version"], registry=r)
        self.queue_depth = Gauge("brainforge_queue_depth", "requests admitted (preprocessing, waiting or running)",
                                 ["model", "version"], registry=r)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, request_id and any ``extra={"fields": {...}}``."""

    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
            "request_id": request_id_var.get(),
        }
        out.update(getattr(record, "fields", {}) or {})
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def setup_logging(level: str = "INFO") -> None:
    """JSON lines on stderr for our loggers and uvicorn's (uvicorn's access log is replaced by ours)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    for name in ("brainforge", "uvicorn", "uvicorn.error"):
        lg = logging.getLogger(name)
        lg.handlers[:] = [handler]
        lg.setLevel(level.upper())
        lg.propagate = False
    logging.getLogger("uvicorn.access").disabled = True


class ObservabilityMiddleware:
    """Request id (``X-Request-ID`` taken when well-formed, else generated; echoed), metrics and one access log line."""

    def __init__(self, app, metrics: Metrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        given = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1")
        rid = given if REQUEST_ID_RE.match(given) else uuid.uuid4().hex
        token = request_id_var.set(rid)
        start = time.perf_counter()
        status = 500

        async def send_with_id(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", rid.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - start
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            state = scope.get("state") or {}
            model = state.get("model", "")
            labels = (route, scope["method"], str(status), model)
            self.metrics.requests.labels(*labels).inc()
            self.metrics.latency.labels(*labels).observe(elapsed)
            log.info("request", extra={"fields": {
                "method": scope["method"], "path": scope["path"], "route": route, "status": status,
                "model": model, "key_id": state.get("key_id"), "duration_ms": round(elapsed * 1000, 2)}})
            request_id_var.reset(token)
