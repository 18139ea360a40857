#!/usr/bin/env python3
"""Reference outputs of HF transformers on the real pretrained checkpoints and tokenizers the
project uses, for the Rust tests (tests/fixtures/real):

  token_ids.json             HF AutoTokenizer's ids (one prompt per call, as HF runs a prompt) for
                             GPT-2/GPT-J BPE, Llama-3.1, MiniLM's WordPiece and SmolLM2's tokenizer
                             rebuilt from its GGUF file, on the paper's three templates, bare
                             numbers 0..=999 and text with newlines, spaces, punctuation, non-ASCII
  minilm_hidden.safetensors  all-MiniLM-L6-v2's hidden states (BertModel, output_hidden_states) at
                             the number's token of `[CLS] n [SEP]` for a sample of numbers
  smollm2_stages.safetensors SmolLM2 through what the stages run on it: hook_resid_pre of layer 0
                             and hook_resid_post of every layer at the digit of the bare prompts
                             "0".."9", and for `Output ONLY a number.\n{a}+{b}=` with a, b in 0..=4
                             (one-digit answers) the greedy answer token and the answer's logit
  smollm2_multitoken.safetensors
                             SmolLM2 on numbers of several tokens: hook_resid_pre of layer 0 and
                             hook_resid_post of layers 0, 14, 29 at the first and the last digit of
                             bare numbers (a sample of 0..=999); and for `Output ONLY a number.\n{a}+{b}=`
                             with a in 5..=9, b in 5..=12, 95, 99 (answers of one to three digits) HF's
                             greedy continuation (generate, 6 new tokens; the number it writes and
                             whether that is the answer), the answer's tokens, the
                             log-probability of the whole answer (teacher-forced, sum of
                             log-softmax) and the first answer token's logit
  smollm2_reference.safetensors
                             SmolLM2-135M-Instruct loaded by HF from the Q4_1 GGUF file
                             (dequantized, f32, eager attention) on a left-padded ragged batch of the
                             paper's three prompt layouts: every hook of every layer at the last
                             position (`last.<hook>`), the residual stream of some layers at every
                             position, last-position logits, and gradients of a logit difference

Inputs (fetched by make): data/external/tokenizers (make fetch-tokenizers),
data/models/all-MiniLM-L6-v2 (make fetch-minilm), data/models/SmolLM2-135M-Instruct
(make fetch-smollm2). Pinned: tools/requirements-real.txt.

    make real-references
"""
import json
import os
import shutil
import sys
import tempfile

import numpy as np
import tokenizers
import torch
import transformers
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM, AutoTokenizer, BertModel

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
TOKENIZERS = os.path.join(ROOT, "data/external/tokenizers")
MINILM = os.path.join(ROOT, "data/models/all-MiniLM-L6-v2")
SMOLLM2_DIR = os.path.join(ROOT, "data/models/SmolLM2-135M-Instruct")
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"

TEMPLATES = {
    "gptj": "Output ONLY a number.\n{a}+{b}=",
    "pythia": "Output ONLY a number. {a}+{b}=",
    "llama": "The following is a correct addition problem. \n{a}+{b}=",
}

TEXTS = [
    "Hello world",
    " Hello world",
    "  two leading spaces, two  inside and trailing  ",
    "tabs\tand\nnewlines\r\nand\n\nblank lines\n",
    "punctuation!?,.;:'\"()[]{}<>-_=+*/\\|@#$%^&~`",
    "3.14159 and -42, 1e10, 1,000,000 and 0.5%",
    "37+45=82\n12 + 7 = 19",
    "naïve café, Größe, façade, Ñandú",
    "日本語のテキスト",
    "Ελληνικά и кириллица",
    "emoji 🙂 and a rocket 🚀",
    "don't I'll we've they're it's",
    "The quick brown fox jumps over the lazy dog.",
]


def prompts():
    out = []
    for name, t in TEMPLATES.items():
        for a in range(100):
            b = (7 * a + 13) % 100
            out.append(t.format(a=a, b=b))
    out += [str(n) for n in range(1000)]
    out += TEXTS
    return out


def tokenizer_ids(tok, unk_id):
    rows = []
    for text in prompts():
        ids = tok(text)["input_ids"]
        rows.append({"text": text, "special": True, "ids": ids, "unk": unk_id is not None and unk_id in ids})
    for n in range(1000):
        ids = tok(str(n), add_special_tokens=False)["input_ids"]
        rows.append({"text": str(n), "special": False, "ids": ids, "unk": unk_id is not None and unk_id in ids})
    return rows


