"""The paper's stack (PyTorch + HF transformers + nnsight) doing the work `make bench` times
helixlab on, on the same checkpoint, prompts and pairs (read from helixlab's run directory).

    python tools/bench/torch_bench.py WORK --model DIR --run RUN_DIR [--batch N]

WORK:
  extract          resid_pre of every layer at the a, b and last tokens of every prompt,
                   batched forwards of the base model, streamed to one Parquet file per layer
                   (a careful user; no unembedding, like helixlab's extract)
  extract-nnsight  the same through nnsight, one trace per batch (the paper's code)
  patch            the a-token sweep: every layer x {layer, pca9, helix} x every pair, one
                   batched forward of all pairs per (layer, kind) with a pre-hook on the block
  patch-nnsight    the same, one nnsight trace per pair patch (the paper's code)
  grad             d(clean answer logit)/d(mlp.hook_post) at the last token for every neuron,
                   one forward + backward per batch of the last-token pairs' clean prompts
  attribution      attribution patching over every neuron (mlp.hook_post, last token): per
                   batch of the last-token pairs one forward of the clean prompts (activations)
                   and one forward + backward of the corrupt ones (d clean answer logit / d act);
                   score = gradient x (clean - corrupt), summed over pairs
  neuron-fits-sgd  the original's neuron fits: per neuron, A cos(2 pi (t - d) / T) terms of a, b
                   and a+b plus slopes and a bias, 2,500 full-batch epochs of Adam (lr 0.01) on
                   its preactivations over the grid (read from helixlab's
                   neurons/preactivations.parquet), for the first --neurons neurons
  matmul           the f32 matmul throughput of this machine (2048 x 2048, torch)

Prints one JSON line: work seconds (after the model is loaded), and a checksum of the result
that the driver compares with helixlab's.
"""

import argparse
import json
import pathlib
import sys
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from tokenizers import Tokenizer
from transformers import AutoModelForCausalLM, AutoTokenizer


class BpeTokenizer:
    """HF's GPT-2 tokenizer (vocab.json + merges.txt), called as `tokenizers.Tokenizer` is."""

    def __init__(self, model_dir):
        self.tok = AutoTokenizer.from_pretrained(model_dir)

    def encode(self, text):
        class Enc:
            ids = self.tok(text)["input_ids"]
        return Enc


def load(model_dir):
    model = AutoModelForCausalLM.from_pretrained(model_dir).float().eval()
    json_file = pathlib.Path(model_dir) / "tokenizer.json"
    tok = Tokenizer.from_file(str(json_file)) if json_file.exists() else BpeTokenizer(model_dir)
    return model, tok


def blocks(model):
    base = model.base_model
    return base.h if hasattr(base, "h") else base.layers


def encode(tok, prompts):
    ids = [tok.encode(p).ids for p in prompts]
    if len({len(x) for x in ids}) != 1:
        sys.exit("the benchmark grid's prompts all have the same length; these do not")
    return torch.tensor(ids)


def problems(run):
    t = pq.read_table(run / "problems.parquet").to_pydict()
    return t


def positions(tok, prompt, a, b):
    """Token indices of a, b and the last token: the prompts end in `a+b=`, one token each."""
    n = len(tok.encode(prompt).ids)
    return [n - 4, n - 2, n - 1]


