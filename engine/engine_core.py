"""The engine core: scheduler, KV cache manager and executor, one scheduled forward pass per step.

It takes requests already tokenized and checked (EngineCoreRequest) and gives back, per step, each
touched sequence's new token ids and how it ended (EngineCoreOutputs). Text, stop strings and
output objects are the output processor's, in the API process; this runs in the engine-core
process (`pagoda serve`) or in the caller's (`LLM`).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Protocol, cast

import torch

from pagoda.engine.config import EngineConfig
from pagoda.engine.core.kv_cache_manager import BlockOp, KVCacheManager
from pagoda.engine.core.scheduler import Scheduler, SchedulerOutput
from pagoda.engine.core.sequence import PENDING_TOKEN, Sequence, SequenceStatus
from pagoda.engine.core_messages import (
    GRAMMAR_DEAD_END,
    CoreInfo,
    EngineCoreOutput,
    EngineCoreOutputs,
    EngineCoreRequest,
    Hypothesis,
    LoRAStats,
    SchedulerStats,
)
from pagoda.engine.loader.errors import ModelLoadError
from pagoda.engine.sample.beam import BeamSearch
from pagoda.engine.sample.sampler import SamplerOutput, has_penalties
from pagoda.engine.sampling_params import SamplingParams
from pagoda.engine.spec_decode.decoder import SpecDecoder, make_proposer
from pagoda.engine.structured.backend import StructuredOutputs

log = logging.getLogger(__name__)


class PendingSamples(Protocol):
    """A launched step's samples (a SampledBatch, or a MultiprocExecutor's RemoteSamples)."""

    def result(self) -> SamplerOutput:
        """Wait for the samples on the host."""
        ...


class Runner(Protocol):
    """What the core needs of a model runner (ModelRunner, or a fake in scheduler tests)."""

    num_blocks: int
    num_cpu_blocks: int  # the swap pool

    @property
    def device(self) -> torch.device | str: ...

    def execute(
        self, batch: list[tuple[Sequence, int]], block_ops: list[BlockOp]
    ) -> tuple[list[Sequence], PendingSamples | None]:
        """Perform the block moves in order, then launch the batch; a sequence with `forks` pending
        gets a row for itself and one for each fork, from the same logits, in the returned order."""


def runs_ahead(params: SamplingParams) -> bool:
    """Whether the next step may be scheduled before this sequence's token is on the host: not when
    sampling reads the tokens so far on the host (penalties, min_tokens, a grammar) or tokens fork
    (n, beams)."""
    return not (
        params.use_beam_search
        or params.n > 1
        or params.min_tokens
        or has_penalties(params)
        or params.structured_outputs is not None
        or bool(params.bad_words)
    )


@dataclass
class LaunchedStep:
    """A step on the device: what was scheduled, and for each sampled sequence its output slot
    (None for a beam, which takes its tokens in _advance_beams)."""

    sched: SchedulerOutput
    seqs: list[Sequence]
    sampled: PendingSamples | None
    slots: list[int | None]
    can_run_ahead: bool  # every sampled sequence runs_ahead: the next step need not wait for it


@dataclass(eq=False)
class Request:
    request_id: str
    seqs: list[Sequence]
    # Beam search: `seqs` are the live beams in the search's order; output comes only at the end.
    beam: BeamSearch | None = None

    @property
    def finished(self) -> bool:
        return all(s.is_finished for s in self.seqs)


class EngineCore:
    def __init__(
        self,
        config: EngineConfig,
        runner: Runner | None = None,
        tokenizer=None,
        max_position_embeddings: int | None = None,
        eos_token_ids: list[int] | None = None,
    ) -> None:
        config.validate()
        self.config = config
        if runner is None:
            from pagoda.engine.executor import make_executor  # torch model code: only when real

            runner = make_executor(config)
            max_position_embeddings = runner.model_config.max_position_embeddings
            eos_token_ids = runner.model_config.eos_token_ids
        if tokenizer is None:
            from pagoda.engine.tokenizer import load_tokenizer

            tokenizer = load_tokenizer(config)
        self.runner, self.tokenizer = runner, tokenizer
        self.eos_token_ids = set(eos_token_ids or [])
        max_model_len = config.max_model_len or max_position_embeddings
        if max_model_len is None:
            raise ValueError("no max_model_len: give --max-model-len or a model that states one")
        self.max_model_len: int = max_model_len
        # A runner without a model (a test's fake) has no vocabulary: no token ids are checked.
        self.vocab_size: int | None = getattr(
            getattr(runner, "model_config", None), "vocab_size", None
        )
        capacity = runner.num_blocks * config.block_size
        if self.max_model_len > capacity:
            raise ModelLoadError(
                f"max_model_len {self.max_model_len} does not fit the KV cache ({capacity} tokens); "
                "lower --max-model-len or give the cache more memory"
            )
        self.kv = KVCacheManager(
            runner.num_blocks,
            config.block_size,
            config.enable_prefix_caching,
            runner.num_cpu_blocks,
        )
        self.scheduler = Scheduler(
            self.kv,
            config.max_num_seqs,
            config.max_num_batched_tokens,
            config.scheduling_policy,
            config.preemption_mode,
            max_loras=config.max_loras if config.enable_lora else 0,
        )
        self.requests: dict[str, Request] = {}
        self._in_flight: LaunchedStep | None = None  # async scheduling: tokens not yet taken in
        self.structured = StructuredOutputs(tokenizer, self.vocab_size, sorted(self.eos_token_ids))
        self._stats = SchedulerStats()  # the counters' increments since take_stats()
        self._outputs: dict[tuple[str, int], EngineCoreOutput] = {}  # this step's, being built
        speculative = config.speculative
        self.spec = (
            None
            if speculative is None
            else SpecDecoder(speculative, make_proposer(config, speculative, runner))
        )

    def info(self) -> CoreInfo:
        return CoreInfo(
            self.max_model_len,
            self.vocab_size,
            sorted(self.eos_token_ids),
            self.kv.num_blocks,
            getattr(self.runner, "model_config", None),
        )

    # -- requests -------------------------------------------------------------------------------

    def add_request(self, req: EngineCoreRequest) -> None:
        """Queue a request the API side has tokenized and checked."""
        if req.request_id in self.requests:
            raise ValueError(f"request id {req.request_id!r} is already in use")
        params = req.params
        rid = req.request_id
        args = (req.prompt_token_ids, params, req.priority, req.arrival_time, req.cache_salt)
        lora = req.lora_request
        if params.use_beam_search:
            assert params.max_tokens is not None, "the API side resolves max_tokens"
            beam = BeamSearch(
                params.best_of or params.n,
                params.max_tokens,
                [] if params.ignore_eos else sorted(self.eos_token_ids),
                params.length_penalty,
            )
            self._add(Request(rid, [Sequence(f"{rid}#0", rid, 0, *args, lora_request=lora)], beam))
            return
        grammar = params.structured_outputs
        seqs = [
            Sequence(
                f"{rid}#{i}",
                rid,
                i,
                *args,
                lora_request=lora,
                grammar=self.structured.state(grammar) if grammar is not None else None,
            )
            for i in range(params.n)
        ]
        seqs[0].pooling = req.pooling
        # The first sequence computes the prompt; the others fork from it at its first token.
        seqs[0].forks = seqs[1:]
        for seq in seqs[1:]:
            seq.status = SequenceStatus.FORKING
        self._add(Request(rid, seqs))

    def _add(self, req: Request) -> None:
        self.requests[req.request_id] = req
        if self.spec is not None:
            self.spec.announce(req.request_id, req.seqs[0].params)
        self.scheduler.add(req.seqs[0])

    def abort_requests(self, request_ids: list[str]) -> None:
        for rid in request_ids:
            req = self.requests.pop(rid, None)
            if req is not None:
                for seq in req.seqs:
                    self._end(seq, "abort")

    def stop_sequences(self, sequences: list[tuple[str, int]]) -> None:
        """A stop string ended these sequences (request id, index) on the API side."""
        for rid, index in sequences:
            req = self.requests.get(rid)
            if req is None:
                continue
            for seq in req.seqs:
                if seq.index == index:
                    self._end(seq, "stop")
            if req.finished:
                del self.requests[rid]

    def _end(self, seq: Sequence, reason: str) -> None:
        if seq.is_finished:
            return
        while seq.output_token_ids and seq.output_token_ids[-1] == PENDING_TOKEN:
            seq.output_token_ids.pop()  # computing still; dropped when it arrives
        self.scheduler.finish(seq)
        seq.finish_reason = reason

    def check_health(self) -> None:
        """Raise when the executor cannot step any more (a worker died or hangs)."""
        check = getattr(self.runner, "check_health", None)
        if check is not None:
            check()

    def shutdown(self) -> None:
        """Stop the executor's worker processes, if it has any."""
        stop = getattr(self.runner, "shutdown", None)
        if stop is not None:
            stop()

    def has_unfinished_requests(self) -> bool:
        return self.scheduler.num_unfinished > 0 or self._in_flight is not None

    # -- the loop ---------------------------------------------------------------------------------

    def step(self) -> EngineCoreOutputs:
        """Schedule and launch a step, then take in the tokens of the one before it (async
        scheduling: the GPU computes this step while the host handles the last) or of this one."""
        if self.spec is not None:
            self.spec.propose(self.scheduler.running, self.max_model_len)
        sched = self.scheduler.schedule()
        launched = self._launch(sched) if sched.scheduled or sched.block_ops else None
        if self._in_flight is not None:
            in_flight, self._in_flight = self._in_flight, None
            self._finish(in_flight)
        if launched is not None:
            if self.config.async_scheduling and launched.can_run_ahead:
                self._in_flight = launched
            else:
                self._finish(launched)
        outputs, self._outputs = list(self._outputs.values()), {}
        return EngineCoreOutputs(outputs, self.take_stats(), time.monotonic())

    def take_stats(self) -> SchedulerStats:
        stats, self._stats = self._stats, SchedulerStats()
        stats.num_running = len(self.scheduler.running)
        stats.num_waiting = len(self.scheduler.waiting) + len(self.scheduler.swapped)
        stats.kv_cache_usage = self.kv.usage
        if self.config.enable_lora:
            s = self.scheduler
            stats.lora = LoRAStats(
                self.config.max_loras,
                sorted({q.lora_request.lora_name for q in s.running if q.lora_request is not None}),
                sorted(
                    {
                        q.lora_request.lora_name
                        for q in s.waiting + s.swapped
                        if q.lora_request is not None
                    }
                ),
            )
        return stats

    def _launch(self, sched: SchedulerOutput) -> LaunchedStep:
        """Run the batch on the device and give each sampled sequence a PENDING_TOKEN slot."""
        sampled_seqs, sampled = self.runner.execute(sched.scheduled, sched.block_ops)
        for seq, n in sched.scheduled:
            seq.num_computed_tokens += n
        for seq in sampled_seqs:
            for child in seq.forks:  # before any token is appended: the children share the context
                self.scheduler.fork(seq, child)
            seq.forks = []
        slots: list[int | None] = []
        for seq in sampled_seqs:
            if self.requests[seq.request_id].beam is not None:
                slots.append(None)  # beams take their tokens all at once, in _advance_beams
                continue
            seq.output_token_ids.append(PENDING_TOKEN)
            slots.append(len(seq.output_token_ids) - 1)
            if self._ends_by_length(seq, len(seq.output_token_ids)):
                seq.awaiting_last_token = True
        return LaunchedStep(
            sched,
            sampled_seqs,
            sampled,
            slots,
            can_run_ahead=all(
                slot is not None and runs_ahead(seq.params)
                for seq, slot in zip(sampled_seqs, slots)
            ),
        )

    def _finish(self, step: LaunchedStep) -> None:
        """Take in a launched step's tokens: fill the slots, cache the full blocks, check stops."""
        sampled = step.sampled.result() if step.sampled is not None else None
        live = [
            (i, seq, slot)
            for i, (seq, slot) in enumerate(zip(step.seqs, step.slots))
            if slot is not None and not seq.is_finished
        ]  # a finished one's token is dropped
        # A live slot exists only in a step that sampled: `sampled` is set where it is read below.
        # Speculative decoding: the tokens verifying rows emit after their first.
        more = sampled.more_token_ids if self.spec is not None and sampled is not None else {}
        for i, seq, slot in live:
            seq.output_token_ids[slot] = sampled.token_ids[i]  # type: ignore[union-attr]
            if self.spec is not None and i in more:
                self._stats.spec_drafts.append((len(seq.spec_token_ids), len(more[i])))
                self.spec.take_verified(seq, more[i])
        for seq, _ in step.sched.scheduled:
            if seq.status is SequenceStatus.RUNNING:  # every token it has computed is known now
                self.kv.cache_full_blocks(seq)
        for seq in step.seqs:  # the runner computed these prompts' logprobs in this step
            if seq.prompt_logprobs is not None:
                self._output(seq).prompt_logprobs, seq.prompt_logprobs = seq.prompt_logprobs, None
        for i, seq, slot in live:
            req = self.requests[seq.request_id]
            if req.finished:  # failed on an earlier sequence of this step
                continue
            try:
                self._accept_token(req, seq, sampled, i, slot)  # type: ignore[arg-type]
                for j, token in enumerate(more.get(i, ())):
                    if seq.is_finished:  # a stop among the verified tokens drops the rest
                        break
                    self._accept_token(
                        req, seq, SamplerOutput([token], None, [None]), 0, slot + 1 + j
                    )
            except Exception:
                self._fail_request(req)
        for seq, beam_slot in zip(step.seqs, step.slots):
            beam_req = self.requests.get(seq.request_id)
            if (
                beam_slot is None
                and beam_req is not None
                and beam_req.beam is not None
                and not beam_req.finished
                and all(s.beam_logprobs is not None for s in beam_req.seqs)
            ):
                try:
                    self._advance_beams(beam_req)
                except Exception:
                    self._fail_request(beam_req)
        generated = sum(seq.pooling is None for _, seq, _ in live)  # a pooled one's is dropped
        generated += sum(len(m) for m in more.values())
        self._record_step(step.sched, generated + step.slots.count(None))
        for rid in {seq.request_id for seq in step.seqs}:
            touched = self.requests.get(rid)
            if touched is not None and touched.finished:
                del self.requests[rid]

    def _output(self, seq: Sequence) -> EngineCoreOutput:
        """This step's output of the sequence, made on its first touch."""
        key = (seq.request_id, seq.index)
        out = self._outputs.get(key)
        if out is None:
            out = EngineCoreOutput(
                seq.request_id,
                seq.index,
                [],
                [] if seq.params.logprobs is not None else None,
                num_cached_tokens=seq.num_cached_tokens,
                first_scheduled_time=seq.first_scheduled_time,
            )
            self._outputs[key] = out
        return out

    def _fail_request(self, req: Request) -> None:
        """End every sequence of a request whose processing raised, with finish_reason "error";
        the batch's other requests go on. Called from an except block: the traceback is logged."""
        log.exception("request %s failed; it alone is ended", req.request_id)
        for seq in req.seqs:
            if not seq.is_finished:
                self._end(seq, "error")
                self._output(seq).finish_reason = "error"  # beams: all index 0, one output

    def _accept_token(
        self, req: Request, seq: Sequence, sampled: SamplerOutput, i: int, slot: int
    ) -> None:
        """The token at output position `slot` has arrived (already in place): its logprobs, and
        whether it ends the sequence."""
        token, params = sampled.token_ids[i], seq.params
        out = self._output(seq)
        out.new_token_ids.append(token)
        if sampled.logprobs is not None:
            seq.cumulative_logprob += sampled.logprobs[i]
        if params.logprobs is not None:
            top = sampled.top_logprobs[i]
            assert top is not None, "the sampler gives top logprobs to every row that asks"
            cast(list, out.new_logprobs).append(top)
            out.cumulative_logprob = seq.cumulative_logprob
        reason = self._finish_reason(seq, token, slot + 1)
        if reason is not None:
            seq.finish_reason = reason
            out.finish_reason, out.stop_reason = reason, seq.stop_reason
            if seq.pooled is not None and reason in ("stop", "length"):
                out.pooled = seq.pooled.float().cpu().numpy().tobytes()
            del seq.output_token_ids[slot + 1 :]  # a token computing beyond the end is dropped
            self.scheduler.finish(seq)

    def _advance_beams(self, req: Request) -> None:
        """One beam-search step for a group whose live beams all have their logprobs: the new live
        beams extend old ones; a beam extended twice is forked (sharing its blocks), one not
        extended is freed."""
        assert req.beam is not None, "a beam-search request"
        old = req.seqs
        parents = req.beam.step(torch.stack([s.beam_logprobs for s in old]))  # type: ignore[misc]
        for s in old:
            s.beam_logprobs = None
        new: list[Sequence] = []
        for p in parents:  # forks first: a child shares its parent's context before the new token
            parent = old[p]
            if parent in new:
                child = Sequence(
                    f"{parent.seq_id}.{len(new)}",
                    req.request_id,
                    0,
                    parent.prompt_token_ids,
                    parent.params,
                    parent.priority,
                    parent.arrival_time,
                    parent.cache_salt,
                    lora_request=parent.lora_request,
                    output_token_ids=list(parent.output_token_ids),
                )
                self.scheduler.fork(parent, child)
                new.append(child)
            else:
                new.append(parent)
        for s in old:
            if s not in new:
                self.scheduler.finish(s)
        for s, b in zip(new, req.beam.beams):
            s.output_token_ids.append(b.token_ids[-1])
        req.seqs = new
        if req.beam.done:
            for s in new:
                s.finish_reason = "length"
                self.scheduler.finish(s)
            beam = req.beam
            out = self._output(new[0])
            out.finish_reason = "length"
            out.beams = [
                Hypothesis(
                    h.token_ids,
                    h.logprob,
                    "stop" if h.token_ids[-1] in beam.eos_token_ids else "length",
                )
                for h in beam.best(new[0].params.n)
            ]

    def _is_stop_token(self, seq: Sequence, token: int, num_output: int) -> bool:
        """The token, the num_output-th of the sequence, ends it: a stop token id, or EOS unless ignored."""
        params = seq.params
        return num_output >= params.min_tokens and (
            token in params.stop_token_ids
            or (token in self.eos_token_ids and not params.ignore_eos)
        )

    def _ends_by_length(self, seq: Sequence, n_out: int) -> bool:
        """Its n_out-th output token is its last: max_tokens, or the model's context, is reached."""
        max_tokens = cast(int, seq.params.max_tokens)  # the API side resolves None to the room left
        return n_out >= max_tokens or seq.num_prompt_tokens + n_out >= self.max_model_len

    def _finish_reason(self, seq: Sequence, token: int, n_out: int) -> str | None:
        params = seq.params
        if seq.grammar is not None and seq.grammar.dead:
            # The grammar allowed no token: this one, drawn unconstrained, is dropped from the text.
            seq.stop_reason = GRAMMAR_DEAD_END
            return "abort"
        if self._is_stop_token(seq, token, n_out):
            if token in params.stop_token_ids:
                seq.stop_reason = token
            return "stop"
        if self._ends_by_length(seq, n_out):
            return "length"
        return None

    # -- stats ------------------------------------------------------------------------------------

    def _record_step(self, sched: SchedulerOutput, num_generated: int) -> None:
        s = self._stats
        s.num_generation_tokens += num_generated
        s.num_preemptions += sched.num_preemptions
        s.prefix_cache_queries += sched.prefix_cache_queries
        s.prefix_cache_hits += sched.prefix_cache_hits
