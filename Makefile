# The README's two commands: `make test` and `make demo`. Each installs what is
# missing, configures, builds and runs. `make build` stops after the build.
# `make sanitize` and `make fuzz` build with clang into $(SAN_BUILD); CI
# (.ci/run) runs all three.
BUILD ?= build
SAN_BUILD ?= build-asan
JOBS ?= $(shell nproc)
# Seconds each libFuzzer target runs in `make fuzz` (the graph fuzzer
# compiles every input, about one a second, so it gets longer).
FUZZ_SECONDS ?= 60
GRAPH_FUZZ_SECONDS ?= 180
CLANG_PACKAGES = clang-19 libclang-rt-19-dev libfuzzer-19-dev
# Any sanitizer report fails its test. allocator_may_return_null: an
# impossible allocation throws std::bad_alloc, as it does without ASan (the
# CLI turns that into an error), rather than aborting.
SAN_ENV = ASAN_OPTIONS=detect_leaks=1:allocator_may_return_null=1:strict_string_checks=1 \
          UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1

.PHONY: deps configure build test test-random demo clean \
        san-deps san-configure sanitize fuzz-build fuzz

deps:
	@scripts/install-deps.sh

# The Python module is built and tested with the rest (python/tests runs as
# the CTest test python_tests), in the venv scripts/python-venv.sh makes.
PY_VENV = $(BUILD)/py-venv

configure: deps
	@scripts/python-venv.sh $(PY_VENV)
	@grep -qs '^STEPC_BUILD_PYTHON:BOOL=ON' $(BUILD)/CMakeCache.txt || cmake -S . -B $(BUILD) \
	  -G Ninja -DCMAKE_BUILD_TYPE=Release -DSTEPC_BUILD_PYTHON=ON \
	  -DPython_EXECUTABLE=$(abspath $(PY_VENV))/bin/python >/dev/null

build: configure
	@cmake --build $(BUILD) -j $(JOBS)

# The tests labelled `random` (fresh seeds) are left out: `make test-random`.
test: build
	@cd $(BUILD) && ctest --output-on-failure -j $(JOBS) -LE random

test-random: build
	@cd $(BUILD) && ctest --output-on-failure -j $(JOBS) -L random

# The checkpoint goes into the build folder rather than the current directory.
demo: build
	@$(BUILD)/bin/stepc demo --checkpoint $(BUILD)/fashion_mnist_mlp.safetensors

san-deps:
	@scripts/install-deps.sh $(CLANG_PACKAGES)

# One clang build serves both: ASan+UBSan everywhere, coverage for libFuzzer.
san-configure: san-deps
	@[ -f $(SAN_BUILD)/build.ninja ] || cmake -S . -B $(SAN_BUILD) -G Ninja \
	  -DCMAKE_BUILD_TYPE=Release -DCMAKE_CXX_COMPILER=clang++-19 \
	  -DCMAKE_CXX_FLAGS=-gline-tables-only -DSTEPC_SANITIZE=ON -DSTEPC_BUILD_FUZZERS=ON >/dev/null

# The whole test suite under AddressSanitizer, LeakSanitizer and UBSan.
sanitize: san-configure
	@cmake --build $(SAN_BUILD) -j $(JOBS)
	@cd $(SAN_BUILD) && $(SAN_ENV) ctest --output-on-failure -j $(JOBS) -LE random

fuzz-build: san-configure
	@cmake --build $(SAN_BUILD) -j $(JOBS) --target fuzz_sg fuzz_npy fuzz_safetensors fuzz_onnx fuzz_graph

# Each libFuzzer target for FUZZ_SECONDS on a copy of its committed corpus.
fuzz: fuzz-build
	@$(SAN_ENV) scripts/fuzz.sh $(SAN_BUILD) $(FUZZ_SECONDS) $(GRAPH_FUZZ_SECONDS)

clean:
	rm -rf $(BUILD) $(SAN_BUILD)