def extract(model, tok, run, batch, out, nnsight=False):
    probs = problems(run)
    prompts = probs["prompt"]
    n_layers = len(blocks(model))
    pos = positions(tok, prompts[0], probs["a"][0], probs["b"][0])
    out.mkdir(parents=True, exist_ok=True)
    writers = [None] * n_layers
    checksum = 0.0
    if nnsight:
        from nnsight import NNsight
        nn_model = NNsight(model)
        nn_blocks = nn_model.transformer.h if hasattr(model, "transformer") else \
            nn_model.gpt_neox.layers
    start = time.perf_counter()
    with torch.no_grad():
        for lo in range(0, len(prompts), batch):
            ids = encode(tok, prompts[lo:lo + batch])
            if nnsight:
                # nnsight runs the trace body in its own frame: collect into a list made
                # outside it.
                hidden = []
                with nn_model.trace(ids):
                    for l in range(n_layers):
                        hidden.append(nn_blocks[l].input.save())
            else:
                hs = model.base_model(input_ids=ids, output_hidden_states=True).hidden_states
                hidden = hs[:n_layers]
            for l in range(n_layers):
                x = hidden[l][:, pos, :].numpy().astype(np.float32)  # (b, 3, d)
                checksum += float(np.abs(x).sum())
                d = x.shape[-1]
                flat = pa.array(x.reshape(-1), type=pa.float32())
                table = pa.table({
                    "prompt_id": pa.array(np.repeat(np.arange(lo, lo + len(x)), 3), pa.uint32()),
                    "position": pa.array(np.tile(np.arange(3), len(x)), pa.uint8()),
                    "activation": pa.FixedSizeListArray.from_arrays(flat, d),
                })
                if writers[l] is None:
                    writers[l] = pq.ParquetWriter(out / f"layer={l}.parquet", table.schema)
                writers[l].write_table(table)
    for w in writers:
        w.close()
    return time.perf_counter() - start, checksum


def pairs(run, operand):
    t = pq.read_table(run / "patch" / "pairs.parquet").to_pydict()
    keep = [i for i, o in enumerate(t["operand"]) if o == operand]
    return {k: [v[i] for i in keep] for k, v in t.items()}


def helix_basis(x, scale, periods=(2.0, 5.0, 10.0, 100.0)):
    cols = []
    for t in periods:
        cols += [np.cos(2 * np.pi * x / t), np.sin(2 * np.pi * x / t)]
    cols += [x / scale, np.ones_like(x)]
    return np.column_stack(cols)


def patch_values(model, tok, probs, ps):
    """Per layer: the a-token activation of each number, PCA (top 9 and 100) and helix C.
    Also the a token's index."""
    n_layers = len(blocks(model))
    by_id = {pid: i for i, pid in enumerate(probs["prompt_id"])}
    # a-token activations per number: the a token sees nothing else, so any prompt with that a.
    numbers = sorted(set(probs["a"]))
    first = {}
    for i, a in enumerate(probs["a"]):
        first.setdefault(a, i)
    ids = encode(tok, [probs["prompt"][first[a]] for a in numbers])
    at = ids.shape[1] - 4
    with torch.no_grad():
        hs = model.base_model(input_ids=ids, output_hidden_states=True).hidden_states
    xs = np.array(numbers, dtype=np.float64)
    out = []
    for l in range(n_layers):
        acts = hs[l][:, at, :].numpy().astype(np.float64)
        mean = acts.mean(0)
        _, _, vt = np.linalg.svd(acts - mean, full_matrices=False)
        comps = vt[:100]
        z = (acts - mean) @ comps.T
        coef = np.linalg.lstsq(helix_basis(xs, xs.max()), z, rcond=None)[0]
        c = coef @ comps
        out.append({"acts": dict(zip(numbers, acts)), "mean": mean, "pca9": vt[:9],
                    "C": c, "scale": xs.max(), "at": at})
    return out, by_id


def patch_value(v, kind, a2):
    if kind == "layer":
        return v["acts"][a2]
    if kind == "pca9":
        h = v["acts"][a2] - v["mean"]
        return v["mean"] + (h @ v["pca9"].T) @ v["pca9"]
    return (helix_basis(np.array([float(a2)]), v["scale"]) @ v["C"])[0] + v["mean"]


