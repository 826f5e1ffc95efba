"""Beam search against HF transformers' own, driving the same tiny random Llama."""

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from pagoda.engine.sample.beam import BeamSearch

PROMPT = [5, 17, 3, 42, 8]


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        initializer_range=0.3,
    )
    # float64 so that HF's cached decoding and our uncached one give the same float32 logprobs.
    return LlamaForCausalLM(config).double().eval()


def hf_beam_search(model, beam_width, max_tokens, eos, length_penalty, early_stopping):
    out = model.generate(
        torch.tensor([PROMPT]),
        attention_mask=torch.ones(1, len(PROMPT), dtype=torch.long),
        num_beams=beam_width,
        num_return_sequences=beam_width,
        max_new_tokens=max_tokens,
        length_penalty=length_penalty,
        early_stopping=early_stopping,
        do_sample=False,
        eos_token_id=eos,
        pad_token_id=eos,
        return_dict_in_generate=True,
        output_scores=True,
    )
    results = []
    for seq, score in zip(out.sequences[:, len(PROMPT) :].tolist(), out.sequences_scores.tolist()):
        if eos in seq:
            seq = seq[: seq.index(eos) + 1]  # what follows is padding
        results.append((seq, score))
    return results, len(out.scores)  # one entry of scores per step


@torch.inference_mode()
def our_beam_search(model, beam_width, max_tokens, eos, length_penalty, early_stopping):
    search = BeamSearch(beam_width, max_tokens, [eos], length_penalty, early_stopping)
    steps = 0
    while not search.done:
        batch = torch.tensor([PROMPT + beam.token_ids for beam in search.beams])
        logits = model(batch).logits[:, -1].float()
        search.step(logits.log_softmax(dim=-1))
        steps += 1
    return [(h.token_ids, h.score) for h in search.best(beam_width)], steps


@pytest.mark.parametrize(
    "beam_width,max_tokens,length_penalty,early_stopping",
    [
        (2, 8, 1.0, False),
        (4, 10, 1.0, False),
        (3, 12, 0.0, True),
        (2, 16, 0.5, "never"),
        (4, 10, -1.0, False),
    ],
)
def test_matches_hf_beam_search(model, beam_width, max_tokens, length_penalty, early_stopping):
    ended_on_eos = 0
    # As EOS, tokens that the beams go through: they end some beams early.
    first, _ = hf_beam_search(model, beam_width, max_tokens, 0, length_penalty, early_stopping)
    for eos in [*dict.fromkeys(t for tokens, _ in first for t in tokens)][:3]:
        ours, our_steps = our_beam_search(
            model, beam_width, max_tokens, eos, length_penalty, early_stopping
        )
        theirs, their_steps = hf_beam_search(
            model, beam_width, max_tokens, eos, length_penalty, early_stopping
        )
        assert [t for t, _ in ours] == [t for t, _ in theirs], eos
        assert our_steps == their_steps, eos  # the same stopping rule
        assert [s for _, s in ours] == pytest.approx([s for _, s in theirs], rel=1e-4, abs=1e-4)
        ended_on_eos += sum(t[-1] == eos for t, _ in ours)
    assert ended_on_eos > 0  # the finishing rules were exercised, not only max_tokens


def test_misuse_is_refused():
    with pytest.raises(ValueError, match="beam_width"):
        BeamSearch(0, 5, [2])
    with pytest.raises(ValueError, match="early_stopping"):
        BeamSearch(2, 5, [2], early_stopping="sometimes")
    search = BeamSearch(2, 1, [2])
    with pytest.raises(ValueError, match="1 live beams"):
        search.step(torch.zeros(2, 10))
    search.step(torch.zeros(1, 10).log_softmax(-1))
    assert search.done and len(search.best(2)) == 2
    with pytest.raises(RuntimeError, match="done"):
        search.step(torch.zeros(2, 10))
