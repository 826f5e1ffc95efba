#!/usr/bin/env bash
# The CPU comparison of issue 2 on the lent machine's host CPU, pinned to 2 cores (the developers'
# machines are 2-core and shared, too loaded to time on): Pagoda against HF transformers' static
# batching in the same run, 64 requests, prompts 16..256, outputs 16..256, at the default model's
# shape (SmolLM2-135M, float32; random weights: the GGUF package is too large to carry, and the
# arithmetic does not depend on the values with EOS ignored).
export OMP_NUM_THREADS=2 CUDA_VISIBLE_DEVICES=
source "$(dirname "$0")/device_env.sh"
lscpu | grep -E "Model name|^CPU\(s\)"
taskset -c 0,1 python3 -m pagoda.engine.cli bench throughput --device cpu --dtype float32 \
  --load-format dummy --dummy-shape smollm2-135m --tokenizer .devcarry/tokenizer \
  --num-prompts 64 --input-len 16 256 --output-len 16 256 --max-num-seqs 64 --max-num-batched-tokens 2048 \
  --hf-baseline --hf-batch-size 64 2>&1 | grep -E '^\{|speedup'