def patch(model, tok, run, batch, nnsight=False, n_pairs=None):
    probs = problems(run)
    pr = pairs(run, "a")
    if n_pairs:
        pr = {k: v[:n_pairs] for k, v in pr.items()}
    n_layers = len(blocks(model))
    start = time.perf_counter()
    values, by_id = patch_values(model, tok, probs, pr)
    clean_prompts = [probs["prompt"][by_id[i]] for i in pr["clean_prompt_id"]]
    targets = torch.tensor([probs["answer_token"][by_id[i]] for i in pr["corrupt_prompt_id"]])
    corrupt_a = pr["corrupt_a"]
    checksum = 0.0
    if nnsight:
        from nnsight import NNsight
        nn_model = NNsight(model)
        nn_blocks = nn_model.transformer.h if hasattr(model, "transformer") else \
            nn_model.gpt_neox.layers
        for i, prompt in enumerate(clean_prompts):
            ids = encode(tok, [prompt])
            for l in range(n_layers):
                for kind in ("layer", "pca9", "helix"):
                    v = torch.tensor(patch_value(values[l], kind, corrupt_a[i]), dtype=torch.float32)
                    with torch.no_grad(), nn_model.trace(ids):
                        nn_blocks[l].input[:, values[l]["at"], :] = v
                        logit = nn_model.output.logits[0, -1, int(targets[i])].save()
                    checksum += float(logit)
        return time.perf_counter() - start, checksum
    with torch.no_grad():
        for lo in range(0, len(clean_prompts), batch):
            ids = encode(tok, clean_prompts[lo:lo + batch])
            tg = targets[lo:lo + batch]
            for l in range(n_layers):
                for kind in ("layer", "pca9", "helix"):
                    v = torch.tensor(np.stack([patch_value(values[l], kind, a2)
                                               for a2 in corrupt_a[lo:lo + batch]]),
                                     dtype=torch.float32)

                    def hook(_m, args, kwargs, v=v, at=values[l]["at"]):
                        if args:
                            h = args[0].clone()
                            h[:, at] = v
                            return (h,) + tuple(args[1:]), kwargs
                        h = kwargs["hidden_states"].clone()
                        h[:, at] = v
                        kwargs["hidden_states"] = h
                        return args, kwargs
                    handle = blocks(model)[l].register_forward_pre_hook(hook, with_kwargs=True)
                    logits = model(input_ids=ids).logits[:, -1]
                    handle.remove()
                    checksum += float(logits.gather(1, tg[:, None]).sum())
    return time.perf_counter() - start, checksum


def grad(model, tok, run, batch):
    probs = problems(run)
    pr = pairs(run, "last")
    by_id = {pid: i for i, pid in enumerate(probs["prompt_id"])}
    prompts = [probs["prompt"][by_id[i]] for i in pr["clean_prompt_id"]]
    answers = torch.tensor([probs["answer_token"][by_id[i]] for i in pr["clean_prompt_id"]])
    acts = [blk.mlp.act for blk in blocks(model)]
    n_layers = len(acts)
    total = None
    start = time.perf_counter()
    for lo in range(0, len(prompts), batch):
        ids = encode(tok, prompts[lo:lo + batch])
        saved = [None] * n_layers

        def keep(l):
            def fn(_m, _i, out):
                out.retain_grad()
                saved[l] = out
            return fn
        handles = [a.register_forward_hook(keep(l)) for l, a in enumerate(acts)]
        model.zero_grad(set_to_none=True)
        logits = model(input_ids=ids).logits[:, -1]
        logits.gather(1, answers[lo:lo + batch, None]).sum().backward()
        for h in handles:
            h.remove()
        g = torch.stack([s.grad[:, -1] for s in saved], 1).abs().sum(0)  # (layers, d_mlp)
        total = g if total is None else total + g
    elapsed = time.perf_counter() - start
    return elapsed, float(total.sum()) / len(prompts)


def attribution(model, tok, run, batch):
    probs = problems(run)
    pr = pairs(run, "last")
    by_id = {pid: i for i, pid in enumerate(probs["prompt_id"])}
    clean = [probs["prompt"][by_id[i]] for i in pr["clean_prompt_id"]]
    corrupt = [probs["prompt"][by_id[i]] for i in pr["corrupt_prompt_id"]]
    answers = torch.tensor([probs["answer_token"][by_id[i]] for i in pr["clean_prompt_id"]])
    acts = [blk.mlp.act for blk in blocks(model)]
    total = None
    start = time.perf_counter()
    for lo in range(0, len(clean), batch):
        saved = [None] * len(acts)

        def keep(l, grad):
            def fn(_m, _i, out):
                if grad:
                    out.retain_grad()
                saved[l] = out
            return fn
        handles = [a.register_forward_hook(keep(l, False)) for l, a in enumerate(acts)]
        with torch.no_grad():
            model(input_ids=encode(tok, clean[lo:lo + batch]))
        for h in handles:
            h.remove()
        clean_acts = torch.stack([s[:, -1] for s in saved], 1)
        handles = [a.register_forward_hook(keep(l, True)) for l, a in enumerate(acts)]
        model.zero_grad(set_to_none=True)
        logits = model(input_ids=encode(tok, corrupt[lo:lo + batch])).logits[:, -1]
        logits.gather(1, answers[lo:lo + batch, None]).sum().backward()
        for h in handles:
            h.remove()
        grads = torch.stack([s.grad[:, -1] for s in saved], 1)
        corrupt_acts = torch.stack([s[:, -1].detach() for s in saved], 1)
        score = (grads * (clean_acts - corrupt_acts)).sum(0)  # (layers, d_mlp)
        total = score if total is None else total + score
    elapsed = time.perf_counter() - start
    return elapsed, float(total.abs().sum())


