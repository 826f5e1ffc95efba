"""--lora-modules as vLLM takes it: `NAME=PATH`, or JSON `{"name": ..., "path": ...}` (vLLM's
`base_model_name` key is accepted: one server's adapters all sit on their engine's model)."""

from __future__ import annotations

import json


def parse_lora_module(text: str) -> tuple[str, str]:
    """(name, path) of one --lora-modules item; ValueError naming the item when malformed."""
    if text.lstrip().startswith("{"):
        try:
            item = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"--lora-modules {text!r}: not JSON: {e}") from e
        unknown = set(item) - {"name", "path", "base_model_name"}
        if (
            unknown
            or not isinstance(item.get("name"), str)
            or not isinstance(item.get("path"), str)
        ):
            raise ValueError(
                f'--lora-modules {text!r}: expected {{"name": ..., "path": ...}} '
                f"(unknown keys: {sorted(unknown)})"
            )
        name, path = item["name"], item["path"]
    else:
        name, sep, path = text.partition("=")
        if not sep:
            raise ValueError(f"--lora-modules {text!r}: expected NAME=PATH or JSON")
    if not name or not path:
        raise ValueError(f"--lora-modules {text!r}: the name and the path must not be empty")
    return name, path
