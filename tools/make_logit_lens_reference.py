"""Reference values for the neuron logit lens of `helixlab neurons` (the paper's Figs 39-40),
computed with HF transformers and numpy, independently of helixlab.

For every MLP neuron of the shipped toy adder: its W_out row (row n of `mlp.c_proj.weight`, a
Conv1D of shape d_mlp x d_model) times the unembedding (`lm_head.weight`), without the final
layer norm, at the tokens "0".."78" (the answers of tests/analysis.rs's neuron study, a and b
in 0..=39); numpy.polyfit's slope, the line taken away, scaled to [-1, 1], numpy.fft.rfft, the
strongest k >= 1, period 79 / k.

    python tools/make_logit_lens_reference.py crates/attribute/tests/fixtures/logit_lens_reference.json
"""

import json
import sys

import numpy as np
import torch
import transformers
from tokenizers import Tokenizer
from transformers import GPT2LMHeadModel

MODEL = "data/models/toy-adder"
model = GPT2LMHeadModel.from_pretrained(MODEL).float().eval()
tok = Tokenizer.from_file(f"{MODEL}/tokenizer.json")
answers = [tok.encode(str(n)).ids[0] for n in range(79)]
unembed = model.lm_head.weight.detach().double().numpy()[answers]
n = np.arange(len(answers), dtype=np.float64)
layers = []
for blk in model.transformer.h:
    rows = []
    for w in blk.mlp.c_proj.weight.detach().double().numpy():
        y = unembed @ w
        slope, intercept = np.polyfit(n, y, 1)
        rest = y - (slope * n + intercept)
        scaled = 2 * (rest - rest.min()) / (rest.max() - rest.min()) - 1
        k = int(np.argmax(np.abs(np.fft.rfft(scaled))[1:])) + 1
        rows.append([float(slope), len(answers) / k])
    layers.append(rows)
with open(sys.argv[1], "w") as f:
    json.dump({
        "generator": f"tools/make_logit_lens_reference.py, torch {torch.__version__}, "
                     f"transformers {transformers.__version__}, numpy {np.__version__}",
        "answers": len(answers), "slope_period": layers,
    }, f)
    f.write("\n")
print(f"wrote {sys.argv[1]}: {sum(len(l) for l in layers)} neurons")
