"""The converted-weights cache: a dequantized GGUF is kept as safetensors so the next start is fast.

One folder per source file, keyed by its size and mtime (a changed file gets a new folder):
~/.cache/pagoda/models/<name>-<key>/ (or $XDG_CACHE_HOME/pagoda/models/...).
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import save_file

log = logging.getLogger(__name__)

CACHE_FORMAT = 1  # bump when what is cached changes meaning


def cache_root() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "pagoda" / "models"


def cache_dir(source: Path) -> Path:
    st = source.stat()
    key = hashlib.sha256(f"{CACHE_FORMAT}:{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()[:16]
    return cache_root() / f"{source.stem}-{key}"


def write_atomic(path: Path, write: Callable[[str], object], directory: bool = False) -> None:
    """write(tmp) then rename tmp to path, so a crash or a concurrent start never sees half of it.

    A cache that cannot be written (read-only home in a container) only costs the next start time.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = (
            tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.")
            if directory
            else tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")[1]
        )
        try:
            write(tmp)
            os.replace(tmp, path)
        finally:
            if os.path.isdir(tmp):
                shutil.rmtree(tmp)
            elif os.path.exists(tmp):
                os.unlink(tmp)
    except OSError as e:
        log.warning("could not cache %s: %s", path, e)


def save_tensors(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    write_atomic(path, lambda tmp: save_file({k: v.contiguous() for k, v in tensors.items()}, tmp))
