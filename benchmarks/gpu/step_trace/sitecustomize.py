"""A diagnostic, not part of the engine: with this folder on PYTHONPATH and PAGODA_STEP_TRACE set
to a path prefix, each engine-core process writes a line per EngineCore.step to PREFIX.<pid>:
start (perf_counter), duration, and the batch the step launched (tokens, sequences, sequences
prefilling); each API process writes a line per batch of outputs to PREFIX.api.<pid>: the lag
from the core's timestamp to the API's handling, and the handling's duration. Under async scheduling a step's duration is mostly the wait for the step launched
before it, so benchmarks/gpu/step_trace/summary.py pairs each duration with the previous batch.
"""

import os
import time

_PREFIX = os.environ.get("PAGODA_STEP_TRACE")

if _PREFIX:
    from pagoda.engine import engine_core as _ec

    _launch, _step = _ec.EngineCore._launch, _ec.EngineCore.step

    def _append(path: str, line: str) -> None:
        with open(path, "a") as f:  # a few microseconds a step: noise beside a step's milliseconds
            f.write(line)

    def _traced_launch(self, sched):  # type: ignore[no-untyped-def]
        n = [k for _, k in sched.scheduled]
        self._trace_batch = (sum(n), len(n), sum(1 for k in n if k > 1))
        return _launch(self, sched)

    def _traced_step(self):  # type: ignore[no-untyped-def]
        self._trace_batch = (0, 0, 0)
        t0 = time.perf_counter()
        out = _step(self)
        t1 = time.perf_counter()
        tokens, seqs, prefills = self._trace_batch
        _append(f"{_PREFIX}.{os.getpid()}", f"{t0:.6f} {t1 - t0:.6f} {tokens} {seqs} {prefills}\n")
        return out

    _ec.EngineCore._launch = _traced_launch
    _ec.EngineCore.step = _traced_step

    from pagoda.engine import async_llm as _al

    _process = _al.AsyncLLM._process

    async def _traced_process(self, batch):  # type: ignore[no-untyped-def]
        t0 = time.monotonic()
        await _process(self, batch)
        lag, took = t0 - batch.timestamp, time.monotonic() - t0
        _append(
            f"{_PREFIX}.api.{os.getpid()}", f"{t0:.6f} {lag:.6f} {took:.6f} {len(batch.outputs)}\n"
        )

    _al.AsyncLLM._process = _traced_process
