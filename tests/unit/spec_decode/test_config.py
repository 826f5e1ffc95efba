"""--speculative-config as vLLM takes it, and the bad input refused at start with its reason."""

from __future__ import annotations

import subprocess
import sys

import pytest

from pagoda.engine.config import EngineConfig
from pagoda.engine.spec_decode.config import SpeculativeConfig, parse_speculative_config


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ({"method": "ngram", "num_speculative_tokens": 4}, SpeculativeConfig("ngram", 4, 5, 5)),
        (
            {"method": "ngram", "num_speculative_tokens": 3, "prompt_lookup_max": 4},
            SpeculativeConfig("ngram", 3, 4, 4),
        ),
        (
            {"model": "[ngram]", "num_speculative_tokens": 2, "prompt_lookup_min": 1},
            SpeculativeConfig("ngram", 2, 1, 1),
        ),
        (
            {
                "method": "ngram",
                "num_speculative_tokens": 5,
                "prompt_lookup_min": 2,
                "prompt_lookup_max": 6,
            },
            SpeculativeConfig("ngram", 5, 2, 6),
        ),
        (
            {"model": "some/draft", "num_speculative_tokens": 4},
            SpeculativeConfig("draft_model", 4, model="some/draft"),
        ),
    ],
)
def test_vllm_forms_parse(given, expected):
    assert parse_speculative_config(given) == expected


@pytest.mark.parametrize(
    ("given", "reason"),
    [
        ({"method": "eagle", "num_speculative_tokens": 3}, "method 'eagle' is not supported"),
        ({"num_speculative_tokens": 3}, "method None is not supported"),
        ({"method": "ngram", "num_speculative_tokens": 0}, "num_speculative_tokens must be"),
        ({"method": "ngram", "num_speculative_tokens": 17}, "in 1..16"),
        ({"method": "ngram", "num_speculative_tokens": True}, "num_speculative_tokens must be"),
        ({"method": "ngram"}, "num_speculative_tokens must be"),
        (
            {
                "method": "ngram",
                "num_speculative_tokens": 2,
                "prompt_lookup_min": 4,
                "prompt_lookup_max": 2,
            },
            "1 <= min <= max",
        ),
        ({"method": "draft_model", "num_speculative_tokens": 2}, "needs `model`"),
        ({"method": "ngram", "num_speculative_tokens": 2, "eagle": 1}, "unsupported key"),
    ],
)
def test_bad_input_is_refused_with_the_reason(given, reason):
    with pytest.raises(ValueError, match="speculative_config: .*" + _escape(reason)):
        parse_speculative_config(given)


def _escape(text: str) -> str:
    import re

    return re.escape(text)


def test_async_scheduling_is_refused_with_speculation():
    cfg = EngineConfig(
        async_scheduling=True,
        speculative_config={"method": "ngram", "num_speculative_tokens": 2},
    )
    with pytest.raises(ValueError, match="does not combine with --async-scheduling"):
        cfg.validate()


def test_worker_processes_are_refused_with_speculation():
    cfg = EngineConfig(
        tensor_parallel_size=2,
        speculative_config={"method": "ngram", "num_speculative_tokens": 2},
    )
    with pytest.raises(ValueError, match="worker processes do not carry draft tokens"):
        cfg.validate()


def test_the_cli_refuses_bad_input_in_one_line():
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "pagoda.engine.cli",
            "serve",
            "--speculative-config",
            '{"method": "medusa", "num_speculative_tokens": 2}',
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 2
    last = run.stderr.strip().splitlines()[-1]
    assert last == (
        "pagoda: error: speculative_config: method 'medusa' is not supported; "
        "use one of ['ngram', 'draft_model']"
    )
