# The README's two commands: `make test` and `make demo`. Each installs what is
# missing, configures, builds and runs. `make build` stops after the build.
BUILD ?= build
JOBS ?= $(shell nproc)

.PHONY: deps configure build test demo clean

deps:
	@scripts/install-deps.sh

configure: deps
	@[ -f $(BUILD)/build.ninja ] || cmake -S . -B $(BUILD) -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null

build: configure
	@cmake --build $(BUILD) -j $(JOBS)

test: build
	@cd $(BUILD) && ctest --output-on-failure -j $(JOBS)

demo: build
	@$(BUILD)/bin/stepc demo

clean:
	rm -rf $(BUILD)
