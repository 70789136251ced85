# Two commands on a fresh machine: `make demo` (the main job) and `make test` (the whole suite).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
# The CPU torch wheel lies in /opt/wheels on our machines; elsewhere pip uses its own configuration.
FIND_LINKS := $(if $(wildcard /opt/wheels),--find-links /opt/wheels,)
STAMP  := $(VENV)/.installed

.PHONY: demo test install clean bench

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(PY) pyproject.toml constraints.txt
	$(PIP) install -q $(FIND_LINKS) -c constraints.txt torch==2.13.0
	$(PIP) install -q $(FIND_LINKS) -c constraints.txt -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/lawful demo --quick --out demo-out

test: $(STAMP)
	$(PY) -m pytest -q -n 2 --dist loadfile --timeout 1200 tests

# The benchmarks compare against peers (vesin, MACE, PyAMG, SciPy): the bench extra installs them.
bench: $(STAMP)
	$(PIP) install -q $(FIND_LINKS) -c constraints.txt -e '.[test,bench]'
	$(VENV)/bin/lawful bench --out benchmarks/results

clean:
	rm -rf $(VENV) demo-out
