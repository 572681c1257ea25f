# Two commands on a fresh machine:  `make demo` (set up + run the main job on the
# embedded emulator, no API key) and `make test` (set up + lint + type-check + tests).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# LiteLLM's proxy, for the provider integration tests, in its own venv: its FastAPI
# pins must not touch Prefect's. If it cannot be installed, those tests skip and say why.
LITELLM_VENV ?= .venv-litellm
LITELLM_STAMP := $(LITELLM_VENV)/.installed

# The oldest Prefect the project declares (pyproject's prefect>=X): `make compat` runs a
# short check on it in its own venv; `make test` runs the whole suite on the newest.
PREFECT_FLOOR := $(shell sed -n 's/^ *"prefect>=\([0-9.]*\)".*/\1/p' pyproject.toml)
COMPAT_VENV ?= .venv-prefect-$(PREFECT_FLOOR)
COMPAT_TESTS := tests/test_install.py tests/test_generate_flow.py::test_text_to_video_lands_in_s3_checked \
	tests/test_deployments.py::test_adhoc_deployment_runs_on_a_worker tests/test_layers.py

.PHONY: setup demo test lint typecheck pytest bench clean litellm compat

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	PREFECT_SERVER_ANALYTICS_ENABLED=false $(BIN)/sora-video --emulator \
		--prompt "A paper boat drifting down a rainy street at dusk" \
		--output out/demo.mp4
	@$(BIN)/python -c "import av; s = av.open('out/demo.mp4').streams.video[0]; \
		print(f'out/demo.mp4: {s.codec_context.name} {s.width}x{s.height}, {s.frames} frames at {s.average_rate} fps')"

lint: $(STAMP)
	$(BIN)/ruff check .

typecheck: $(STAMP)
	$(BIN)/mypy

$(LITELLM_STAMP):
	$(PYTHON) -m venv $(LITELLM_VENV) && $(LITELLM_VENV)/bin/pip install --quiet 'litellm[proxy]>=1.80' \
		&& touch $(LITELLM_STAMP) \
		|| (rm -rf $(LITELLM_VENV); echo "LiteLLM proxy could not be installed: tests/test_litellm.py will be skipped")

litellm: $(LITELLM_STAMP)

pytest: $(STAMP) litellm
	$(BIN)/python -m pytest -q -p no:cacheprovider

test: lint typecheck pytest

# Install, the demo, the sync flow and a deployment on the lower bound of the Prefect range.
compat:
	$(MAKE) setup VENV=$(COMPAT_VENV)
	$(COMPAT_VENV)/bin/pip install --quiet "prefect==$(PREFECT_FLOOR)"
	@$(COMPAT_VENV)/bin/python -c "import prefect; print('prefect', prefect.__version__)"
	$(MAKE) demo VENV=$(COMPAT_VENV)
	$(COMPAT_VENV)/bin/python -m pytest -q -p no:cacheprovider $(COMPAT_TESTS)

bench: $(STAMP)
	$(BIN)/pip install -q -e ".[dev,bench]"
	$(BIN)/python bench/run.py --docs docs

clean:
	rm -rf $(VENV) $(LITELLM_VENV) .venv-prefect-* out videos .pytest_cache .mypy_cache .ruff_cache