def neuron_fits_sgd(run, n_neurons, periods=(2.0, 5.0, 10.0, 100.0), epochs=2500):
    t = pq.read_table(run / "neurons" / "preactivations.parquet").to_pydict()
    n_a, n_b, a0, b0 = t["n_a"][0], t["n_b"][0], t["a_min"][0], t["b_min"][0]
    a = torch.arange(n_a).repeat_interleave(n_b).double() + a0
    b = torch.arange(n_b).repeat(n_a).double() + b0
    ts = [a, b, a + b]
    n = min(n_neurons, len(t["preactivation"]))
    start = time.perf_counter()
    losses = []
    for k in range(n):
        y = torch.tensor(t["preactivation"][k], dtype=torch.float64)
        amp = torch.zeros(3, len(periods), dtype=torch.float64, requires_grad=True)
        shift = torch.zeros(3, len(periods), dtype=torch.float64, requires_grad=True)
        slope = torch.zeros(3, dtype=torch.float64, requires_grad=True)
        bias = torch.zeros(1, dtype=torch.float64, requires_grad=True)
        opt = torch.optim.Adam([amp, shift, slope, bias], lr=0.01)
        for _ in range(epochs):
            opt.zero_grad()
            pred = bias + sum(slope[i] * ts[i] / 100 for i in range(3))
            for i in range(3):
                for j, T in enumerate(periods):
                    pred = pred + amp[i, j] * torch.cos(2 * torch.pi * (ts[i] - shift[i, j]) / T)
            loss = ((pred - y) ** 2).mean()
            loss.backward()
            opt.step()
        losses.append(float(loss))
    return time.perf_counter() - start, n, sum(losses) / n


def matmul():
    a = torch.randn(2048, 2048)
    b = torch.randn(2048, 2048)
    a @ b
    reps = 10
    start = time.perf_counter()
    for _ in range(reps):
        a @ b
    s = time.perf_counter() - start
    return s, 2 * 2048 ** 3 * reps / s / 1e9


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("work")
    ap.add_argument("--model")
    ap.add_argument("--run", type=pathlib.Path)
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--out", type=pathlib.Path)
    ap.add_argument("--pairs", type=int, help="patch only the first N pairs")
    ap.add_argument("--neurons", type=int, default=3, help="neuron-fits-sgd: neurons fitted")
    a = ap.parse_args()
    if a.work == "matmul":
        s, gflops = matmul()
        print(json.dumps({"work_s": s, "gflops": gflops, "threads": torch.get_num_threads()}))
        return
    if a.work == "neuron-fits-sgd":
        s, n, loss = neuron_fits_sgd(a.run, a.neurons)
        print(json.dumps({"work_s": s, "neurons": n, "mean_final_mse": loss,
                          "threads": torch.get_num_threads()}))
        return
    model, tok = load(a.model)
    if a.work in ("extract", "extract-nnsight"):
        s, check = extract(model, tok, a.run, a.batch, a.out, nnsight=a.work == "extract-nnsight")
    elif a.work in ("patch", "patch-nnsight"):
        s, check = patch(model, tok, a.run, a.batch, nnsight=a.work == "patch-nnsight",
                         n_pairs=a.pairs)
    elif a.work == "grad":
        s, check = grad(model, tok, a.run, a.batch)
    elif a.work == "attribution":
        s, check = attribution(model, tok, a.run, a.batch)
    else:
        sys.exit(f"unknown work {a.work}")
    print(json.dumps({"work_s": s, "checksum": check, "threads": torch.get_num_threads()}))


if __name__ == "__main__":
    main()
