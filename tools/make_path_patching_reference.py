"""Reference values for helixlab's path patching (the paper's Fig 29), computed with HF
transformers and PyTorch hooks on the shipped toy adder, independently of helixlab.

For the first four last-token pairs of tests/analysis.rs's grid study (the same as
tools/make_component_reference.py's), every head of layer 0 as a sender, every head and the MLP
of layer 1 as receivers:
- the sender's change to the residual stream at every position, from the weights:
  (z_corrupt - z_clean) of its slice of c_proj's input times c_proj's rows of that head;
- a receiver head: its slice of c_proj's input recomputed with the change added to its block's
  input (a forward pre-hook on the block), then put in place of its clean slice in the clean
  run; a receiver MLP: its output recomputed with the change added to the block's input and the
  block's attention output held at the clean value, then put in place of the clean output.
Records the corrupt answer's logit at the last position, clean and patched.

    python tools/make_path_patching_reference.py crates/patch/tests/fixtures/path_patching_reference.json
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


def first(o):
    return o[0] if isinstance(o, tuple) else o


def run(a, b, hooks=()):
    """Last-position logits with `hooks` [(module, kind, fn)], and what was captured."""
    seen, handles = {}, []
    for l, blk in enumerate(blocks):
        handles.append(blk.attn.register_forward_hook(
            lambda m, i, o, l=l: seen.__setitem__(("attn", l), first(o)[0].clone())))
        handles.append(blk.mlp.register_forward_hook(
            lambda m, i, o, l=l: seen.__setitem__(("mlp", l), first(o)[0].clone())))
        handles.append(blk.attn.c_proj.register_forward_pre_hook(
            lambda m, args, l=l: seen.__setitem__(("z", l), args[0][0].clone())))
    for module, kind, fn in hooks:
        if kind == "forward":
            handles.append(module.register_forward_hook(fn))
        elif kind == "block":
            handles.append(module.register_forward_pre_hook(fn, with_kwargs=True))
        else:
            handles.append(module.register_forward_pre_hook(fn))
    with torch.no_grad():
        out = model(input_ids=torch.tensor([tok.encode(f"{a}+{b}=").ids]))
    for h in handles:
        h.remove()
    return out.logits[0, -1], seen


def add_to_block_input(delta):
    def fn(_m, args, kwargs):
        if args:
            return (args[0] + delta,) + tuple(args[1:]), kwargs
        kwargs = dict(kwargs)
        kwargs["hidden_states"] = kwargs["hidden_states"] + delta
        return args, kwargs
    return fn


def replace_output(value):
    def fn(_m, _i, o):
        if isinstance(o, tuple):
            return (value.unsqueeze(0),) + tuple(o[1:])
        return value.unsqueeze(0)
    return fn


def replace_slice(s, value):
    def fn(_m, args):
        x = args[0].clone()
        x[0, :, s] = value
        return (x,) + tuple(args[1:])
    return fn


rows = []
for (a, b), (a2, b2) in PAIRS:
    target = tok.encode(str(a2 + b2)).ids[0]
    clean_logits, clean = run(a, b)
    _, corrupt = run(a2, b2)
    for hs in range(n_heads):
        s = slice(hs * d_head, (hs + 1) * d_head)
        w = blocks[0].attn.c_proj.weight  # Conv1D: (in, out)
        delta = (corrupt[("z", 0)][:, s] - clean[("z", 0)][:, s]) @ w[s]
        receivers = []
        for hr in range(n_heads):
            r = slice(hr * d_head, (hr + 1) * d_head)
            _, seen = run(a, b, [(blocks[1], "block", add_to_block_input(delta))])
            z = seen[("z", 1)][:, r]
            logits, _ = run(a, b, [(blocks[1].attn.c_proj, "pre", replace_slice(r, z))])
            receivers.append({"receiver": "head", "layer": 1, "head": hr,
                              "patched_logit": float(logits[target])})
        _, seen = run(a, b, [(blocks[1], "block", add_to_block_input(delta)),
                             (blocks[1].attn, "forward", replace_output(clean[("attn", 1)]))])
        logits, _ = run(a, b, [(blocks[1].mlp, "forward", replace_output(seen[("mlp", 1)]))])
        receivers.append({"receiver": "mlp", "layer": 1, "head": None,
                          "patched_logit": float(logits[target])})
        rows.append({"clean": [a, b], "corrupt": [a2, b2], "sender": [0, hs],
                     "clean_logit": float(clean_logits[target]), "receivers": receivers})

with open(sys.argv[1], "w") as f:
    json.dump({
        "generator": f"tools/make_path_patching_reference.py, torch {torch.__version__}, "
                     f"transformers {transformers.__version__}",
        "rows": rows,
    }, f, indent=1)
    f.write("\n")
print(f"wrote {sys.argv[1]}: {len(rows)} pair x sender rows")
