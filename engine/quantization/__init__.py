"""Quantized weights (vLLM's `--quantization`): after the checkpoint is loaded, each linear layer
hands its matmul to a quantization method that holds the weight in fewer bits (apply.py).

Supported: fp8 (fp8.py: weights e4m3 with a scale per output channel, activations quantized per
token as they arrive), and compressed-tensors for checkpoints stored in FP8 (checkpoint.py). The names vLLM knows but Pagoda cannot run are refused at start, with the
reason. This module stays free of torch: the config validates against it.
"""

from __future__ import annotations

SUPPORTED = ("fp8", "compressed-tensors")
# vLLM's other methods, each with what Pagoda lacks for it.
REFUSED = {
    "awq": "4-bit AWQ checkpoints are not supported yet",
    "awq_marlin": "4-bit AWQ checkpoints are not supported yet",
    "gptq": "4-bit GPTQ checkpoints are not supported yet",
    "gptq_marlin": "4-bit GPTQ checkpoints are not supported yet",
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
