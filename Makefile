# Two commands do everything, including set-up on a fresh machine:
#   make test        create .venv, install pinned dependencies, run the test suite
#   make reproduce   create .venv, install, execute every notebook on the synthetic dataset
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# torch/torchvision are pinned separately: on the course machines these exact builds lie on
# local disk; any other version would be a multi-gigabyte download.
TORCH_PINS ?= torch==2.14.1 torchvision==0.29.1
PYTEST_ARGS ?=
# make slides / make site: the lecture decks and the offline course site (site/index.html), from the
# newest reproduction run when there is one; SITE_ARGS="--run reports/RUN" or "--unexecuted" to choose.
SITE_ARGS ?=
# make reproduce PRESET=quick: cpu (default, <= 60 min on 2 cores), quick (<= 10 min), tiny (CI),
# colab-t4 / paper (a GPU and a dataset root: python -m gigacount_lib.reproduce --preset paper --data-root DIR)
PRESET ?= cpu
# make bench: benchmarks/run_all.py (four benchmarks, meant to take < 15 min on an idle 2-core CPU) ->
# benchmarks/results/<machine>.json; BENCH_ARGS="--full" for the scripts' full grids, "--quick --no-write" to smoke-test.
BENCH_ARGS ?=

.PHONY: install test test-fast reproduce bench slides site clean-venv

install: $(STAMP)

$(STAMP): pyproject.toml requirements-lock.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH_PINS)
	$(PY) -m pip install --quiet -r requirements-lock.txt
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $@

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: $(STAMP)
	$(PY) -m pytest -m "not notebook and not slow" $(PYTEST_ARGS)

reproduce: $(STAMP)
	$(PY) -m gigacount_lib.reproduce --preset $(PRESET)

slides: $(STAMP)
	$(PY) -m gigacount_lib.cli slides $(SITE_ARGS)

site: $(STAMP)
	$(PY) -m gigacount_lib.cli site $(SITE_ARGS)

bench: $(STAMP)
	$(PY) benchmarks/run_all.py $(BENCH_ARGS)

clean-venv:
	rm -rf $(VENV)
