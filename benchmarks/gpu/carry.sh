#!/usr/bin/env bash
# Make the ignored folders that the device_*.sh scripts carry to the lent GPU machine, where
# nothing can be installed (run here, from the repository root, after `make setup`):
#   .whl/      cp312 manylinux wheels of the engine's dependencies that the device image lacks
#              (its Python 3.12 has torch, transformers, numpy, ... : /work/.library/device/KINDS.md)
#   .devcarry/ ../shared/bench/hf_baseline.py (the HF comparator) and tokenizer/, the default
#              model's tokenizer saved from its GGUF (the 93 MB model package does not travel)
# Then: run(command="bash benchmarks/gpu/device_....sh", carry=[".whl", ".devcarry"]).
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-.venv/bin/python}
# Engine dependencies missing on the device image, with theirs (pydantic's; fastapi's, whose
# telemetry module imports opentelemetry's API).
WHEELS=(gguf pyzmq msgspec fastapi starlette uvicorn httptools pydantic pydantic-core
        annotated-types typing-inspection xgrammar apache-tvm-ffi obstore opentelemetry-api)
# The versions this checkout's venv holds, so the device runs what the tests ran against.
mapfile -t PINS < <("$PY" -c 'import sys
from importlib.metadata import version
print("\n".join(f"{n}=={version(n)}" for n in sys.argv[1:]))' "${WHEELS[@]}")
rm -rf .whl && mkdir -p .whl
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
  --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 \
  --implementation cp --abi cp312 --abi abi3 --abi none -d .whl "${PINS[@]}"
mkdir -p .devcarry
cp ../shared/bench/hf_baseline.py .devcarry/
"$PY" - <<'PY'
from pagoda.engine.loader.resolve import default_gguf_path
from pagoda.engine.tokenizer import gguf_tokenizer

gguf_tokenizer(default_gguf_path()).save_pretrained(".devcarry/tokenizer")
PY
du -sh .whl .devcarry
