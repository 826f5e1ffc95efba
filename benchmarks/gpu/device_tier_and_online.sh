#!/usr/bin/env bash
# On the lent GPU machine, in one call: the GPU test tier (at most TIER_S seconds), then issue 13's
# online-against-offline figures (device_online_vs_offline.sh). Carried: .whl, .devcarry.
source "$(dirname "$0")/device_env.sh"
timeout "${TIER_S:-300}" python3 -m pytest -q -m gpu -p no:cacheprovider -o addopts="" -rfE \
  tests/gpu tests/unit/sample/test_grammar_mask.py 2>&1 | tee "$OUT/tier.log" | tail -40
bash "$(dirname "$0")/device_online_vs_offline.sh"
