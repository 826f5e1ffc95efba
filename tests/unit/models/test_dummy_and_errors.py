"""Dummy weights at named shapes, the shapes' sizes, and the loader's errors."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
import torch
from local_hub import save_tiny_tokenizer
from paged_batch import PagedBatch
from tiny_hf import hf_model

from pagoda.engine.attention import TorchAttentionBackend
from pagoda.engine.config import EngineConfig
from pagoda.engine.loader import ResolvedModel, load_model, resolve_model
from pagoda.engine.loader.errors import ModelLoadError
from pagoda.engine.models import ModelConfig, build_model
from pagoda.engine.models.shapes import DUMMY_SHAPES

# Parameter counts of the real checkpoints (HF model cards / safetensors index totals).
PARAMS = {
    "smollm2-135m": 134_515_008,
    "llama-3.2-1b": 1_235_814_400,
    "llama-3.1-8b": 8_030_261_248,
    "mistral-7b": 7_248_023_552,
    "qwen2.5-0.5b": 494_032_768,
    "qwen3-8b": 8_190_735_360,
}


@pytest.mark.parametrize("shape", sorted(DUMMY_SHAPES))
def test_named_shape_has_the_real_models_size(shape: str) -> None:
    with torch.device("meta"):
        model = build_model(ModelConfig.from_shape(shape), TorchAttentionBackend())
    assert sum(p.numel() for p in model.parameters()) == PARAMS[shape]


def test_dummy_model_runs() -> None:
    model, cfg = load_model(
        EngineConfig(load_format="dummy", model="smollm2-135m"), torch.device("cpu"), torch.bfloat16
    )
    assert model.model.embed_tokens.weight.dtype == torch.bfloat16
    assert model.model.embed_tokens.weight.std().item() == pytest.approx(0.02, rel=0.05)
    batch = PagedBatch(cfg, dtype=torch.bfloat16)
    prefill = batch.step(model, [(0, [1, 2, 3, 4, 5]), (1, [7, 8])])
    decode = batch.step(model, [(0, [6]), (1, [9])])
    for logits in prefill + decode:
        assert logits.dtype == torch.float32 and logits.shape[-1] == 49152
        assert torch.isfinite(logits).all() and logits.std() > 0


def test_dummy_from_config_json(tmp_path) -> None:
    (tmp_path / "config.json").write_text(
        json.dumps(
            dict(
                architectures=["Qwen2ForCausalLM"],
                vocab_size=300,
                hidden_size=32,
                intermediate_size=48,
                num_hidden_layers=2,
                num_attention_heads=4,
                num_key_value_heads=1,
                eos_token_id=5,
            )
        )
    )
    cfg = EngineConfig(load_format="dummy", model=str(tmp_path))
    assert resolve_model(cfg) == ResolvedModel("dummy", tmp_path / "config.json")
    model, mc = load_model(cfg, torch.device("cpu"), torch.float32)
    assert mc.attention_bias and mc.head_dim == 8 and mc.eos_token_ids == [5]
    logits = PagedBatch(mc).step(model, [(0, [1, 2, 3])])[0]
    assert logits.shape == (3, 300) and torch.isfinite(logits).all()


def test_dummy_shape_flag_and_default() -> None:
    assert (
        resolve_model(EngineConfig(load_format="dummy", dummy_shape="llama-3.1-8b")).shape
        == "llama-3.1-8b"
    )
    assert resolve_model(EngineConfig(load_format="dummy")).shape == "smollm2-135m"


def test_default_model_resolves_to_the_packaged_gguf() -> None:
    resolved = resolve_model(EngineConfig())
    assert resolved.kind == "gguf" and resolved.path.name == "SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.mark.parametrize(
    "config,error,match",
    [
        (
            EngineConfig(model="/nonexistent/model"),
            FileNotFoundError,
            "not found: give 'default', a Hub model",
        ),
        (
            EngineConfig(load_format="dummy", model="llama-9"),
            ValueError,
            "unknown dummy model shape 'llama-9'",
        ),
        (
            EngineConfig(dummy_shape="llama-3.1-8b"),
            ValueError,
            "--dummy-shape needs --load-format dummy",
        ),
        (EngineConfig(load_format="safetensors"), ValueError, "does not fit"),
    ],
)
def test_loader_errors(config: EngineConfig, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        load_model(config, torch.device("cpu"), torch.float32)


def test_folder_without_a_model(tmp_path) -> None:
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ValueError, match="no config.json with \\*.safetensors"):
        resolve_model(EngineConfig(model=str(tmp_path)))
    (tmp_path / "notes.txt").write_text("")
    with pytest.raises(ValueError, match="neither a .gguf file nor a folder"):
        resolve_model(EngineConfig(model=str(tmp_path / "notes.txt")))


def test_not_a_gguf_file(tmp_path) -> None:
    path = tmp_path / "broken.gguf"
    path.write_bytes(b"not gguf at all")
    with pytest.raises(ValueError, match="not a readable GGUF file"):
        load_model(EngineConfig(model=str(path)), torch.device("cpu"), torch.float32)


def test_unsupported_architecture() -> None:
    with pytest.raises(ValueError, match="unsupported architecture 'GPT2LMHeadModel'"):
        ModelConfig.from_hf(
            dict(
                architectures=["GPT2LMHeadModel"],
                vocab_size=10,
                hidden_size=8,
                intermediate_size=8,
                num_hidden_layers=1,
                num_attention_heads=2,
            )
        )


def test_checkpoint_missing_a_tensor() -> None:
    cfg = ModelConfig.from_hf(
        dict(
            vocab_size=10,
            hidden_size=8,
            intermediate_size=8,
            num_hidden_layers=1,
            num_attention_heads=2,
            tie_word_embeddings=True,
        )
    )
    model = build_model(cfg, TorchAttentionBackend())
    with pytest.raises(ValueError, match="checkpoint lacks .* tensors"):
        model.load_weights([("model.layers.0.self_attn.q_proj.weight", torch.zeros(8, 8))])
    with pytest.raises(KeyError, match="has no place in the model"):
        model.load_weights([("model.layers.7.mlp.up_proj.weight", torch.zeros(8, 8))])


@pytest.fixture
def tiny_folder(tmp_path):
    hf_model("LlamaForCausalLM", tie_word_embeddings=True).save_pretrained(tmp_path)
    return tmp_path


def test_corrupt_safetensors(tiny_folder) -> None:
    path = tiny_folder / "model.safetensors"
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(ModelLoadError, match=f"^{path} is not a readable safetensors file"):
        load_model(EngineConfig(model=str(tiny_folder)), torch.device("cpu"), torch.float32)


def test_config_disagrees_with_the_weights(tiny_folder) -> None:
    config = json.loads((tiny_folder / "config.json").read_text())
    (tiny_folder / "config.json").write_text(json.dumps({**config, "intermediate_size": 97}))
    with pytest.raises(
        ModelLoadError, match=f"{tiny_folder}: .*mlp.* expected 97 (rows|columns)"
    ) as e:
        load_model(EngineConfig(model=str(tiny_folder)), torch.device("cpu"), torch.float32)
    assert "\n" not in str(e.value)
    del config["hidden_size"]
    (tiny_folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelLoadError, match="config.json lacks 'hidden_size'"):
        load_model(EngineConfig(model=str(tiny_folder)), torch.device("cpu"), torch.float32)


def test_max_model_len_past_the_kv_cache(tiny_folder) -> None:
    from pagoda.engine.llm_engine import LLMEngine

    config = EngineConfig(model=str(tiny_folder), max_model_len=256, num_gpu_blocks_override=4)
    with pytest.raises(ModelLoadError, match="max_model_len 256 does not fit the KV cache"):
        LLMEngine(config, tokenizer=object(), log_stats=False)


def test_bad_input_is_one_line_and_exit_1_from_the_cli(tiny_folder, tmp_path_factory) -> None:
    """The bad inputs above as a user meets them, through `pagoda serve` (the four at once): one
    line on stderr naming the file or the number, exit code 1, no traceback."""
    save_tiny_tokenizer(tiny_folder)
    files = list(tiny_folder.iterdir())
    bad = tmp_path_factory.mktemp("bad")
    folders = {name: bad / name for name in ("corrupt", "shapes", "no-tokenizer", "kv")}
    for folder in folders.values():
        folder.mkdir()
        for f in files:
            (folder / f.name).write_bytes(f.read_bytes())
    weights = folders["corrupt"] / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    config = json.loads((tiny_folder / "config.json").read_text())
    (folders["shapes"] / "config.json").write_text(json.dumps({**config, "intermediate_size": 97}))
    for f in ("tokenizer.json", "tokenizer_config.json"):
        (folders["no-tokenizer"] / f).unlink()
    at = {name: re.escape(str(folder)) for name, folder in folders.items()}
    expected = {
        "corrupt": rf"{at['corrupt']}/model\.safetensors is not a readable safetensors file: .+",
        "shapes": rf"{at['shapes']}: model\.layers\.\d\.mlp\..+: expected 97 (rows|columns).*",
        "no-tokenizer": rf"no tokenizer at {at['no-tokenizer']} \(no tokenizer\.json .+",
        "kv": r"max_model_len 256 does not fit the KV cache \(64 tokens\); lower --max-model-len.+",
    }
    serve = [sys.executable, "-m", "pagoda.engine.cli", "serve", "--device", "cpu", "--port", "0"]
    extra = {"kv": ["--max-model-len", "256", "--num-gpu-blocks-override", "4"]}
    procs = {
        name: subprocess.Popen(
            [*serve, str(folder), *extra.get(name, [])],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name, folder in folders.items()
    }
    for name, proc in procs.items():
        try:
            stderr = proc.communicate(timeout=180)[1]
        finally:
            proc.kill()
        errors = [line for line in stderr.splitlines() if "error" in line.lower()]
        assert proc.returncode == 1 and len(errors) == 1, (name, stderr)
        assert re.fullmatch("pagoda: error: " + expected[name], errors[0]), (name, errors[0])
        assert "Traceback" not in stderr


def test_weights_larger_than_the_free_gpu_memory(monkeypatch) -> None:
    """Refused before anything is allocated (the free memory faked: no GPU here), in GiB."""
    from pagoda.engine.loader.model_loader import check_fits

    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device: (2**30, 80 * 2**30))
    cfg = ModelConfig.from_shape("llama-3.2-1b")
    with pytest.raises(ModelLoadError, match="need 2.3 GiB in torch.bfloat16, cuda:0 has 1.0 GiB"):
        check_fits(cfg, TorchAttentionBackend(), torch.device("cuda:0"), torch.bfloat16)
