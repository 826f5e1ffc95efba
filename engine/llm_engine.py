"""The engine loop: requests in, one scheduled forward pass per step, outputs out."""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass, field, replace
from typing import Any, Protocol, cast

import torch

from pagoda.engine.config import EngineConfig
from pagoda.engine.core.kv_cache_manager import BlockOp, KVCacheManager
from pagoda.engine.core.scheduler import Scheduler, SchedulerOutput
from pagoda.engine.core.sequence import PENDING_TOKEN, Sequence, SequenceStatus
from pagoda.engine.detokenizer import IncrementalDetokenizer
from pagoda.engine.loader.errors import ModelLoadError
from pagoda.engine.lora.admission import LoRAAdmission
from pagoda.engine.lora.request import LoRARequest
from pagoda.engine.metrics import EngineMetrics
from pagoda.engine.outputs import (
    CompletionOutput,
    PoolingOutput,
    PoolingRequestOutput,
    RequestMetrics,
    RequestOutput,
)
from pagoda.engine.pooling_params import PoolerConfig, PoolingParams
from pagoda.engine.request_rules import RequestLimits, check_pooling_request, check_request
from pagoda.engine.sample.bad_words import bad_words_token_ids
from pagoda.engine.sample.beam import BeamSearch
from pagoda.engine.sample.sampler import SamplerOutput, has_penalties
from pagoda.engine.sampling_params import I64_MAX, ParamError, SamplingParams
from pagoda.engine.spec_decode.decoder import SpecDecoder, make_proposer
from pagoda.engine.structured.backend import StructuredOutputs

log = logging.getLogger(__name__)

# The stop_reason of a sequence ended (finish_reason "abort") because its grammar allowed no token.
GRAMMAR_DEAD_END = "structured output: the grammar allows no further token"


class PendingSamples(Protocol):
    """A launched step's samples (a SampledBatch, or a MultiprocExecutor's RemoteSamples)."""

    def result(self) -> SamplerOutput:
        """Wait for the samples on the host."""
        ...


class Runner(Protocol):
    """What the engine needs of a model runner (ModelRunner, or a fake in scheduler tests)."""

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


def known_tokens(seq: Sequence) -> list[int]:
    """The sequence's output tokens that have reached the host: its own list, not a copy (a step
    must not cost O(tokens so far)), unless a token is still computing at its end."""
    ids = seq.output_token_ids
    return ids[:-1] if ids and ids[-1] == PENDING_TOKEN else ids


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
    prompt: str | None
    seqs: list[Sequence]
    detoks: list[IncrementalDetokenizer | None]  # None where detokenize=False
    arrival_time: float
    # Text and token ids gained since the last RequestOutput, per sequence.
    pending: list[tuple[str, list[int]]] = field(default_factory=list)
    # Beam search: `seqs` are the live beams in the search's order; output comes only at the end.
    beam: BeamSearch | None = None

    @property
    def finished(self) -> bool:
        return all(s.is_finished for s in self.seqs)


