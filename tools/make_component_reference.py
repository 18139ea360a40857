"""Reference values for helixlab's component effects (method.md E5), computed with HF
transformers and PyTorch hooks on the shipped toy adder, independently of helixlab.

For the first four last-token pairs that `helixlab pairs` draws in tests/analysis.rs's grid
study (a, b in 0..=39, seed 42; the test checks it draws the same ones), at the last position:
- total effect: the clean run with one component's output replaced by the corrupt run's
  (forward hooks on `h[l].mlp`, `h[l].attn`; for head h a pre-hook on `h[l].attn.c_proj`
  replacing that head's slice of its input, which is TransformerLens's hook_z);
- direct effect: the component's change added to the input of the final layer norm. For a
  head the change is computed from the weights: (z_corrupt - z_clean) @ c_proj's rows of that
  head (helixlab instead reruns the block with the head patched, so the two routes differ).
Records the corrupt answer's logit in each patched run.

    python tools/make_component_reference.py crates/patch/tests/fixtures/component_reference.json
"""

import json
import sys

import torch
import transformers
from tokenizers import Tokenizer
from transformers import GPT2LMHeadModel

MODEL = "data/models/toy-adder"
PAIRS = [((35, 10), (25, 35)), ((24, 18), (36, 31)), ((1, 25), (9, 34)), ((35, 39), (19, 0))]

model = GPT2LMHeadModel.from_pretrained(MODEL).float().eval()
tok = Tokenizer.from_file(f"{MODEL}/tokenizer.json")
blocks = model.transformer.h
n_heads = model.config.n_head
d_head = model.config.n_embd // n_heads


def ids(a, b):
    return torch.tensor([tok.encode(f"{a}+{b}=").ids])


def run(a, b, hooks=()):
    """Last-position logits with `hooks` [(module, kind, fn)], and the captured values."""
    seen = {}
    handles = []
    for l, blk in enumerate(blocks):
        handles.append(blk.mlp.register_forward_hook(
            lambda m, i, o, l=l: seen.__setitem__(("mlp", l), o[0, -1].clone())))
        handles.append(blk.attn.register_forward_hook(
            lambda m, i, o, l=l: seen.__setitem__(
                ("attn", l), (o[0] if isinstance(o, tuple) else o)[0, -1].clone())))
        handles.append(blk.attn.c_proj.register_forward_pre_hook(
            lambda m, args, l=l: seen.__setitem__(("z", l), args[0][0, -1].clone())))
    handles.append(model.transformer.ln_f.register_forward_pre_hook(
        lambda m, args: seen.__setitem__("final", args[0][0, -1].clone())))
    for module, kind, fn in hooks:
        if kind == "forward":
            handles.append(module.register_forward_hook(fn))
        else:
            handles.append(module.register_forward_pre_hook(fn))
    with torch.no_grad():
        out = model(input_ids=ids(a, b))
    for h in handles:
        h.remove()
    return out.logits[0, -1], seen


def replace_output(value):
    def fn(_m, _i, o):
        if isinstance(o, tuple):
            x = o[0].clone()
            x[0, -1] = value
            return (x,) + tuple(o[1:])
        x = o.clone()
        x[0, -1] = value
        return x
    return fn


def replace_head(h, value):
    def fn(_m, args):
        x = args[0].clone()
        x[0, -1, h * d_head:(h + 1) * d_head] = value
        return (x,) + tuple(args[1:])
    return fn


def add_final(delta):
    def fn(_m, args):
        x = args[0].clone()
        x[0, -1] += delta
        return (x,) + tuple(args[1:])
    return fn


rows = []
for (a, b), (a2, b2) in PAIRS:
    target = tok.encode(str(a2 + b2)).ids[0]
    clean_logits, clean = run(a, b)
    corrupt_logits, corrupt = run(a2, b2)
    effects = []
    for l, blk in enumerate(blocks):
        for name, module in [("attn", blk.attn), ("mlp", blk.mlp)]:
            te, _ = run(a, b, [(module, "forward", replace_output(corrupt[(name, l)]))])
            delta = corrupt[(name, l)] - clean[(name, l)]
            de, _ = run(a, b, [(model.transformer.ln_f, "pre", add_final(delta))])
            effects.append({"component": name, "layer": l, "head": None,
                            "total": float(te[target]), "direct": float(de[target])})
        w = blk.attn.c_proj.weight  # Conv1D: (in, out)
        for h in range(n_heads):
            s = slice(h * d_head, (h + 1) * d_head)
            te, _ = run(a, b, [(blk.attn.c_proj, "pre", replace_head(h, corrupt[("z", l)][s]))])
            delta = (corrupt[("z", l)][s] - clean[("z", l)][s]) @ w[s]
            de, _ = run(a, b, [(model.transformer.ln_f, "pre", add_final(delta))])
            effects.append({"component": "head", "layer": l, "head": h,
                            "total": float(te[target]), "direct": float(de[target])})
    rows.append({
        "clean": [a, b], "corrupt": [a2, b2],
        "clean_logit": float(clean_logits[target]),
        "corrupt_logit": float(corrupt_logits[target]),
        "effects": effects,
    })

with open(sys.argv[1], "w") as f:
    json.dump({
        "generator": f"tools/make_component_reference.py, torch {torch.__version__}, "
                     f"transformers {transformers.__version__}",
        "position": "last", "pairs": rows,
    }, f, indent=1)
    f.write("\n")
print(f"wrote {sys.argv[1]}: {len(rows)} pairs")
