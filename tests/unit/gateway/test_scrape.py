"""The engines' load as the gateway reads it from their /metrics text."""

from __future__ import annotations

import pytest

from pagoda.gateway.scrape import parse_load

TEXT = """# HELP vllm:num_requests_waiting Requests waiting
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="a"} 3.0
vllm:num_requests_waiting{engine="0",model_name="b"} 1.0
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{engine="0",model_name="a"} 0.25
vllm:kv_cache_usage_perc{engine="0",model_name="b"} 0.5
vllm:num_requests_running{engine="0",model_name="a"} 7.0
"""


def test_waiting_is_summed_and_kv_usage_is_the_fullest_cache():
    assert parse_load(TEXT) == (4.0, 0.5)


def test_no_series_is_no_load():
    assert parse_load("# nothing here\n") == (0.0, 0.0)


def test_garbage_raises_for_the_scraper_to_count_as_unknown():
    with pytest.raises(ValueError):
        parse_load("vllm:num_requests_waiting{} lots\n")
