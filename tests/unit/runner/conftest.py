"""A CPU model runner on a tiny random checkpoint, its KV cache filled with random values (so a
step that reads or writes the wrong slot shows)."""

from __future__ import annotations

import random
import sys
from pathlib import Path

import pytest
import torch

from pagoda.engine.config import EngineConfig
from pagoda.engine.runner.model_runner import ModelRunner

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # tests/: tiny_checkpoint
from tiny_checkpoint import write_tiny_checkpoint


@pytest.fixture
def cpu_runner(tmp_path: Path) -> ModelRunner:
    folder = write_tiny_checkpoint(tmp_path / "tiny")
    runner = ModelRunner(
        EngineConfig(model=str(folder), device="cpu", dtype="float32", num_gpu_blocks_override=64)
    )
    gen = torch.Generator().manual_seed(random.randrange(2**31))
    for k, v in runner.kv_caches:
        k.normal_(generator=gen)
        v.normal_(generator=gen)
    return runner
