"""Reference values for `helixlab clock` (why a clock: linear addition, distances, the carry
test, the logit shapes), computed with HF transformers, numpy and scipy, independently of
helixlab.

On the shipped toy adder (every a + b with a, b in 0..=99, prompt "{a}+{b}="):
- the layer-0 output (block 0's output, by a forward hook) at a's token for a = 0..=99; PCA to 50 components
  (numpy SVD of the centred rows); a least-squares line per component; R^2 variance weighted
  and averaged over components;
- linear addition as helixlab documents it: s = z(a) + z(b) - c; `line`: the integer n in
  0..=198 minimising |s - (c + n w)| (brute force over every n); `representations`: the number
  n in 0..=99 minimising |s - z(n)|; accuracy over problems with a + b < alpha, beside the
  model's (argmax at the last position = the answer's token);
- distances |x(a + dn) - x(a)| at hook_resid_post of both layers (block outputs by hooks:
  HF's last hidden state has the final layer norm applied), mean over a in 0..=9 and
  0..=99 (a + dn <= 99);
- logit shapes: the last position's logits at the tokens "0".."198": numpy.polyfit slope, the
  line taken away, scaled to [-1, 1], numpy.fft.rfft, the strongest k >= 1, period 199 / k.
The toy adder makes 3 errors in 10,000, too few for the carry test, so that runs on the GPT-2
parity checkpoint (random weights, "0".."119" as words) over a, b in 0..=59: the errors of
its argmax (model - truth, numeric tokens only), -10 against the rest, carries by
a%10 + b%10 > 10 and >= 10, scipy.stats.chi2_contingency (Yates's correction).

    python tools/make_clock_reference.py crates/clock/tests/fixtures/clock_reference.json
"""

import json
import sys

import numpy as np
import scipy
import torch
import transformers
from scipy.stats import chi2_contingency
from tokenizers import Tokenizer
from transformers import GPT2LMHeadModel

ALPHAS = list(range(10, 201, 10))


def run(model_dir, lo, hi):
    model = GPT2LMHeadModel.from_pretrained(model_dir).float().eval()
    tok = Tokenizer.from_file(f"{model_dir}/tokenizer.json")
    problems = [(a, b) for a in range(lo, hi + 1) for b in range(lo, hi + 1)]
    ids = torch.tensor([tok.encode(f"{a}+{b}=").ids for a, b in problems])
    # Block outputs by hooks: HF's last hidden state has the final layer norm applied.
    blocks = {}
    handles = [blk.register_forward_hook(
        lambda m, i, o, l=l: blocks.__setitem__(l, (o[0] if isinstance(o, tuple) else o).clone()))
        for l, blk in enumerate(model.transformer.h)]
    with torch.no_grad():
        out = model(input_ids=ids)
    for h in handles:
        h.remove()
    out.resid_post = [blocks[l] for l in range(model.config.n_layer)]
    return model, tok, problems, out


def representation(hidden, problems, lo, hi):
    """Rows of a = lo..=hi at a's token (the first), from the prompts with b = lo."""
    rows = {a: hidden[i, 0].double().numpy() for i, (a, b) in enumerate(problems) if b == lo}
    return np.stack([rows[n] for n in range(lo, hi + 1)])


# The toy adder.
model, tok, problems, out = run("data/models/toy-adder", 0, 99)
numbers = np.arange(100, dtype=np.float64)
x = representation(out.resid_post[0], problems, 0, 99)
centred = x - x.mean(0)
_, s, vt = np.linalg.svd(centred, full_matrices=False)
z = centred @ vt[:50].T
explained = float((s[:50] ** 2).sum() / (s ** 2).sum())
design = np.stack([np.ones(100), numbers], 1)
coef, *_ = np.linalg.lstsq(design, z, rcond=None)
c, w = coef[0], coef[1]
pred = design @ coef
res = ((z - pred) ** 2).sum(0)
tot = ((z - z.mean(0)) ** 2).sum(0)
line_fit = {"pcs": 50, "explained_variance": explained, "r2": float(1 - res.sum() / tot.sum()),
            "r2_uniform": float(np.mean(1 - res / tot)), "slope_norm": float(np.linalg.norm(w))}

answer_tokens = [tok.encode(str(n)).ids[0] for n in range(199)]
logits = out.logits[:, -1].double().numpy()
model_correct = np.array([logits[i].argmax() == answer_tokens[a + b]
                          for i, (a, b) in enumerate(problems)])
