#!/usr/bin/env bash
# On the lent GPU machine, in one call: the GPU tests fixed after the last tier run, issue 13's
# Poisson run at a smaller prefill chunk (--max-num-batched-tokens 2048), the gateway's overhead
# on this machine's idle cores (issue 19; .devgw carries the kubernetes client the gateway imports),
# then device_kv.sh (issue 22: W1 with the FP8 KV cache, HF's static:64 as the comparator).
# Carried: .whl, .devcarry, .devgw.
source "$(dirname "$0")/device_env.sh"
python3 -m pip install -q --no-index --no-deps --target /tmp/site .devgw/*.whl 2>&1 | tail -2
ln -sfn "$PWD/gateway" /tmp/p/pagoda/gateway
timeout 150 python3 -m pytest -q -m gpu -p no:cacheprovider -o addopts="" -rfE \
  tests/gpu/test_spec_decode_graphs_gpu.py "tests/gpu/test_w4_gpu.py" -k "graphs or act" 2>&1 | tail -4
ENGINE=(--load-format dummy --dummy-shape llama-3.1-8b --tokenizer .devcarry/tokenizer
  --max-num-seqs 256 --max-num-batched-tokens 2048 --max-model-len 4096 --async-scheduling)
python3 -m pagoda.engine.cli serve "${ENGINE[@]}" --port 8012 --uvicorn-log-level warning >"$OUT/serve2048.log" 2>&1 &
SERVER=$!
for _ in $(seq 300); do curl -sf http://127.0.0.1:8012/health >/dev/null && break; sleep 1; done
timeout 120 python3 -m pagoda.engine.cli bench serve --base-url http://127.0.0.1:8012 --vocab-size 128000 \
  --disable-tqdm --request-rate 8 --num-prompts 320 --result-file "$OUT/poisson8_2048.json" | grep -E "ITL|TPOT|throughput"
kill -TERM "$SERVER"; wait "$SERVER"
nproc; timeout 100 python3 benchmarks/gateway_overhead.py 2>&1 | tail -12
timeout 240 bash "$(dirname "$0")/device_kv.sh"
