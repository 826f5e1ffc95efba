#!/usr/bin/env bash
# On the lent GPU machine, in one call, every figure of issue 22's point 6 on the same card:
# batch-1 decode latency of the Llama-3.1-8B shape with bf16, FP8 and 4-bit (AWQ-layout) weights
# beside each one's weight-read floor (H200's 4.8 TB/s); W1 throughput with bf16, with FP8
# weights and with the FP8 KV cache (each run's KV blocks: how many W1 sequences fit); then HF
# transformers' static:64 on W1, the engine comparator. About 8 minutes; each step has a time
# limit so that one hang cannot cost the rest. The kernels' tests and tile sweeps are
# device_gemv.sh's. Carried: .whl, .devcarry.
source "$(dirname "$0")/device_env.sh"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
SHAPE=(--load-format dummy --dummy-shape llama-3.1-8b --tokenizer .devcarry/tokenizer --max-model-len 4096)
for q in none fp8 awq; do
  Q=(); [ "$q" = none ] || Q=(--quantization "$q")
  timeout 120 python3 -m pagoda.engine.cli bench latency "${SHAPE[@]}" "${Q[@]}" --batch-size 1 \
    --input-len 32 --output-len 128 --memory-bandwidth-gbps 4800 \
    --result-file "$OUT/latency_$q.json" 2>&1 | grep -E '^\{|Error' | tail -3
done
W1=(--max-num-seqs 256 --max-num-batched-tokens 8192)
for run in "bf16" "fp8_weights --quantization fp8" "fp8_kv --kv-cache-dtype fp8"; do
  read -r name flags <<<"$run"
  # shellcheck disable=SC2086  # flags: none, or one flag and its value
  timeout 130 python3 -m pagoda.engine.cli bench throughput "${SHAPE[@]}" "${W1[@]}" $flags \
    --result-file "$OUT/w1_$name.json" 2>&1 | grep -E '^\{|KV cache:|Error' | tail -3
done
BUDGET=${HF_BUDGET:-45} timeout 150 python3 .devcarry/hf_baseline.py static:64 2>&1 | grep '^{' | tee "$OUT/hf.log"