def token_references(out):
    result = {}
    with tempfile.TemporaryDirectory() as tmp:
        gpt2 = os.path.join(tmp, "gpt2")
        os.makedirs(gpt2)
        shutil.copy(os.path.join(TOKENIZERS, "gpt2/encoder.json"), os.path.join(gpt2, "vocab.json"))
        shutil.copy(os.path.join(TOKENIZERS, "gpt2/vocab.bpe"), os.path.join(gpt2, "merges.txt"))
        with open(os.path.join(gpt2, "tokenizer_config.json"), "w") as f:
            json.dump({"tokenizer_class": "GPT2Tokenizer"}, f)
        tokenizers_used = {
            "gpt2": AutoTokenizer.from_pretrained(gpt2),
            "llama3_1": AutoTokenizer.from_pretrained(os.path.join(TOKENIZERS, "llama3_1")),
            "minilm": AutoTokenizer.from_pretrained(MINILM),
            "smollm2": AutoTokenizer.from_pretrained(SMOLLM2_DIR, gguf_file=SMOLLM2_FILE),
        }
        for name, tok in tokenizers_used.items():
            unk = tok.unk_token_id if name == "minilm" else None
            result[name] = tokenizer_ids(tok, unk)
            print(f"{name}: {len(result[name])} prompts, {type(tok).__name__}")
    with open(os.path.join(out, "token_ids.json"), "w") as f:
        json.dump({"transformers": transformers.__version__, "tokenizers": tokenizers.__version__,
                   "tokenizers_used": result}, f, ensure_ascii=False, separators=(",", ":"))


MINILM_NUMBERS = [0, 1, 2, 5, 7, 9, 10, 13, 25, 37, 42, 50, 64, 77, 88, 99, 100, 123, 200, 256, 300, 341]


def minilm_reference(out):
    tok = AutoTokenizer.from_pretrained(MINILM)
    model = BertModel.from_pretrained(MINILM, add_pooling_layer=False).float().eval()
    rows = []
    for n in MINILM_NUMBERS:
        enc = tok(str(n), return_tensors="pt")
        ids = enc["input_ids"][0].tolist()
        assert len(ids) == 3, (n, ids)  # [CLS] n [SEP]: the number is one token at position 1
        with torch.no_grad():
            hs = model(**enc, output_hidden_states=True).hidden_states
        rows.append(torch.stack([h[0, 1] for h in hs]))  # (layers + 1, d)
    hidden = torch.stack(rows, dim=1).contiguous()  # (layers + 1, numbers, d)
    save_file({"numbers": torch.tensor(MINILM_NUMBERS, dtype=torch.int64), "hidden_states": hidden},
              os.path.join(out, "minilm_hidden.safetensors"),
              metadata={"torch": torch.__version__, "transformers": transformers.__version__,
                        "layout": "hidden_states[l] = hook_resid_pre of layer l = resid_post of l-1, "
                                  "at the number's token of [CLS] n [SEP]"})
    print(f"minilm: hidden states of {len(MINILM_NUMBERS)} numbers, {hidden.shape[0]} layers")


class Recorder:
    def __init__(self):
        self.acts = {}

    def keep(self, name, x):
        if x.requires_grad:
            x.retain_grad()
        self.acts[name] = x

    def out(self, module, name):
        module.register_forward_hook(lambda _m, _a, o: self.keep(name, o[0] if isinstance(o, tuple) else o))

    def inp(self, module, name):
        def hook(_m, args, kwargs):
            self.keep(name, args[0] if args else kwargs["hidden_states"])

        module.register_forward_pre_hook(hook, with_kwargs=True)


SMOLLM2_PROMPTS = [TEMPLATES["gptj"].format(a=37, b=45), TEMPLATES["llama"].format(a=8, b=91),
                   TEMPLATES["pythia"].format(a=3, b=4)]
FULL_LAYERS = [0, 1, 2, 14, 28, 29]  # residual stream at every position


