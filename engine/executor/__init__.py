"""Executors: what runs the model for the engine core, in its own process or in one worker
process per rank (tensor x pipeline parallel)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pagoda.engine.config import EngineConfig

if TYPE_CHECKING:
    from pagoda.engine.executor.multiproc import MultiprocExecutor
    from pagoda.engine.runner.model_runner import ModelRunner


def make_executor(config: EngineConfig) -> ModelRunner | MultiprocExecutor:
    """The model in this process (one rank, backend "uni"), or one worker process per rank."""
    if config.executor_backend == "uni":
        from pagoda.engine.runner.model_runner import ModelRunner

        return ModelRunner(config)
    from pagoda.engine.executor.multiproc import MultiprocExecutor

    return MultiprocExecutor(config)
