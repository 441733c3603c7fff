# The two README commands: `make demo` (the main job) and `make test` (the whole test suite).
# Both install what is missing (scripts/setup.sh), configure and build in Release.
BUILD      ?= build
JOBS       ?= $(shell nproc)
CUDA_ARCHS ?= 90
CMAKE_ARGS ?=
FUZZ_SECONDS ?= 60
# `make demo` runs every technique's rows on one seed (about 5 minutes on 2 cores); the full report
# (3 seeds for the rows that average over seeds) is `$(BUILD)/examples/cost_report`.
DEMO_ARGS  ?= --seeds 1

# ccache (when installed) hashes paths relative to the checkout, so a fresh clone in another folder
# reuses the objects of earlier builds on the same machine.
export CCACHE_BASEDIR := $(CURDIR)
export CCACHE_NOHASHDIR := 1

CONFIGURE = cmake -S . -B $(BUILD) -G Ninja -DCMAKE_BUILD_TYPE=Release \
            -DCMAKE_CUDA_ARCHITECTURES="$(CUDA_ARCHS)" $(CMAKE_ARGS)

.PHONY: setup configure build demo test test-cpu bench install fuzz sanitize clean

setup:
	@bash scripts/setup.sh

$(BUILD)/build.ninja:
	@$(MAKE) --no-print-directory setup
	$(CONFIGURE)

configure: setup
	$(CONFIGURE)

build: $(BUILD)/build.ninja
	cmake --build $(BUILD) -j $(JOBS)

demo: build
	$(BUILD)/examples/cost_report $(DEMO_ARGS)

# The safetensors fuzzer for a bounded time, then every ctest label this machine can run (gpu tests
# skip themselves without a device); ctest's summary is the last line.
test: build
	@$(MAKE) --no-print-directory fuzz
	ctest --test-dir $(BUILD) --output-on-failure -j $(JOBS)

bench: build
	@for b in $(BUILD)/bench/bench_*; do echo "== $$b"; $$b --benchmark_min_time=0.2; done

install: build
	cmake --install $(BUILD) --prefix $(or $(PREFIX),/usr/local)

# libFuzzer needs clang: a separate build of the library with -fsanitize=fuzzer,address,undefined.
fuzz: setup
	cmake -S . -B $(BUILD)-fuzz -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
	  -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ -DFRUGAL_WITH_CUDA=OFF \
	  -DFRUGAL_WITH_MPI=OFF -DFRUGAL_WITH_DNNL=OFF -DFRUGAL_BUILD_TESTS=OFF \
	  -DFRUGAL_BUILD_BENCH=OFF -DFRUGAL_BUILD_EXAMPLES=OFF -DFRUGAL_BUILD_FUZZ=ON
	cmake --build $(BUILD)-fuzz -j $(JOBS) --target fuzz_safetensors
	bash fuzz/run.sh $(BUILD)-fuzz/fuzz/fuzz_safetensors $(FUZZ_SECONDS)

# The CPU tests under AddressSanitizer and UndefinedBehaviorSanitizer.
sanitize: setup
	cmake -S . -B $(BUILD)-asan -G Ninja -DCMAKE_BUILD_TYPE=Debug -DFRUGAL_SANITIZE=ON \
	  -DFRUGAL_WITH_CUDA=OFF -DFRUGAL_BUILD_BENCH=OFF -DFRUGAL_BUILD_EXAMPLES=OFF
	cmake --build $(BUILD)-asan -j $(JOBS)
	ctest --test-dir $(BUILD)-asan --output-on-failure -j $(JOBS) -L cpu

clean:
	rm -rf $(BUILD) $(BUILD)-fuzz $(BUILD)-asan
