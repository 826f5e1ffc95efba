"""What `LLM.get_metrics()` returns, in the shape of vLLM's vllm/v1/metrics/reader.py: objects with
`name` (the Prometheus name, a counter's without `_total`) and `labels`, and `value` (Counter,
Gauge) or `values` (Vector: one count per position, as vLLM reads the per-position series)."""

from __future__ import annotations

from dataclasses import dataclass, field

from pagoda.engine.spec_decode.decoder import SpecDecodeStats


@dataclass
class Metric:
    name: str
    labels: dict[str, str] = field(default_factory=dict)


@dataclass
class Counter(Metric):
    value: int = 0


@dataclass
class Gauge(Metric):
    value: float = 0.0


@dataclass
class Vector(Metric):
    values: list[int] = field(default_factory=list)


def spec_decode_metrics(stats: SpecDecodeStats, labels: dict[str, str]) -> list[Metric]:
    return [
        Counter("vllm:spec_decode_num_drafts", labels, stats.num_drafts),
        Counter("vllm:spec_decode_num_draft_tokens", labels, stats.num_draft_tokens),
        Counter("vllm:spec_decode_num_accepted_tokens", labels, stats.num_accepted_tokens),
        Vector(
            "vllm:spec_decode_num_accepted_tokens_per_pos",
            labels,
            list(stats.num_accepted_tokens_per_pos),
        ),
    ]
