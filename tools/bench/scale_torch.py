"""The PyTorch + HF transformers side of `make bench-scale` (tools/bench/scale.py): the same work
as helixlab on the same bf16 checkpoint, prompts and pairs (read from helixlab's run directory),
the way a careful user writes it: bf16 weights and arithmetic, batched no-grad forwards, logits
at the last position only (`logits_to_keep=1`), forward hooks on the blocks.

    python tools/bench/scale_torch.py WORK --model DIR [--run RUN] [...]

WORK:
  load      from_pretrained in bf16, then one prompt (--prompt); saves its logits (--out .npy)
  accuracy  every prompt of problems.parquet in one batch; saves last-position logits
  extract   resid_pre of --layers at the a, b and last tokens of every prompt (saved .npy)
  patch     a-token patching at --layer: each pair's clean prompt with the corrupt prompt's
            resid_pre at the a token (helixlab's extracted value), one clean and one patched
            batched forward
  agree     compares helixlab's outputs with the saved ones (prints JSON)

Prints one JSON line with the seconds of the work after loading.
"""

import argparse
import json
import pathlib
import sys
import time

import numpy as np
import pyarrow.parquet as pq
import torch

PREFIX = "Output ONLY a number.\n"


def load(model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    start = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16).eval()
    tok = AutoTokenizer.from_pretrained(model_dir)
    return model, tok, time.perf_counter() - start


def problems(run):
    return pq.read_table(run / "problems.parquet").to_pydict()


def encode(tok, prompts):
    ids = [tok(p)["input_ids"] for p in prompts]
    if len({len(x) for x in ids}) != 1:
        sys.exit("the scale bench's prompts all have the same length; these do not")
    return torch.tensor(ids)


def positions(tok, prompt):
    """Token indices of a, b and the last token of `Output ONLY a number.\\n{a}+{b}=`."""
    p = len(tok(PREFIX)["input_ids"])
    return [p, p + 2, len(tok(prompt)["input_ids"]) - 1]


def last_logits(model, ids):
    return model(input_ids=ids, logits_to_keep=1).logits[:, -1].float()


def activations(run, layer):
    """helixlab's resid_pre at `layer`: {prompt_id: {position_name: vector}}."""
    t = pq.read_table(next((run / "activations" / "site=hook_resid_pre" / f"layer={layer}")
                           .glob("*.parquet"))).to_pydict()
    out = {}
    for pid, name, v in zip(t["prompt_id"], t["position_name"], t["activation"]):
        out.setdefault(pid, {})[name] = np.asarray(v, dtype=np.float32)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("work")
    ap.add_argument("--model", type=pathlib.Path)
    ap.add_argument("--run", type=pathlib.Path)
    ap.add_argument("--prompt")
    ap.add_argument("--out", type=pathlib.Path)
    ap.add_argument("--layers")
    ap.add_argument("--layer", type=int)
    ap.add_argument("--prompt-logits", type=pathlib.Path)
    ap.add_argument("--torch-prompt", type=pathlib.Path)
    ap.add_argument("--patch", type=pathlib.Path)
    ap.add_argument("--extract", type=pathlib.Path)
    ap.add_argument("--extract-run", type=pathlib.Path)
    a = ap.parse_args()
    torch.set_grad_enabled(False)
    if a.work == "agree":
        agree(a)
        return
    model, tok, load_s = load(a.model)
    blocks = model.transformer.h
    if a.work == "load":
        ids = torch.tensor([tok(a.prompt)["input_ids"]])
        start = time.perf_counter()
        logits = model(input_ids=ids).logits[0].float().numpy()
        forward_s = time.perf_counter() - start
        np.save(a.out, logits)
        print(json.dumps({"load_s": load_s, "forward_s": forward_s}))
        return
    probs = problems(a.run)
    start = time.perf_counter()
    if a.work == "accuracy":
        logits = last_logits(model, encode(tok, probs["prompt"]))
        pred = logits.argmax(-1)
        correct = sum(int(p) == t for p, t in zip(pred, probs["answer_token"]))
        s = time.perf_counter() - start
        np.save(a.out.with_suffix(".npy"), logits.numpy())
        a.out.write_text(json.dumps({"prompt_id": probs["prompt_id"], "correct": correct}))
    elif a.work == "extract":
        layers = [int(x) for x in a.layers.split(",")]
        ids = encode(tok, probs["prompt"])
        pos = positions(tok, probs["prompt"][0])
        saved = {}

        def keep(l):
            def fn(_m, args, kwargs):
                h = args[0] if args else kwargs["hidden_states"]
                saved[l] = h[:, pos].float().numpy()
            return fn
        handles = [blocks[l].register_forward_pre_hook(keep(l), with_kwargs=True) for l in layers]
        model.transformer(input_ids=ids)
        for h in handles:
            h.remove()
        s = time.perf_counter() - start
        np.save(a.out, np.stack([saved[l] for l in layers]))  # (layers, prompts, 3, d)
    elif a.work == "patch":
        t = pq.read_table(a.run / "patch" / "pairs.parquet").to_pydict()
        keep_rows = [i for i, o in enumerate(t["operand"]) if o == "a"]
        pr = {k: [v[i] for i in keep_rows] for k, v in t.items()}
        by_id = {pid: i for i, pid in enumerate(probs["prompt_id"])}
        acts = activations(a.run, a.layer)
        clean = [probs["prompt"][by_id[i]] for i in pr["clean_prompt_id"]]
        target = torch.tensor([probs["answer_token"][by_id[i]] for i in pr["corrupt_prompt_id"]])
        value = torch.tensor(np.stack([acts[i]["a"] for i in pr["corrupt_prompt_id"]]),
                             dtype=torch.bfloat16)
        ids = encode(tok, clean)
        pos = positions(tok, clean[0])[0]
        clean_logits = last_logits(model, ids)

        def hook(_m, args, kwargs):
            if args:
                h = args[0].clone()
                h[:, pos] = value
                return (h,) + tuple(args[1:]), kwargs
            h = kwargs["hidden_states"].clone()
            h[:, pos] = value
            kwargs["hidden_states"] = h
            return args, kwargs
        handle = blocks[a.layer].register_forward_pre_hook(hook, with_kwargs=True)
        patched = last_logits(model, ids)
        handle.remove()
        s = time.perf_counter() - start
        a.out.write_text(json.dumps({
            "pair_id": pr["pair_id"],
            "patched_logit": patched.gather(1, target[:, None])[:, 0].tolist(),
            "clean_logit": clean_logits.gather(1, target[:, None])[:, 0].tolist()}))
    else:
        sys.exit(f"unknown work {a.work}")
    print(json.dumps({"work_s": s, "threads": torch.get_num_threads()}))


