"""Reference values for helixlab's a-token patching, computed with HF transformers and PyTorch
hooks on the shipped toy adder, independently of helixlab.

For the first eight clean/corrupt pairs that `helixlab pairs` draws in tests/analysis.rs's
study (a in 0..=99, b = 7, seed 42; the test checks it draws the same ones), at the input of
block 0 and at the a token:
- `layer`: the corrupt prompt's own activation patched into the clean run;
- `helix`: the helix of method.md E3 (periods 2, 5, 10, 100, linear term x / max x, bias),
  fitted here with scikit-learn's PCA (100 components) and numpy's lstsq on HF's activations
  of all 100 a tokens, evaluated at the corrupt a.
Records the corrupt answer's logit in the clean run, the patched run and the corrupt run.

    python tools/make_patch_reference.py crates/patch/tests/fixtures/patch_reference.json
"""

import json
import sys

import numpy as np
import torch
import transformers
from sklearn.decomposition import PCA
from tokenizers import Tokenizer
from transformers import GPT2LMHeadModel

MODEL = "data/models/toy-adder"
B = 7
PAIRS = [(80, 59), (89, 39), (65, 4), (92, 9), (76, 43), (56, 48), (74, 13), (84, 17)]

model = GPT2LMHeadModel.from_pretrained(MODEL).float().eval()
tok = Tokenizer.from_file(f"{MODEL}/tokenizer.json")


def ids(a):
    return torch.tensor([tok.encode(f"{a}+{B}=").ids])


def run(a, patch=None):
    """Last-position logits of a + B, with block 0's input at position 0 replaced by patch."""
    handle = None
    if patch is not None:
        def pre_hook(_module, args, kwargs):
            if args:
                h = args[0].clone()
                h[:, 0] = torch.as_tensor(patch, dtype=h.dtype)
                return (h,) + tuple(args[1:]), kwargs
            h = kwargs["hidden_states"].clone()
            h[:, 0] = torch.as_tensor(patch, dtype=h.dtype)
            kwargs["hidden_states"] = h
            return args, kwargs
        handle = model.transformer.h[0].register_forward_pre_hook(pre_hook, with_kwargs=True)
    with torch.no_grad():
        out = model(input_ids=ids(a), output_hidden_states=True)
    if handle is not None:
        handle.remove()
    return out.logits[0, -1].numpy().astype(np.float64), out.hidden_states[0][0, 0].numpy()


def answer_token(n):
    return tok.encode(str(n)).ids[0]


# The a-token activations entering block 0, for every a.
acts = np.stack([run(a)[1] for a in range(100)]).astype(np.float64)
xs = np.arange(100, dtype=np.float64)


def helix_basis(x, scale):
    cols = []
    for t in [2.0, 5.0, 10.0, 100.0]:
        cols += [np.cos(2 * np.pi * x / t), np.sin(2 * np.pi * x / t)]
    cols += [x / scale, np.ones_like(x)]
    return np.column_stack(cols)


pca = PCA(n_components=100, svd_solver="full").fit(acts)
coef = np.linalg.lstsq(helix_basis(xs, xs.max()), pca.transform(acts), rcond=None)[0]
C = coef @ pca.components_

rows = []
for a, a2 in PAIRS:
    target = answer_token(a2 + B)
    clean_logits, _ = run(a)
    corrupt_logits, _ = run(a2)
    layer_logits, _ = run(a, patch=acts[a2])
    helix = helix_basis(np.array([float(a2)]), xs.max()) @ C + pca.mean_
    helix_logits, _ = run(a, patch=helix[0])
    rows.append({
        "clean_a": a, "corrupt_a": a2, "b": B,
        "clean_logit": float(clean_logits[target]),
        "corrupt_logit": float(corrupt_logits[target]),
        "patched": {"layer": float(layer_logits[target]), "helix": float(helix_logits[target])},
    })

with open(sys.argv[1], "w") as f:
    json.dump({
        "generator": f"tools/make_patch_reference.py, torch {torch.__version__}, "
                     f"transformers {transformers.__version__}",
        "site": "hook_resid_pre", "layer": 0, "pairs": rows,
    }, f, indent=1)
    f.write("\n")
print(f"wrote {sys.argv[1]}: {len(rows)} pairs")
