# All set-up happens here: `make demo` and `make test` work on a fresh machine.
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
STAMP   = $(VENV)/.installed-stamp
ARGS   ?=
PYTEST_ARGS ?=

.PHONY: install plugins test lint cluster demo hosts-demo fuzz clean screenshots bench-hosts \
	bench-election bench-failover bench-balance bench-directory bench-transfer \
	bench-stego bench-detect bench-encrypt bench-stress bench-amplification bench-views

$(STAMP): setup.cfg setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip setuptools wheel
	$(PY) -m pip install -q -e '.[test,bench]' --config-settings editable_mode=compat
	touch $(STAMP)

install: $(STAMP) plugins

# twistd finds plugins through a cache file next to them; refresh it after every install.
plugins: $(STAMP)
	$(PY) -c 'from twisted.plugin import IPlugin, getPlugins; list(getPlugins(IPlugin))'

# pytest exits 5 when it collected no test: that is a failure here, not a pass.
test: install
	$(PY) -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest ran no test" >&2; exit 1; fi; exit $$rc

# The web app's screenshots in docs/images/, taken by its browser tests (needs /usr/bin/chromium).
screenshots: install
	CLOUDP2P_SCREENSHOTS=$(CURDIR)/docs/images $(PY) -m pytest tests/web -q -k story

lint: install
	$(VENV)/bin/ruff check cloudp2p tests bench twisted

cluster: install
	$(PY) -m cloudp2p.testing.cluster etc/server1.toml etc/server2.toml etc/server3.toml

demo: install
	$(PY) -m cloudp2p.tools.demo $(ARGS)

# The cloud on five hosts (network namespaces, a Galera node per server host); needs root.
hosts-demo: install
	$(PY) -m cloudp2p.tools.hosts_demo $(ARGS)

fuzz: install
	$(PY) -m bench.fuzz $(ARGS)

bench-election bench-failover bench-balance bench-directory bench-transfer \
bench-stego bench-detect bench-encrypt bench-stress bench-hosts bench-amplification bench-views: install
	$(PY) -m bench.$(subst -,_,$(patsubst bench-%,%,$@)) $(ARGS)

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .hypothesis twisted/plugins/dropin.cache
