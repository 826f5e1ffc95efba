#!/usr/bin/env bash
# On the lent GPU machine, in one call (issue 17): the LoRA kernel and CUDA-graph tests, then W1
# throughput of the Llama-3.1-8B shape (dummy weights) on the base model alone and with 8 random
# rank-16 adapters (every attention and MLP projection) assigned round-robin, all on the same card.
# Goal: the adapters' output tok/s >= 80% of the base's. Between: the LoRA kernels' own time
# (lora_kernels_bench.py). Carried: .whl, .devcarry.
source "$(dirname "$0")/device_env.sh"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
python3 -m pytest -q -m gpu -p no:cacheprovider -o addopts="" tests/gpu/test_lora_gpu.py 2>&1 | tail -3
python3 benchmarks/gpu/lora_kernels_bench.py 2>&1 | tail -40  # the kernels alone
python3 -m pagoda.engine.bench.lora_adapters --shape llama-3.1-8b --rank 16 --count 8 /tmp/loras >/dev/null
SHAPE=(--load-format dummy --dummy-shape llama-3.1-8b --tokenizer .devcarry/tokenizer --max-model-len 4096
  --max-num-seqs 256 --max-num-batched-tokens 8192)
python3 -m pagoda.engine.cli bench throughput "${SHAPE[@]}" --result-file "$OUT/w1_base.json" 2>&1 | grep '^{'
python3 -m pagoda.engine.cli bench throughput "${SHAPE[@]}" --enable-lora --max-loras 8 --max-lora-rank 16 \
  --lora-path /tmp/loras/lora{0..7} --result-file "$OUT/w1_lora8.json" 2>&1 | grep '^{'
python3 - "$OUT" <<'PY'
import json, sys
base, lora = (json.load(open(f"{sys.argv[1]}/w1_{n}.json"))[0] for n in ("base", "lora8"))
print(f"W1 8 adapters r16 / base: {lora['output_tok_per_s'] / base['output_tok_per_s']:.1%}")
PY
