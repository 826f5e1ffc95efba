#!/usr/bin/env bash
# On the lent GPU machine, in one call (issue 13, the ITL tail): `pagoda serve` at Llama-3.1-8B
# shape with the step tracer (benchmarks/gpu/step_trace) under a Poisson 8 req/s W1 run, once per
# --max-num-batched-tokens in $BUDGETS; prints the client's ITL p50/p99 beside the core's step
# durations and the core -> API lag. Carried: .whl, .devcarry; also stashes .devmodel_a/part (the
# first half of the default model's GGUF) in /tmp for device_specdec_default.sh's call.
source "$(dirname "$0")/device_env.sh"
mkdir -p /tmp/modelparts && cp .devmodel_a/part /tmp/modelparts/a 2>/dev/null
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
[ -n "${W4_ACT:-}" ] && timeout 150 python3 -m pytest -q -m gpu -p no:cacheprovider -o addopts="" -rfE \
  tests/gpu/test_w4_gpu.py -k act 2>&1 | tail -3
for budget in ${BUDGETS:-8192 512}; do
  ENGINE=(--load-format dummy --dummy-shape llama-3.1-8b --tokenizer .devcarry/tokenizer
    --max-num-seqs 256 --max-num-batched-tokens "$budget" --max-model-len 4096 --async-scheduling)
  PAGODA_STEP_TRACE="$OUT/steps$budget" PYTHONPATH="$PWD/benchmarks/gpu/step_trace:$PYTHONPATH" \
    python3 -m pagoda.engine.cli serve "${ENGINE[@]}" --port 8013 --uvicorn-log-level warning \
    >/tmp/serve$budget.log 2>&1 &
  SERVER=$!
  for _ in $(seq 300); do curl -sf http://127.0.0.1:8013/health >/dev/null && break; sleep 1; done
  echo "== --max-num-batched-tokens $budget"
  timeout 150 python3 -m pagoda.engine.cli bench serve --base-url http://127.0.0.1:8013 \
    --vocab-size 128000 --disable-tqdm --request-rate 8 --num-prompts "${PROMPTS:-320}" \
    --result-file "$OUT/poisson8_$budget.json" | grep -E "ITL|TPOT|Output token throughput"
  kill -TERM "$SERVER"; wait "$SERVER" || tail -5 /tmp/serve$budget.log
  python3 benchmarks/gpu/step_trace/summary.py "$OUT"/steps$budget.*
done
