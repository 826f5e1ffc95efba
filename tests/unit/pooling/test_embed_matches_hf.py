"""LLM.embed (runner="pooling") equals HF transformers' final hidden states, pooled and normalized
as vLLM does, on a tiny random Llama: last token, mean, sentence-transformers files, Matryoshka
dimensions; chunked prefill, batching and prefix caching change nothing. (The default model is
compared with HF through the server: tests/integration/server/test_server_embeddings.py.)"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from tiny_checkpoint import write_tiny_checkpoint

from pagoda.engine.llm import LLM
from pagoda.engine.pooling_params import PoolingParams
from pagoda.engine.sampling_params import ParamError

PROMPTS = [[5, 17, 42, 99, 3], [7] * 40, list(range(3, 60)), [11]]


@functools.cache
def hf_model(folder: Path) -> torch.nn.Module:
    from transformers import LlamaModel

    return LlamaModel.from_pretrained(str(folder), dtype=torch.float32).eval()


def hf_hidden(folder: Path, prompt: list[int]) -> torch.Tensor:
    """HF's last hidden states (after the final norm) of one prompt, float32: [len, hidden]."""
    model = hf_model(folder)
    with torch.inference_mode():
        return model(torch.tensor([prompt])).last_hidden_state[0]


def tiny_llm(folder: Path, **kw) -> LLM:
    return LLM(
        str(folder),
        runner="pooling",
        dtype="float32",
        device="cpu",
        tokenizer=str(folder),
        max_num_batched_tokens=16,  # long prompts are computed in chunks
        max_num_seqs=8,
        num_gpu_blocks_override=64,
        **kw,
    )


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    folder = write_tiny_checkpoint(tmp_path_factory.mktemp("tiny"))
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    vocab = {f"t{i}": i for i in range(300)}
    tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel(vocab, "t0")))
    tok.save_pretrained(str(folder))
    return folder


def expected(folder: Path, prompt: list[int], how: str, normalize: bool = True) -> torch.Tensor:
    hidden = hf_hidden(folder, prompt)
    vector = hidden[-1] if how == "LAST" else hidden.mean(dim=0)
    return F.normalize(vector, dim=-1) if normalize else vector


def test_last_token_normalized_by_default(tiny: Path) -> None:
    llm = tiny_llm(tiny)
    outs = llm.embed([{"prompt_token_ids": p} for p in PROMPTS])
    for prompt, out in zip(PROMPTS, outs):
        got = torch.tensor(out.outputs.embedding)
        assert out.prompt_token_ids == prompt
        torch.testing.assert_close(got, expected(tiny, prompt, "LAST"), atol=1e-4, rtol=1e-4)
        assert abs(got.norm().item() - 1.0) < 1e-5
    again = llm.embed({"prompt_token_ids": PROMPTS[2]})  # its blocks now in the prefix cache
    torch.testing.assert_close(
        torch.tensor(again[0].outputs.embedding), torch.tensor(outs[2].outputs.embedding)
    )


def test_mean_pooling_and_no_normalize_from_the_flag(tiny: Path) -> None:
    llm = tiny_llm(tiny, pooler_config=json.dumps({"pooling_type": "MEAN", "normalize": False}))
    for _ in range(2):  # the second time the prompts' blocks are cached: mean must not use them
        outs = llm.encode([{"prompt_token_ids": p} for p in PROMPTS])
        for prompt, out in zip(PROMPTS, outs):
            assert out.outputs.data is not None
            want = expected(tiny, prompt, "MEAN", normalize=False)
            torch.testing.assert_close(out.outputs.data, want, atol=1e-4, rtol=1e-4)


def test_sentence_transformers_files_and_matryoshka(tmp_path: Path, tiny: Path) -> None:
    folder = tmp_path / "st"
    folder.mkdir()
    for f in tiny.iterdir():
        (folder / f.name).write_bytes(f.read_bytes())
    cfg = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**cfg, "matryoshka_dimensions": [16, 32]}))
    (folder / "modules.json").write_text(
        json.dumps(
            [
                {
                    "idx": 0,
                    "name": "0",
                    "path": "",
                    "type": "sentence_transformers.models.Transformer",
                },
                {
                    "idx": 1,
                    "name": "1",
                    "path": "1_Pooling",
                    "type": "sentence_transformers.models.Pooling",
                },
            ]
        )
    )
    (folder / "1_Pooling").mkdir()
    (folder / "1_Pooling" / "config.json").write_text(
        json.dumps({"pooling_mode_mean_tokens": True, "pooling_mode_lasttoken": False})
    )
    llm = tiny_llm(folder)  # mean pooling, and no Normalize module: not normalized
    [out] = llm.embed({"prompt_token_ids": PROMPTS[1]}, PoolingParams(dimensions=16))
    want = expected(tiny, PROMPTS[1], "MEAN", normalize=False)[:16]
    torch.testing.assert_close(torch.tensor(out.outputs.embedding), want, atol=1e-4, rtol=1e-4)
    with pytest.raises(ParamError, match=r"only supports \[16, 32\]"):
        llm.embed({"prompt_token_ids": PROMPTS[1]}, PoolingParams(dimensions=20))


def test_dimensions_refused_where_the_model_is_not_matryoshka(tiny: Path) -> None:
    llm = tiny_llm(tiny)
    with pytest.raises(ParamError, match="does not support matryoshka"):
        llm.embed("t5 t6", PoolingParams(dimensions=8))
    with pytest.raises(ParamError, match="no text"):
        llm.generate("t5 t6")
