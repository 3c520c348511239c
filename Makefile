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

model:
	@bash scripts/fetch_model.sh

run: build model
	./$(BUILD)/nanoinfer generate --model default --chat --prompt "$(PROMPT)" --max-new-tokens 64

test: build model
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS)
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
