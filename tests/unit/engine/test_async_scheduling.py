"""Async scheduling: step N+1 is scheduled and launched before step N's tokens reach the host.

The fake runner, like the real one, reads a PENDING_TOKEN input from the last step's samples, so
a wrong slot, a token taken in twice or a step that computes on a stale input changes the output.
"""

from __future__ import annotations

import json

from engine_harness import generate_all
from test_fork_swap import expected, make_engine, run

from pagoda.engine.core.sequence import PENDING_TOKEN
from pagoda.engine.sampling_params import SamplingParams


def test_steps_overlap_and_outputs_match_solo_runs():
    reqs = [
        (list(range(i, i + 3 + i)), 4 + 3 * i, 1, seed)
        for i, seed in enumerate([None, 3, None, 11, 5])
    ]
    engine = make_engine(num_blocks=64, async_scheduling=True)
    overlapped = 0
    original_step = engine.step

    def counting_step():
        nonlocal overlapped
        outputs = original_step()
        overlapped += engine.core._in_flight is not None
        for (
            seq
        ) in engine.scheduler.running:  # a pending token only ever at the end, only while in flight
            assert PENDING_TOKEN not in seq.output_token_ids[:-1]
        return outputs

    engine.step = counting_step
    assert run(engine, reqs) == {i: expected(*r) for i, r in enumerate(reqs)}
    assert overlapped > 10


def test_a_stop_token_ends_the_sequence_and_the_token_computed_past_it_is_dropped():
    prompt = [1, 2, 3]
    free_run = expected(prompt, 10, 1, None)[0]
    stop = free_run[1]
    want = free_run[: free_run.index(stop) + 1]
    for async_scheduling in (False, True):
        engine = make_engine(num_blocks=32, async_scheduling=async_scheduling)
        engine.add_request(
            "r",
            prompt,
            SamplingParams(
                temperature=0.0,
                max_tokens=10,
                stop_token_ids=[stop],
                detokenize=False,
                ignore_eos=True,
                output_kind="final_only",
            ),
        )
        outs = []
        while engine.has_unfinished_requests():
            outs += engine.step()
        (out,) = outs
        assert out.outputs[0].token_ids == want
        assert (out.outputs[0].finish_reason, out.outputs[0].stop_reason) == ("stop", stop)
        assert engine.kv.num_free_blocks == engine.kv.num_blocks


def test_penalties_and_forks_do_not_run_ahead():
    engine = make_engine(num_blocks=64, async_scheduling=True)
    engine.add_request(
        "p", [1, 2, 3], SamplingParams(max_tokens=6, repetition_penalty=1.2, detokenize=False)
    )
    engine.add_request("n", [4, 5, 6], SamplingParams(max_tokens=6, n=2, seed=1, detokenize=False))
    while engine.has_unfinished_requests():
        engine.step()
        assert engine.core._in_flight is None


def test_abort_while_a_token_computes():
    engine = make_engine(num_blocks=64, async_scheduling=True)
    engine.add_request(
        "a", [1, 2, 3], SamplingParams(max_tokens=20, detokenize=False, ignore_eos=True)
    )
    for _ in range(4):
        engine.step()
    assert engine.core._in_flight is not None
    out = engine.abort_request("a")
    assert out.outputs[0].finish_reason == "abort" and PENDING_TOKEN not in out.outputs[0].token_ids
    assert (
        out.outputs[0].token_ids == expected([1, 2, 3], len(out.outputs[0].token_ids), 1, None)[0]
    )
    while engine.has_unfinished_requests():
        assert engine.step() == []
    assert engine.kv.num_free_blocks == engine.kv.num_blocks


def test_real_runner_gives_the_same_tokens_with_and_without_async_scheduling(tmp_path):
    (tmp_path / "config.json").write_text(
        json.dumps(
            dict(
                vocab_size=1000,
                hidden_size=64,
                intermediate_size=128,
                num_hidden_layers=2,
                num_attention_heads=4,
                num_key_value_heads=2,
                max_position_embeddings=1024,
                eos_token_id=2,
            )
        )
    )
    assert generate_all(str(tmp_path), True) == generate_all(str(tmp_path), False)
