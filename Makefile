# lbfast: `make demo` runs the main job, `make test` the tests; both set the host up first.
# `make install` / `make uninstall` (root) put lbfast on this host as a systemd service;
# `make deb` builds a Debian package of it.
PY := .venv/bin/python
QUICK ?=

.PHONY: setup demo test bench clean install uninstall deb

setup:
	@bash .ci/setup-host

demo: setup
	$(PY) -m control.demo

test: setup
	$(PY) -m pytest tests

bench: setup
	$(PY) -m bench $(if $(QUICK),--quick,)

# Directories (and DESTDIR to stage): VENV_DIR=/opt/lbfast SBINDIR=/usr/local/sbin
# UNITDIR=/etc/systemd/system CONFDIR=/etc/lbfast; WHEEL= installs a wheel built already.
install uninstall:
	bash .ci/packaging/install-host $@

# build/deb/lbfast_<version>_<arch>.deb (debhelper, lintian).
deb:
	bash .ci/packaging/build-deb

clean:
	rm -rf build .venv *.egg-info lbfast/*.so lbfast/*.c
