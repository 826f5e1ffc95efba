#!/usr/bin/env bash
# On the lent GPU machine (its 16 idle cores; no GPU work): the gateway's overhead (issue 19,
# docs/performance.md "The gateway's overhead"). Carried: .whl and .devgw (the kubernetes client
# the gateway imports). The gateway imports pagoda.operator.spec (one name), so operator/ is
# linked beside engine/ and gateway/. Prints the versions, the CPUs, then the table's figures.
source "$(dirname "$0")/device_env.sh"
python3 -m pip install -q --no-index --no-deps --target /tmp/site .devgw/*.whl 2>&1 | tail -2
ln -sfn "$PWD/gateway" /tmp/p/pagoda/gateway
ln -sfn "$PWD/operator" /tmp/p/pagoda/operator
python3 -c 'import sys, aiohttp, kubernetes, pagoda.gateway.app as a; print(sys.version.split()[0], "aiohttp", aiohttp.__version__, "kubernetes", kubernetes.__version__)'
echo "CPUs: $(nproc)"
timeout 240 python3 benchmarks/gateway_overhead.py "$@" 2>&1 | tee "$OUT/gateway_overhead.txt"
