"""Which requests speculate. Verification applies every sampling parameter that shapes the
target's distribution at each verified position (temperature, top-k/top-p/min-p, penalties,
logit bias, allowed tokens, min_tokens, bad words: the sampler's own stages over rows that see the
drafts before them); what it cannot yet replay position by position is named here, and such a
request decodes one token per step, as without speculation."""

from __future__ import annotations

from pagoda.engine.sampling_params import SamplingParams


def why_not_speculate(params: SamplingParams) -> str | None:
    """None when the request speculates; else the reason it does not."""
    if params.use_beam_search:
        return "beam search ranks every token of every beam"
    if params.structured_outputs is not None:
        return "structured outputs: the grammar would have to advance through unverified drafts"
    if params.logprobs is not None:
        return "logprobs are not reported for verified tokens yet"
    return None