def agree(a):
    from safetensors.numpy import load_file
    probs = problems(a.run)
    hf = np.load(a.out.with_suffix(".npy"))  # (prompts, vocab)
    scale = float(np.abs(hf).max())
    answer = np.array(probs["answer_token"])
    hx_answer = np.array(probs["answer_logit"], dtype=np.float32)
    hf_answer = hf[np.arange(len(answer)), answer]
    same_top = float(np.mean(np.array(probs["pred_token"]) == hf.argmax(-1)))
    # helixlab's top logit against PyTorch's, and the answer logit: both per prompt.
    top_rel = float(np.abs(np.array(probs["top_logit"]) - hf.max(-1)).max()) / scale
    ans_rel = float(np.abs(hx_answer - hf_answer).max()) / scale
    hx_prompt = load_file(str(a.prompt_logits))["logits"]
    hf_prompt = np.load(a.torch_prompt)
    prompt_rel = float(np.abs(hx_prompt - hf_prompt).max() / np.abs(hf_prompt).max())
    # Extraction: helixlab's tables against the hooked values, same prompt order.
    hf_x = np.load(a.extract)
    layers = sorted(int(p.name.split("=")[1]) for p in
                    (a.extract_run / "activations" / "site=hook_resid_pre").glob("layer=*"))
    worst, xscale = 0.0, 0.0
    for li, l in enumerate(layers):
        acts = activations(a.extract_run, l)
        for pi, pid in enumerate(probs["prompt_id"]):
            for k, name in enumerate(("a", "b", "last")):
                d = np.abs(acts[pid][name] - hf_x[li, pi, k])
                worst = max(worst, float(d.max()))
                xscale = max(xscale, float(np.abs(hf_x[li, pi, k]).max()))
    t = pq.read_table(a.run / "patch" / "patching.parquet").to_pydict()
    hx_patch = dict(zip(t["pair_id"], t["patched_logit"]))
    hf_patch = json.loads(a.patch.read_text())
    patch_rel = max(abs(hx_patch[p] - v) for p, v in
                    zip(hf_patch["pair_id"], hf_patch["patched_logit"])) / scale
    print(json.dumps({"accuracy_logits_rel": max(top_rel, ans_rel), "same_top": same_top,
                      "prompt_logits_rel": prompt_rel, "extract_rel": worst / xscale,
                      "patch_rel": patch_rel}))


if __name__ == "__main__":
    main()
