"""Quantized weights (vLLM's `--quantization`): after the checkpoint is loaded, each linear layer
hands its matmul to a quantization method that holds the weight in fewer bits (apply.py).

Supported: fp8 (fp8.py: weights e4m3 with a scale per output channel, activations quantized per
token as they arrive), compressed-tensors for checkpoints stored in 8 bits (checkpoint.py), awq
and gptq for 4-bit checkpoints (w4_checkpoint.py, w4.py). The names vLLM knows but Pagoda cannot run are refused at start, with the
reason. This module stays free of torch: the config validates against it.
"""

from __future__ import annotations

SUPPORTED = ("fp8", "compressed-tensors", "awq", "gptq", "awq_marlin", "gptq_marlin")
# Methods that name a checkpoint format (vLLM's *_marlin names the same AWQ and GPTQ checkpoints
# as the plain ones, run here through the same Triton kernel) -> the quant_method it holds.
CHECKPOINT_FORMATS = {
    "compressed-tensors": "compressed-tensors",
    "awq": "awq",
    "gptq": "gptq",
    "awq_marlin": "awq",
    "gptq_marlin": "gptq",
}
# vLLM's other methods, each with what Pagoda lacks for it.
REFUSED = {
    "bitsandbytes": "bitsandbytes weights are not supported",
    "gguf": "quantized GGUF tensors are expanded to the model's dtype at load (give the .gguf file "
    "as the model, without --quantization)",
    "squeezellm": "SqueezeLLM was dropped by vLLM itself and is not supported",
}


def check_quantization(name: str | None) -> None:
    """A one-line refusal for a method Pagoda cannot run."""
    if name is None or name in SUPPORTED:
        return
    reason = REFUSED.get(name, "unknown quantization method")
    raise ValueError(f"--quantization {name}: {reason} (supported: {', '.join(SUPPORTED)})")
