"""What a request constrains its output to, named as vLLM's StructuredOutputsParams."""

from __future__ import annotations

import json as jsonlib
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class StructuredOutputsParams:
    json: str | dict[str, Any] | None = None  # a JSON schema
    regex: str | None = None
    choice: tuple[str, ...] | None = None  # one of these strings, exactly
    grammar: str | None = None  # EBNF (GBNF) text
    json_object: bool | None = None  # any JSON object
    # Free whitespace between JSON tokens lets a small model loop on newlines; off by default.
    any_whitespace: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.choice, list):
            object.__setattr__(self, "choice", tuple(self.choice))
        given = [k for k in ("json", "regex", "choice", "grammar", "json_object") if self._set(k)]
        if len(given) != 1:
            raise ValueError(
                "give exactly one of json, regex, choice, grammar, "
                f"json_object (got {', '.join(given) or 'none'})"
            )
        if self.choice is not None and (
            not self.choice or not all(isinstance(c, str) and c for c in self.choice)
        ):
            raise ValueError("choice must be a list of non-empty strings")

    def _set(self, key: str) -> bool:
        value = getattr(self, key)
        return bool(value) if key == "json_object" else value is not None

    @property
    def key(self) -> tuple[str, str, bool]:
        """What identifies the compiled grammar (the cache key)."""
        if self.json is not None:
            text = self.json if isinstance(self.json, str) else jsonlib.dumps(self.json)
            return ("json", text, self.any_whitespace)
        if self.regex is not None:
            return ("regex", self.regex, False)
        if self.choice is not None:
            return ("choice", jsonlib.dumps(self.choice), False)
        if self.grammar is not None:
            return ("grammar", self.grammar, False)
        return ("json_object", "", self.any_whitespace)
