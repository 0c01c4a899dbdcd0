# The two commands: `make demo` and `make test`. Both create .venv on first use.
VENV   := .venv
PY     := $(VENV)/bin/python
NASDSL := $(VENV)/bin/nasdsl
STAMP  := $(VENV)/.installed-stamp
SPACES := $(wildcard spaces/*.nas)

.PHONY: demo test install bench clean debian-packages

$(STAMP): pyproject.toml setup.py
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

# Debian packages: Graphviz draws graph pictures (`nasdsl compile --png`); the
# Fashion-MNIST package is the demo's data set. Installed when we are root with apt;
# otherwise nasdsl carries on (pictures need Graphviz; the search falls back to
# scikit-learn's digits and says so).
DEBIAN := graphviz dataset-fashion-mnist
debian-packages:
	@missing=""; \
	command -v dot >/dev/null || missing="graphviz"; \
	[ -d /usr/share/datasets/fashion-mnist ] || missing="$$missing dataset-fashion-mnist"; \
	if [ -z "$$missing" ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "installing Debian packages:$$missing"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing) >/dev/null 2>&1 \
	    || echo "could not install$$missing; carrying on without"; \
	else echo "not root or no apt-get: not installing$$missing"; fi

install: $(STAMP)

# The main job: regularized evolution over the tutorial space on Fashion-MNIST, two
# workers, then the report. A fresh search each time (resume one with --resume).
DEMO := demo-output
demo: $(STAMP) debian-packages
	rm -rf $(DEMO)
	$(NASDSL) search spaces/tutorial.nas --dataset fashion-mnist --algorithm evolution \
	  --trials 12 --population 6 --sample-size 3 --epochs 2 --limit 4000 --workers 2 --store $(DEMO)/search.db
	$(NASDSL) report --store $(DEMO)/search.db --out $(DEMO)/report
	@echo "report: $(DEMO)/report/summary.md (pareto, progress, population and lineage PNGs beside it)"

# the suite on every core (pytest-xdist; each test process keeps torch to one thread)
test: $(STAMP) debian-packages
	$(PY) -m pytest -n auto

bench: $(STAMP) debian-packages
	$(PY) bench/space_ops.py --out bench/results/space_ops.json
	$(PY) bench/train_throughput.py --out bench/results/train_throughput.json
	$(PY) bench/search_quality.py --out bench/results/search_quality.json

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis build *.egg-info $(DEMO)
