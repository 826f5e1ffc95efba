#!/usr/bin/env bash
# On the lent GPU machine (device tool), in the repo root: GPU tests, then W1 through Pagoda and
# HF transformers' baseline in the same call on the same card. Needs, carried: .whl (gguf) and
# .devcarry (hf_baseline.py from ../shared/bench, and the default model's tokenizer folder).
#   STAGE=tests|w1|all   W1_ARGS="extra engine flags"   HF_BUDGET=seconds per HF mode
source "$(dirname "$0")/device_env.sh"
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv,noheader
STAGE=${STAGE:-all}
if [ "$STAGE" != w1 ]; then
  python3 -m pytest -q -m gpu -p no:cacheprovider -o addopts="" tests/gpu 2>&1 | grep -E "^E |passed|failed|Error" | head -40
fi
if [ "$STAGE" != tests ]; then
  python3 -m pagoda.engine.cli bench throughput --load-format dummy --dummy-shape llama-3.1-8b \
    --tokenizer .devcarry/tokenizer --max-num-seqs 256 --max-num-batched-tokens 8192 --max-model-len 4096 \
    ${W1_ARGS:-} --result-file "$OUT/pagoda_w1.json" 2>&1 | grep -v "^Loading\|it/s\]" | tee "$OUT/pagoda_w1.log"
  BUDGET=${HF_BUDGET:-60} python3 .devcarry/hf_baseline.py ${HF_MODES:-static:64} 2>&1 | grep '^{' | tee "$OUT/hf.log"
fi
