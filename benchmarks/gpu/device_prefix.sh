#!/usr/bin/env bash
# On the lent GPU machine (device tool), in the repo root: `pagoda bench prefix` at Llama-3.1-8B
# shape (random weights, bf16): 100 requests of a 2,000-token prefix + 50-token question, shared
# and each its own (0% hits), prefix caching off and on. Needs, carried: .whl (gguf) and
# .devcarry/tokenizer.
#   PREFIX_ARGS="extra flags"
source "$(dirname "$0")/device_env.sh"
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv,noheader
python3 -m pagoda.engine.cli bench prefix --load-format dummy --dummy-shape llama-3.1-8b \
  --tokenizer .devcarry/tokenizer --max-num-seqs 256 --max-num-batched-tokens 8192 --max-model-len 4096 \
  ${PREFIX_ARGS:-} --result-file "$OUT/pagoda_prefix.json" 2>&1 | grep -v "^Loading\|it/s\]" | tee "$OUT/pagoda_prefix.log"
