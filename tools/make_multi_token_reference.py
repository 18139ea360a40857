"""Reference values for the patching stages when answers are several tokens, computed with HF
transformers and PyTorch hooks, independently of helixlab.

The model is the GPT-2 parity checkpoint (random weights, "0".."119" as words) with the
tokenizer that tests/multi_token.rs gives it: every digit its own token, so "37+45=" is
`3 7 + 4 5 =` and the answer 82 is `8 2`. For the six last-token pairs that `helixlab pairs`
draws in that test's study (a in 0..=39, b in 5..=14, six pairs; the test checks it draws the
same ones), every run is teacher forced: the clean prompt followed by the corrupt answer's
tokens but its last, and the log-probability of the corrupt answer is summed over its tokens.
A patch is at the prompt's last token ("="), as in the paper:
- patch-last, kind `layer`: block l's output there replaced by the corrupt prompt's (its last
  token);
- components: total effect of each attention layer, MLP and head (TransformerLens's hook_z,
  the input of `attn.c_proj`, one head's slice), and the direct effect (the output's change
  added to the input of the final layer norm at that token; for a head from the weights);
- neurons: the total effect of every neuron (the input of `mlp.c_proj`, one column), mean
  over the pairs.
Records for each patch the change of the corrupt answer's first-token logit at "=" and of
log P(corrupt answer).

    python tools/make_multi_token_reference.py crates/patch/tests/fixtures/multi_token_reference.json
"""

import json
import sys

import torch
import transformers
from tokenizers import Tokenizer
from transformers import GPT2LMHeadModel

MODEL = "crates/model/tests/fixtures/parity/gpt2_tied"
PAIRS = [((7, 14), (3, 14)), ((37, 5), (17, 8)), ((6, 9), (0, 8)),
         ((23, 10), (11, 13)), ((7, 10), (9, 12)), ((12, 13), (20, 12))]

model = GPT2LMHeadModel.from_pretrained(MODEL).float().eval()
spec = json.load(open(f"{MODEL}/tokenizer.json"))
assert spec["pre_tokenizer"]["pattern"]["Regex"] == "\\d+|\\S|\\n"
spec["pre_tokenizer"]["pattern"]["Regex"] = "\\d|\\S|\\n"
tok = Tokenizer.from_str(json.dumps(spec))
blocks = model.transformer.h
n_heads = model.config.n_head
d_head = model.config.n_embd // n_heads


def encode(text):
    return tok.encode(text, add_special_tokens=False).ids


def first(o):
    return o[0] if isinstance(o, tuple) else o


class Run:
    """One sequence: clean prompt + corrupt answer but its last token."""

    def __init__(self, a, b, answer):
        self.prompt = encode(f"{a}+{b}=")
        self.answer = encode(str(answer))
        self.ids = torch.tensor([self.prompt + self.answer[:-1]])
        self.at = len(self.prompt) - 1

    def score(self, hooks=()):
        """(first-token logit, log P(answer)) with `hooks` [(module, kind, fn)]."""
        handles = []
        for module, kind, fn in hooks:
            if kind == "forward":
                handles.append(module.register_forward_hook(fn))
            else:
                handles.append(module.register_forward_pre_hook(fn))
        with torch.no_grad():
            logits = model(input_ids=self.ids).logits[0].double()
        for h in handles:
            h.remove()
        lp = torch.log_softmax(logits, -1)
        logprob = sum(float(lp[self.at + j, t]) for j, t in enumerate(self.answer))
        return float(logits[self.at, self.answer[0]]), logprob


