# lbfast: `make demo` runs the main job, `make test` the tests; both set the host up first.
PY := .venv/bin/python
QUICK ?=

.PHONY: setup demo test bench clean

setup:
	@bash .ci/setup-host

demo: setup
	$(PY) -m control.demo

test: setup
	$(PY) -m pytest tests

bench: setup
	$(PY) -m bench $(if $(QUICK),--quick,)

clean:
	rm -rf build .venv *.egg-info lbfast/*.so lbfast/*.c
