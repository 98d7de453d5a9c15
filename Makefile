# bitlut: every target bootstraps .venv from pip alone when it is missing (DESIGN.md section 7).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.bitlut-installed
LAYER  ?= llama7b.q
CONFIG ?= arch/configs/lut.yaml
TOKENS ?=
PYTEST_ARGS ?=
SWEEP  ?= dse/sweeps/llama7b.yaml
EXECUTOR ?=
SCHEDULER ?=
# the shipped sweep's workloads besides llama7b.q: the same block by RTN at 2, 3 and 4 bits
DSE_Q  := build/q/llama7b-rtn2.q build/q/llama7b-rtn3.q build/q/llama7b-rtn4.q

.PHONY: all setup test test-slow test-rtl-long sim verilog dse bench lint clean help

all: test

help:
	@echo "make sim LAYER=llama7b.q   compile + simulate a quantized layer, print the report"
	@echo "make test                  unit tests + RTL regression (what CI runs)"
	@echo "make verilog CONFIG=...    Verilog + lint + synthesis report under build/"
	@echo "make dse [SWEEP=...]       design-space sweep -> reports/out/<name>/"
	@echo "make bench                 performance benchmarks -> build/bench/*.json"

setup: $(STAMP)

# torch first, pinned to the CPU wheel that the machines carry (a plain `torch` would pull a
# multi-GB CUDA build); the project's own `torch>=2.3` is then already satisfied.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check torch==2.13.0
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -m "not slow" --durations=20 $(PYTEST_ARGS)

test-slow: $(STAMP)
	$(BIN)/python -m pytest -m slow $(PYTEST_ARGS)

test-rtl-long: $(STAMP)
	BITLUT_RTL_LONG=1 $(BIN)/python -m pytest -m rtl $(PYTEST_ARGS)

# The default example layer: a seeded synthetic LLaMA-7B block quantized with CLAQ (DESIGN.md 6).
llama7b.q: | $(STAMP)
	$(BIN)/bitlut quantize --synthetic llama7b -o $@

sim: $(STAMP) $(LAYER)
	$(BIN)/bitlut sim $(LAYER) --arch $(CONFIG) $(if $(TOKENS),--tokens $(TOKENS)) \
		$(if $(CHECKPOINT),--checkpoint $(CHECKPOINT)) \
		--json build/sim/$(basename $(notdir $(LAYER)))-$(basename $(notdir $(CONFIG))).json \
		--plot build/sim/$(basename $(notdir $(LAYER)))-$(basename $(notdir $(CONFIG)))-roofline.png \
		--trace build/sim/$(basename $(notdir $(LAYER)))-$(basename $(notdir $(CONFIG)))-trace.json

verilog: $(STAMP)
	$(BIN)/bitlut verilog --arch $(CONFIG)

build/q/llama7b-rtn%.q: | $(STAMP)
	$(BIN)/bitlut quantize --synthetic llama7b --method rtn --bits $* -o $@

# design-space sweep -> build/dse/<name>/store.sqlite (resumes) and reports/out/<name>/
dse: $(STAMP) $(if $(filter dse/sweeps/llama7b.yaml llama7b,$(SWEEP)),llama7b.q $(DSE_Q))
	$(BIN)/bitlut dse $(SWEEP) $(if $(EXECUTOR),--executor $(EXECUTOR)) \
		$(if $(SCHEDULER),--scheduler $(SCHEDULER))

bench: $(STAMP)
	$(BIN)/python -m bench

lint: $(STAMP)
	$(BIN)/ruff check .

clean:
	rm -rf build sim_build .pytest_cache .hypothesis
