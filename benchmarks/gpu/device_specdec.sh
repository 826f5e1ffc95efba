#!/usr/bin/env bash
# On the lent GPU machine, in one call (issue 18): the speculative-decoding tests, then batch-1 and
# batch-8 inter-token latency (bench latency's decode_step_mean_ms: the time per output token after
# the prefill) with and without speculation, the acceptance rate beside each figure:
#  - the default model, ngram (k 4, lookup 2..4), on the rewrite workload (the answer repeats the
#    prompt);
#  - the Llama-3.1-8B shape (dummy weights) with a draft equal to the target (the same dummy shape
#    and seed: acceptance 100%, the mechanism's ceiling), k 4. Target and draft each hold a KV
#    pool of the same number of blocks: --gpu-memory-utilization 0.4 leaves the draft its room.
# Verification steps (k + 1 query tokens per sequence, plain decodes in the same step padded to
# k + 1) replay CUDA graphs, as the draft's single-token steps and plain decode steps do; the
# tests run first include tests/gpu/test_spec_decode_graphs_gpu.py. Carried: .whl, .devcarry.
source "$(dirname "$0")/device_env.sh"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
python3 -m pytest -q -p no:cacheprovider -o addopts="" tests/unit/spec_decode \
  tests/gpu/test_spec_decode_graphs_gpu.py 2>&1 | tail -3
NGRAM='{"method": "ngram", "num_speculative_tokens": 4, "prompt_lookup_min": 2, "prompt_lookup_max": 4}'
for bs in 1 8; do
  for spec in none ngram; do
    S=(); [ "$spec" = none ] || S=(--speculative-config "$NGRAM")
    python3 -m pagoda.engine.cli bench latency --workload rewrite --batch-size "$bs" \
      --output-len 256 --max-model-len 2048 "${S[@]}" \
      --result-file "$OUT/default_${spec}_bs$bs.json" 2>&1 | grep '^{'
  done
done
SHAPE=(--load-format dummy --dummy-shape llama-3.1-8b --tokenizer .devcarry/tokenizer
  --max-model-len 4096 --gpu-memory-utilization 0.4)
DRAFT='{"method": "draft_model", "model": "llama-3.1-8b", "num_speculative_tokens": 4}'
for bs in 1 8; do
  for spec in none draft; do
    S=(); [ "$spec" = none ] || S=(--speculative-config "$DRAFT")
    python3 -m pagoda.engine.cli bench latency "${SHAPE[@]}" --batch-size "$bs" --input-len 32 \
      --output-len 128 "${S[@]}" --result-file "$OUT/llama8b_${spec}_bs$bs.json" 2>&1 | grep '^{'
  done
done
