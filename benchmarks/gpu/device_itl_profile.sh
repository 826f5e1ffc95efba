#!/usr/bin/env bash
# On the lent GPU machine, in one call (issue 13, the ITL tail): Poisson 8 req/s W1 runs against
# `pagoda serve` at Llama-3.1-8B shape per --max-num-batched-tokens in $BUDGETS, each with the step
# tracer (benchmarks/gpu/step_trace); during the first, when .devspy carries py-spy's wheel, py-spy
# samples the API process and the benchmark client for 15 s: where their time goes. Carried: .whl,
# .devcarry (and .devspy).
source "$(dirname "$0")/device_env.sh"
python3 -m pip install -q --no-index --no-deps --target /tmp/spy .devspy/*.whl 2>&1 | tail -1
SPY=$(ls /tmp/spy/bin/py-spy 2>/dev/null)
top() {  # py-spy's raw (collapsed) stacks -> the functions with the most samples, self and total
  python3 - "$1" <<'PY'
import collections, sys
own, total, n = collections.Counter(), collections.Counter(), 0
for line in open(sys.argv[1]):
    stack, _, count = line.rstrip().rpartition(" ")
    frames, count = stack.split(";"), int(count)
    n += count
    own[frames[-1]] += count
    for f in set(frames):
        total[f] += count
print(f"{sys.argv[1]}: {n} samples")
for name, c in own.most_common(14):
    print(f"  self {c / n:6.1%}  {name[:150]}")
for name, c in total.most_common(22):
    print(f"  total {c / n:6.1%}  {name[:150]}")
PY
}
first=1
for budget in ${BUDGETS:-8192 1024 512}; do
  ENGINE=(--load-format dummy --dummy-shape llama-3.1-8b --tokenizer .devcarry/tokenizer
    --max-num-seqs 256 --max-num-batched-tokens "$budget" --max-model-len 4096 --async-scheduling)
  PAGODA_STEP_TRACE="/tmp/steps$budget" PYTHONPATH="$PWD/benchmarks/gpu/step_trace:$PYTHONPATH" \
    python3 -m pagoda.engine.cli serve "${ENGINE[@]}" --port 8014 --uvicorn-log-level warning \
    >/tmp/serve$budget.log 2>&1 &
  SERVER=$!
  serve_up "$SERVER" 8014 "/tmp/serve$budget.log" > >(tee -a "$OUT/itl.txt")
  echo "== --max-num-batched-tokens $budget" | tee -a "$OUT/itl.txt"
  timeout 150 python3 -m pagoda.engine.cli bench serve --base-url http://127.0.0.1:8014 \
    --vocab-size 128000 --disable-tqdm --request-rate 8 --num-prompts "${PROMPTS:-320}" \
    --result-file "/tmp/poisson8_$budget.json" > "/tmp/bench$budget.log" &
  BENCH=$!
  if [ -n "$first" ] && [ -n "$SPY" ]; then
    sleep 12
    "$SPY" record -p "$SERVER" -d 15 -r 250 -f raw -o "$OUT/spy_api.txt" --nonblocking \
      >/tmp/spy_api.log 2>&1 &
    SPY_API=$!
    "$SPY" record -p "$BENCH" -d 15 -r 250 -f raw -o "$OUT/spy_client.txt" --nonblocking \
      >/tmp/spy_client.log 2>&1 || tail -3 /tmp/spy_client.log
    wait "$SPY_API" || tail -3 /tmp/spy_api.log
  fi
  wait "$BENCH"; grep -E "ITL|TPOT|Output token throughput|Failed" "/tmp/bench$budget.log" | tee -a "$OUT/itl.txt"
  serve_down "$SERVER" > >(tee -a "$OUT/itl.txt") || tail -5 "/tmp/serve$budget.log"
  python3 benchmarks/gpu/step_trace/summary.py /tmp/steps$budget.* | head -6 | tee -a "$OUT/itl.txt"
  if [ -n "$first" ]; then for f in "$OUT"/spy_*.txt; do [ -f "$f" ] && top "$f"; done; fi
  first=
done
