"""The model runner: owns the weights and the KV cache, turns a scheduled batch into one forward pass.

The batch is flattened into the layout of AttentionMetadata (all sequences' new tokens
concatenated), so prefill chunks and decodes run together; logits are taken only at each
sequence's last new token, and only for sequences whose prompt (or recompute) is complete.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, cast

import numpy as np
import torch

from pagoda.engine.attention.metadata import AttentionMetadata
from pagoda.engine.config import EngineConfig
from pagoda.engine.core.kv_cache_manager import BlockOp
from pagoda.engine.core.sequence import PENDING_TOKEN, Sequence
from pagoda.engine.distributed import get_pp_group
from pagoda.engine.layers.pooler import Pooler
from pagoda.engine.loader import load_model
from pagoda.engine.sample.prompt_logprobs import PromptLogprobs
from pagoda.engine.sample.sampler import SampledBatch, Sampler, SamplingRow, make_generator
from pagoda.engine.spec_decode.verify_step import (
    VerifiedSamples,
    verify_drafts,
    verifying_sequences,
)

if TYPE_CHECKING:
    from pagoda.engine.lora.pool import LoRAPool
    from pagoda.engine.models.pipeline import IntermediateTensors
    from pagoda.engine.runner.cuda_graphs import StepGraphs

log = logging.getLogger(__name__)

CPU_DEFAULT_KV_BYTES = 2 * 1024**3
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def op_runs(ops: list[BlockOp] | tuple[()]) -> list[tuple[str, list[tuple[int, int]]]]:
    """Split ordered block moves into runs of one kind that can run as one indexed copy each: a run
    ends before a move that reads or writes a block an earlier move of the run wrote."""
    runs: list[tuple[str, list[tuple[int, int]]]] = []
    written: set[tuple[str, int]] = set()
    for op in ops:
        src_space, dst_space = {
            "copy": ("gpu", "gpu"),
            "swap_out": ("gpu", "cpu"),
            "swap_in": ("cpu", "gpu"),
        }[op.kind]
        src, dst = (src_space, op.src), (dst_space, op.dst)
        if not runs or runs[-1][0] != op.kind or src in written or dst in written:
            runs.append((op.kind, []))
            written = set()
        runs[-1][1].append((op.src, op.dst))
        written.add(dst)
    return runs


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def pick_dtype(name: str, device: torch.device) -> torch.dtype:
    if name == "auto":
        # CPUs without bf16 matrix units run float32 faster; GPUs run bf16.
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return DTYPES[name]


def sampled_sequences(batch: list[tuple[Sequence, int]]) -> list[Sequence]:
    """The sequences a step samples for, in row order: those whose last new token ends their
    context, each followed by its pending forks (drawn from the same logits row)."""
    done = [seq for seq, n in batch if seq.num_computed_tokens + n >= seq.num_tokens]
    return [s for seq in done for s in (seq, *seq.forks)]


class ModelRunner:
    """One rank's share of the model and of the KV cache. With `allocate=False` the KV cache waits
    for initialize_kv_cache (a worker first reports what it can hold; all take the smallest)."""

    def __init__(self, config: EngineConfig, allocate: bool = True) -> None:
        self.config = config
        self.device = pick_device(config.device)
        self.dtype = pick_dtype(config.dtype, self.device)
        self.kv_dtype = torch.float8_e4m3fn if config.kv_cache_dtype != "auto" else self.dtype
        torch.manual_seed(config.seed)
        self.model, self.model_config = load_model(config, self.device, self.dtype)
        self.lora: LoRAPool | None = None
        if config.enable_lora:  # before the memory profile and graph capture: both see the slots
            from pagoda.engine.lora.pool import LoRAPool

            self.lora = LoRAPool(
                self.model,
                self.model_config,
                config.max_loras,
                config.max_lora_rank,
                config.max_cpu_loras or config.max_loras,
                config.max_num_batched_tokens,
                self.device,
                self.dtype,
            )
        self.pp = get_pp_group()
        self.block_size = config.block_size
        self.sampler = Sampler(self.model_config.vocab_size, self.model_config.eos_token_ids)
        self.pooler = Pooler()
        self.prompt_logprobs = PromptLogprobs()
        # The last step's sampled ids, on the device, and each sampled sequence's row in them: a
        # decode whose input is still PENDING_TOKEN on the host takes its value from here.
        self._last_token_ids = torch.zeros(0, dtype=torch.long, device=self.device)
        self._last_rows: dict[Sequence, int] = {}
        self.graphs: StepGraphs | None = None  # decode steps
        self.verify_graphs: StepGraphs | None = None  # verification steps (speculative decoding)
        self.token_graphs: StepGraphs | None = None  # any other step of up to 2,048 tokens
        if allocate:
            self.initialize_kv_cache(self.determine_num_blocks())

    def initialize_kv_cache(self, num_blocks: int) -> None:
        config, mc = self.config, self.model_config
        self.num_blocks = num_blocks
        shape = (self.num_blocks, self.block_size, self.model.num_kv_heads, mc.head_dim)
        self.kv_caches = [
            (self._zeros(shape), self._zeros(shape)) for _ in range(self.model.num_stage_layers)
        ]
        # The swap pool: a CPU mirror of the cache's layout (pinned, so copies from a GPU are fast).
        self.num_cpu_blocks = (
            int(config.swap_space * 1024**3 // self.bytes_per_block)
            if config.preemption_mode == "swap"
            else 0
        )
        cpu_shape = (self.num_cpu_blocks, *shape[1:])
        pin = self.device.type == "cuda"
        self.cpu_kv_caches = [
            (
                torch.empty(cpu_shape, dtype=self.kv_dtype, pin_memory=pin),
                torch.empty(cpu_shape, dtype=self.kv_dtype, pin_memory=pin),
            )
            for _ in range(self.model.num_stage_layers if self.num_cpu_blocks else 0)
        ]
        if self.lora is not None:  # LoRA kernels compiled, and captured, with no adapter in use
            self.lora.batch.launch_empty = True
        # Graphs capture one whole forward pass: not a stage's, which waits on another rank.
        if self.device.type == "cuda" and not config.enforce_eager and self.pp.world_size == 1:
            from pagoda.engine.runner.cuda_graphs import capture_step_graphs

            max_len = config.max_model_len or mc.max_position_embeddings
            self.graphs, self.verify_graphs, self.token_graphs = capture_step_graphs(
                self.model, self.kv_caches, config, max_len, self.device
            )
        if self.device.type == "cuda" and self.pp.world_size == 1:
            self._warm_up()
        if self.lora is not None:
            self.lora.batch.launch_empty = False
        log.info(
            "KV cache: %d blocks of %d tokens (%.2f GiB)",
            self.num_blocks,
            self.block_size,
            self.num_blocks * self.bytes_per_block / 1024**3,
        )

    def _zeros(self, shape: tuple[int, ...]) -> torch.Tensor:
        """A KV cache tensor. Zeros, not empty: the CPU attention reads whole blocks and masks the
        slots past a sequence's length, and a NaN left there by the allocator would still poison
        the output (0 * NaN). On the CPU the zeros come from calloc (numpy.zeros): its pages are
        committed as blocks are first written, so an idle pool of GiBs costs no memory."""
        if self.device.type != "cpu":
            return torch.zeros(shape, dtype=self.kv_dtype, device=self.device)
        nbytes = int(np.prod(shape)) * self.kv_dtype.itemsize
        return torch.from_numpy(np.zeros(nbytes, dtype=np.uint8)).view(self.kv_dtype).view(shape)

    @property
    def bytes_per_block(self) -> int:
        # This rank's share: its stage's layers, its KV heads.
        layers, heads = self.model.num_stage_layers, self.model.num_kv_heads
        head_dim = self.model_config.head_dim
        return 2 * layers * self.block_size * heads * head_dim * self.kv_dtype.itemsize

    def determine_num_blocks(self) -> int:
        cfg = self.config
        if cfg.num_gpu_blocks_override is not None:
            return cfg.num_gpu_blocks_override
        if self.device.type == "cuda":
            budget = self._profile_free_gpu_memory()
        else:
            budget = cfg.kv_cache_memory_bytes or CPU_DEFAULT_KV_BYTES
        num_blocks = budget // self.bytes_per_block
        if num_blocks < 1:
            raise ValueError(
                f"no memory left for the KV cache ({budget} bytes); raise "
                "--gpu-memory-utilization or --kv-cache-memory-bytes"
            )
        return int(num_blocks)

    @torch.inference_mode()
    def _profile_free_gpu_memory(self) -> int:
        """What --gpu-memory-utilization leaves for the KV cache after a full-budget forward pass."""
        if self.config.kv_cache_memory_bytes is not None:
            return self.config.kv_cache_memory_bytes
        mc, dev = self.model_config, self.device
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(dev)
        n = self.config.max_num_batched_tokens
        shape = (1, self.block_size, self.model.num_kv_heads, mc.head_dim)
        kv = [
            (
                torch.zeros(shape, dtype=self.kv_dtype, device=dev),
                torch.zeros(shape, dtype=self.kv_dtype, device=dev),
            )
            for _ in range(self.model.num_stage_layers)
        ]
        # One long sequence of n tokens written nowhere (slot -1): the activations of a full step.
        meta = AttentionMetadata(
            slot_mapping=torch.full((n,), -1, dtype=torch.long, device=dev),
            query_start_loc=torch.tensor([0, n], dtype=torch.int32, device=dev),
            seq_lens=torch.tensor([n], dtype=torch.int32, device=dev),
            block_tables=torch.zeros((1, -(-n // self.block_size)), dtype=torch.int32, device=dev),
            max_query_len=n,
            max_seq_len=n,
            block_size=self.block_size,
            query_start_loc_cpu=[0, n],
            seq_lens_cpu=[n],
        )
        hidden = self.model(
            torch.zeros(n, dtype=torch.long, device=dev), torch.arange(n, device=dev), kv, meta
        )
        self.model.compute_logits(hidden[-min(n, self.config.max_num_seqs) :])
        torch.cuda.synchronize(dev)
        peak = torch.cuda.max_memory_allocated(dev)
        free, total = torch.cuda.mem_get_info(dev)
        non_torch = (total - free) - torch.cuda.memory_reserved(dev)
        del kv, hidden
        torch.cuda.empty_cache()
        return int(total * self.config.gpu_memory_utilization - peak - max(non_torch, 0))

    def prepare(
        self, batch: list[tuple[Sequence, int]]
    ) -> tuple[torch.Tensor, torch.Tensor, AttentionMetadata, list[int]]:
        """Flatten the batch: token ids, positions, attention metadata, and where to take logits.

        Host work per step is on the critical path of every decode, so everything goes into two
        host buffers and crosses to the device in two copies. A decode input not yet back from the
        last step (PENDING_TOKEN) is filled in on the device from that step's samples.
        """
        bs = self.block_size
        tokens: list[int] = []
        positions: list[int] = []
        slots: list[int] = []
        qsl, seq_lens, logits_at = [0], [], []
        pending_at, pending_rows = [], []
        tables = np.zeros(
            (len(batch), max(len(seq.block_table) for seq, _ in batch)), dtype=np.int32
        )
        for i, (seq, n) in enumerate(batch):
            start, end = seq.num_computed_tokens, seq.num_computed_tokens + n
            table = seq.block_table
            tables[i, : len(table)] = table
            if n == 1:  # a decode: no ranges to build
                token = seq.token_ids(start, end)[0]
                if token == PENDING_TOKEN:
                    pending_at.append(len(tokens))
                    pending_rows.append(self._last_rows[seq])
                tokens.append(token)
                positions.append(start)
                slots.append(table[start // bs] * bs + start % bs)
            else:
                pos = np.arange(start, end)
                tokens += seq.scheduled_token_ids(start, end)
                positions += range(start, end)
                slots += (np.asarray(table, dtype=np.int64)[pos // bs] * bs + pos % bs).tolist()
            qsl.append(qsl[-1] + n)
            seq_lens.append(end)
            if end == seq.num_tokens:
                logits_at.append(qsl[-1] - 1)
            elif end > seq.num_tokens:  # verifying k drafts: the target's logits at all k + 1
                logits_at += range(qsl[-1] - (end - seq.num_tokens) - 1, qsl[-1])
        input_ids, positions_d, slot_mapping, self._logits_index, pending_at_d, pending_rows_d = (
            self._pack([tokens, positions, slots, logits_at, pending_at, pending_rows], np.int64)
        )
        if pending_at:
            input_ids.index_copy_(
                0, pending_at_d, self._last_token_ids.index_select(0, pending_rows_d)
            )
        query_start_loc, seq_lens_d, block_tables = self._pack(
            [qsl, seq_lens, tables.ravel()], np.int32
        )
        meta = AttentionMetadata(
            slot_mapping=slot_mapping,
            query_start_loc=query_start_loc,
            seq_lens=seq_lens_d,
            block_tables=block_tables.view(len(batch), tables.shape[1]),
            max_query_len=max(n for _, n in batch),
            max_seq_len=max(seq_lens),
            block_size=bs,
            query_start_loc_cpu=qsl,
            seq_lens_cpu=seq_lens,
        )
        return input_ids, positions_d, meta, logits_at

    def _pack(self, parts: list, dtype) -> list[torch.Tensor]:
        """One host buffer, one copy to the device, one view per part. Each part starts 16-byte
        aligned: Triton compiles a kernel anew for each alignment of its pointer arguments, and an
        alignment that moved with the batch size would recompile in the middle of serving."""
        per16 = 16 // np.dtype(dtype).itemsize
        starts, end = [], 0
        for part in parts:
            starts.append(end)
            end += -(-len(part) // per16) * per16
        host = np.zeros(end, dtype=dtype)
        for start, part in zip(starts, parts):
            host[start : start + len(part)] = part
        buf = self._to_device(host)
        return [buf[start : start + len(part)] for start, part in zip(starts, parts)]

    def _to_device(self, array: np.ndarray) -> torch.Tensor:
        host = torch.from_numpy(array)
        if self.device.type == "cpu":
            return host
        return host.pin_memory().to(self.device, non_blocking=True)

    def copy_blocks(self, pairs: list[tuple[int, int]]) -> None:
        """Copy-on-write: block src's K/V into block dst, on every layer."""
        src, dst = (torch.tensor(ids, dtype=torch.long, device=self.device) for ids in zip(*pairs))
        for k, v in self.kv_caches:
            k[dst] = k[src]
            v[dst] = v[src]

    def swap_out(self, pairs: list[tuple[int, int]]) -> None:
        """(GPU block, CPU block): move a preempted sequence's K/V to the swap pool."""
        src, dst = (torch.tensor(ids, dtype=torch.long) for ids in zip(*pairs))
        src = src.to(self.device)
        for (k, v), (ck, cv) in zip(self.kv_caches, self.cpu_kv_caches):
            ck[dst] = k[src].cpu()
            cv[dst] = v[src].cpu()

    def swap_in(self, pairs: list[tuple[int, int]]) -> None:
        """(CPU block, GPU block): bring a swapped sequence's K/V back."""
        src, dst = (torch.tensor(ids, dtype=torch.long) for ids in zip(*pairs))
        dst = dst.to(self.device)
        for (k, v), (ck, cv) in zip(self.kv_caches, self.cpu_kv_caches):
            k[dst] = ck[src].to(self.device, non_blocking=True)
            v[dst] = cv[src].to(self.device, non_blocking=True)

    @torch.inference_mode()
    def execute(
        self, batch: list[tuple[Sequence, int]], block_ops: list[BlockOp] | tuple[()] = ()
    ) -> tuple[list[Sequence], SampledBatch | VerifiedSamples | None]:
        """Perform the block moves, run one forward pass, and sample for the sequences whose last
        new token ends their context (and for their pending forks, from the same logits row).
        Returns without waiting for the GPU: the samples' copy to the host is under way."""
        moves = {"copy": self.copy_blocks, "swap_out": self.swap_out, "swap_in": self.swap_in}
        for kind, pairs in op_runs(block_ops):
            moves[kind](pairs)
        if not batch:
            self._last_rows = {}
            return [], None
        input_ids, positions, meta, _ = self.prepare(batch)
        if self.lora is not None:
            self.lora.prepare([seq.lora_request for seq, _ in batch], [n for _, n in batch])
        hidden: torch.Tensor | IntermediateTensors  # a stage short of the last: its tensors
        graphs = next(
            (g for g in (self.graphs, self.verify_graphs, self.token_graphs) if g and g.fits(meta)),
            None,
        )
        if graphs is not None:
            hidden = graphs.run(input_ids, positions, meta)
        else:
            hidden = self.model(
                input_ids, positions, self.kv_caches, meta, self._receive_stage_input(input_ids)
            )
        if not self.pp.is_last_rank:  # the next stage takes it from here
            stage_out = cast("IntermediateTensors", hidden)
            self.pp.send(stage_out["hidden_states"])
            self.pp.send(stage_out["residual"])
            self._last_rows = {}
            return [], None
        starts = cast("list[int]", meta.query_start_loc_cpu)  # prepare() sets it
        if self.config.is_pooling:
            self.pooler.step(batch, cast(torch.Tensor, hidden), starts)
        elif any(seq.params.prompt_logprobs is not None for seq, _ in batch):
            self.prompt_logprobs.step(
                batch, cast(torch.Tensor, hidden), starts, self.model.compute_logits
            )
        sampling = sampled_sequences(batch)
        if not sampling:
            self._last_rows = {}
            return [], None
        logits = self.model.compute_logits(cast(torch.Tensor, hidden)[self._logits_index])
        verifying = verifying_sequences(batch)
        if verifying:  # speculative decoding: these verify their drafts (engine/spec_decode)
            logits, emitted = verify_drafts(self.sampler, batch, logits, self._generator)
            sampling = [seq for seq in sampling if seq not in verifying]
        if len(sampling) > len(logits):  # forks draw from their parent's row
            repeats = [
                1 + len(seq.forks)
                for seq, n in batch
                if seq.num_computed_tokens + n == seq.num_tokens
            ]
            logits = logits.repeat_interleave(torch.tensor(repeats, device=logits.device), dim=0)
        rows = [
            SamplingRow(
                seq.params,
                seq.prompt_token_ids,
                seq.output_token_ids,
                self._generator(seq),
                seq.grammar,
            )
            for seq in sampling
        ]
        beams = [i for i, seq in enumerate(sampling) if seq.params.use_beam_search]
        if beams:  # beam search ranks every token: the log-probabilities of the processed logits
            logprobs = self.sampler.process_logits(logits.float(), rows).log_softmax(dim=-1)
            for i in beams:
                sampling[i].beam_logprobs = logprobs[i]
        sampled = self.sampler.start(logits, rows)
        self._last_token_ids, self._last_rows = (
            sampled.token_ids,
            {seq: i for i, seq in enumerate(sampling)},
        )
        if verifying:
            return [*sampling, *verifying], VerifiedSamples(sampled, emitted)
        return sampling, sampled

    def _receive_stage_input(self, input_ids: torch.Tensor) -> dict[str, torch.Tensor] | None:
        """A later pipeline stage starts from the previous stage's hidden states and residual."""
        if self.pp.is_first_rank:
            return None
        shape = (len(input_ids), self.model_config.hidden_size)
        return {
            name: self.pp.recv(torch.empty(shape, dtype=self.dtype, device=self.device))
            for name in ("hidden_states", "residual")
        }

    def _generator(self, seq: Sequence) -> torch.Generator | None:
        """A seeded sequence's own random stream, made on the rank that samples for it."""
        if seq.generator is None and seq.params.seed is not None:
            seq.generator = make_generator(seq.params.seed + seq.index, self.device)
        return seq.generator

    def _warm_up(self) -> None:
        """One mixed step (prefills of several lengths beside decodes) before serving, so that
        kernel compilation and library start-up land here and not on the first requests."""
        from pagoda.engine.sampling_params import SamplingParams

        seqs, next_block = [], 0
        for i, (n, computed) in enumerate([(17, 0), (300, 0), (100, 99), (40, 39), (700, 512)]):
            seq = Sequence(f"warm-up-{i}", "warm-up", 0, [1] * n, SamplingParams(temperature=0.0))
            blocks = -(-n // self.block_size)
            seq.block_table = list(range(next_block, next_block + blocks))
            seq.num_computed_tokens = computed
            next_block += blocks
            seqs.append(seq)
        if next_block <= self.num_blocks:
            self.execute([(s, s.num_tokens - s.num_computed_tokens) for s in seqs])
            torch.cuda.synchronize(self.device)