def captures(ids):
    """Block outputs, attention and MLP outputs, z and MLP activations at the last token."""
    seen, handles = {}, []
    for l, blk in enumerate(blocks):
        handles += [
            blk.register_forward_hook(
                lambda m, i, o, l=l: seen.__setitem__(("block", l), first(o)[0, -1].clone())),
            blk.attn.register_forward_hook(
                lambda m, i, o, l=l: seen.__setitem__(("attn", l), first(o)[0, -1].clone())),
            blk.mlp.register_forward_hook(
                lambda m, i, o, l=l: seen.__setitem__(("mlp", l), first(o)[0, -1].clone())),
            blk.attn.c_proj.register_forward_pre_hook(
                lambda m, args, l=l: seen.__setitem__(("z", l), args[0][0, -1].clone())),
            blk.mlp.c_proj.register_forward_pre_hook(
                lambda m, args, l=l: seen.__setitem__(("post", l), args[0][0, -1].clone())),
        ]
    with torch.no_grad():
        model(input_ids=torch.tensor([ids]))
    for h in handles:
        h.remove()
    return seen


def at_output(pos, value):
    def fn(_m, _i, o):
        x = first(o).clone()
        x[0, pos] = value
        return (x,) + tuple(o[1:]) if isinstance(o, tuple) else x
    return fn


def at_input(pos, cols, value, add=False):
    def fn(_m, args):
        x = args[0].clone()
        if add:
            x[0, pos, cols] += value
        else:
            x[0, pos, cols] = value
        return (x,) + tuple(args[1:])
    return fn


def effect(run, clean, hooks):
    logit, lp = run.score(hooks)
    return {"logit_diff": logit - clean[0], "logprob_diff": lp - clean[1]}


rows = []
d_mlp = blocks[0].mlp.c_proj.weight.shape[0]
neurons = torch.zeros(len(blocks), d_mlp, 2, dtype=torch.float64)
everything = slice(None)
for (a, b), (a2, b2) in PAIRS:
    run = Run(a, b, a2 + b2)
    clean = run.score()
    clean_seen = captures(run.prompt)
    corrupt = captures(encode(f"{a2}+{b2}="))
    last_layer, components = [], []
    final = (model.transformer.ln_f, "pre")
    for l, blk in enumerate(blocks):
        last_layer.append({"layer": l, **effect(
            run, clean, [(blk, "forward", at_output(run.at, corrupt[("block", l)]))])})
        for name, module in [("attn", blk.attn), ("mlp", blk.mlp)]:
            delta = corrupt[(name, l)] - clean_seen[(name, l)]
            components.append({
                "component": name, "layer": l, "head": None,
                "total": effect(run, clean, [(module, "forward",
                                              at_output(run.at, corrupt[(name, l)]))]),
                "direct": effect(run, clean, [(*final, at_input(run.at, everything, delta,
                                                                 add=True))]),
            })
        w = blk.attn.c_proj.weight  # Conv1D: (in, out)
        for h in range(n_heads):
            s = slice(h * d_head, (h + 1) * d_head)
            delta = (corrupt[("z", l)][s] - clean_seen[("z", l)][s]) @ w[s]
            components.append({
                "component": "head", "layer": l, "head": h,
                "total": effect(run, clean, [(blk.attn.c_proj, "pre",
                                              at_input(run.at, s, corrupt[("z", l)][s]))]),
                "direct": effect(run, clean, [(*final, at_input(run.at, everything, delta,
                                                                 add=True))]),
            })
        for n in range(d_mlp):
            e = effect(run, clean, [(blk.mlp.c_proj, "pre",
                                     at_input(run.at, n, corrupt[("post", l)][n]))])
            neurons[l, n, 0] += e["logit_diff"] / len(PAIRS)
            neurons[l, n, 1] += e["logprob_diff"] / len(PAIRS)
    rows.append({
        "clean": [a, b], "corrupt": [a2, b2], "answer_tokens": run.answer,
        "clean_first_logit": clean[0], "clean_logprob": clean[1],
        "last_layer": last_layer, "components": components,
    })

with open(sys.argv[1], "w") as f:
    json.dump({
        "generator": f"tools/make_multi_token_reference.py, torch {torch.__version__}, "
                     f"transformers {transformers.__version__}",
        "position": "the prompt's last token, teacher forced", "pairs": rows,
        "neurons": {"total": neurons[..., 0].tolist(), "total_logprob": neurons[..., 1].tolist()},
    }, f, indent=1)
    f.write("\n")
print(f"wrote {sys.argv[1]}: {len(rows)} pairs, {len(blocks) * d_mlp} neurons")