def smollm2_reference(out):
    tok = AutoTokenizer.from_pretrained(SMOLLM2_DIR, gguf_file=SMOLLM2_FILE)
    model = AutoModelForCausalLM.from_pretrained(SMOLLM2_DIR, gguf_file=SMOLLM2_FILE, dtype=torch.float32,
                                                 attn_implementation="eager").eval()
    cfg = model.config
    H, KV, D = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
    seqs = [tok(p)["input_ids"] for p in SMOLLM2_PROMPTS]
    t = max(len(s) for s in seqs)
    ids = torch.zeros(len(seqs), t, dtype=torch.long)
    mask = torch.zeros(len(seqs), t, dtype=torch.long)
    pos = torch.zeros(len(seqs), t, dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, t - len(s):] = torch.tensor(s)
        mask[i, t - len(s):] = 1
        pos[i, t - len(s):] = torch.arange(len(s))
    ids[mask == 0] = cfg.pad_token_id if cfg.pad_token_id is not None else 0

    rec = Recorder()
    tr = model.model
    rec.out(tr.embed_tokens, "hook_embed")
    for l, blk in enumerate(tr.layers):
        rec.inp(blk, f"blocks.{l}.hook_resid_pre")
        rec.out(blk, f"blocks.{l}.hook_resid_post")
        rec.out(blk.self_attn.q_proj, f"blocks.{l}.attn.hook_q")
        rec.out(blk.self_attn.k_proj, f"blocks.{l}.attn.hook_k")
        rec.out(blk.self_attn.v_proj, f"blocks.{l}.attn.hook_v")
        rec.inp(blk.self_attn.o_proj, f"blocks.{l}.attn.hook_z")
        rec.out(blk.self_attn.o_proj, f"blocks.{l}.hook_attn_out")
        rec.inp(blk.post_attention_layernorm, f"blocks.{l}.hook_resid_mid")
        rec.out(blk.mlp.gate_proj, f"blocks.{l}.mlp.hook_pre")
        rec.out(blk.mlp.up_proj, f"blocks.{l}.mlp.hook_pre_linear")
        rec.inp(blk.mlp.down_proj, f"blocks.{l}.mlp.hook_post")
        rec.out(blk.mlp.down_proj, f"blocks.{l}.hook_mlp_out")
    rec.out(tr.norm, "ln_final.hook_normalized")

    outputs = model(input_ids=ids, attention_mask=mask, position_ids=pos, output_attentions=True)
    per_head = {"attn.hook_q": H, "attn.hook_k": KV, "attn.hook_v": KV, "attn.hook_z": H}

    def per_token(name, x):
        for suffix, n in per_head.items():
            if name.endswith(suffix):
                return x.reshape(x.shape[0], x.shape[1], n, D)
        return x

    refs = {"input_ids": ids, "attention_mask": mask, "position_ids": pos}
    for name, x in rec.acts.items():
        y = per_token(name, x.detach().float())
        refs["last." + name] = y[:, -1].contiguous()
    for l, a in enumerate(outputs.attentions):  # (b, h, q, k): the last query's row, (b, h, k)
        refs[f"last.blocks.{l}.attn.hook_pattern"] = a.detach()[:, :, -1, :].contiguous().float()
    for l in FULL_LAYERS:
        refs[f"blocks.{l}.hook_resid_post"] = rec.acts[f"blocks.{l}.hook_resid_post"].detach().float().contiguous()
    refs["last.logits"] = outputs.logits.detach()[:, -1].contiguous().float()

    # The paper's metric shape: the logit of one answer token minus another's, at the last token.
    answer = [tok(str(s), add_special_tokens=False)["input_ids"][0] for s in (8, 9, 7)]
    other = [tok(str(s), add_special_tokens=False)["input_ids"][0] for s in (1, 3, 2)]
    rows = torch.arange(ids.shape[0])
    last = outputs.logits[:, -1, :]
    metric = (last[rows, torch.tensor(answer)] - last[rows, torch.tensor(other)]).sum()
    metric.backward()
    refs["metric_targets"] = torch.tensor([answer, other]).T.contiguous()
    refs["metric"] = metric.detach().reshape(1).float()
    for name in ["hook_embed", "blocks.15.hook_resid_pre", "blocks.29.hook_resid_pre",
                 "blocks.0.mlp.hook_post", "blocks.29.attn.hook_z"]:
        refs["grad." + name] = per_token(name, rec.acts[name].grad.detach().float()).contiguous()
    save_file(refs, os.path.join(out, "smollm2_reference.safetensors"),
              metadata={"torch": torch.__version__, "transformers": transformers.__version__,
                        "prompts": json.dumps(SMOLLM2_PROMPTS), "full_layers": json.dumps(FULL_LAYERS),
                        "gguf": SMOLLM2_FILE})
    total = sum(v.numel() for v in refs.values())
    print(f"smollm2: {len(refs)} reference tensors, {total * 4 / 1e6:.1f} MB, |logit| max "
          f"{refs['last.logits'].abs().max():.1f}")


