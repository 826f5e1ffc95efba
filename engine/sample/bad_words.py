"""vLLM's bad_words: words the output must not contain, as token sequences.

Each word is tokenized as it is and with a leading space (when that gives a different first token
and as many tokens), as vLLM does; a one-token sequence bans its token at every step, a longer one
bans its last token where the output so far ends with the rest of it.
"""

from __future__ import annotations

from typing import Any


def bad_words_token_ids(tokenizer: Any, words: list[str]) -> list[list[int]]:
    out: list[list[int]] = []
    for word in words:
        plain = list(tokenizer.encode(word.lstrip(), add_special_tokens=False))
        spaced = list(tokenizer.encode(" " + word.lstrip(), add_special_tokens=False))
        if plain:
            out.append(plain)
        if spaced and (not plain or (spaced[0] != plain[0] and len(spaced) == len(plain))):
            out.append(spaced)
    return out


def banned_by_bad_words(bad_words: list[list[int]], output_token_ids: list[int]) -> set[int]:
    """The tokens that would complete a bad word after `output_token_ids`."""
    banned = set()
    for ids in bad_words:
        prefix = ids[:-1]
        if len(prefix) > len(output_token_ids):
            continue
        if not prefix or output_token_ids[-len(prefix) :] == prefix:
            banned.add(ids[-1])
    return banned
