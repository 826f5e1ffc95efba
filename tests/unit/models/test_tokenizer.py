"""The tokenizer comes with the model: built from the GGUF (chat template and EOS included)."""

from __future__ import annotations

import pytest

from pagoda.engine.config import EngineConfig
from pagoda.engine.loader.cache import cache_dir
from pagoda.engine.loader.errors import ModelLoadError
from pagoda.engine.loader.resolve import default_gguf_path
from pagoda.engine.tokenizer import load_tokenizer


def test_default_gguf_tokenizer() -> None:
    tokenizer = load_tokenizer(EngineConfig())
    assert (cache_dir(default_gguf_path()) / "tokenizer" / "tokenizer.json").is_file()
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.eos_token_id == 2
    assert tokenizer("The capital of France is").input_ids == [504, 3575, 282, 4649, 314]
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True
    )
    assert text.endswith("<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n")
    assert text.startswith("<|im_start|>system\n")


def test_explicit_tokenizer_paths(tmp_path) -> None:
    by_file = load_tokenizer(
        EngineConfig(load_format="dummy", model="llama-3.2-1b", tokenizer=str(default_gguf_path()))
    )
    assert by_file.eos_token == "<|im_end|>"
    by_file.save_pretrained(tmp_path)
    by_folder = load_tokenizer(EngineConfig(tokenizer=str(tmp_path)))
    assert by_folder("hello world").input_ids == by_file("hello world").input_ids
    with pytest.raises(ModelLoadError, match="tokenizer '.*missing' not found"):
        load_tokenizer(EngineConfig(tokenizer=str(tmp_path / "missing")))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match="no tokenizer at .*empty"):
        load_tokenizer(EngineConfig(tokenizer=str(tmp_path / "empty")))
