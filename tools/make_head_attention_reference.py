"""Reference values for helixlab's head attention table (the paper's Fig 28), computed with HF
transformers (`output_attentions=True`) on the shipped toy adder, independently of helixlab.

For the prompts "{a}+{b}=" of tests/analysis.rs's grid study with a in 0..=4 and b in 0..=39
(the test compares those its sample drew): every head's attention probability from the last
token ("=", position 3) to a (position 0), b (position 2) and itself.

    python tools/make_head_attention_reference.py crates/patch/tests/fixtures/head_attention_reference.json
"""

import json
import sys

import torch
import transformers
from tokenizers import Tokenizer
from transformers import GPT2LMHeadModel

MODEL = "data/models/toy-adder"
model = GPT2LMHeadModel.from_pretrained(MODEL, attn_implementation="eager").float().eval()
tok = Tokenizer.from_file(f"{MODEL}/tokenizer.json")
prompts = [(a, b) for a in range(5) for b in range(40)]
ids = torch.tensor([tok.encode(f"{a}+{b}=").ids for a, b in prompts])
with torch.no_grad():
    att = model(input_ids=ids, output_attentions=True).attentions  # per layer (n, heads, q, k)
rows = {f"{a},{b}": [[[float(att[l][i, h, -1, k]) for k in (0, 2, 3)]
                      for h in range(model.config.n_head)] for l in range(model.config.n_layer)]
        for i, (a, b) in enumerate(prompts)}
with open(sys.argv[1], "w") as f:
    json.dump({"generator": f"tools/make_head_attention_reference.py, torch {torch.__version__}, "
                            f"transformers {transformers.__version__}",
               "keys": ["a", "b", "self"], "attention": rows}, f)
    f.write("\n")
print(f"wrote {sys.argv[1]}: {len(rows)} prompts")