class LLMEngine:
    def __init__(
        self,
        config: EngineConfig,
        runner: Runner | None = None,
        tokenizer=None,
        max_position_embeddings: int | None = None,
        eos_token_ids: list[int] | None = None,
        log_stats: bool = True,
    ) -> None:
        config.validate()
        self.config = config
        real_model = runner is None  # a test's fake runner has no model files
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
        vocab_size = getattr(getattr(runner, "model_config", None), "vocab_size", None)
        self.limits = RequestLimits(
            self.max_model_len, config.max_num_seqs, vocab_size or I64_MAX, config.max_logprobs
        )  # a runner without a model (a test's fake) checks no token ids
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
        self._in_flight: LaunchedStep | None = (
            None  # async scheduling: launched, tokens not yet taken in
        )
        self.metrics = EngineMetrics(config.name, self.max_model_len) if log_stats else None
        vocab = getattr(getattr(runner, "model_config", None), "vocab_size", None)
        self.structured = StructuredOutputs(tokenizer, vocab, sorted(self.eos_token_ids))
        # vLLM's default_sampling_params: what a request that leaves a field unset gets.
        self.default_sampling_params: dict[str, Any] = {}
        if real_model:
            from pagoda.engine.loader.generation_config import load_generation_defaults

            self.default_sampling_params = load_generation_defaults(config)
        self.loras = LoRAAdmission(config, getattr(runner, "model_config", None))
        speculative = config.speculative
        self.spec = (
            None
            if speculative is None
            else SpecDecoder(speculative, self.metrics, make_proposer(config, speculative, runner))
        )
        self.pooler_config: PoolerConfig | None = None
        if config.is_pooling:
            from pagoda.engine.loader.pooler_config import load_pooler_config

            self.pooler_config = load_pooler_config(config)

    # -- requests -------------------------------------------------------------------------------

    def tokenize(self, prompt: str | list[int]) -> list[int]:
        if isinstance(prompt, str):
            return self.tokenizer(prompt).input_ids
        return list(prompt)

    def add_request(
        self,
        request_id: str,
        prompt: str | list[int],
        params: SamplingParams | PoolingParams,
        priority: int = 0,
        cache_salt: str | None = None,
        lora_request: LoRARequest | None = None,
    ) -> None:
        """Queue a request. ValueError (an HTTP 400) when it cannot be served as asked."""
        self.add(self.make_request(request_id, prompt, params, priority, cache_salt, lora_request))

    def make_request(
        self,
        request_id: str,
        prompt: str | list[int],
        params: SamplingParams | PoolingParams,
        priority: int = 0,
        cache_salt: str | None = None,
        lora_request: LoRARequest | None = None,
    ) -> Request:
        """Tokenize and check a request without touching the engine's state (safe off its thread)."""
        if lora_request is not None:
            self.loras.check(lora_request)
        if isinstance(params, PoolingParams):
            return self._pooling_request(request_id, prompt, params, priority)
        if self.config.is_pooling:
            raise ParamError("model", "This model serves embeddings (--runner pooling): no text")
        prompt_ids = self.tokenize(prompt)
        check_request(prompt_ids, params, self.limits)
        if params.prompt_logprobs is not None:  # every prompt token's logits: no cache hits
            cache_salt = f"prompt-logprobs-{uuid.uuid4().hex}"
        if params.bad_words:  # a copy: the caller's params stay as given
            params = replace(
                params, bad_words_token_ids=bad_words_token_ids(self.tokenizer, params.bad_words)
            )
        # A copy: the caller's params stay as given. The cap applies after the check, as vLLM's.
        max_tokens = min(
            x
            for x in (
                params.max_tokens,
                self.max_model_len - len(prompt_ids),
                self.config.max_new_tokens,
            )
            if x is not None
        )
        if max_tokens != params.max_tokens:
            params = replace(params, max_tokens=max_tokens)
        # min_tokens masks EOS and the stop tokens: if those are all it allows, no token is left.
        if (
            params.min_tokens
            and params.allowed_token_ids
            and set(params.allowed_token_ids) <= self.eos_token_ids | set(params.stop_token_ids)
        ):
            raise ParamError(
                "allowed_token_ids",
                "allowed_token_ids: every allowed token is EOS or a stop token, which "
                "min_tokens forbids",
            )
        width = (params.best_of or params.n) if params.use_beam_search else params.n
        now = time.monotonic()
        if params.structured_outputs is not None:
            if params.use_beam_search:
                raise ParamError(
                    "structured_outputs", "structured outputs do not combine with beam search"
                )
            self.structured.compile(params.structured_outputs)  # a bad grammar fails here
        if params.use_beam_search:
            seq = Sequence(
                f"{request_id}#0",
                request_id,
                0,
                prompt_ids,
                params,
                priority,
                now,
                cache_salt,
                lora_request=lora_request,
            )
            assert params.max_tokens is not None  # set above
            beam = BeamSearch(
                width,
                params.max_tokens,
                [] if params.ignore_eos else sorted(self.eos_token_ids),
                params.length_penalty,
            )
            return Request(
                request_id,
                prompt if isinstance(prompt, str) else None,
                [seq],
                [None],
                now,
                [("", [])],
                beam,
            )
        seqs, detoks = [], []
        for i in range(params.n):
            seqs.append(
                Sequence(
                    f"{request_id}#{i}",
                    request_id,
                    i,
                    prompt_ids,
                    params,
                    priority,
                    now,
                    cache_salt,
                    lora_request=lora_request,
                    grammar=self.structured.state(params.structured_outputs)
                    if params.structured_outputs is not None
                    else None,
                )
            )
            detoks.append(
                IncrementalDetokenizer(
                    self.tokenizer,
                    prompt_ids,
                    params.skip_special_tokens,
                    params.stop,
                    params.include_stop_str_in_output,
                    min_tokens=params.min_tokens,
                )
                if params.detokenize
                else None
            )
        # The first sequence computes the prompt; the others fork from it at its first token.
        seqs[0].forks = seqs[1:]
        for seq in seqs[1:]:
            seq.status = SequenceStatus.FORKING
        return Request(
            request_id,
            prompt if isinstance(prompt, str) else None,
            seqs,
            detoks,
            now,
            [("", []) for _ in seqs],
        )

    def _pooling_request(
        self, request_id: str, prompt: str | list[int], params: PoolingParams, priority: int
    ) -> Request:
        """One sequence that computes its prompt, is pooled by the runner, and samples one token
        (dropped). Mean pooling reads every prompt token's hidden state, so such a sequence takes
        nothing from the prefix cache (a salt of its own); last-token pooling may."""
        if self.pooler_config is None:
            raise ParamError("model", "This model generates text; embeddings need --runner pooling")
        prompt_ids = self.tokenize(prompt)
        check_pooling_request(prompt_ids, self.limits)
        pooling = self.pooler_config.resolve(params)
        salt = f"pooling-{uuid.uuid4().hex}" if pooling.pooling_type == "MEAN" else None
        sample = SamplingParams(temperature=0.0, max_tokens=1, detokenize=False)
        now = time.monotonic()
        seq = Sequence(f"{request_id}#0", request_id, 0, prompt_ids, sample, priority, now, salt)
        seq.pooling = pooling
        text = prompt if isinstance(prompt, str) else None
        return Request(request_id, text, [seq], [None], now, [("", [])])

    def add(self, req: Request) -> None:
        if req.request_id in self.requests:
            raise ValueError(f"request id {req.request_id!r} is already in use")
        self.requests[req.request_id] = req
        if self.spec is not None:
            self.spec.announce(req.request_id, req.seqs[0].params)
        self.scheduler.add(req.seqs[0])

    def abort_request(self, request_id: str) -> RequestOutput | PoolingRequestOutput | None:
        req = self.requests.pop(request_id, None)
        if req is None:
            return None
        for seq in req.seqs:
            if not seq.is_finished:
                while seq.output_token_ids and seq.output_token_ids[-1] == PENDING_TOKEN:
                    seq.output_token_ids.pop()  # computing still; dropped when it arrives
                self.scheduler.finish(seq)
                seq.finish_reason = "abort"
                if self.metrics:
                    self.metrics.finished("abort")
        self._record_gauges()  # an idle engine takes no further step that would refresh them
        return self._output(req)

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

    def step(self) -> list[RequestOutput | PoolingRequestOutput]:
        """Schedule and launch a step, then take in the tokens of the one before it (async
        scheduling: the GPU computes this step while the host handles the last) or of this one."""
        if self.spec is not None:
            self.spec.propose(self.scheduler.running, self.max_model_len)
        sched = self.scheduler.schedule()
        launched = self._launch(sched) if sched.scheduled or sched.block_ops else None
        outputs = []
        if self._in_flight is not None:
            in_flight, self._in_flight = self._in_flight, None
            outputs = self._finish(in_flight)
        if launched is not None:
            if self.config.async_scheduling and launched.can_run_ahead:
                self._in_flight = launched
            else:
                outputs += self._finish(launched)
        return outputs

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

    def _finish(self, step: LaunchedStep) -> list[RequestOutput | PoolingRequestOutput]:
        """Take in a launched step's tokens: fill the slots, cache the full blocks, check stops."""
        sampled = step.sampled.result() if step.sampled is not None else None
        now = time.monotonic()
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
                self.spec.take_verified(seq, more[i])
        for seq, _ in step.sched.scheduled:
            if seq.status is SequenceStatus.RUNNING:  # every token it has computed is known now
                self.kv.cache_full_blocks(seq)
        touched: dict[str, Request] = {}
        for i, seq, slot in live:
            req = self.requests[seq.request_id]
            touched[req.request_id] = req
            if req.finished:  # failed on an earlier sequence of this step
                continue
            try:
                self._accept_token(req, seq, sampled, i, slot, now)  # type: ignore[arg-type]
                for j, token in enumerate(more.get(i, ())):
                    if seq.is_finished:  # a stop among the verified tokens drops the rest
                        break
                    one = SamplerOutput([token], None, [None])
                    self._accept_token(req, seq, one, 0, slot + 1 + j, now)
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
                    self._advance_beams(beam_req, now)
                except Exception:
                    self._fail_request(beam_req)
                if beam_req.finished:
                    touched[beam_req.request_id] = beam_req
        generated = sum(seq.pooling is None for _, seq, _ in live)  # a pooled one's is dropped
        generated += sum(len(m) for m in more.values())
        self._record_step(step.sched, generated + step.slots.count(None))
        outputs = []
        for req in touched.values():
            finished = req.finished
            if finished or req.seqs[0].params.output_kind == "cumulative":
                outputs.append(self._output(req))
            if finished:
                del self.requests[req.request_id]
        return outputs

    def _fail_request(self, req: Request) -> None:
        """End every sequence of a request whose processing raised, with finish_reason "error";
        the batch's other requests go on. Called from an except block: the traceback is logged."""
        log.exception("request %s failed; it alone is ended", req.request_id)
        for seq in req.seqs:
            if not seq.is_finished:
                while seq.output_token_ids and seq.output_token_ids[-1] == PENDING_TOKEN:
                    seq.output_token_ids.pop()
                self.scheduler.finish(seq)
                seq.finish_reason = "error"
                if self.metrics:
                    self.metrics.finished("error")

    def _accept_token(
        self, req: Request, seq: Sequence, sampled: SamplerOutput, i: int, slot: int, now: float
    ) -> None:
        """The token at output position `slot` has arrived (already in place): its logprobs,
        text, metrics, and whether it ends the sequence."""
        token, params = sampled.token_ids[i], seq.params
        first = slot == 0
        if sampled.logprobs is not None:
            seq.cumulative_logprob += sampled.logprobs[i]
        if params.logprobs is not None:
            top = sampled.top_logprobs[i]
            assert top is not None, "the sampler gives top logprobs to every row that asks"
            seq.logprobs.append(top)
        detok = req.detoks[seq.index]
        # As vLLM: the EOS or stop token that ends a sequence is not part of its text.
        hidden = self._is_stop_token(seq, token, slot + 1) and not params.include_stop_str_in_output
        delta = detok.append(token) if detok and not hidden else ""
        if self.metrics:
            if first:
                self.metrics.ttft.observe(now - seq.arrival_time)
                self.metrics.prompt_tokens.inc(seq.num_prompt_tokens)
            elif seq.last_token_time is not None:
                self.metrics.itl.observe(now - seq.last_token_time)
        seq.first_token_time = seq.first_token_time or now
        seq.last_token_time = now
        reason = self._finish_reason(seq, token, slot + 1, detok)
        if reason is not None:
            seq.finish_reason = reason
            if (
                reason == "stop"
                and seq.stop_reason is None
                and detok
                and detok.stop_reason is not None
            ):
                seq.stop_reason = detok.stop_reason
            if detok and detok.stop_reason is None:
                delta += detok.finish()
            del seq.output_token_ids[slot + 1 :]  # a token computing beyond the end is dropped
            self.scheduler.finish(seq)
            self._record_finished(seq, now)
        text, ids = req.pending[seq.index]
        req.pending[seq.index] = (text + delta, ids + [token])

    def _advance_beams(self, req: Request, now: float) -> None:
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
            s.first_token_time = s.first_token_time or now
            s.last_token_time = now
        req.seqs = new
        if req.beam.done:
            for s in new:
                s.finish_reason = "length"
                self.scheduler.finish(s)
            if self.metrics:
                self.metrics.finished("stop")

    def _is_stop_token(self, seq: Sequence, token: int, num_output: int) -> bool:
        """The token, the num_output-th of the sequence, ends it: a stop token id, or EOS unless ignored."""
        params = seq.params
        if seq.grammar is not None and seq.grammar.dead:
            return True  # the grammar allowed no token: this one, drawn unconstrained, is dropped
        return num_output >= params.min_tokens and (
            token in params.stop_token_ids
            or (token in self.eos_token_ids and not params.ignore_eos)
        )

    def _ends_by_length(self, seq: Sequence, n_out: int) -> bool:
        """Its n_out-th output token is its last: max_tokens, or the model's context, is reached."""
        max_tokens = cast(int, seq.params.max_tokens)  # add_request resolves None to the room left
        return n_out >= max_tokens or seq.num_prompt_tokens + n_out >= self.max_model_len

    def _finish_reason(
        self, seq: Sequence, token: int, n_out: int, detok: IncrementalDetokenizer | None
    ) -> str | None:
        params = seq.params
        if seq.grammar is not None and seq.grammar.dead:
            seq.stop_reason = GRAMMAR_DEAD_END
            return "abort"
        if detok and detok.stop_reason is not None:
            return "stop"
        if self._is_stop_token(seq, token, n_out):
            if token in params.stop_token_ids:
                seq.stop_reason = token
            return "stop"
        if self._ends_by_length(seq, n_out):
            return "length"
        return None

    def _beam_output(self, req: Request) -> list[CompletionOutput]:
        assert req.beam is not None, "a beam-search request"
        params = req.seqs[0].params
        outs = []
        for i, h in enumerate(req.beam.best(params.n)):
            text = (
                self.tokenizer.decode(h.token_ids, skip_special_tokens=params.skip_special_tokens)
                if params.detokenize
                else ""
            )
            reason = "stop" if h.token_ids[-1] in req.beam.eos_token_ids else "length"
            outs.append(CompletionOutput(i, text, h.token_ids, h.logprob, None, reason))
        req.pending = [(o.text, o.token_ids) for o in outs]
        return outs

    def _pooling_output(self, req: Request) -> PoolingRequestOutput:
        [seq] = req.seqs
        pooled = seq.pooled if seq.finish_reason in ("stop", "length") else None
        return PoolingRequestOutput(
            req.request_id,
            PoolingOutput(None if pooled is None else pooled.float().cpu()),
            seq.prompt_token_ids,
            req.finished,
            seq.num_cached_tokens,
            failed=seq.finish_reason == "error",
        )

    def _output(self, req: Request) -> RequestOutput | PoolingRequestOutput:
        if req.seqs[0].pooling is not None:
            return self._pooling_output(req)
        if req.beam is not None and req.beam.done:
            outs = self._beam_output(req)
            first = req.seqs[0]
            metrics = RequestMetrics(
                req.arrival_time,
                first.first_scheduled_time,
                first.first_token_time,
                first.last_token_time,
                time.monotonic(),
            )
            return RequestOutput(
                req.request_id,
                req.prompt,
                first.prompt_token_ids,
                outs,
                True,
                num_cached_tokens=first.num_cached_tokens,
                prompt_logprobs=first.prompt_logprobs,
                metrics=metrics,
                deltas=req.pending,
            )
        outs = []
        for seq, detok in zip(req.seqs, req.detoks):
            outs.append(
                CompletionOutput(
                    # The sequence's own lists, not copies: a step must not cost O(tokens so far).
                    index=seq.index,
                    text=detok.text if detok else "",
                    token_ids=known_tokens(seq),
                    cumulative_logprob=seq.cumulative_logprob
                    if seq.params.logprobs is not None
                    else None,
                    logprobs=seq.logprobs if seq.params.logprobs is not None else None,
                    finish_reason=seq.finish_reason,
                    stop_reason=seq.stop_reason,
                )
            )
        first = req.seqs[0]
        metrics = RequestMetrics(
            req.arrival_time,
            first.first_scheduled_time,
            first.first_token_time,
            max((s.last_token_time or 0.0) for s in req.seqs) or None,
            time.monotonic() if req.finished else None,
        )
        deltas, req.pending = req.pending, [("", []) for _ in req.seqs]
        return RequestOutput(
            req.request_id,
            req.prompt,
            first.prompt_token_ids,
            outs,
            req.finished,
            num_cached_tokens=first.num_cached_tokens,
            prompt_logprobs=first.prompt_logprobs,
            metrics=metrics,
            deltas=deltas,
        )

    # -- metrics ----------------------------------------------------------------------------------

    def _record_gauges(self) -> None:
        if self.metrics is not None:
            self.metrics.running.set(len(self.scheduler.running))
            self.metrics.waiting.set(len(self.scheduler.waiting) + len(self.scheduler.swapped))
            self.metrics.kv_usage.set(self.kv.usage)
            if self.config.enable_lora:
                s = self.scheduler
                self.metrics.lora_info(
                    self.config.max_loras,
                    {q.lora_request.lora_name for q in s.running if q.lora_request is not None},
                    {
                        q.lora_request.lora_name
                        for q in s.waiting + s.swapped
                        if q.lora_request is not None
                    },
                )

    def _record_step(self, sched: SchedulerOutput, num_generated: int) -> None:
        m = self.metrics
        if m is None:
            return
        self._record_gauges()
        m.generation_tokens.inc(num_generated)
        if sched.num_preemptions:
            m.preemptions.inc(sched.num_preemptions)
        if sched.prefix_cache_queries:
            m.prefix_queries.inc(sched.prefix_cache_queries)
            m.prefix_hits.inc(sched.prefix_cache_hits)

    def _record_finished(self, seq: Sequence, now: float) -> None:
        m = self.metrics
        if m is None:
            return
        assert seq.finish_reason is not None, "recorded once finished"
        m.finished(seq.finish_reason)
        m.e2e.observe(now - seq.arrival_time)
        if seq.first_scheduled_time is not None:
            m.queue.observe(seq.first_scheduled_time - seq.arrival_time)
        m.request_prompt_tokens.observe(seq.num_prompt_tokens)
        m.request_generation_tokens.observe(len(seq.output_token_ids))
