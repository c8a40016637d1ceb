"""Prometheus metrics (`/metrics`), on a registry of the server's own.

Per-request counters and latency histograms are fed by the engine's finished-request observer
(on the scheduler thread: prometheus-client objects are thread-safe). Gauges of the scheduler and
KV state are read at scrape time from `Engine.stats()`, so they are never stale.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

_LATENCY_BUCKETS = (0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 60)

_GAUGES = {
    "running_requests": "Requests prefilling or decoding",
    "waiting_requests": "Requests in the waiting queue",
    "kv_total": "KV pool size in tokens",
    "kv_free": "Free KV slots",
    "kv_evictable": "KV slots cached in the radix tree and evictable",
    "kv_protected": "KV slots cached in the radix tree and locked by running requests",
    "cache_hit_rate": "Cached prompt tokens / prompt tokens since start",
}
_HYBRID_GAUGES = {  # models with sliding-window layers (a hybrid KV pool)
    "swa_total": "SWA slots: sliding-window layers' KV pool size in tokens",
    "swa_free": "Free SWA slots",
    "swa_cached": "Tokens of the radix tree with live sliding-window KV",
}


class _EngineStateCollector:
    def __init__(self, stats: Callable[[], dict[str, Any] | None]):
        self.stats = stats

    def collect(self):
        stats = self.stats()
        if stats is None:
            return
        for name, doc in _GAUGES.items():
            yield GaugeMetricFamily(f"radixgen_{name}", doc, value=float(stats[name]))
        for name, doc in _HYBRID_GAUGES.items():
            if name in stats:
                yield GaugeMetricFamily(f"radixgen_{name}", doc, value=float(stats[name]))
        yield GaugeMetricFamily(
            "radixgen_kv_idle_invariant_ok",
            "1 when free + evictable + protected == total (or not idle)",
            value=float(stats["kv_idle_invariant_ok"]),
        )
        yield CounterMetricFamily(
            "radixgen_retractions",
            "Requests retracted under KV pressure",
            value=stats["retractions"],
        )
        yield CounterMetricFamily(
            "radixgen_spec_draft_tokens",
            "Tokens drafted by speculative decoding",
            value=stats["spec_draft_tokens"],
        )
        yield CounterMetricFamily(
            "radixgen_spec_accepted_tokens",
            "Drafted tokens accepted into outputs",
            value=stats["spec_accepted_tokens"],
        )


class ServerMetrics:
    def __init__(self, stats: Callable[[], dict[str, Any] | None]):
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "radixgen_requests", "Finished requests by outcome", ["outcome"], registry=r
        )
        self.prompt_tokens = Counter("radixgen_prompt_tokens", "Prompt tokens", registry=r)
        self.cached_tokens = Counter(
            "radixgen_cached_tokens", "Prompt tokens served from the radix cache", registry=r
        )
        self.generated_tokens = Counter(
            "radixgen_generation_tokens", "Generated tokens", registry=r
        )
        self.ttft = Histogram(
            "radixgen_time_to_first_token_seconds",
            "Time to first token",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.itl = Histogram(
            "radixgen_inter_token_latency_seconds",
            "Mean time between output tokens, per request",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.e2e = Histogram(
            "radixgen_e2e_request_latency_seconds",
            "End-to-end latency",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        r.register(_EngineStateCollector(stats))

    def observe(self, record: dict[str, Any]) -> None:
        """The engine's observer: one finished request."""
        self.requests.labels(record["outcome"]).inc()
        self.prompt_tokens.inc(record["prompt_tokens"])
        self.cached_tokens.inc(record["cached_tokens"])
        self.generated_tokens.inc(record["completion_tokens"])
        self.e2e.observe(record["e2e_latency"])
        if record["ttft"] is not None:
            self.ttft.observe(record["ttft"])
        if record["itl"] is not None:
            self.itl.observe(record["itl"])

    def render(self) -> bytes:
        return generate_latest(self.registry)
