# The README's two commands: `make demo` and `make test`. Both create .venv when missing.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench bench-handoff bench-quality serve clean

# The venv gets exactly the versions the Lambda artifacts ship (functions/requirements.txt,
# the union of each function's pins): tests run against what is deployed.
$(STAMP): pyproject.toml functions/requirements.txt $(wildcard functions/requirements/*.txt)
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev,learn,report]" -r functions/requirements.txt
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m leadflow_infra.demo

test: $(STAMP)
	$(BIN)/cfn-lint template.yaml
	$(BIN)/lint-imports --no-cache
	$(BIN)/ruff check --no-cache --select F functions infra tests bench
	$(BIN)/python -m pytest -n 2 --dist loadgroup -q

bench: $(STAMP) bench-quality
	$(BIN)/python -m bench.ingest
	$(BIN)/python -m bench.ingest_http
	$(BIN)/python -m bench.import_rows --markdown
	$(BIN)/python -m bench.handoff
	$(BIN)/python -m bench.coldstart --markdown
	$(BIN)/python -m bench.rescore --markdown

# Rules against real outcomes, cross-validated next to logistic regression (scikit-learn).
bench-quality: $(STAMP)
	$(BIN)/python -m pip install --quiet -e ".[learn]"
	$(BIN)/python -m bench.rules_quality --markdown

bench-handoff: $(STAMP)
	$(BIN)/python -m bench.handoff

serve: $(STAMP)
	$(BIN)/leadflow serve --port 8080

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
