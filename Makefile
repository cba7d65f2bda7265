# One venv, installed from nothing: `make demo` and `make test` both start here.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# Debian tools the test sandbox needs (scripts/sandbox.sh): `ip` from iproute2.
SYSTEM := $(VENV)/.system

.PHONY: install system demo test bench clean

# Installed here, before any test runs: inside the sandbox there is no network.
$(SYSTEM):
	@mkdir -p $(VENV)
	@if ! command -v ip >/dev/null 2>&1 || ! command -v unshare >/dev/null 2>&1; then \
		if [ "$$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iproute2 util-linux; \
		else \
			echo "make: iproute2 (ip) and util-linux (unshare) are missing; tests will run without the sandbox" >&2; \
		fi; \
	fi
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

bench: $(STAMP)
	$(PY) -m pip install --quiet -e '.[bench]'
	$(PY) scripts/bench_fetch.py

clean:
	rm -rf demo-out out .pytest_cache
