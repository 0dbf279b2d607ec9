# Thin wrapper: the logic lives in ./run (bash only, so it works where make is not installed).
# `make test` == `./run test` (the README's test command, what .ci/run runs).
.PHONY: demo test lint typecheck conformance-full install

demo:
	./run demo

test:
	./run test

lint:
	./run lint

typecheck:
	./run typecheck

# the full Autobahn run (cases 1-10, 12 and 13; slow, documented in docs/conformance.md, not part of test)
conformance-full:
	./run conformance-full

install:
	scripts/install.sh all
