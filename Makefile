# One venv, installed from nothing: `make demo` and `make test` both start here.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# Debian tools the tests need: `ip` from iproute2 and `unshare` from util-linux for the
# sandbox (scripts/sandbox.sh), `chromium` for the report's browser test.
SYSTEM := $(VENV)/.system

.PHONY: install system demo test bench clean

# Installed here, before any test runs: inside the sandbox there is no network. Redone
# when this Makefile changes (a tool added to the list). One package at a time: a name
# apt lacks (chromium on Ubuntu is a snap) must not keep the others out. The stamp is
# touched either way; what is still missing is said, with what it costs.
$(SYSTEM): Makefile
	@mkdir -p $(VENV)
	@has_chromium() { command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; }; \
	missing=""; \
	command -v ip >/dev/null 2>&1 || missing="$$missing iproute2"; \
	command -v unshare >/dev/null 2>&1 || missing="$$missing util-linux"; \
	has_chromium || missing="$$missing chromium"; \
	if [ -n "$$missing" ] && [ "$$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then \
		apt-get update -qq || echo "make: apt-get update failed; trying the install anyway" >&2; \
		for package in $$missing; do \
			DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$package \
				|| echo "make: could not install $$package" >&2; \
		done; \
	elif [ -n "$$missing" ]; then \
		echo "make: not installing$$missing (needs root and apt-get)" >&2; \
	fi; \
	command -v ip >/dev/null 2>&1 && command -v unshare >/dev/null 2>&1 \
		|| echo "make: missing ip (iproute2) or unshare (util-linux): the tests will run WITHOUT the" \
			"loopback-only sandbox (scripts/sandbox.sh says so)" >&2; \
	has_chromium || echo "make: missing chromium: the report's browser test will skip" >&2
	touch $(SYSTEM)

system: $(SYSTEM)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) scripts/demo.py

# The suite runs in a loopback-only network namespace: no test can send a packet off
# this machine, whatever bug it meets. scripts/sandbox.sh says which way it ran.
test: $(STAMP) $(SYSTEM)
	scripts/sandbox.sh $(PY) -m pytest -q

# nginx serves the benchmark's images where apt can install it (else bench.py falls back
# to the aiohttp image host); img2dataset goes into its own venv under bench-data/.
bench: $(STAMP)
	@if ! command -v nginx >/dev/null 2>&1 && [ ! -x /usr/sbin/nginx ] && [ "$$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light || true; \
	fi
	$(PY) scripts/bench.py

clean:
	rm -rf demo-out out .pytest_cache
