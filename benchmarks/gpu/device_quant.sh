#!/usr/bin/env bash
# On the lent GPU machine, in one call (issue 22): the FP8 GEMM tests, then batch-1 decode latency
# of the Llama-3.1-8B shape with bf16 and with FP8 weights beside the weight-read floor (H200's
# 4.8 TB/s), then W1 throughput with FP8 weights and with bf16, then HF transformers' static:64
# on W1 (the engine comparator), all on the same card. SKIP_W1=1 leaves out our W1 runs.
# Carried: .whl, .devcarry.
source "$(dirname "$0")/device_env.sh"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
python3 -m pytest -q -m gpu -p no:cacheprovider -o addopts="" tests/gpu/test_fp8_gpu.py 2>&1 | tail -3
SHAPE=(--load-format dummy --dummy-shape llama-3.1-8b --tokenizer .devcarry/tokenizer --max-model-len 4096)
for q in none fp8; do
  Q=(); [ "$q" = none ] || Q=(--quantization "$q")
  python3 -m pagoda.engine.cli bench latency "${SHAPE[@]}" "${Q[@]}" --batch-size 1 --input-len 32 \
    --output-len 128 --memory-bandwidth-gbps 4800 --result-file "$OUT/latency_$q.json" 2>&1 | grep '^{'
  [ -n "${SKIP_W1:-}" ] || python3 -m pagoda.engine.cli bench throughput "${SHAPE[@]}" "${Q[@]}" \
    --max-num-seqs 256 --max-num-batched-tokens 8192 --result-file "$OUT/w1_$q.json" 2>&1 | grep '^{'
done
BUDGET=${HF_BUDGET:-60} python3 .devcarry/hf_baseline.py static:64 2>&1 | grep '^{' | tee "$OUT/hf.log"
