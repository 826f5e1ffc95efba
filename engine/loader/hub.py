"""Models from the Hugging Face Hub by name: `ORG/NAME`, `hf://ORG/NAME[@REVISION]`.

huggingface_hub does the work (its cache layout, its file locks, HF_TOKEN, HF_ENDPOINT,
HF_HUB_OFFLINE); this module picks the files a safetensors model needs and turns the library's
exceptions into one line that says what to do.
"""

from __future__ import annotations

import errno
import re
from pathlib import Path

from huggingface_hub import snapshot_download
from huggingface_hub.errors import (
    GatedRepoError,
    HfHubHTTPError,
    LocalEntryNotFoundError,
    OfflineModeIsEnabled,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from pagoda.engine.loader.errors import ModelLoadError

# The weights as safetensors, the configs, and the tokenizer in every format transformers reads;
# never *.bin, *.pth, *.gguf, *.onnx or original/ folders (a repo may hold all of them).
MODEL_FILES = [
    "*.safetensors",
    "*.safetensors.index.json",
    "config.json",
    "generation_config.json",
    "params.json",
]
TOKENIZER_FILES = [
    "tokenizer.json",
    "tokenizer_config.json",
    "tokenizer.model",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "vocab.txt",
    "merges.txt",
    "chat_template.jinja",
    "chat_template.json",
]
_REPO_ID = re.compile(r"(?:hf://)?([\w.-]+/[\w.-]+)(?:@([\w./-]+))?")


def parse_hub_name(model: str) -> tuple[str, str | None] | None:
    """`hf://ORG/NAME@REV` or `ORG/NAME` -> (repo id, revision or None); None if not one."""
    m = _REPO_ID.fullmatch(model)
    if m is None or (not model.startswith("hf://") and model.startswith(".")):
        return None
    return m.group(1), m.group(2)


def download(
    repo_id: str,
    revision: str | None,
    cache_dir: str | None,
    patterns: list[str],
    what: str = "model",
) -> Path:
    """The snapshot folder of repo_id at revision with the files matching patterns (downloaded
    unless already cached); a ModelLoadError with one line for each way this fails."""
    at = f"{repo_id}@{revision or 'main'}"
    try:
        folder = snapshot_download(
            repo_id, revision=revision, cache_dir=cache_dir, allow_patterns=patterns
        )
    except GatedRepoError as e:
        raise ModelLoadError(
            f"{what} {repo_id} is gated: accept its terms on the Hub and set HF_TOKEN to a token "
            f"that has access ({_status(e)})"
        ) from e
    except RevisionNotFoundError as e:
        raise ModelLoadError(f"{what} {repo_id} has no revision {revision!r}") from e
    except RepositoryNotFoundError as e:
        raise ModelLoadError(
            f"{what} {repo_id} not found on the Hub, or it is private and HF_TOKEN is not set to "
            f"a token that can read it ({_status(e)})"
        ) from e
    except (LocalEntryNotFoundError, OfflineModeIsEnabled) as e:
        raise ModelLoadError(
            f"cannot download {what} {at}: the Hub is not reachable (or HF_HUB_OFFLINE is set) "
            f"and no complete copy is cached"
        ) from e
    except HfHubHTTPError as e:
        raise ModelLoadError(f"cannot download {what} {at}: the Hub answered {_status(e)}") from e
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise ModelLoadError(
                f"no space left to download {what} {at} into {cache_dir or 'the HF cache'}: "
                "free space or give --download-dir on a bigger disk"
            ) from e
        raise ModelLoadError(f"cannot download {what} {at}: {e}") from e
    return Path(folder)


def download_model(repo_id: str, revision: str | None, cache_dir: str | None) -> Path:
    """The model's safetensors, configs and tokenizer; a repo without safetensors is refused."""
    folder = download(repo_id, revision, cache_dir, MODEL_FILES + TOKENIZER_FILES)
    if not any(folder.glob("*.safetensors")):
        raise ModelLoadError(
            f"model {repo_id}@{revision or 'main'} has no *.safetensors files; Pagoda loads "
            "safetensors (or a local .gguf file), not .bin or .pth checkpoints"
        )
    if not (folder / "config.json").is_file():
        raise ModelLoadError(f"model {repo_id}@{revision or 'main'} has no config.json")
    return folder


def download_tokenizer(repo_id: str, revision: str | None, cache_dir: str | None) -> Path:
    return download(repo_id, revision, cache_dir, TOKENIZER_FILES, what="tokenizer")


def _status(e: Exception) -> str:
    response = getattr(e, "response", None)
    return f"HTTP {response.status_code}" if response is not None else type(e).__name__
