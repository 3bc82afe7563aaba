# The two commands: `make run` and `make test`. Everything else supports them.
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
HOME_DIR := .hive-home
MODEL   := examples/models/tiny-llama.gguf

.PHONY: run stop test lint format bench schema clean

$(STAMP): pyproject.toml scripts/bootstrap-venv
	scripts/bootstrap-venv $(VENV) dev,llama
	touch $(STAMP)

$(MODEL): examples/make_tiny_model.py | $(STAMP)
	$(BIN)/python examples/make_tiny_model.py $@

## run: install into .venv, make the example model, serve examples/desired-state/ (offline);
## Ctrl-C stops hive and its workers
run: $(STAMP) $(MODEL)
	$(BIN)/hive serve --desired examples/desired-state --home $(HOME_DIR) --stop-workers-on-exit

## stop: stop the workers a hive left running in .hive-home (killed, or run without the flag)
stop: $(STAMP)
	$(BIN)/hive stop-workers --home $(HOME_DIR)

## lint: ruff check, ruff format --check, mypy
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

## test: lint, then the whole test suite
test: lint
	$(BIN)/python -m pytest -q

## format: apply ruff's fixes and formatting
format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

## bench: the benchmarks of docs/benchmarks.md (not tests)
bench: $(STAMP)
	$(BIN)/python -m benchmarks

## schema: regenerate specs/manifest.schema.json from the pydantic models
schema: $(STAMP)
	$(BIN)/python -m hive.model.schema > specs/manifest.schema.json

## clean: stop the workers left in .hive-home, then remove everything make and the tests made
clean:
	if [ -x $(BIN)/hive ] && [ -d $(HOME_DIR) ]; then $(BIN)/hive stop-workers --home $(HOME_DIR); fi
	rm -rf $(VENV) $(HOME_DIR) $(MODEL) .mypy_cache .ruff_cache .pytest_cache .hypothesis \
		hive.egg-info
