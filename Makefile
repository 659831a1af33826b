# Two entry points for a fresh Debian machine (run as root):
#   make demo   - install what is missing, then check and compile the bundled example
#   make test   - install what is missing, then run the whole test suite
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
TORTIE := $(VENV)/bin/tortie
APT_PACKAGES := nftables iptables ipset iproute2 clang llvm bpftool libbpf-dev bird2 gobgpd
EXAMPLE ?= examples/demo
OUT ?= out

.PHONY: demo test setup system-packages venv lint clean

setup: system-packages venv

system-packages:
	@missing=""; for p in $(APT_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing system packages:$$missing"; \
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing; \
	fi

$(VENV)/.installed: pyproject.toml setup.py compiler/frontend/_yaml_lines.c
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

venv: $(VENV)/.installed

demo: setup
	@echo "== tortie check $(EXAMPLE)"
	$(TORTIE) check -f $(EXAMPLE)
	@for t in nftables iptables ebpf; do \
	  echo "== tortie compile --target $$t --node node1"; \
	  extra=""; [ $$t = nftables ] && extra=--nft-batch; \
	  $(TORTIE) compile -f $(EXAMPLE) --node node1 --target $$t $$extra -o $(OUT)/node1-$$t || exit 1; \
	done
	@echo "== tortie matrix (TCP 8080)"
	$(TORTIE) matrix -f $(EXAMPLE) --protocol TCP --port 8080
	@echo "== artifacts"
	@for d in $(OUT)/node1-*; do echo "$$d:"; ls -l $$d | tail -n +2; done

test: setup
	$(VENV)/bin/ruff check compiler runtime tests benchmarks
	$(VENV)/bin/ruff format --check compiler runtime tests benchmarks
	$(PY) -m pytest -q

lint: venv
	$(VENV)/bin/ruff check --fix compiler runtime tests benchmarks
	$(VENV)/bin/ruff format compiler runtime tests benchmarks

clean:
	rm -rf $(VENV) $(OUT)
