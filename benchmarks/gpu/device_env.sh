# Sourced by the device_*.sh scripts on the lent GPU machine, where nothing can be installed: the
# wheels carried in .whl/ (gguf; pyzmq and msgspec for worker processes; fastapi, uvicorn... for
# serving) go into /tmp/site and the engine is imported from this tree as
# pagoda.engine. $OUT is where results go (the device tool brings it back).
set -uo pipefail
export PYTHONUNBUFFERED=1
rm -rf /tmp/site; python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl 2>&1 | tail -2
mkdir -p /tmp/p/pagoda && ln -sfn "$PWD/engine" /tmp/p/pagoda/engine
export PYTHONPATH=/tmp/site:/tmp/p
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
# serve_up PID PORT LOG: wait up to 10 min for the server's /health; if it dies starting, print
# its log's tail and fail (a dead server must not cost a call's minutes).
serve_up() {
  for _ in $(seq 600); do
    curl -sf "http://127.0.0.1:$2/health" >/dev/null && return 0
    kill -0 "$1" 2>/dev/null || { echo "the server died starting:"; tail -20 "$3"; return 1; }
    sleep 1
  done
  echo "the server did not answer /health in 10 min"; return 1
}
# serve_down PID: SIGTERM, then SIGKILL if it is still up 30 s later (said: a bug to look at).
serve_down() {
  kill -TERM "$1"
  for _ in $(seq 30); do kill -0 "$1" 2>/dev/null || break; sleep 1; done
  if kill -0 "$1" 2>/dev/null; then echo "server still up 30 s after SIGTERM"; kill -9 "$1"; fi
  wait "$1"
}
