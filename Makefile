# The two commands: `make demo` and `make test`. Both create .venv on first use.
VENV   := .venv
PY     := $(VENV)/bin/python
NASDSL := $(VENV)/bin/nasdsl
STAMP  := $(VENV)/.installed-stamp
SPACES := $(wildcard spaces/*.nas)

.PHONY: demo test install bench clean debian-packages

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	@$(MAKE) --no-print-directory debian-packages
	touch $(STAMP)

# Graphviz draws graph pictures (`nasdsl compile --png`). Installed when we are root
# with apt; otherwise nasdsl says how to get it when a picture is asked for.
DEBIAN := graphviz
debian-packages:
	@if command -v dot >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "installing Debian packages: $(DEBIAN)"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(DEBIAN)) >/dev/null 2>&1 \
	    || echo "could not install $(DEBIAN); carrying on without it"; \
	else echo "not root or no apt-get: $(DEBIAN) not installed (graph pictures need Graphviz)"; fi

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
