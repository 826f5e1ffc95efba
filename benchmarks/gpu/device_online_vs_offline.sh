#!/usr/bin/env bash
# On the lent GPU machine, in one call (issue 13, point 6): W1 offline (`pagoda bench throughput`)
# against the same workload through `pagoda serve` + `pagoda bench serve --request-rate inf`, then
# a Poisson run at 8 req/s; prints online/offline output tok/s and ITL p99 / median.
# Llama-3.1-8B shape, bf16, --async-scheduling. Carried: .whl (gguf), .devcarry/tokenizer.
#   ENGINE_ARGS="extra engine flags" (after the defaults, so they override: e.g.
#   "--max-num-batched-tokens 512", the budget of the ITL figure)  POISSON_PROMPTS=number of
#   requests of the 8 req/s run
source "$(dirname "$0")/device_env.sh"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
ENGINE=(--load-format dummy --dummy-shape llama-3.1-8b --tokenizer .devcarry/tokenizer
  --max-num-seqs 256 --max-num-batched-tokens 8192 --max-model-len 4096 --async-scheduling ${ENGINE_ARGS:-})
python3 -m pagoda.engine.cli bench throughput "${ENGINE[@]}" --result-file "$OUT/offline.json" \
  2>&1 | grep '^{' | tee "$OUT/offline.log"
python3 -m pagoda.engine.cli serve "${ENGINE[@]}" --port 8011 --uvicorn-log-level warning \
  >"$OUT/serve.log" 2>&1 &
SERVER=$!
serve_up "$SERVER" 8011 "$OUT/serve.log" || exit 1
BENCH=(python3 -m pagoda.engine.cli bench serve --base-url http://127.0.0.1:8011 --vocab-size 128000 --disable-tqdm)
"${BENCH[@]}" --request-rate inf --num-prompts 256 --result-file "$OUT/online_inf.json" | tail -25
"${BENCH[@]}" --request-rate 8 --num-prompts "${POISSON_PROMPTS:-400}" --result-file "$OUT/online_poisson8.json" | tail -25
serve_down "$SERVER"
python3 - "$OUT" <<'PY'
import json, sys
out = sys.argv[1]
offline = json.load(open(f"{out}/offline.json"))
offline = offline[0] if isinstance(offline, list) else offline
inf, poisson = (json.load(open(f"{out}/online_{n}.json")) for n in ("inf", "poisson8"))
ratio = inf["output_throughput"] / offline["output_tok_per_s"]
print(json.dumps({
    "offline_output_tok_per_s": offline["output_tok_per_s"],
    "online_inf_output_tok_per_s": round(inf["output_throughput"], 1),
    "online_over_offline": round(ratio, 3),
    "online_inf_mean_tpot_ms": round(inf["mean_tpot_ms"], 2),
    "poisson8_itl_p50_ms": round(poisson["p50_itl_ms"], 2),
    "poisson8_itl_p99_ms": round(poisson["p99_itl_ms"], 2),
    "poisson8_itl_p99_over_p50": round(poisson["p99_itl_ms"] / poisson["p50_itl_ms"], 2),
    "failed": [inf["failed"], poisson["failed"]],
}))
PY
