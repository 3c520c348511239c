# Thin wrapper: every target installs what it needs first, so a fresh Debian machine needs only
# `make run` or `make test`.
BUILD ?= build
JOBS ?= $(shell nproc)
CMAKE_FLAGS ?=
PROMPT ?= Write a short poem about the sea.

.PHONY: deps build model run test lint format format-check bench clean

deps:
	@bash scripts/install_deps.sh

$(BUILD)/CMakeCache.txt:
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release $(CMAKE_FLAGS)

build: deps $(BUILD)/CMakeCache.txt
	cmake --build $(BUILD) -j $(JOBS)

model: deps
	@bash scripts/fetch_model.sh

run: build model
	./$(BUILD)/nanoinfer generate --model default --chat --prompt "$(PROMPT)" --max-new-tokens 64

# The default model was just fetched: a test that cannot find it fails instead of skipping.
test: build model
	cd $(BUILD) && NANOINFER_REQUIRE_MODEL=1 ctest --output-on-failure -j $(JOBS)
	@$(MAKE) --no-print-directory format-check

format-check: deps
	@bash scripts/format.sh --check

format: deps
	@bash scripts/format.sh

lint: build
	@bash scripts/lint.sh $(BUILD)

bench: build model
	./$(BUILD)/bench_w4

clean:
	rm -rf $(BUILD)