def smollm2_stages(out):
    tok = AutoTokenizer.from_pretrained(SMOLLM2_DIR, gguf_file=SMOLLM2_FILE)
    model = AutoModelForCausalLM.from_pretrained(SMOLLM2_DIR, gguf_file=SMOLLM2_FILE, dtype=torch.float32).eval()
    layers = model.model.layers
    refs = {}
    pre0, post = [], []
    for x in range(10):
        ids = tok(str(x), return_tensors="pt")["input_ids"]
        assert ids.shape[1] == 1, (x, ids)
        got = {}
        handles = [layers[0].register_forward_pre_hook(
            lambda _m, a, k: got.__setitem__("pre0", (a[0] if a else k["hidden_states"])[0, -1].clone()),
            with_kwargs=True)]
        for l, blk in enumerate(layers):
            handles.append(blk.register_forward_hook(
                lambda _m, _a, o, l=l: got.__setitem__(l, (o[0] if isinstance(o, tuple) else o)[0, -1].clone())))
        with torch.no_grad():
            model(input_ids=ids)
        for h in handles:
            h.remove()
        pre0.append(got["pre0"])
        post.append(torch.stack([got[l] for l in range(len(layers))]))
    refs["digits.hook_resid_pre0"] = torch.stack(pre0).contiguous()  # (10, d)
    refs["digits.hook_resid_post"] = torch.stack(post).contiguous()  # (10, layers, d)
    preds, answer_logits, margins = [], [], []
    for a in range(5):
        for b in range(5):
            ids = tok(TEMPLATES["gptj"].format(a=a, b=b), return_tensors="pt")["input_ids"]
            with torch.no_grad():
                last = model(input_ids=ids).logits[0, -1]
            answer = tok(str(a + b), add_special_tokens=False)["input_ids"]
            assert len(answer) == 1
            top = torch.topk(last, 2)
            preds.append(int(top.indices[0]))
            margins.append(float(top.values[0] - top.values[1]))
            answer_logits.append(float(last[answer[0]]))
    refs["addition.pred_token"] = torch.tensor(preds, dtype=torch.int64)
    refs["addition.top_margin"] = torch.tensor(margins)
    refs["addition.answer_logit"] = torch.tensor(answer_logits)
    save_file(refs, os.path.join(out, "smollm2_stages.safetensors"),
              metadata={"torch": torch.__version__, "transformers": transformers.__version__,
                        "addition": "a, b in 0..=4, row = 5 a + b, template " + json.dumps(TEMPLATES["gptj"])})
    print(f"smollm2 stages: 10 digits x {len(layers)} layers; {len(preds)} additions, "
          f"smallest top-2 margin {min(margins):.3f}")


MULTI_NUMBERS = [0, 7, 10, 42, 99, 100, 123, 500, 789, 999]
MULTI_LAYERS = [0, 14, 29]
MULTI_A, MULTI_B = range(5, 10), list(range(5, 13)) + [95, 99]


