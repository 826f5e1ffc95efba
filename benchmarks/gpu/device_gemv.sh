#!/usr/bin/env bash
# On the lent GPU machine, in one call (issue 22, point 6): the FP8, 4-bit and FP8-KV kernel tests
# and the KV-cache write's (the rotary embedding fused in), stopping at the first failure, then
# the one-row kernels' tile and stage sweeps at the Llama-3.1-8B layer shapes against bf16
# torch.matmul, over weights not in L2. SKIP_TESTS and SWEEPS="w8_gemv_sweep w4_sweep" choose
# parts (the sweeps compile ~110 variants: ~5 min). The decode latencies these tiles give are
# device_quant.sh's. Carried: .whl, .devcarry.
source "$(dirname "$0")/device_env.sh"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
[ -n "${SKIP_TESTS:-}" ] || timeout 180 python3 -m pytest -x -q -m gpu -p no:cacheprovider \
  -o addopts="" tests/gpu/test_w4_gpu.py tests/gpu/test_fp8_gpu.py tests/gpu/test_fp8_kv_gpu.py \
  "tests/gpu/test_gpu_kernels.py::test_rotary" "tests/gpu/test_gpu_kernels.py::test_rotary_partial" \
  "tests/gpu/test_gpu_kernels.py::test_reshape_and_cache" 2>&1 | tail -25
for s in ${SWEEPS:-w8_gemv_sweep w4_sweep}; do
  timeout 330 python3 "benchmarks/gpu/$s.py" 2>&1 | tee "$OUT/$s.jsonl" | grep '^{'
done
