"""Incremental detokenization with stop strings: token ids in, text deltas fit to stream out.

Each step decodes only a small window around the new token (the prefix / read offset method of
vLLM and TGI): `prefix` is text already emitted, kept as context because a token's text can depend
on its neighbours; the new text is the window's decode less the prefix's. While the window's text
ends in U+FFFD the token ends inside a UTF-8 character, and the text waits for the next token.

Stop strings: the text is cut at the first stop string to complete, and a tail that could still
grow into one is held back until it cannot.
"""

from __future__ import annotations

# Prompt tokens kept as context for the first output token (vLLM uses 5 as well).
PROMPT_CONTEXT_TOKENS = 5


class IncrementalDetokenizer:
    def __init__(
        self,
        tokenizer,
        prompt_token_ids: list[int],
        skip_special_tokens: bool,
        stop: list[str],
        include_stop_str_in_output: bool,
        min_tokens: int = 0,
    ) -> None:
        if any(not s for s in stop):
            raise ValueError("stop strings must not be empty")
        self.tokenizer = tokenizer
        self.skip_special_tokens = skip_special_tokens
        self.stop = list(stop)
        self.include_stop_str_in_output = include_stop_str_in_output
        # As vLLM: a stop string counts only if it ends in text after the first min_tokens tokens.
        self.min_tokens = min_tokens
        self._num_tokens = 0
        self._stop_floor = 0  # length of the text of the first min_tokens tokens
        # window = token ids from the prefix offset on; window[:read] is the decoded prefix.
        self._window = list(prompt_token_ids[-PROMPT_CONTEXT_TOKENS:])
        self._prefix_text = self._decode(self._window)
        if self._prefix_text.endswith("\ufffd"):
            # The prompt ends inside a character: its bytes must not merge into the output's text.
            self._window, self._prefix_text = [], ""
        self._read = len(self._window)
        self._decoded = ""  # all output text decoded so far, stop strings not yet cut
        self._emitted = 0  # characters of _decoded handed out
        self._stop_reason: str | None = None

    @property
    def text(self) -> str:
        """The text emitted so far: the concatenation of all deltas returned."""
        return self._decoded[: self._emitted]

    @property
    def stop_reason(self) -> str | None:
        """The stop string that ended the text, or None."""
        return self._stop_reason

    def append(self, token_id: int) -> str:
        """Take one generated token; return the text that can be streamed now (maybe "")."""
        if self._stop_reason is not None:
            return ""  # the text ended at a stop string: later tokens add nothing
        self._window.append(token_id)
        self._num_tokens += 1
        window_text = self._decode(self._window)
        if window_text.endswith("\ufffd") or len(window_text) <= len(self._prefix_text):
            return self._release(final=False)
        self._decoded += window_text[len(self._prefix_text) :]
        # What was new becomes the prefix: the window slides up to the read offset.
        self._window = self._window[self._read :]
        self._read = len(self._window)
        self._prefix_text = self._decode(self._window)
        if self._num_tokens <= self.min_tokens:
            self._stop_floor = len(self._decoded)
        return self._release(final=False)

    def finish(self) -> str:
        """The sequence ended for another reason: return what was held back."""
        if self._stop_reason is not None:
            return ""
        window_text = self._decode(self._window)
        self._decoded += window_text[len(self._prefix_text) :]
        self._window, self._read, self._prefix_text = [], 0, ""
        return self._release(final=True)

    def _decode(self, token_ids: list[int]) -> str:
        return self.tokenizer.decode(
            token_ids,
            skip_special_tokens=self.skip_special_tokens,
            clean_up_tokenization_spaces=False,
        )

    def _release(self, final: bool) -> str:
        """Check the new text for stop strings and return what may be emitted."""
        end = len(self._decoded)
        stop = self._find_stop()
        if stop is not None:
            start, self._stop_reason = stop
            end = start + len(self._stop_reason) if self.include_stop_str_in_output else start
            self._decoded = self._decoded[:end]
        elif not final:
            end -= self._partial_stop_length()
        delta = self._decoded[self._emitted : end]
        self._emitted = end
        return delta

    def _find_stop(self) -> tuple[int, str] | None:
        """The first stop string to complete in the new text: (its start, it), or None.

        'First to complete' (earliest end, then the longer one) makes the result independent of
        how the text was split into tokens."""
        best = None
        for s in self.stop:
            # Only occurrences that end in text not checked before: no earlier one exists.
            start = self._decoded.find(
                s, max(0, self._emitted - len(s) + 1, self._stop_floor - len(s) + 1)
            )
            if start >= 0 and (
                best is None or (start + len(s), start) < (best[0] + len(best[1]), best[0])
            ):
                best = (start, s)
        return best

    def _partial_stop_length(self) -> int:
        """Length of the longest tail of the text that is the beginning of a stop string."""
        tail = self._decoded[self._emitted :]
        for length in range(min(len(tail), max((len(s) for s in self.stop), default=1) - 1), 0, -1):
            if any(s.startswith(tail[-length:]) for s in self.stop):
                return length
        return 0
