"""A random GPT-2 checkpoint as deep as the paper's GPT-J (28 layers x 16 heads), tiny in width,
for checking that the report reads at that size (tools/browser_check.py, `make browser-check`).

Weights are seeded normal draws (numpy only, written as safetensors by hand: an 8-byte header
length, the JSON header, the raw little-endian f32 data), the tokenizer is the toy adder's (the
words "0".."198", "+", "="), 8 positions. Not committed: written to the directory given.

    python tools/make_deep_checkpoint.py data/report-check/models/deep
"""

import json
import pathlib
import shutil
import struct
import sys

import numpy as np

LAYERS, HEADS, D, D_MLP, POSITIONS = 28, 16, 64, 128, 8
out = pathlib.Path(sys.argv[1])
out.mkdir(parents=True, exist_ok=True)
shutil.copy("data/models/toy-adder/tokenizer.json", out / "tokenizer.json")
vocab = len(json.load(open(out / "tokenizer.json"))["model"]["vocab"])
rng = np.random.default_rng(0)


def normal(*shape, scale=0.2):
    return (rng.standard_normal(shape) * scale).astype("<f4")


tensors = {"transformer.wte.weight": normal(vocab, D), "transformer.wpe.weight": normal(POSITIONS, D),
           "transformer.ln_f.weight": np.ones(D, "<f4"), "transformer.ln_f.bias": np.zeros(D, "<f4")}
for i in range(LAYERS):
    p = f"transformer.h.{i}."
    tensors.update({
        p + "ln_1.weight": np.ones(D, "<f4"), p + "ln_1.bias": np.zeros(D, "<f4"),
        p + "ln_2.weight": np.ones(D, "<f4"), p + "ln_2.bias": np.zeros(D, "<f4"),
        p + "attn.c_attn.weight": normal(D, 3 * D), p + "attn.c_attn.bias": normal(3 * D, scale=0.02),
        p + "attn.c_proj.weight": normal(D, D, scale=0.05), p + "attn.c_proj.bias": normal(D, scale=0.02),
        p + "mlp.c_fc.weight": normal(D, D_MLP), p + "mlp.c_fc.bias": normal(D_MLP, scale=0.02),
        p + "mlp.c_proj.weight": normal(D_MLP, D, scale=0.05), p + "mlp.c_proj.bias": normal(D, scale=0.02),
    })
header, offset = {"__metadata__": {"format": "pt"}}, 0
for name, t in tensors.items():
    header[name] = {"dtype": "F32", "shape": list(t.shape), "data_offsets": [offset, offset + t.nbytes]}
    offset += t.nbytes
text = json.dumps(header).encode()
text += b" " * (-len(text) % 8)
with open(out / "model.safetensors", "wb") as f:
    f.write(struct.pack("<Q", len(text)) + text)
    for t in tensors.values():
        f.write(t.tobytes())
config = {"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "activation_function": "gelu_new",
          "n_layer": LAYERS, "n_head": HEADS, "n_embd": D, "n_inner": D_MLP, "n_positions": POSITIONS,
          "vocab_size": vocab, "layer_norm_epsilon": 1e-5, "tie_word_embeddings": True,
          "bos_token_id": None, "eos_token_id": None, "pad_token_id": vocab - 1}
json.dump(config, open(out / "config.json", "w"), indent=1)
print(f"wrote {out}: {LAYERS} layers x {HEADS} heads, d_model {D}, {offset / 1e6:.1f} MB")
