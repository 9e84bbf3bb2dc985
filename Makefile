# The two commands of the README:
#   make demo   set up and run the main job on the embedded default (synthetic patient)
#   make test   set up and run the test suite
.PHONY: demo test setup setup-test clean

demo: setup
	.venv/bin/nacsim demo $(if $(OUT),--out $(OUT),)

test: setup-test
	scripts/run-tests.sh

setup:
	scripts/setup.sh qt

setup-test:
	scripts/setup.sh testing

clean:
	rm -rf .venv build dist .pytest_cache
