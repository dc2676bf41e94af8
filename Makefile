# Everything the project needs is installed from here, on a fresh machine.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test lint clean

$(BIN)/python:
	$(PY) -m venv $(VENV) || python3 -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# torch is pinned in the SAME pip call as diffusers/accelerate: otherwise pip
# resolves a newer torch with the multi-GB CUDA stack.
$(STAMP): $(BIN)/python pyproject.toml Makefile
	$(BIN)/pip install -q "torch==2.13.0" -e ".[edge,dev]"
	touch $(STAMP)

install: $(STAMP)

demo: install
	HF_HUB_OFFLINE=1 $(BIN)/hybridsr demo --out demo-out

test: install
	$(BIN)/ruff check .
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) demo-out
