"""Prometheus metrics under vLLM's names, labels and bucket edges.

One set of metric objects per process (several models share it, told apart by `model_name`), so
dashboards, KEDA triggers and gateways written for vLLM read Pagoda unchanged.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

LABELS = ["model_name", "engine"]

TTFT_BUCKETS = [
    0.001,
    0.005,
    0.01,
    0.02,
    0.04,
    0.06,
    0.08,
    0.1,
    0.25,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    7.5,
    10.0,
    20.0,
    40.0,
    80.0,
    160.0,
    640.0,
    2560.0,
]
ITL_BUCKETS = [
    0.01,
    0.025,
    0.05,
    0.075,
    0.1,
    0.15,
    0.2,
    0.3,
    0.4,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    7.5,
    10.0,
    20.0,
    40.0,
    80.0,
]
REQUEST_LATENCY_BUCKETS = [
    0.3,
    0.5,
    0.8,
    1.0,
    1.5,
    2.0,
    2.5,
    5.0,
    10.0,
    15.0,
    20.0,
    30.0,
    40.0,
    50.0,
    60.0,
    120.0,
    240.0,
    480.0,
    960.0,
    1920.0,
    7680.0,
]


def token_buckets(max_model_len: int) -> list[float]:
    """vLLM's 1-2-5 series up to max_model_len."""
    out: list[float] = []
    exp = 0
    while True:
        for m in (1, 2, 5):
            v = m * 10**exp
            if v > max_model_len:
                return out
            out.append(float(v))
        exp += 1


_running = Gauge("vllm:num_requests_running", "Requests in the running batch", LABELS)
_waiting = Gauge("vllm:num_requests_waiting", "Requests waiting to be scheduled", LABELS)
_kv_usage = Gauge("vllm:kv_cache_usage_perc", "Fraction of KV cache blocks in use (0..1)", LABELS)
_prompt_tokens = Counter("vllm:prompt_tokens", "Prefill tokens processed", LABELS)
_generation_tokens = Counter("vllm:generation_tokens", "Generation tokens produced", LABELS)
_preemptions = Counter("vllm:num_preemptions", "Cumulative preemptions", LABELS)
_prefix_queries = Counter(
    "vllm:prefix_cache_queries", "Prompt tokens looked up in the prefix cache", LABELS
)
_prefix_hits = Counter("vllm:prefix_cache_hits", "Prompt tokens found in the prefix cache", LABELS)
_success = Counter("vllm:request_success", "Finished requests", LABELS + ["finished_reason"])
_ttft = Histogram(
    "vllm:time_to_first_token_seconds", "Time to first token", LABELS, buckets=TTFT_BUCKETS
)
_itl = Histogram(
    "vllm:inter_token_latency_seconds", "Time between output tokens", LABELS, buckets=ITL_BUCKETS
)
_e2e = Histogram(
    "vllm:e2e_request_latency_seconds",
    "End-to-end request latency",
    LABELS,
    buckets=REQUEST_LATENCY_BUCKETS,
)
_queue = Histogram(
    "vllm:request_queue_time_seconds",
    "Time spent waiting before first scheduled",
    LABELS,
    buckets=REQUEST_LATENCY_BUCKETS,
)
_token_histograms: dict[str, tuple[Histogram, Histogram]] = {}
# vLLM's: one series per (running, waiting) adapter set, valued at the time it was last seen;
# the newest series is the current state.
_lora_info = Gauge(
    "vllm:lora_requests_info",
    "Running stats on lora requests.",
    ["max_lora", "waiting_lora_adapters", "running_lora_adapters"],
)
_spec_drafts = Counter("vllm:spec_decode_num_drafts", "Speculative proposals verified", LABELS)
_spec_draft_tokens = Counter(
    "vllm:spec_decode_num_draft_tokens", "Speculative tokens proposed", LABELS
)
_spec_accepted_tokens = Counter(
    "vllm:spec_decode_num_accepted_tokens", "Speculative tokens accepted", LABELS
)
_spec_accepted_per_pos = Counter(
    "vllm:spec_decode_num_accepted_tokens_per_pos",
    "Speculative tokens accepted, by their position in the proposal",
    LABELS + ["position"],
)


class EngineMetrics:
    """The one engine's handle on the process-wide series, bound to its labels."""

    def __init__(self, model_name: str, max_model_len: int, engine: str = "0") -> None:
        lv = dict(model_name=model_name, engine=engine)
        self.running, self.waiting, self.kv_usage = (
            g.labels(**lv) for g in (_running, _waiting, _kv_usage)
        )
        self.prompt_tokens, self.generation_tokens, self.preemptions = (
            c.labels(**lv) for c in (_prompt_tokens, _generation_tokens, _preemptions)
        )
        self.prefix_queries, self.prefix_hits = (
            _prefix_queries.labels(**lv),
            _prefix_hits.labels(**lv),
        )
        self.ttft, self.itl, self.e2e, self.queue = (
            h.labels(**lv) for h in (_ttft, _itl, _e2e, _queue)
        )
        self._labels = lv
        prompt_h, gen_h = _request_token_histograms(max_model_len)
        self.request_prompt_tokens, self.request_generation_tokens = (
            prompt_h.labels(**lv),
            gen_h.labels(**lv),
        )
        for reason in ("stop", "length", "abort"):
            _success.labels(
                **lv, finished_reason=reason
            )  # export zeros so rate() works from the start

    def lora_info(self, max_lora: int, running: set[str], waiting: set[str]) -> None:
        _lora_info.labels(
            max_lora=str(max_lora),
            waiting_lora_adapters=",".join(sorted(waiting)),
            running_lora_adapters=",".join(sorted(running)),
        ).set_to_current_time()

    def spec_decode_verified(self, num_draft_tokens: int, num_accepted: int) -> None:
        """One sequence's proposal verified: k tokens proposed, the first num_accepted kept."""
        _spec_drafts.labels(**self._labels).inc()
        _spec_draft_tokens.labels(**self._labels).inc(num_draft_tokens)
        _spec_accepted_tokens.labels(**self._labels).inc(num_accepted)
        for pos in range(num_accepted):
            _spec_accepted_per_pos.labels(**self._labels, position=str(pos)).inc()

    def finished(self, reason: str) -> None:
        _success.labels(**self._labels, finished_reason=reason).inc()


def _request_token_histograms(max_model_len: int) -> tuple[Histogram, Histogram]:
    # prometheus_client fixes buckets per metric, not per label: the first engine's length wins.
    if "h" not in _token_histograms:
        b = token_buckets(max_model_len)
        _token_histograms["h"] = (
            Histogram("vllm:request_prompt_tokens", "Prompt tokens per request", LABELS, buckets=b),
            Histogram(
                "vllm:request_generation_tokens", "Generated tokens per request", LABELS, buckets=b
            ),
        )
    return _token_histograms["h"]