line_points = c + np.arange(199)[:, None] * w
linear = []
for readout in ["line", "representations"]:
    correct = []
    for a, b in problems:
        s_ab = z[a] + z[b] - c
        if readout == "line":
            got = int(np.argmin(((line_points - s_ab) ** 2).sum(1)))
        else:
            got = int(np.argmin(((z - s_ab) ** 2).sum(1)))
        correct.append(got == a + b)
    correct = np.array(correct)
    sums = np.array([a + b for a, b in problems])
    for alpha in ALPHAS:
        under = sums < alpha
        linear.append({"readout": readout, "alpha": alpha, "problems": int(under.sum()),
                       "accuracy": float(correct[under].mean()),
                       "model_accuracy": float(model_correct[under].mean())})

distances = []
for layer in range(model.config.n_layer):
    xl = representation(out.resid_post[layer], problems, 0, 99)
    for lo_a, hi_a in [(0, 9), (0, 99)]:
        for dn in [1, 2, 5, 10, 20, 50, 90]:
            d = [np.linalg.norm(xl[a + dn] - xl[a]) for a in range(lo_a, hi_a + 1) if a + dn <= 99]
            distances.append({"layer": layer, "a_min": lo_a, "a_max": hi_a, "dn": dn,
                              "distance": float(np.mean(d)), "pairs": len(d)})

shapes = []
n = np.arange(199, dtype=np.float64)
for i in range(len(problems)):
    y = logits[i, answer_tokens]
    slope, intercept = np.polyfit(n, y, 1)
    rest = y - (slope * n + intercept)
    scaled = 2 * (rest - rest.min()) / (rest.max() - rest.min()) - 1
    k = int(np.argmax(np.abs(np.fft.rfft(scaled))[1:])) + 1
    shapes.append((float(slope), 199 / k))
slopes = np.array([s for s, _ in shapes])
periods, counts = np.unique(np.array([p for _, p in shapes]).round(6), return_counts=True)
order = np.argsort(-counts)
logit_shapes = {
    "problems": len(shapes), "share_negative_slope": float((slopes < 0).mean()),
    "top_periods": [[float(periods[j]), int(counts[j])] for j in order[:5]],
    "first": [{"a": a, "b": b, "slope": s, "period": p}
              for (a, b), (s, p) in zip(problems[:20], shapes[:20])],
}

# The carry test on the random checkpoint.
model, tok, problems, out = run("crates/model/tests/fixtures/parity/gpt2_tied", 0, 59)
vocab = {i: t for t, i in tok.get_vocab().items()}
wrong = []
for i, (a, b) in enumerate(problems):
    text = vocab[int(out.logits[i, -1].argmax())]
    if text.isdigit() and int(text) != a + b:
        wrong.append((a, b, int(text) - (a + b)))
carry = []
for rule, carries in [("a%10 + b%10 > 10", lambda a, b: a % 10 + b % 10 > 10),
                      ("a%10 + b%10 >= 10", lambda a, b: a % 10 + b % 10 >= 10)]:
    m = [carries(a, b) for a, b, e in wrong if e == -10]
    o = [carries(a, b) for a, b, e in wrong if e != -10]
    table = [[sum(m), len(m) - sum(m)], [sum(o), len(o) - sum(o)]]
    r = chi2_contingency(table)
    carry.append({"rule": rule, "errors": len(wrong), "minus_10": len(m),
                  "minus_10_carry": sum(m), "other": len(o), "other_carry": sum(o),
                  "share_minus_10": len(m) / len(wrong),
                  "share_plus_10": sum(e == 10 for *_, e in wrong) / len(wrong),
                  "chi2": float(r.statistic), "p_value": float(r.pvalue)})

with open(sys.argv[1], "w") as f:
    json.dump({
        "generator": f"tools/make_clock_reference.py, torch {torch.__version__}, transformers "
                     f"{transformers.__version__}, numpy {np.__version__}, scipy {scipy.__version__}",
        "line_fit": line_fit, "linear_addition": linear, "distances": distances,
        "logit_shapes": logit_shapes, "carry": carry,
    }, f, indent=1)
    f.write("\n")
print(f"wrote {sys.argv[1]}: line R^2 {line_fit['r2']:.4f}, {len(wrong)} errors for the carry test")
