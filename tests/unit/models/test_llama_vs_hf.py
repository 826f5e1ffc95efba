"""Our model on the default GGUF against HF transformers loading the same file, in float32."""

from __future__ import annotations

import pytest
import torch
from paged_batch import PagedBatch

from pagoda.engine.config import EngineConfig
from pagoda.engine.loader import default_gguf_path, load_model
from pagoda.engine.tokenizer import load_tokenizer

PROMPTS = [
    "The capital of France is",
    "def fibonacci(n):\n    if n < 2:",
    "<|im_start|>user\nName three colors.<|im_end|>\n<|im_start|>assistant\n",
    "Once upon a time, in a small village at the edge of a great forest, there lived",
]
ATOL = 2e-3  # float32, different summation orders; logits are O(10)


@pytest.fixture(scope="module")
def models():
    from transformers import AutoModelForCausalLM

    path = default_gguf_path()
    hf = AutoModelForCausalLM.from_pretrained(
        str(path.parent), gguf_file=path.name, dtype=torch.float32
    )
    ours, cfg = load_model(EngineConfig(), torch.device("cpu"), torch.float32)
    return ours, cfg, hf.eval()


@pytest.fixture(scope="module")
def prompt_ids() -> list[list[int]]:
    tokenizer = load_tokenizer(EngineConfig())
    return [tokenizer(p).input_ids for p in PROMPTS]


def hf_logits(hf, ids: list[int]) -> torch.Tensor:
    with torch.inference_mode():
        return hf(torch.tensor([ids])).logits[0].float()


def test_config_from_gguf(models) -> None:
    _, cfg, hf = models
    assert (cfg.num_layers, cfg.hidden_size, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim) == (
        hf.config.num_hidden_layers,
        hf.config.hidden_size,
        9,
        3,
        64,
    )
    assert cfg.vocab_size == 49152 and cfg.tie_word_embeddings and cfg.rope_theta == 100000.0
    assert cfg.eos_token_ids == [2] and cfg.bos_token_id == 1


def test_prefill_batch_matches_hf(models, prompt_ids) -> None:
    """All prompts in one flattened batch; every position's logits equal HF's run of that prompt."""
    ours, cfg, hf = models
    batch = PagedBatch(cfg)
    logits = batch.step(ours, list(enumerate(prompt_ids)))
    for ids, got in zip(prompt_ids, logits):
        want = hf_logits(hf, ids)
        assert (got - want).abs().max().item() < ATOL
        assert torch.equal(got.argmax(-1), want.argmax(-1))


def test_chunked_prefill_and_decode_match_full_prefill(models, prompt_ids) -> None:
    """Prefill in chunks beside another sequence's decodes, then decode step by step: the logits
    at each position equal those of one full prefill of the whole text."""
    ours, cfg, _ = models
    long, short = prompt_ids[3], prompt_ids[0]
    continuation = [1034, 4567, 28, 905]  # arbitrary tokens fed as if generated
    batch = PagedBatch(cfg, block_size=4)  # several blocks per sequence, tables out of order
    got = {0: [], 1: []}
    got[1] += batch.step(ours, [(1, short)])
    pieces = [long[:5], long[5:12], long[12:]]
    for i, piece in enumerate(pieces):  # each chunk shares its step with a decode of sequence 1
        out = batch.step(ours, [(0, piece), (1, [continuation[i]])])
        got[0].append(out[0]), got[1].append(out[1])
    for token in continuation:
        out = batch.step(ours, [(1, [token]), (0, [token])])  # decodes of both, order swapped
        got[1].append(out[0]), got[0].append(out[1])
    for seq, ids in ((0, long + continuation), (1, short + continuation[:3] + continuation)):
        logits = torch.cat(got[seq])
        full = PagedBatch(cfg).step(ours, [(0, ids)])[0]
        assert logits.shape == full.shape
        assert (logits - full).abs().max().item() < ATOL
        assert torch.equal(logits.argmax(-1), full.argmax(-1))
