# Set-up and everyday commands. Each target creates .venv if missing and installs idempotently.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed
DEVSTAMP := $(VENV)/.installed-dev

.PHONY: run test lint bench clean browser

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

$(STAMP): requirements.txt | $(PY)
	$(PIP) install --quiet -r requirements.txt
	touch $(STAMP)

$(DEVSTAMP): requirements-dev.txt requirements-baselines.txt $(STAMP)
	$(PIP) install --quiet -r requirements.txt -r requirements-dev.txt -r requirements-baselines.txt
	touch $(DEVSTAMP)

run: $(STAMP)
	$(PY) -m streamlit run app.py

# Debian chromium for the real-browser test (skipped with a reason when it cannot be installed)
browser:
	@command -v chromium >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq chromium) \
		|| echo "chromium could not be installed: the browser test will be skipped"

test: $(DEVSTAMP) browser
	$(PY) -m ruff check normcore tests benchmarks app.py app_pages dashboard
	$(PY) -m pytest

lint: $(DEVSTAMP)
	$(PY) -m ruff check normcore tests benchmarks app.py app_pages dashboard

bench: $(STAMP)
	$(PY) benchmarks/engine.py

clean:
	rm -rf $(VENV) .pytest_cache test-output
