"""The multi-tenant workload of the gateway's e2e test (prefix routing against round-robin), kept
apart so that the same workload runs on loopback (docs/performance.md's loopback table).

The issue's shape is 8 system prompts of 1,500 tokens; on the CPU engine a cold 1,500-token
prefill costs many seconds, so the prompts here are ~510 tokens with the question (30 rules): a
cold prefill still costs several times a warm one (~50 uncached tokens), which is the effect
measured. Each tenant asks two questions back to back (a question and its follow-up), tenants in
turn, round after round: round-robin sends each pair to both pods, so each pod sees all 8 tenants
in cyclic order; prefix routing keeps a tenant on one pod.
"""

from __future__ import annotations

import time

from pagoda.gateway.chwbl import Ring
from pagoda.gateway.prefix import prefix_key

TENANTS, RULES = 8, 30
PREFIX_CHARS = 256  # the gateway's --prefix-chars (the chart's default)


def handbooks(edition: str, pods: list[str]) -> list[str]:
    """The tenants' system prompts. Each policy's run has its own `edition`, so neither finds the
    other's prompts in the caches. The tenants are named so that the prefix hash gives each pod
    an equal share: 8 keys hashed onto 2 pods split anywhere from 4/4 to 8/0 by chance (6/2 or
    worse in 29% of draws), and a pod given 6 tenants holds a working set no larger than
    round-robin's. An even split is what many tenants per pod average out to."""
    ring = Ring(pods)
    systems = []
    for t in range(TENANTS):
        home = pods[t % len(pods)]
        for name in (f"{t}" + "abcdefghijklmnopqrstuvwxyz"[:k] for k in range(27)):
            system = f"Tenant {name} handbook, {edition} edition. " + " ".join(
                f"Rule {t}.{i}: be precise about topic {i * 7 + t}." for i in range(RULES)
            )
            key = prefix_key({"messages": [{"role": "system", "content": system}]}, PREFIX_CHARS)
            if key is not None and ring.walk(key)[0] == home:
                break
        else:
            raise AssertionError(f"no name of tenant {t} hashes to pod {home}")
        systems.append(system)
    return systems


def one_round(client, model: str, systems: list[str], r: int) -> list[float]:
    """TTFT of each request (request to the first chunk after the role's): tenants in turn, a
    question and its follow-up each."""
    ttfts = []
    for system in systems:
        for q in range(2):
            question = (
                f"Question {r}.{q} from a user of this tenant: in one short sentence, which "
                "of the rules above matters most for the work we do here every day?"
            )
            started = time.monotonic()
            stream = client.chat.completions.create(
                model=model,
                messages=[
                    {"role": "system", "content": system},
                    {"role": "user", "content": question},
                ],
                max_tokens=2,
                stream=True,
            )
            it = iter(stream)
            next(it)  # the role's chunk, sent before any token is computed
            next(it)
            ttfts.append(time.monotonic() - started)
            for _ in it:
                pass
    return ttfts
