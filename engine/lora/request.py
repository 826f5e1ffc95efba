"""vLLM's LoRARequest: which adapter a request runs with."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LoRARequest:
    """lora_name: the name clients use (the served `model`); lora_int_id: a positive number unique
    to the adapter (the slot pool, the prefix cache and the scheduler key on it); lora_path: the
    PEFT folder (adapter_config.json + adapter_model.safetensors)."""

    lora_name: str
    lora_int_id: int
    lora_path: str

    def __post_init__(self) -> None:
        if self.lora_int_id < 1:
            raise ValueError(f"lora_int_id must be >= 1, got {self.lora_int_id}")
