"""The engine's check of a request's adapter before it queues: LoRA enabled, the adapter's folder
readable and fitting the model and --max-lora-rank. A bad adapter is the request's error (HTTP
400), not a failed step. An adapter checked once under its lora_int_id is not read again here."""

from __future__ import annotations

from pagoda.engine.config import EngineConfig
from pagoda.engine.lora.peft import load_adapter
from pagoda.engine.lora.request import LoRARequest
from pagoda.engine.models.config import ModelConfig
from pagoda.engine.sampling_params import ParamError


class LoRAAdmission:
    def __init__(self, config: EngineConfig, model_config: ModelConfig | None) -> None:
        self.config, self.model_config = config, model_config  # None: a test's fake runner
        self.checked: dict[int, LoRARequest] = {}

    def check(self, request: LoRARequest) -> None:
        if not self.config.enable_lora:
            raise ParamError("model", "LoRA adapters need --enable-lora (LLM(enable_lora=True))")
        if self.config.is_pooling:
            raise ParamError("model", "LoRA adapters run with the generate runner only")
        known = self.checked.get(request.lora_int_id)
        if known == request:
            return
        if known is not None:
            raise ParamError(
                "model",
                f"lora_int_id {request.lora_int_id} is already {known.lora_name!r} at "
                f"{known.lora_path}: one id, one adapter",
            )
        if self.model_config is not None:
            try:
                load_adapter(request, self.model_config, self.config.max_lora_rank)
            except ValueError as e:
                raise ParamError("model", str(e)) from e
        self.checked[request.lora_int_id] = request

    def forget(self, lora_int_id: int) -> None:
        self.checked.pop(lora_int_id, None)
