# Sourced by the device_*.sh scripts on the lent GPU machine, where nothing can be installed: the
# gguf wheel (carried in .whl/) goes into /tmp/site and the engine is imported from this tree as
# pagoda.engine. $OUT is where results go (the device tool brings it back).
set -uo pipefail
export PYTHONUNBUFFERED=1
rm -rf /tmp/site; python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/gguf-*.whl 2>&1 | tail -2
mkdir -p /tmp/p/pagoda && ln -sfn "$PWD/engine" /tmp/p/pagoda/engine
export PYTHONPATH=/tmp/site:/tmp/p
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
