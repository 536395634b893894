# Two entry points for users: `make search` and `make test`. Both create the
# virtual environment on first use (pinned by constraints.txt).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
ARGS ?=

.PHONY: search test lint format bench clean-venv lock

$(VENV)/.installed: pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check -q -c constraints.txt -e '.[dev]'
	@touch $@

search: $(VENV)/.installed
	$(PY) -m pipeline.search $(ARGS)

test: $(VENV)/.installed
	$(PY) -m pytest -q $(ARGS)

lint: $(VENV)/.installed
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

format: $(VENV)/.installed
	$(PY) -m ruff check --fix .
	$(PY) -m ruff format .

bench: $(VENV)/.installed
	$(PY) -m pipeline.bench $(ARGS)

# Re-pin after changing dependencies: writes the exact versions of this venv.
lock: $(VENV)/.installed
	$(PY) -m pip freeze --exclude-editable --exclude attention-search > constraints.txt

clean-venv:
	rm -rf $(VENV)
