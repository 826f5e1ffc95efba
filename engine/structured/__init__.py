"""Structured outputs: a grammar (JSON schema, regex, choice, EBNF) compiled by xgrammar, whose
per-sequence matcher gives the sampler a token bitmask each step."""
