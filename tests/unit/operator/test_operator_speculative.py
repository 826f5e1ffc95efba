"""engine.speculativeConfig: the CRD's object becomes --speculative-config, vLLM's JSON with
snake_case keys, which `pagoda serve` parses and the engine's own check accepts as the same
config; and the schema states the rules the CEL messages enforce (tested against a real apiserver
in tests/integration/operator/test_operator_speculative_kube.py)."""

import argparse
import json
from pathlib import Path

import yaml

from pagoda.engine.cli import add_serve_args
from pagoda.engine.spec_decode.config import (
    MAX_SPECULATIVE_TOKENS,
    SpeculativeConfig,
    parse_speculative_config,
)
from pagoda.operator.spec import engine_args, parse, snake

ROOT = Path(__file__).resolve().parents[3]
CRD = yaml.safe_load((ROOT / "crds" / "inferenceservice.yaml").read_text())
ENGINE = CRD["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"][
    "properties"
]["engine"]
FIELD = ENGINE["properties"]["speculativeConfig"]


def rendered(spec_config: dict) -> dict:
    s = parse(
        "m", "ns", {"model": {"uri": "default"}, "engine": {"speculativeConfig": spec_config}}
    )
    parser = argparse.ArgumentParser()
    add_serve_args(parser)
    args = engine_args(s)
    assert args.count("--speculative-config") == 1
    return parser.parse_args(args).speculative_config


def test_ngram_renders_as_vllms_json():
    given = {
        "method": "ngram",
        "numSpeculativeTokens": 4,
        "promptLookupMin": 2,
        "promptLookupMax": 4,
    }
    flag = rendered(given)
    assert flag == {
        "method": "ngram",
        "num_speculative_tokens": 4,
        "prompt_lookup_min": 2,
        "prompt_lookup_max": 4,
    }
    assert parse_speculative_config(flag) == SpeculativeConfig("ngram", 4, 2, 4)


def test_draft_model_renders_its_model():
    flag = rendered({"method": "draft_model", "numSpeculativeTokens": 3, "model": "/models/draft"})
    assert flag == {"method": "draft_model", "num_speculative_tokens": 3, "model": "/models/draft"}
    assert parse_speculative_config(flag) == SpeculativeConfig(
        "draft_model", 3, model="/models/draft"
    )


def test_the_argument_is_one_json_word():
    s = parse(
        "m",
        "ns",
        {
            "model": {"uri": "default"},
            "engine": {"speculativeConfig": {"method": "ngram", "numSpeculativeTokens": 2}},
        },
    )
    args = engine_args(s)
    value = args[args.index("--speculative-config") + 1]
    assert json.loads(value) == {"method": "ngram", "num_speculative_tokens": 2}


def test_the_schema_matches_the_engines_check():
    props = FIELD["properties"]
    assert {snake(k) for k in props} == {
        "method",
        "num_speculative_tokens",
        "prompt_lookup_min",
        "prompt_lookup_max",
        "model",
    }
    assert props["method"]["enum"] == ["ngram", "draft_model"]
    k = props["numSpeculativeTokens"]
    assert (k["minimum"], k["maximum"]) == (1, MAX_SPECULATIVE_TOKENS)
    assert FIELD["required"] == ["method", "numSpeculativeTokens"]
