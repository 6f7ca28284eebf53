# ndmpd — set-up is two commands: `make serve` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
ARGS   ?=
# Debian packages the integration tests drive: the ndmjob DMA, Linux dump/restore, ACL/xattr tools.
TEST_DEBS := amanda-common dump acl attr e2fsprogs gcc

.PHONY: serve test lint bench peers clean

$(VENV)/.base: pyproject.toml setup.py src/ndmpd/_speedups.c
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e .
	touch $@

$(VENV)/.test: $(VENV)/.base
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

serve: $(VENV)/.base
	$(VENV)/bin/ndmpd serve $(ARGS)

peers:
	@missing=""; \
	[ -x /usr/lib/amanda/ndmjob ] || missing="$$missing amanda-common"; \
	command -v restore >/dev/null || missing="$$missing dump"; \
	command -v setfacl >/dev/null || missing="$$missing acl"; \
	command -v setfattr >/dev/null || missing="$$missing attr"; \
	command -v mke2fs >/dev/null || missing="$$missing e2fsprogs"; \
	command -v gcc >/dev/null || missing="$$missing gcc"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing test peers:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	  else \
	    echo "missing test peers:$$missing — run as root: apt-get install -y$$missing" >&2; exit 1; \
	  fi; \
	fi

test: $(VENV)/.test peers
	$(VENV)/bin/ruff check src tests bench
	$(PY) -m pytest -q $(ARGS)

lint: $(VENV)/.test
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench

bench: $(VENV)/.test peers
	$(PY) bench/bench_tape.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis
