"""The grammar bitmask in the batched sampler: only grammar rows change, forbidden tokens are
-inf, a row with no allowed token is marked dead; on the GPU (gpu tier) the same as on the CPU."""

from __future__ import annotations

import pytest
import torch

from pagoda.engine.request_rules import RequestLimits, check_request
from pagoda.engine.sample.grammar_mask import apply_grammar_masks
from pagoda.engine.sample.sampler import Sampler, SamplingRow
from pagoda.engine.sampling_params import ParamError, SamplingParams

V = 100


class AllowOnly:
    """A grammar state stand-in that allows a fixed set of tokens."""

    def __init__(self, allowed: set[int]) -> None:
        self.allowed, self.dead, self.accepted = allowed, False, []

    def fill(self, bitmask: torch.Tensor, row: int) -> None:
        bitmask[row] = 0
        for t in self.allowed:
            bitmask[row, t // 32] |= torch.tensor(1 << (t % 32)).to(torch.int32)

    def accept(self, token: int) -> None:
        self.accepted.append(token)


def rows(*grammars) -> list[SamplingRow]:
    return [SamplingRow(SamplingParams(temperature=0), [1], [], None, g) for g in grammars]


def masked(device: str) -> tuple[torch.Tensor, list[AllowOnly | None]]:
    grammars = [AllowOnly({3, 31, 32, 99}), None, AllowOnly({5}), AllowOnly({7})]
    x = torch.randn(4, V, generator=torch.Generator().manual_seed(0)).to(device)
    apply_grammar_masks(x, rows(*grammars), banned={3: {7}})
    return x.cpu(), grammars


def test_forbidden_tokens_are_minus_inf_and_free_rows_untouched():
    x, grammars = masked("cpu")
    original = torch.randn(4, V, generator=torch.Generator().manual_seed(0))
    assert torch.equal(x[1], original[1])
    assert set(torch.isfinite(x[0]).nonzero().view(-1).tolist()) == {3, 31, 32, 99}
    assert torch.isfinite(x[2]).nonzero().view(-1).tolist() == [5]
    # Row 3's one allowed token is banned (min_tokens): dead, and left as it was.
    assert grammars[3].dead and torch.equal(x[3], original[3]) and not grammars[2].dead


def test_sampler_draws_allowed_tokens_and_advances_each_grammar():
    grammars = [AllowOnly({11}), AllowOnly({42, 43}), None]
    logits = torch.zeros(3, V)
    logits[:, 0] = 50.0  # what an unconstrained greedy row takes
    out = Sampler(V, [2])(logits, rows(*grammars))
    assert out.token_ids[0] == 11 and out.token_ids[1] in (42, 43) and out.token_ids[2] == 0
    assert grammars[0].accepted == [11] and grammars[1].accepted == out.token_ids[1:2]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs an NVIDIA GPU")
def test_the_mask_on_the_gpu_equals_the_cpu():
    assert torch.equal(masked("cuda")[0], masked("cpu")[0])


def test_allowed_token_ids_restrict_only_their_row():
    logits = torch.zeros(2, V)
    logits[:, 0] = 50.0
    params = SamplingParams(temperature=1.0, allowed_token_ids=[7, 9])
    restricted = SamplingRow(params, [1], [], None)
    free = SamplingRow(SamplingParams(temperature=0), [1], [], None)
    for _ in range(5):
        out = Sampler(V, [2])(logits, [restricted, free])
        assert out.token_ids[0] in (7, 9) and out.token_ids[1] == 0
    with pytest.raises(
        ParamError, match="allowed_token_ids"
    ) as e:  # the one place of request rules
        check_request([1], SamplingParams(allowed_token_ids=[V]), RequestLimits(64, 4, V))
    assert e.value.param == "allowed_token_ids"
