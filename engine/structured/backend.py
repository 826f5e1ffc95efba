"""The xgrammar backend: one compiler per engine (its tokenizer's vocabulary), compiled grammars
cached by what the request asked for, and a matcher per sequence."""

from __future__ import annotations

import functools
import json
import re
import threading
from typing import Any

import torch

from pagoda.engine.structured.params import StructuredOutputsParams

# xgrammar's errors start with a timestamp and a C++ source location: not the user's business.
_CXX_PREFIX = re.compile(r"^\[[\d:]+\] \S+:\d+: (Check failed: .*? is false: )?")


class GrammarState:
    """One sequence's place in its grammar. The sampler fills its row of the bitmask and, once the
    token is drawn, advances it; `dead` marks a state in which no token may follow."""

    def __init__(self, matcher: Any) -> None:
        self.matcher = matcher
        self.dead = False

    def fill(self, bitmask: torch.Tensor, row: int) -> None:
        self.matcher.fill_next_token_bitmask(bitmask, row)

    def accept(self, token: int) -> None:
        if self.dead or self.matcher.is_terminated():
            return  # the sequence ends with this token (the engine sees `dead`, or EOS)
        if not self.matcher.accept_token(token):
            self.dead = True


class StructuredOutputs:
    """Compiles a request's StructuredOutputsParams; ValueError (an HTTP 400) when it cannot."""

    def __init__(self, tokenizer: Any, vocab_size: int | None, stop_token_ids: list[int]) -> None:
        """vocab_size: the model's (its logits' width), None for the tokenizer's."""
        self.tokenizer, self.vocab_size = tokenizer, vocab_size
        self.stop_token_ids = sorted(stop_token_ids)
        self._lock = threading.Lock()  # requests compile on the API thread, matchers on others

    @functools.cached_property
    def compiler(self) -> Any:
        import xgrammar as xgr

        info = xgr.TokenizerInfo.from_huggingface(
            self.tokenizer,
            vocab_size=self.vocab_size or len(self.tokenizer),
            stop_token_ids=self.stop_token_ids,
        )
        return xgr.GrammarCompiler(info, max_threads=2, cache_enabled=True)

    def compile(self, params: StructuredOutputsParams) -> Any:
        kind, text, any_whitespace = params.key
        with self._lock:
            compiler = self.compiler
        try:
            if kind == "json":
                json.loads(text)  # xgrammar's message for bad JSON says less
                return compiler.compile_json_schema(text, any_whitespace=any_whitespace)
            if kind == "json_object":
                return compiler.compile_json_schema(
                    '{"type": "object"}', any_whitespace=any_whitespace, strict_mode=False
                )
            if kind == "regex":
                return compiler.compile_regex(text)
            if kind == "choice":
                assert params.choice is not None  # the kind is "choice" because choice is set
                alternatives = " | ".join(json.dumps(c, ensure_ascii=False) for c in params.choice)
                return compiler.compile_grammar(f"root ::= {alternatives}")
            return compiler.compile_grammar(text)
        except (RuntimeError, ValueError) as e:
            message = _CXX_PREFIX.sub("", str(e).strip().splitlines()[0])
            raise ValueError(f"invalid {kind}: {message}") from None

    def state(self, params: StructuredOutputsParams) -> GrammarState:
        import xgrammar as xgr

        return GrammarState(xgr.GrammarMatcher(self.compile(params)))
