"""Structured outputs through a whole engine: a tiny random-weight model over the default model's
vocabulary, so its tokens are noise and only the grammar makes the output valid. Several seqs per
request (n > 1), preemption (a KV pool too small for the batch), prefix caching, async scheduling."""

from __future__ import annotations

import json

import jsonschema
import pytest
from engine_harness import PreemptionCounter, run_to_completion

from pagoda.engine.config import EngineConfig
from pagoda.engine.core_messages import GRAMMAR_DEAD_END
from pagoda.engine.llm_engine import LLMEngine
from pagoda.engine.sampling_params import SamplingParams
from pagoda.engine.structured.params import StructuredOutputsParams as S

SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 6},
        "color": {"enum": ["red", "green", "blue"]},
        "size": {"type": "integer"},
        "weight": {"type": "number"},
        "tags": {"type": "array", "items": {"type": "boolean"}, "maxItems": 3},
        "home": {
            "type": "object",
            "properties": {"city": {"type": "string", "maxLength": 4}, "open": {"type": "boolean"}},
            "required": ["city", "open"],
        },
    },
    "required": ["name", "color", "size", "weight", "tags", "home"],
}


@pytest.fixture(scope="module")
def engine(tmp_path_factory) -> LLMEngine:
    folder = tmp_path_factory.mktemp("tiny")
    (folder / "config.json").write_text(
        json.dumps(
            dict(
                vocab_size=49152,  # the default model's tokenizer
                hidden_size=32,
                intermediate_size=64,
                num_hidden_layers=1,
                num_attention_heads=2,
                num_key_value_heads=1,
                max_position_embeddings=512,
                eos_token_id=2,
            )
        )
    )
    config = EngineConfig(
        load_format="dummy",
        model=str(folder),
        device="cpu",
        max_model_len=512,
        max_num_seqs=8,
        max_num_batched_tokens=128,
        num_gpu_blocks_override=40,  # 640 token slots for up to 8 x ~150: preempts
        async_scheduling=True,
        enable_prefix_caching=True,
    )
    return LLMEngine(config, log_stats=False)


def run(engine: LLMEngine, prompts: list[str], params: SamplingParams) -> list:
    for i, prompt in enumerate(prompts):
        engine.add_request(f"r{i}-{id(params)}", prompt, params)
    outs = [o for o in run_to_completion(engine) if o.finished]
    return [c for o in sorted(outs, key=lambda o: o.request_id) for c in o.outputs]


def test_json_schema_holds_for_noise_with_n_preemption_and_prefix_caching(engine):
    preemptions = PreemptionCounter(engine)
    prefix = "Shared instructions, long enough to fill whole KV blocks of the prefix cache. " * 3
    params = SamplingParams(
        n=2, temperature=1.0, seed=7, max_tokens=160, structured_outputs=S(json=SCHEMA)
    )
    outputs = run(engine, [prefix + f"Item {i}." for i in range(4)], params)
    assert len(outputs) == 8
    for out in outputs:
        assert out.finish_reason == "stop", out
        jsonschema.validate(json.loads(out.text), SCHEMA)
    assert preemptions.count > 0
    assert len({o.text for o in outputs}) > 1  # sampled, not one forced string


@pytest.mark.parametrize(
    "constraint,check",
    [
        (S(regex=r"[a-c]{2}-\d{3}"), lambda t: len(t) == 6 and t[2] == "-" and t[3:].isdigit()),
        (S(choice=["alpha", "beta gamma", "δ"]), lambda t: t in ("alpha", "beta gamma", "δ")),
        (S(grammar='root ::= "(" [0-9] ("+" [0-9])? ")"'), lambda t: t[0] == "(" and t[-1] == ")"),
        (S(json_object=True), lambda t: isinstance(json.loads(t), dict)),
    ],
)
def test_regex_choice_grammar_and_json_object(engine, constraint, check):
    params = SamplingParams(
        n=2, temperature=1.0, seed=3, max_tokens=60, structured_outputs=constraint
    )
    for out in run(engine, ["Answer:"], params):
        if constraint.json_object and out.finish_reason == "length":
            continue  # noise may fill an open object to the limit: valid JSON is all that is asked
        assert out.finish_reason == "stop" and check(out.text), out


def test_a_grammar_with_no_allowed_token_ends_the_request_clearly(engine):
    """The grammar is done after "yes", but min_tokens forbids EOS: nothing is allowed."""
    params = SamplingParams(
        temperature=0, max_tokens=20, min_tokens=5, structured_outputs=S(choice=["yes"])
    )
    [out] = run(engine, ["Is it?"], params)
    assert (out.text, out.finish_reason, out.stop_reason) == ("yes", "abort", GRAMMAR_DEAD_END)


def test_bad_constraints_are_value_errors(engine):
    for bad, message in [
        (S(json={"type": "object", "properties": 5}), "invalid json"),
        (S(regex="a(b"), "invalid regex"),
        (S(grammar="root ::= undefined_rule"), "invalid grammar"),
    ]:
        with pytest.raises(ValueError, match=message):
            engine.add_request("bad", "x", SamplingParams(structured_outputs=bad))
    with pytest.raises(ValueError, match="exactly one"):
        S(regex="a", choice=["a"])
    with pytest.raises(ValueError, match="beam search"):
        engine.add_request(
            "beam", "x", SamplingParams(use_beam_search=True, n=2, structured_outputs=S(regex="a"))
        )


def test_compiled_grammars_are_cached(engine):
    structured = engine.structured
    schema = S(json={"type": "object", "properties": {"cached": {"type": "integer"}}})
    structured.compile(schema)
    size = structured.compiler.get_cache_size_bytes()
    assert size > 0
    structured.compile(S(json={"type": "object", "properties": {"cached": {"type": "integer"}}}))
    assert structured.compiler.get_cache_size_bytes() == size  # the same schema: no new entry
    structured.compile(S(regex="[0-9]+"))
    assert structured.compiler.get_cache_size_bytes() > size
