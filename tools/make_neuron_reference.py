"""Reference values for helixlab's neuron stage (method.md E6), computed with HF transformers
and PyTorch autograd on the shipped toy adder, independently of helixlab.

The study is tests/analysis.rs's neuron study: a, b in 0..=39, the first four last-token pairs
`helixlab pairs` draws with seed 42 (the test checks it draws these), the mean activation over
every one of the 1,600 problems. At the last position of `a+b=`, for every neuron of every
layer (`mlp.hook_post` = the input of `h[l].mlp.c_proj`):
- attribution: d(logit of the clean answer in the corrupt run)/d(activation), by autograd,
  times (clean - corrupt activation), summed over the pairs;
- exact: the corrupt run with the neuron's clean activation, change of the clean answer's
  logit, summed over the pairs;
- total: the clean run with the neuron's corrupt activation, change of the corrupt answer's
  logit, mean over the pairs;
- direct: (corrupt - clean activation) x row n of c_proj's weight (Conv1D: (in, out)) added to
  the input of ln_f, change of the corrupt answer's logit, mean over the pairs;
- sparsity: the top k neurons by |attribution| kept, every other neuron set to its mean, over
  the pairs' clean problems: accuracy and mean change of the answer's logit, for k = 0 (every neuron at its mean), 64, 512.

    python tools/make_neuron_reference.py crates/attribute/tests/fixtures/neuron_reference.json
"""

import json
import sys

import torch
import transformers
from tokenizers import Tokenizer
from transformers import GPT2LMHeadModel

MODEL = "data/models/toy-adder"
PAIRS = [((35, 10), (25, 35)), ((24, 18), (36, 31)), ((1, 25), (9, 34)), ((35, 39), (19, 0))]
KEEP = [0, 64, 512]

torch.set_grad_enabled(False)
model = GPT2LMHeadModel.from_pretrained(MODEL).float().eval()
tok = Tokenizer.from_file(f"{MODEL}/tokenizer.json")
blocks = model.transformer.h
L, D = len(blocks), model.config.n_inner or 4 * model.config.n_embd


def ids(problems):
    return torch.tensor([tok.encode(f"{a}+{b}=").ids for a, b in problems])


def answer(a, b):
    return tok.encode(str(a + b)).ids[0]


def run(problems, edits=None, final_delta=None, grad_logit=None):
    """Last-position logits; the activations of every layer at the last position; with
    `grad_logit` (token per row) also d(sum of those logits)/d(activation).
    `edits[l]` = fn(acts (b, d_mlp)) -> new acts, at the last position."""
    seen, leaves, handles = {}, {}, []
    for l, blk in enumerate(blocks):
        def pre(m, args, l=l):
            x = args[0]
            if edits and l in edits:
                x = x.clone()
                x[:, -1] = edits[l](x[:, -1])
            if grad_logit is not None:
                # A zero added, differentiated: the path through later layers stays in the graph.
                zero = torch.zeros_like(x, requires_grad=True)
                leaves[l] = zero
                x = x + zero
            seen[l] = x
            return (x,) + tuple(args[1:])
        handles.append(blk.mlp.c_proj.register_forward_pre_hook(pre))
    if final_delta is not None:
        def add(m, args):
            x = args[0].clone()
            x[:, -1] += final_delta
            return (x,) + tuple(args[1:])
        handles.append(model.transformer.ln_f.register_forward_pre_hook(add))
    with torch.set_grad_enabled(grad_logit is not None):
        logits = model(input_ids=ids(problems)).logits[:, -1]
        grads = None
        if grad_logit is not None:
            metric = logits.gather(1, torch.tensor(grad_logit)[:, None]).sum()
            g = torch.autograd.grad(metric, [leaves[l] for l in range(L)])
            grads = torch.stack([x[:, -1] for x in g], 1)  # (b, L, d)
    for h in handles:
        h.remove()
    acts = torch.stack([seen[l][:, -1].detach() for l in range(L)], 1)
    return logits.detach(), acts, grads


clean_p = [c for c, _ in PAIRS]
corrupt_p = [x for _, x in PAIRS]
clean_t = [answer(*c) for c in clean_p]
corrupt_t = [answer(*x) for x in corrupt_p]
clean_logits, clean_acts, _ = run(clean_p)
corrupt_logits, corrupt_acts, grads = run(corrupt_p, grad_logit=clean_t)
score = (grads * (clean_acts - corrupt_acts)).sum(0)  # (L, d)

rows = range(len(PAIRS))
exact = torch.zeros(L, D)
total = torch.zeros(L, D)
direct = torch.zeros(L, D)
for l, blk in enumerate(blocks):
    w = blk.mlp.c_proj.weight  # (d_mlp, d_model)
    for n in range(D):
        def set_to(values, n=n):
            def fn(x):
                x[:, n] = values
                return x
            return fn
        out, _, _ = run(corrupt_p, edits={l: set_to(clean_acts[:, l, n])})
        exact[l, n] = sum(out[i, clean_t[i]] - corrupt_logits[i, clean_t[i]] for i in rows)
        out, _, _ = run(clean_p, edits={l: set_to(corrupt_acts[:, l, n])})
        total[l, n] = sum(out[i, corrupt_t[i]] - clean_logits[i, corrupt_t[i]] for i in rows) / len(PAIRS)
    delta = (corrupt_acts[:, l] - clean_acts[:, l])  # (b, d)
    for n in range(D):
        out, _, _ = run(clean_p, final_delta=delta[:, n:n + 1] * w[n])
        direct[l, n] = sum(out[i, corrupt_t[i]] - clean_logits[i, corrupt_t[i]] for i in rows) / len(PAIRS)

everything = [(a, b) for a in range(40) for b in range(40)]
_, all_acts, _ = run(everything)
means = all_acts.mean(0)  # (L, d)
flat = score.flatten().abs()
order = sorted(range(L * D), key=lambda i: (-float(flat[i]), i))
evaluated = list(dict.fromkeys(clean_p))
eval_t = [answer(*p) for p in evaluated]
base, _, _ = run(evaluated)
sparsity = []
for k in KEEP:
    kept = set(order[:k])
    def ablate(l):
        mask = torch.tensor([l * D + j not in kept for j in range(D)])
        def fn(x):
            x[:, mask] = means[l][mask]
            return x
        return fn
    out, _, _ = run(evaluated, edits={l: ablate(l) for l in range(L)})
    acc = sum(int(out[i].argmax()) == eval_t[i] for i in range(len(evaluated))) / len(evaluated)
    diff = sum(float(out[i, eval_t[i]] - base[i, eval_t[i]]) for i in range(len(evaluated))) / len(evaluated)
    sparsity.append({"kept": k, "accuracy": acc, "logit_diff": diff})

with open(sys.argv[1], "w") as f:
    json.dump({
        "generator": f"tools/make_neuron_reference.py, torch {torch.__version__}, "
                     f"transformers {transformers.__version__}",
        "pairs": [{"clean": list(c), "corrupt": list(x)} for c, x in PAIRS],
        "layers": L, "d_mlp": D,
        "score": score.flatten().tolist(),
        "exact": exact.flatten().tolist(),
        "total": total.flatten().tolist(),
        "direct": direct.flatten().tolist(),
        "sparsity": sparsity,
    }, f)
    f.write("\n")
print(f"wrote {sys.argv[1]}")
