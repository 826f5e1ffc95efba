#!/usr/bin/env bash
# On the lent GPU machine, in one call (issue 22, point 4): the FP8 KV cache's GPU test, then W1
# at Llama-3.1-8B shape with the bf16 cache and with --kv-cache-dtype fp8 (each run's KV blocks
# from its log: how many W1 sequences fit), then HF transformers' static:64 on W1 (the engine
# comparator), all on the same card. Carried: .whl, .devcarry.
source "$(dirname "$0")/device_env.sh"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
python3 -m pytest -q -m gpu -p no:cacheprovider -o addopts="" tests/gpu/test_fp8_kv_gpu.py 2>&1 | tail -1
SHAPE=(--load-format dummy --dummy-shape llama-3.1-8b --tokenizer .devcarry/tokenizer --max-model-len 4096)
for kv in auto fp8; do
  python3 -m pagoda.engine.cli bench throughput "${SHAPE[@]}" --kv-cache-dtype "$kv" --max-num-seqs 256 \
    --max-num-batched-tokens 8192 --result-file "$OUT/w1_kv_$kv.json" 2>&1 | grep -E '^\{|KV cache:'
done
BUDGET=${HF_BUDGET:-60} python3 .devcarry/hf_baseline.py static:64 2>&1 | grep '^{' | tee "$OUT/hf.log"
