#!/usr/bin/env bash
# On the lent GPU machine, in one call (issue 22, points 2 and 6): the 4-bit kernel tests, the
# kernel's tile sweep at the 8B layer shapes, then batch-1 decode latency of the Llama-3.1-8B shape
# with bf16 and with 4-bit weights (dummy AWQ-layout weights, group 128: the same kernel serves
# GPTQ) beside each one's weight-read floor (H200's 4.8 TB/s). SKIP_SWEEP=1 leaves the sweep out.
# Carried: .whl, .devcarry.
source "$(dirname "$0")/device_env.sh"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
python3 -m pytest -q -m gpu -p no:cacheprovider -o addopts="" tests/gpu/test_w4_gpu.py 2>&1 | tail -5
[ -n "${SKIP_SWEEP:-}" ] || python3 benchmarks/gpu/w4_sweep.py 2>&1 | tee "$OUT/w4_sweep.jsonl" | grep '^{'
SHAPE=(--load-format dummy --dummy-shape llama-3.1-8b --tokenizer .devcarry/tokenizer --max-model-len 4096)
for q in none awq; do
  Q=(); [ "$q" = none ] || Q=(--quantization "$q")
  python3 -m pagoda.engine.cli bench latency "${SHAPE[@]}" "${Q[@]}" --batch-size 1 --input-len 32 \
    --output-len 128 --memory-bandwidth-gbps 4800 --result-file "$OUT/latency_$q.json" 2>&1 | grep '^{'
done
