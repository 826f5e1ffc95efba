#!/usr/bin/env bash
# On the lent GPU machine, in one call (issue 22, point 6): batch-1 decode latency of the
# Llama-3.1-8B shape with bf16, FP8 and 4-bit (AWQ-layout) weights beside each one's weight-read
# floor (H200's 4.8 TB/s), then the one-row kernels' tile and stage sweeps at the 8B layer shapes
# against bf16 torch.matmul, over weights not in L2; the FP8, 4-bit and FP8-KV kernel tests first
# (stopping at the first failure). SKIP_TESTS, SKIP_SWEEP, QUANT="none fp8 awq" and
# SWEEPS="w8_gemv_sweep w4_sweep" choose parts (the sweeps compile ~110 variants: ~5 min).
# Carried: .whl, .devcarry.
source "$(dirname "$0")/device_env.sh"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
[ -n "${SKIP_TESTS:-}" ] || timeout 180 python3 -m pytest -x -q -m gpu -p no:cacheprovider \
  -o addopts="" tests/gpu/test_w4_gpu.py tests/gpu/test_fp8_gpu.py tests/gpu/test_fp8_kv_gpu.py 2>&1 | tail -25
SHAPE=(--load-format dummy --dummy-shape llama-3.1-8b --tokenizer .devcarry/tokenizer --max-model-len 4096)
for q in ${QUANT:-none fp8 awq}; do
  Q=(); [ "$q" = none ] || Q=(--quantization "$q")
  timeout 150 python3 -m pagoda.engine.cli bench latency "${SHAPE[@]}" "${Q[@]}" --batch-size 1 \
    --input-len 32 --output-len 128 --memory-bandwidth-gbps 4800 \
    --result-file "$OUT/latency_$q.json" 2>&1 | grep -E '^\{|Error|error' | tail -3
done
[ -n "${SKIP_SWEEP:-}" ] || for s in ${SWEEPS:-w8_gemv_sweep w4_sweep}; do
  timeout 330 python3 "benchmarks/gpu/$s.py" 2>&1 | tee "$OUT/$s.jsonl" | grep '^{'
done
