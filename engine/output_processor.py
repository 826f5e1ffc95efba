"""The API side of the engine: the core's token ids in, RequestOutputs out.

Per sequence it detokenizes incrementally, checks stop strings (a sequence one ends is reported
back, for the core to free), keeps the token ids and logprobs so far, and records the request
metrics under vLLM's names; a finished beam search's hypotheses are decoded here, an embedding
request's vector made a tensor. It runs where
the requests come from: the API server's process (`pagoda serve`) or the caller's (`LLM`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pagoda.engine.core_messages import (
    GRAMMAR_DEAD_END,
    EngineCoreOutput,
    EngineCoreRequest,
    SchedulerStats,
)
from pagoda.engine.detokenizer import IncrementalDetokenizer
from pagoda.engine.metrics import EngineMetrics
from pagoda.engine.outputs import (
    CompletionOutput,
    PoolingOutput,
    PoolingRequestOutput,
    RequestMetrics,
    RequestOutput,
    TokenLogprobs,
)


@dataclass(eq=False)
class SequenceState:
    index: int
    detok: IncrementalDetokenizer | None  # None where detokenize=False
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[TokenLogprobs] | None = None
    cumulative_logprob: float | None = None
    finish_reason: str | None = None
    stop_reason: int | str | None = None
    first_token_time: float | None = None
    last_token_time: float | None = None
    # Text and token ids gained since the last RequestOutput.
    pending_text: str = ""
    pending_ids: list[int] = field(default_factory=list)

    @property
    def text(self) -> str:
        return self.detok.text if self.detok else ""


@dataclass(eq=False)
class RequestState:
    request: EngineCoreRequest
    prompt: str | None
    seqs: list[SequenceState]
    num_cached_tokens: int = 0
    first_scheduled_time: float | None = None
    beams: list[CompletionOutput] | None = None  # beam search, once done
    prompt_logprobs: list[TokenLogprobs | None] | None = None
    pooled: bytes | None = None  # an embedding request's vector, once finished

    @property
    def finished(self) -> bool:
        return all(s.finish_reason is not None for s in self.seqs)


@dataclass
class ProcessedOutputs:
    request_outputs: list[RequestOutput | PoolingRequestOutput]
    stopped: list[tuple[str, int]]  # sequences a stop string ended: the core must free them


class OutputProcessor:
    def __init__(self, tokenizer, metrics: EngineMetrics | None) -> None:
        self.tokenizer, self.metrics = tokenizer, metrics
        self.requests: dict[str, RequestState] = {}

    def add_request(self, req: EngineCoreRequest, prompt: str | None) -> None:
        params = req.params
        width = 1 if params.use_beam_search else params.n  # beams: one output, at the end
        seqs = [
            SequenceState(
                i,
                IncrementalDetokenizer(
                    self.tokenizer,
                    req.prompt_token_ids,
                    params.skip_special_tokens,
                    params.stop,
                    params.include_stop_str_in_output,
                    min_tokens=params.min_tokens,
                )
                if params.detokenize and not params.use_beam_search
                else None,
                logprobs=[] if params.logprobs is not None else None,
            )
            for i in range(width)
        ]
        self.requests[req.request_id] = RequestState(req, prompt, seqs)

    def abort(self, request_id: str) -> RequestOutput | PoolingRequestOutput | None:
        """The request ends here (a client gone, a drain cut): its output, finish_reason abort."""
        state = self.requests.pop(request_id, None)
        if state is None:
            return None
        for seq in state.seqs:
            if seq.finish_reason is None:
                seq.finish_reason = "abort"
                if self.metrics:
                    self.metrics.finished("abort")
        return self._output(state, True)

    def process(self, outputs: list[EngineCoreOutput], now: float) -> ProcessedOutputs:
        """The core's outputs of a step (or a part of them), its clock's time of the step."""
        touched: dict[str, RequestState] = {}
        stopped: list[tuple[str, int]] = []
        for out in outputs:
            state = self.requests.get(out.request_id)
            if state is None:
                continue  # aborted here, or ended by a stop string, before the core heard of it
            state.num_cached_tokens = out.num_cached_tokens
            state.first_scheduled_time = out.first_scheduled_time
            if out.prompt_logprobs is not None:
                state.prompt_logprobs = out.prompt_logprobs
            searching = state.request.params.use_beam_search and out.beams is None
            if searching and out.finish_reason is None:
                continue  # a search under way has output only at its end
            touched[out.request_id] = state
            if out.finish_reason == "error":  # this request alone failed in the core
                for seq in state.seqs:
                    if seq.finish_reason is None:
                        self._finished(state, seq, "error", None, now)
                continue
            if out.beams is not None:
                self._finish_beams(state, out, now)
                continue
            if state.request.pooling is not None:
                self._finish_pooling(state, out, now)
                continue
            seq = state.seqs[out.index]
            if seq.finish_reason is not None:
                continue  # a token computed past a stop string
            if self._take(state, seq, out, now):
                stopped.append((out.request_id, out.index))
        request_outputs: list[RequestOutput | PoolingRequestOutput] = []
        for rid, state in touched.items():
            finished = state.finished
            if finished or state.request.params.output_kind == "cumulative":
                request_outputs.append(self._output(state, finished))
            if finished:
                del self.requests[rid]
        return ProcessedOutputs(request_outputs, stopped)

    def _take(
        self, state: RequestState, seq: SequenceState, out: EngineCoreOutput, now: float
    ) -> bool:
        """A sequence's new tokens; True when a stop string ended it (the core goes on)."""
        params = state.request.params
        if out.new_logprobs is not None and seq.logprobs is not None:
            seq.logprobs += out.new_logprobs
            seq.cumulative_logprob = out.cumulative_logprob
        # As vLLM: the EOS or stop token that ends a sequence is not part of its text.
        hides_last = not params.include_stop_str_in_output and (
            out.finish_reason == "stop"
            or (out.finish_reason == "abort" and out.stop_reason == GRAMMAR_DEAD_END)
        )
        detok = seq.detok
        delta = ""
        last = len(out.new_token_ids) - 1
        previous = seq.last_token_time
        for k, token in enumerate(out.new_token_ids):
            if self.metrics:
                if not seq.token_ids and not k:
                    self.metrics.ttft.observe(now - state.request.arrival_time)
                    self.metrics.prompt_tokens.inc(len(state.request.prompt_token_ids))
                elif previous is not None:  # tokens verified in one step come 0 s apart
                    self.metrics.itl.observe(now - previous)
            previous = now
            if detok and not (hides_last and k == last):
                delta += detok.append(token)
            if detok and detok.stop_reason is not None:
                seq.token_ids += out.new_token_ids[: k + 1]
                seq.pending_ids += out.new_token_ids[: k + 1]
                seq.pending_text += delta
                self._finished(state, seq, "stop", detok.stop_reason, now)
                return out.finish_reason is None
        seq.first_token_time = seq.first_token_time or now
        seq.last_token_time = now
        seq.token_ids += out.new_token_ids
        seq.pending_ids += out.new_token_ids
        if out.finish_reason is not None:
            if detok:
                delta += detok.finish()
            self._finished(state, seq, out.finish_reason, out.stop_reason, now)
        seq.pending_text += delta
        return False

    def _finished(
        self,
        state: RequestState,
        seq: SequenceState,
        reason: str,
        stop_reason: int | str | None,
        now: float,
    ) -> None:
        seq.first_token_time = seq.first_token_time or now
        seq.last_token_time = now
        seq.finish_reason, seq.stop_reason = reason, stop_reason
        m = self.metrics
        if m is None:
            return
        m.finished(reason)
        if reason == "error":
            return
        arrival = state.request.arrival_time
        m.e2e.observe(now - arrival)
        if state.first_scheduled_time is not None:
            m.queue.observe(state.first_scheduled_time - arrival)
        m.request_prompt_tokens.observe(len(state.request.prompt_token_ids))
        m.request_generation_tokens.observe(len(seq.token_ids))

    def _finish_beams(self, state: RequestState, out: EngineCoreOutput, now: float) -> None:
        params = state.request.params
        seq = state.seqs[0]
        seq.finish_reason = out.finish_reason
        seq.first_token_time = seq.first_token_time or now
        seq.last_token_time = now
        state.beams = [
            CompletionOutput(
                i,
                self.tokenizer.decode(h.token_ids, skip_special_tokens=params.skip_special_tokens)
                if params.detokenize
                else "",
                h.token_ids,
                h.logprob,
                None,
                h.finish_reason,
            )
            for i, h in enumerate(out.beams or [])
        ]
        if self.metrics:
            self.metrics.finished("stop")

    def _finish_pooling(self, state: RequestState, out: EngineCoreOutput, now: float) -> None:
        """An embedding request ends in the step that completes its prompt (its token dropped)."""
        if out.finish_reason is None:
            return
        if self.metrics:
            self.metrics.prompt_tokens.inc(len(state.request.prompt_token_ids))
        state.pooled = out.pooled
        self._finished(state, state.seqs[0], out.finish_reason, None, now)

    def _pooling_output(self, state: RequestState, finished: bool) -> PoolingRequestOutput:
        import torch  # the vector as vLLM gives it; only an embedding request needs torch here

        data = None
        if state.pooled is not None:
            data = torch.frombuffer(bytearray(state.pooled), dtype=torch.float32)
        return PoolingRequestOutput(
            state.request.request_id,
            PoolingOutput(data),
            state.request.prompt_token_ids,
            finished,
            state.num_cached_tokens,
            failed=state.seqs[0].finish_reason == "error",
        )

    def _output(self, state: RequestState, finished: bool) -> RequestOutput | PoolingRequestOutput:
        if state.request.pooling is not None:
            return self._pooling_output(state, finished)
        req = state.request
        first = state.seqs[0]
        metrics = RequestMetrics(
            req.arrival_time,
            state.first_scheduled_time,
            first.first_token_time,
            max((s.last_token_time or 0.0) for s in state.seqs) or None,
            first.last_token_time if finished else None,
        )
        if state.beams is not None:
            outs = state.beams
            deltas = [(o.text, o.token_ids) for o in outs]
        else:
            outs = [
                CompletionOutput(
                    # The state's own lists, not copies: a step must not cost O(tokens so far).
                    index=s.index,
                    text=s.text,
                    token_ids=s.token_ids,
                    cumulative_logprob=s.cumulative_logprob,
                    logprobs=s.logprobs,
                    finish_reason=s.finish_reason,
                    stop_reason=s.stop_reason,
                )
                for s in state.seqs
            ]
            deltas = [(s.pending_text, s.pending_ids) for s in state.seqs]
            for s in state.seqs:
                s.pending_text, s.pending_ids = "", []
        return RequestOutput(
            req.request_id,
            state.prompt,
            req.prompt_token_ids,
            outs,
            finished,
            num_cached_tokens=state.num_cached_tokens,
            prompt_logprobs=state.prompt_logprobs,
            metrics=metrics,
            deltas=deltas,
        )

    def record_stats(self, s: SchedulerStats) -> None:
        m = self.metrics
        if m is None:
            return
        m.running.set(s.num_running)
        m.waiting.set(s.num_waiting)
        m.kv_usage.set(s.kv_cache_usage)
        m.generation_tokens.inc(s.num_generation_tokens)
        if s.num_preemptions:
            m.preemptions.inc(s.num_preemptions)
        if s.prefix_cache_queries:
            m.prefix_queries.inc(s.prefix_cache_queries)
            m.prefix_hits.inc(s.prefix_cache_hits)
        for proposed, accepted in s.spec_drafts:
            m.spec_decode_verified(proposed, accepted)
        if s.lora is not None:
            m.lora_info(s.lora.max_loras, set(s.lora.running), set(s.lora.waiting))
