#!/usr/bin/env bash
# On the lent GPU machine: W1 with CUDA graphs and eager, and batch-1 latency with and without
# graphs, all at Llama-3.1-8B shape (the step-time gain of CUDA graphs, and the latency floor).
source "$(dirname "$0")/device_env.sh"
bench() { python3 -m pagoda.engine.cli bench throughput --load-format dummy --dummy-shape llama-3.1-8b \
  --tokenizer .devcarry/tokenizer --max-model-len 4096 "$@" 2>&1 | grep '^{'; }
bench --max-num-seqs 256 --max-num-batched-tokens 8192
bench --max-num-seqs 256 --max-num-batched-tokens 8192 --enforce-eager
bench --max-num-seqs 1 --num-prompts 1 --input-len 128 128 --output-len 512 512
bench --max-num-seqs 1 --num-prompts 1 --input-len 128 128 --output-len 512 512 --enforce-eager
