"""vLLM's `--config FILE`: a YAML mapping of flag names to values, read as if typed on the command
line before the flags that are, so that a flag given on the command line wins over the file."""

from __future__ import annotations

import json
from pathlib import Path


def expand_config_file(argv: list[str]) -> list[str]:
    """argv with `--config FILE` (or `--config=FILE`) replaced by the file's flags.

    They go after the leading words (the subcommand, a positional model) and before every flag."""
    i = next((j for j, w in enumerate(argv) if w == "--config" or w.startswith("--config=")), None)
    if i is None:
        return argv
    word = argv[i]
    if word == "--config":
        if i + 1 >= len(argv):
            raise SystemExit("pagoda: error: --config needs a file")
        path, rest = argv[i + 1], argv[:i] + argv[i + 2 :]
    else:
        path, rest = word.split("=", 1)[1], argv[:i] + argv[i + 1 :]
    head = next((j for j, w in enumerate(rest) if w.startswith("-")), len(rest))
    return rest[:head] + config_file_args(path) + rest[head:]


def config_file_args(path: str) -> list[str]:
    """`max-num-seqs: 8` -> --max-num-seqs 8; true -> --flag; false -> --no-flag; a list -> its
    items after the flag; a mapping -> JSON (vLLM's JSON-valued flags)."""
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as e:
        raise SystemExit(f"pagoda: error: --config {path}: {e}") from None
    if data is None:
        return []
    if not isinstance(data, dict):
        raise SystemExit(f"pagoda: error: --config {path}: expected a mapping of flag names")
    args: list[str] = []
    for key, value in data.items():
        flag = "--" + str(key).replace("_", "-")
        if value is True:
            args.append(flag)
        elif value is False:
            args.append("--no-" + flag[2:])
        elif isinstance(value, list):
            args += [flag, *(str(v) for v in value)]
        elif isinstance(value, dict):
            args += [flag, json.dumps(value)]
        else:
            args += [flag, str(value)]
    return args
