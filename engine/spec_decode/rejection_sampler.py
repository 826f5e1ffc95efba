"""Verification of proposed tokens against the target model's distributions (Leviathan et al.
2023; vLLM's rejection sampler), so that speculation never changes what is generated.

Greedy rows: a draft is accepted while it equals the target's argmax; the first mismatch is
replaced by the argmax. Random rows: draft d at position j is accepted with probability
min(1, p_j(d) / q_j(d)); the first rejected position draws from normalize(max(0, p_j - q_j));
when all k are accepted a bonus token is drawn from p_k. The output is then distributed exactly as
p, position by position. A proposer that names tokens without a distribution (ngram, a greedy
draft model) has q one-hot at its token: acceptance is p_j(d), the residual is p_j without d.
"""

from __future__ import annotations

import torch

from pagoda.engine.sample.sampler import Sampler, SamplingRow, random_sample


def verify(
    sampler: Sampler,
    logits: torch.Tensor,
    rows: list[SamplingRow],
    drafts: list[list[int]],
    draft_probs: list[torch.Tensor | None] | None = None,
) -> list[list[int]]:
    """The tokens each sequence emits: its accepted drafts, then one token from the target.

    `logits` holds k_i + 1 rows per sequence (the target's at each draft position and after the
    last), `rows` the sampling row of each of those positions (output so far plus the drafts
    before it, so that penalties, min_tokens and bad words see what precedes that position).
    `draft_probs[i]` is sequence i's q, [k_i, V], or None for a one-hot proposal.
    """
    x = sampler.process_logits(logits.float(), rows)
    starts, at = [], 0
    for d in drafts:
        starts.append(at)
        at += len(d) + 1
    assert at == len(rows) == x.shape[0], "k + 1 rows per sequence"
    greedy = [i for i, start in enumerate(starts) if rows[start].params.greedy]
    random = [i for i, start in enumerate(starts) if not rows[start].params.greedy]
    emitted: list[list[int]] = [[] for _ in drafts]
    if greedy:
        index = [starts[i] + j for i in greedy for j in range(len(drafts[i]) + 1)]
        targets = x[index].argmax(dim=-1).tolist()
        at = 0
        for i in greedy:
            k = len(drafts[i])
            emitted[i] = accept_greedy(drafts[i], targets[at : at + k + 1])
            at += k + 1
    if random:
        index = [starts[i] + j for i in random for j in range(len(drafts[i]) + 1)]
        sub = [rows[r] for r in index]
        probs = sampler.warp(x[index], sub).softmax(dim=-1)
        _verify_random(probs, [drafts[i] for i in random], sub, random, draft_probs, emitted)
    return emitted


def accept_greedy(draft: list[int], targets: list[int]) -> list[int]:
    """Drafts while they equal the target's argmax, then the target's token there."""
    for j, token in enumerate(draft):
        if token != targets[j]:
            return [*draft[:j], targets[j]]
    return [*draft, targets[len(draft)]]


def _verify_random(
    probs: torch.Tensor,
    drafts: list[list[int]],
    rows: list[SamplingRow],
    which: list[int],
    draft_probs: list[torch.Tensor | None] | None,
    emitted: list[list[int]],
) -> None:
    """Accept or reject each draft token; then one draw per sequence, from the residual at its
    first rejection or from p after its last draft (the bonus token), all in one batch."""
    finals: list[torch.Tensor] = []
    generators = []
    at = 0
    for draft, i in zip(drafts, which):
        k = len(draft)
        p = probs[at : at + k + 1]
        generator = rows[at].generator
        at += k + 1
        q = None if draft_probs is None else draft_probs[i]
        d = torch.tensor(draft, dtype=torch.long, device=p.device)
        p_d = p[:k].gather(1, d.view(-1, 1)).view(-1)
        q_d = torch.ones_like(p_d) if q is None else q.gather(1, d.view(-1, 1)).view(-1).float()
        u = torch.rand(k, dtype=torch.float64, generator=generator, device=p.device)
        # u < p/q, written without the division (q_d > 0: the proposer named the token).
        accepted = (u * q_d.double() < p_d.double()).tolist()
        a = accepted.index(False) if False in accepted else k
        emitted[i] = draft[:a]
        if a == k:
            finals.append(p[k])
        elif q is None:
            finals.append(p[a].index_fill(0, d[a : a + 1], 0.0))
        else:
            finals.append((p[a] - q[a].float()).clamp_(min=0.0))
        generators.append(generator)
    # log(0) = -inf: random_sample gives such tokens no weight.
    tokens = random_sample(torch.stack(finals).log(), generators).tolist()
    for i, token in zip(which, tokens):
        emitted[i].append(token)