def smollm2_multitoken(out):
    tok = AutoTokenizer.from_pretrained(SMOLLM2_DIR, gguf_file=SMOLLM2_FILE)
    model = AutoModelForCausalLM.from_pretrained(SMOLLM2_DIR, gguf_file=SMOLLM2_FILE, dtype=torch.float32).eval()
    layers = model.model.layers
    refs = {}
    first, last = {"pre0": [], **{l: [] for l in MULTI_LAYERS}}, {"pre0": [], **{l: [] for l in MULTI_LAYERS}}
    for x in MULTI_NUMBERS:
        ids = tok(str(x), return_tensors="pt")["input_ids"]
        assert ids.shape[1] == len(str(x)), (x, ids)  # digit by digit
        # Hooks on the blocks, not output_hidden_states: HF's last hidden state is after the
        # final norm, not the last block's output.
        got = {}
        handles = [layers[0].register_forward_pre_hook(
            lambda _m, a, k: got.__setitem__("pre0", (a[0] if a else k["hidden_states"])[0].clone()),
            with_kwargs=True)]
        for l in MULTI_LAYERS:
            handles.append(layers[l].register_forward_hook(
                lambda _m, _a, o, l=l: got.__setitem__(l, (o[0] if isinstance(o, tuple) else o)[0].clone())))
        with torch.no_grad():
            model(input_ids=ids)
        for h in handles:
            h.remove()
        for store, at in ((first, 0), (last, -1)):
            for key in store:
                store[key].append(got[key][at])
    refs["numbers.x"] = torch.tensor(MULTI_NUMBERS, dtype=torch.int64)
    for name, store in (("last", last), ("first", first)):
        refs[f"numbers.{name}.hook_resid_pre0"] = torch.stack(store["pre0"]).contiguous()
        for l in MULTI_LAYERS:
            refs[f"numbers.{name}.hook_resid_post{l}"] = torch.stack(store[l]).contiguous()
    greedy, answers, logprobs, first_logits, values, correct = [], [], [], [], [], []
    for a in MULTI_A:
        for b in MULTI_B:
            prompt = tok(TEMPLATES["gptj"].format(a=a, b=b), return_tensors="pt")["input_ids"]
            answer = tok(str(a + b), add_special_tokens=False)["input_ids"]
            assert len(answer) == len(str(a + b))
            with torch.no_grad():
                gen = model.generate(prompt, max_new_tokens=6, do_sample=False, pad_token_id=0)[0, prompt.shape[1]:]
                full = torch.cat([prompt[0], torch.tensor(answer)]).unsqueeze(0)
                logits = model(input_ids=full).logits[0]
            n, p = len(answer), prompt.shape[1]
            lp = torch.log_softmax(logits[p - 1:p - 1 + n].double(), dim=-1)
            logprobs.append(float(sum(lp[j, answer[j]] for j in range(n))))
            first_logits.append(float(logits[p - 1, answer[0]]))
            greedy.append(torch.nn.functional.pad(gen, (0, 6 - gen.shape[0]), value=-1))
            # What greedy decoding writes: digits while the tokens are digits (the first may
            # carry a space); correct when they are the answer's tokens and the number ends.
            texts = [tok.decode([t]) for t in gen.tolist()]
            digits = []
            for j, t in enumerate(texts):
                t = t.lstrip() if j == 0 else t
                if not (t and t.isdigit() and t.isascii()):
                    break
                digits.append(t)
            values.append(int("".join(digits)) if digits else -1)
            correct.append(gen[:n].tolist() == answer and not texts[n][:1].isdigit())
            answers.append(torch.tensor(answer + [-1] * (3 - n)))
    refs["addition.greedy"] = torch.stack(greedy).to(torch.int64).contiguous()  # (n, 6), -1 past the end
    refs["addition.answer_tokens"] = torch.stack(answers).to(torch.int64).contiguous()  # (n, 3), -1 padded
    refs["addition.answer_logprob"] = torch.tensor(logprobs, dtype=torch.float64)
    refs["addition.answer_logit"] = torch.tensor(first_logits)
    refs["addition.greedy_value"] = torch.tensor(values, dtype=torch.int64)  # -1: no number
    refs["addition.greedy_correct"] = torch.tensor(correct, dtype=torch.int64)
    save_file(refs, os.path.join(out, "smollm2_multitoken.safetensors"),
              metadata={"torch": torch.__version__, "transformers": transformers.__version__,
                        "numbers": json.dumps(MULTI_NUMBERS), "layers": json.dumps(MULTI_LAYERS),
                        "addition": f"a in {list(MULTI_A)}, b in {MULTI_B}, a major, template "
                                    + json.dumps(TEMPLATES["gptj"])})
    print(f"smollm2 multi-token: {len(MULTI_NUMBERS)} numbers; {len(greedy)} additions, "
          f"{sum(correct)} correct")


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "tests/fixtures/real")
    os.makedirs(out, exist_ok=True)
    torch.manual_seed(0)
    np.random.seed(0)
    token_references(out)
    minilm_reference(out)
    smollm2_reference(out)
    smollm2_stages(out)
    smollm2_multitoken(out)


if __name__ == "__main__":
    main()
