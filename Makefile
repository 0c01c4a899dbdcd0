# The two commands: `make demo` and `make test`. Both create .venv on first use.
VENV   := .venv
PY     := $(VENV)/bin/python
NASDSL := $(VENV)/bin/nasdsl
STAMP  := $(VENV)/.installed-stamp
SPACES := $(wildcard spaces/*.nas)

.PHONY: demo test install bench clean

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# Until the search runtime lands, the main job checks, counts and samples every shipped space.
demo: $(STAMP)
	$(NASDSL) check $(SPACES)
	@for f in $(SPACES); do $(NASDSL) count $$f || exit 1; done
	$(NASDSL) sample spaces/tutorial.nas -n 3 --seed 0
	$(NASDSL) sample spaces/nb201.nas -n 3 --seed 0

test: $(STAMP)
	$(PY) -m pytest

bench: $(STAMP)
	$(PY) bench/space_ops.py --out bench/results/space_ops.json

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis build *.egg-info
