"""Run one model, sharded over spawned gloo ranks, through a greedy decode of a few prompts.

Each rank builds the model for its tensor-parallel place and loads the checkpoint through the
weight loaders; rank 0 reports the tokens and the logits."""

from __future__ import annotations

import multiprocessing as mp
import os
import socket
from pathlib import Path

import torch

from pagoda.engine.attention import get_backend
from pagoda.engine.distributed import destroy_distributed, init_distributed
from pagoda.engine.loader.hf_folder import hf_model_config, safetensors_files, safetensors_weights
from pagoda.engine.models import build_model


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def greedy(
    folder: Path, prompts: list[list[int]], steps: int, kv_dtype: torch.dtype = torch.float32
) -> tuple[list[list[int]], list]:
    """All prompts prefilled in one batch, then `steps` batched greedy decodes, on this rank,
    over a KV cache of kv_dtype."""
    from paged_batch import PagedBatch

    cfg = hf_model_config(folder)
    model = build_model(cfg, get_backend("torch", torch.device("cpu")))
    model.load_weights(safetensors_weights(safetensors_files(folder)))
    batch = PagedBatch(cfg)
    for i, (k, _) in enumerate(batch.kv):  # this rank's KV heads
        shape = (k.shape[0], k.shape[1], model.num_kv_heads, k.shape[3])
        batch.kv[i] = (torch.zeros(shape, dtype=kv_dtype), torch.zeros(shape, dtype=kv_dtype))
    tokens = [list(p) for p in prompts]
    logits_seen = []
    chunks = [(i, p) for i, p in enumerate(prompts)]
    for _ in range(steps):
        logits = batch.step(model, chunks)
        last = torch.stack([row[-1] for row in logits])
        logits_seen.append(last)
        chosen = last.argmax(-1).tolist()
        for seq, token in zip(tokens, chosen):
            seq.append(token)
        chunks = [(i, [t]) for i, t in enumerate(chosen)]
    return tokens, logits_seen


def _rank_main(rank, tp, port, folder, prompts, steps, kv_dtype, out) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    init_distributed(rank, tp, 1, "gloo")
    try:
        tokens, logits = greedy(Path(folder), prompts, steps, kv_dtype)
        if rank == 0:
            out.put((tokens, [t.tolist() for t in logits]))
    finally:
        destroy_distributed()


def run_sharded(folder: Path, prompts, steps: int, tp: int, kv_dtype=torch.float32):
    """(tokens, logits per step) of the sharded model; tp = 1 runs in this process."""
    if tp == 1:
        tokens, logits = greedy(folder, prompts, steps, kv_dtype)
        return tokens, [t.tolist() for t in logits]
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    port = free_port()
    procs = [
        ctx.Process(
            target=_rank_main, args=(r, tp, port, str(folder), prompts, steps, kv_dtype, out)
        )
        for r in range(tp)
    ]
    for p in procs:
        p.start()
    try:
        result = out.get(timeout=120)
    finally:
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
    assert all(p.exitcode == 0 for p in procs), [p.exitcode for p in procs]
    return result
