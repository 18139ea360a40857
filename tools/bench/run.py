"""`make bench`: helixlab against the paper's stack (PyTorch + HF transformers + nnsight) on the
same checkpoints, prompts and pairs, on this machine, in one run.

    python tools/bench/run.py --helixlab target/release/helixlab --out data/bench [--reps 3]

For each checkpoint (the toy adder; random-weight GPT-2-small- and Pythia-160m-shaped ones
made by make_checkpoints.py, on the toy's `a+b=` prompts with its word-level tokenizer, and
the same weights with the real GPT-2 BPE on the paper's `Output ONLY a number.\n{a}+{b}=`,
10 tokens of which the first 6 are the same in every prompt; nnsight and the neuron fits are
run on the toy prompts only) it writes a study file, runs helixlab's setup stages once
(accuracy, extract, spectral, fit, pairs: untimed), then times, each in its own process:
  extract   resid_pre of every layer at 3 positions of every prompt, written to Parquet
            (helixlab twice: sharing the prompts' common prefixes, its default, and with
            share_prefixes = false, every prompt run whole as the Python side does)
  patch     the a-token sweep: every layer x {layer, pca9, helix} x 100 pairs
  grad      d(clean answer logit)/d(mlp.hook_post) at the last token, all neurons, 100 prompts
  attribution  attribution patching over every neuron, 100 last-token pairs (the first step of
            `helixlab neurons`, timed inside the stage: neurons/timing.json)
  neuron fits  the top 10 neurons' preactivations over the grid fitted in a, b, a+b: helixlab's
            closed form (a step of `helixlab neurons`) against the original's recipe (2,500
            epochs of gradient descent per neuron) on 3 neurons, compared per neuron
on helixlab (`extract`, `patch`, `neuron-grads`, `neurons`; on the toy also `patch` with one full forward
per pair patch) and on the Python side (tools/bench/torch_bench.py: batched HF + hooks, and
nnsight the way the paper's code does it: one trace per batch, one trace per patch; on the
12-layer checkpoints the trace-per-patch sweep runs the first 20 pairs, and ratios of patch
sweeps are per patch). Median over --reps runs, run in rounds: each round runs
every tool of a comparison once (helixlab, then the Python side), so drift of the machine
within the hour falls on both alike; the table gives each row's fastest and slowest run. The
nnsight trace-per-patch sweeps and the SGD neuron fits, references far slower than the rest,
run once. Peak RSS of each measured
process from wait4 in a small spawner (see SPAWN). GFLOP/s from the model FLOPs the work needs (2 x multiply-adds of the blocks it must
run; x3 for forward + backward; whole prompts for every row, so a run that shares prefixes
does fewer), against the f32 matmul peak torch measures in the same run.

Writes <out>/bench.md and <out>/bench.parquet.
"""

import argparse
import json
import os
import pathlib
import re
import statistics
import subprocess
import sys
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

PY = sys.executable
HERE = pathlib.Path(__file__).parent

# The toy's prompts, and the paper's (GPT-J's prompt in the paper's code; TOML escapes).
TOY_PROMPT = "{a}+{b}="
PAPER_PROMPT = "Output ONLY a number.\\n{a}+{b}="

MODELS = [
    # name, directory, a range, b range (prompts = their product), prompt template
    ("toy-adder", "data/models/toy-adder", [0, 99], [0, 99], TOY_PROMPT),
    ("gpt2-small-random", "data/bench/models/gpt2-small-random", [0, 99], [0, 9], TOY_PROMPT),
    ("pythia-160m-random", "data/bench/models/pythia-160m-random", [0, 99], [0, 9], TOY_PROMPT),
    # The same weights with the real GPT-2 BPE, on the paper's prompts (10 tokens, the first 6
    # shared by every prompt).
    ("gpt2-small-random-bpe", "data/bench/models/gpt2-small-random-bpe", [0, 99], [0, 9],
     PAPER_PROMPT),
    ("pythia-160m-random-bpe", "data/bench/models/pythia-160m-random-bpe", [0, 99], [0, 9],
     PAPER_PROMPT),
]

STUDY = """# Written by tools/bench/run.py.
name = "bench-{name}"

[model]
dir = "{model}"

[task]
kind = "addition"
template = "{template}"
a = {a}
b = {b}

[extract]
sites = ["hook_resid_pre"]
layers = "all"
positions = ["a", "b", "last"]
batch_size = 100
share_prefixes = {share}

[analysis]
position = "a"
range = [0, 99]

[patch]
pairs = {pairs}
kinds = ["layer", "pca9", "helix"]
correct_only = false

[neurons]
top = 10
keep = [0, 64]

[output]
dir = "{run}"
"""


# Runs argv[2:] as a child of this small process and writes its exit code and peak RSS to
# argv[1]. Why not wait4 from the driver directly: Linux carries a process's peak RSS across
# exec, so a child forked from the driver (numpy and pyarrow loaded, tables read) starts with
# the driver's RSS as its floor. A child of a fresh `python -S` starts from ~10 MB.
SPAWN = """
import json, os, sys
pid = os.fork()
if pid == 0:
    os.execvp(sys.argv[2], sys.argv[2:])
_, status, usage = os.wait4(pid, 0)
with open(sys.argv[1], "w") as f:
    json.dump({"code": os.waitstatus_to_exitcode(status), "maxrss_kib": usage.ru_maxrss}, f)
"""


def run_measured(cmd, env=None):
    """Runs cmd; returns (stdout, wall seconds, peak RSS in MiB of that process alone)."""
    start = time.perf_counter()
    rss_file = "/tmp/helixlab-bench.rss"
    with open(os.devnull, "w") as devnull, open("/tmp/helixlab-bench.out", "w+") as out_f:
        p = subprocess.Popen([sys.executable, "-S", "-c", SPAWN, rss_file] + list(map(str, cmd)),
                             stdout=out_f, stderr=devnull, env={**os.environ, **(env or {})})
        p.wait()
        wall = time.perf_counter() - start
        out_f.seek(0)
        out = out_f.read()
    with open(rss_file) as f:
        child = json.load(f)
    if child["code"] != 0:
        # Rerun to show the error.
        r = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **(env or {})})
        sys.exit(f"{' '.join(map(str, cmd))} failed:\n{r.stderr[-3000:]}")
    return out, wall, child["maxrss_kib"] / 1024.0


def interleaved(measures, reps):
    """Runs every measurement once per round, round-robin, for `reps` rounds, and returns each
    one's runs. The machines this runs on drift by up to 1.5x within the hour, so the rows a
    ratio compares are measured side by side, not one after the other."""
    runs = [[] for _ in measures]
    for _ in range(reps):
        for k, measure in enumerate(measures):
            runs[k].append(measure())
    return runs


def rust_work_s(out):
    m = re.search(r" in ([0-9.]+) s", out)
    if not m:
        sys.exit(f"no timing in helixlab's output:\n{out}")
    return float(m.group(1))


def config(model_dir):
    c = json.loads((pathlib.Path(model_dir) / "config.json").read_text())
    n = c.get("n_layer") or c["num_hidden_layers"]
    d = c.get("n_embd") or c["hidden_size"]
    d_mlp = c.get("n_inner") or c.get("intermediate_size") or 4 * d
    return n, d, d_mlp, c["vocab_size"]


def flops(model_dir, work, prompts, seq_len):
    """Model FLOPs the work needs when every prompt runs whole (matmuls only; attention scores
    over 10 tokens are small): `prompts` whole prompts of `seq_len` tokens, or for the patch
    sweep `prompts` pair patches, each a whole forward to the last position's logits."""
    n, d, d_mlp, vocab = config(model_dir)
    per_token_block = 2 * (4 * d * d + 2 * d * d_mlp)
    tokens = seq_len * prompts
    if work == "patch":
        return tokens * per_token_block * n + prompts * 2 * d * vocab
    if work == "extract":
        # resid_pre of the last block needs the blocks before it only.
        return tokens * per_token_block * (n - 1)
    if work == "grad":
        fwd = tokens * per_token_block * n + prompts * 2 * d * vocab
        return 3 * fwd
    if work == "attribution":
        # The clean forward, and the corrupt forward + backward.
        fwd = tokens * per_token_block * n + prompts * 2 * d * vocab
        return 4 * fwd
    return None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--helixlab", default="target/release/helixlab")
    ap.add_argument("--out", type=pathlib.Path, default=pathlib.Path("data/bench"))
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--models", default=",".join(m[0] for m in MODELS))
    a = ap.parse_args()
    out = a.out
    out.mkdir(parents=True, exist_ok=True)
    hx = a.helixlab
    subprocess.run([PY, str(HERE / "make_checkpoints.py"), str(out / "models")], check=True)
    mm = json.loads(run_measured([PY, str(HERE / "torch_bench.py"), "matmul"])[0])
    peak = mm["gflops"]
    print(f"f32 matmul peak (torch, {mm['threads']} threads): {peak:.1f} GFLOP/s", flush=True)
    rows = []

    def record(model, model_dir, work, tool, runs, prompts, checksum=None, units=None,
               done=None):
        """done: the FLOPs the tool ran, where it skips work (None: unknown); a tool that runs
        every prompt whole runs the whole work."""
        work_s = statistics.median(r[0] for r in runs)
        wall_s = statistics.median(r[1] for r in runs)
        rss = max(r[2] for r in runs)
        f = flops(model_dir, work, units or prompts, seq_len) if work != "neuron fits" else None
        gf = f / work_s / 1e9 if f else None
        skips = tool == "helixlab"
        done = done if skips else f
        gf_done = done / work_s / 1e9 if done else None
        rows.append({
            "model": model, "prompt": prompt_label, "tokens": seq_len, "work": work,
            "tool": tool, "runs": len(runs),
            "work_s": work_s, "work_s_min": min(r[0] for r in runs),
            "work_s_max": max(r[0] for r in runs), "wall_s": wall_s, "peak_rss_mib": rss,
            "gflops": gf, "gflops_done": gf_done,
            "pct_of_matmul_peak": 100 * gf_done / peak if gf_done else None,
            "checksum": checksum, "units": units or prompts,
        })
        print(f"  {model:20} {work:8} {tool:36} {work_s:8.2f} s (wall {wall_s:6.2f} s, "
              f"{rss:7.0f} MiB)" + (f", {gf:6.1f} GFLOP/s" if gf else ""), flush=True)

    for name, model_dir, ra, rb, template in MODELS:
        if name not in a.models.split(","):
            continue
        paper = template == PAPER_PROMPT
        prompt_label = "paper" if paper else "a+b="
        model_dir = str(pathlib.Path(model_dir).resolve()) if name == "toy-adder" else \
            str((out / "models" / name).resolve())
        run = (out / "runs" / name).resolve()
        study = out / f"{name}.toml"
        study.write_text(STUDY.format(name=name, model=model_dir, a=ra, b=rb, run=run,
                                      share="true", pairs=100, template=template))
        # The same study running every prompt whole (no shared prefixes), in its own run.
        whole = out / f"{name}-whole.toml"
        whole.write_text(STUDY.format(name=f"{name}-whole", model=model_dir, a=ra, b=rb,
                                      run=run.with_name(f"{name}-whole"), share="false",
                                      pairs=100, template=template))
        prompts = (ra[1] - ra[0] + 1) * (rb[1] - rb[0] + 1)
        print(f"{name}: {prompts} prompts; setup (untimed)", flush=True)
        for stage in ["accuracy", "extract", "spectral", "fit", "pairs"]:
            run_measured([hx, stage, "--pipeline", str(study)])
        seq_len = prompt_tokens(run, model_dir)
        tb = [PY, str(HERE / "torch_bench.py")]
        common = ["--model", model_dir, "--run", str(run), "--batch", "100"]

        def rust(args, env=None, study=study):
            """One run of a helixlab stage: (work s, wall s, peak RSS MiB)."""
            o, wall, rss = run_measured([hx] + args + ["--pipeline", str(study), "--force"],
                                        env)
            return rust_work_s(o), wall, rss

        checks = {}

        def python(work, extra=()):
            """One run of torch_bench.py's `work`; its checksum is kept in checks[work]."""
            o, wall, rss = run_measured(tb + [work] + common + list(extra))
            j = json.loads(o.strip().splitlines()[-1])
            checks[work] = j.get("checksum")
            return j["work_s"], wall, rss

        def neurons():
            """One run of `helixlab neurons`: its timing.json, wall s, peak RSS MiB."""
            o, wall, rss = run_measured([hx, "neurons", "--pipeline", str(study), "--force"])
            return json.loads((run / "neurons" / "timing.json").read_text()), wall, rss

        pyout = ["--out", str(out / "py-extract" / name)]
        run_measured([hx, "accuracy", "--pipeline", str(whole)])
        ext = [lambda: rust(["extract"]), lambda: rust(["extract"], study=whole),
               lambda: python("extract", pyout)]
        if not paper:
            ext.append(lambda: python("extract-nnsight", pyout))
        r = interleaved(ext, a.reps)
        record(name, model_dir, "extract", "helixlab", r[0], prompts, extract_checksum(run))
        record(name, model_dir, "extract", "helixlab, whole prompts (share_prefixes = false)",
               r[1], prompts, extract_checksum(run.with_name(f"{name}-whole")))
        record(name, model_dir, "extract", "pytorch+hf, batched", r[2], prompts,
               checks["extract"])
        if not paper:
            record(name, model_dir, "extract", "nnsight, trace per batch (paper)", r[3], prompts,
                   checks["extract-nnsight"])

        n_layers = config(model_dir)[0]
        patches = 100 * n_layers * 3
        r = interleaved([lambda: rust(["patch"]), lambda: python("patch")], a.reps)
        record(name, model_dir, "patch", "helixlab", r[0], prompts, patch_checksum(run), patches,
               done=patch_flops_done(run, model_dir, patches))
        record(name, model_dir, "patch", "pytorch+hf, batched hooks", r[1], prompts,
               checks["patch"], patches)
        if n_layers <= 2:
            r = [rust(["patch"], {"HELIXLAB_PATCH_UNBATCHED": "1"})]
            record(name, model_dir, "patch", "helixlab, one full forward per patch", r, prompts,
                   patch_checksum(run), patches)
        few = 100 if n_layers <= 2 else 20
        if not paper:
            r = [python("patch-nnsight", ["--pairs", str(few)])]
            record(name, model_dir, "patch", "nnsight, trace per patch (paper)", r, prompts,
                   checks["patch-nnsight"] if few == 100 else None, few * n_layers * 3)

        r = interleaved([lambda: rust(["neuron-grads"]), lambda: python("grad")], a.reps)
        record(name, model_dir, "grad", "helixlab", r[0], 100, grad_checksum(run))
        record(name, model_dir, "grad", "pytorch+hf, batched hooks", r[1], 100, checks["grad"])

        steps, r = interleaved([neurons, lambda: python("attribution")], a.reps)
        record(name, model_dir, "attribution", "helixlab", [(t["attribution_s"], w, m)
               for t, w, m in steps], 100, attribution_checksum(run))
        record(name, model_dir, "attribution", "pytorch+hf, batched hooks", r, 100,
               checks["attribution"])
        if not paper:
            fitted = steps[0][0]["neurons_fitted"]
            record(name, model_dir, "neuron fits", "helixlab",
                   [(t["fits_s"], w, m) for t, w, m in steps], fitted, units=fitted)
            r = [python("neuron-fits-sgd", ["--neurons", "3"])]
            record(name, model_dir, "neuron fits", "pytorch, 2,500 Adam epochs per neuron "
                   "(the original's recipe)", r, 3, units=3)

    # Memory as the prompt count grows: extraction of 1,000 and 10,000 toy prompts.
    if "toy-adder" in a.models.split(","):
        for b_hi, label in [(9, 1000), (99, 10000)]:
            study = out / f"toy-{label}.toml"
            run = (out / "runs" / f"toy-{label}").resolve()
            study.write_text(STUDY.format(name=f"toy-{label}",
                                          model=pathlib.Path("data/models/toy-adder").resolve(),
                                          a=[0, 99], b=[0, b_hi], run=run, share="true",
                                          pairs=100, template=TOY_PROMPT))
            run_measured([hx, "accuracy", "--pipeline", str(study)])
            o, wall, rss = run_measured([hx, "extract", "--force", "--pipeline", str(study)])
            rows.append({"model": "toy-adder", "prompt": "a+b=", "tokens": 4, "work": f"extract {label} prompts",
                         "tool": "helixlab", "runs": 1, "work_s": rust_work_s(o),
                         "wall_s": wall, "peak_rss_mib": rss, "gflops": None, "gflops_done": None,
                         "pct_of_matmul_peak": None, "checksum": None, "units": label})
            print(f"  memory: helixlab extract of {label} toy prompts: {rss:.0f} MiB", flush=True)

        # Memory as the pairs grow: the neuron stage on 100 and 1,000 last-token pairs.
        for n_pairs in [100, 1000]:
            study = out / f"toy-neurons-{n_pairs}.toml"
            run = (out / "runs" / f"toy-neurons-{n_pairs}").resolve()
            study.write_text(STUDY.format(name=f"toy-neurons-{n_pairs}",
                                          model=pathlib.Path("data/models/toy-adder").resolve(),
                                          a=[0, 99], b=[0, 99], run=run, share="true",
                                          pairs=n_pairs, template=TOY_PROMPT))
            for stage in ["accuracy", "pairs"]:
                run_measured([hx, stage, "--pipeline", str(study)])
            o, wall, rss = run_measured([hx, "neurons", "--force", "--pipeline", str(study)])
            rows.append({"model": "toy-adder", "prompt": "a+b=", "tokens": 4, "work": f"neurons, {n_pairs} pairs",
                         "tool": "helixlab", "runs": 1, "work_s": rust_work_s(o),
                         "wall_s": wall, "peak_rss_mib": rss, "gflops": None, "gflops_done": None,
                         "pct_of_matmul_peak": None, "checksum": None, "units": n_pairs})
            print(f"  memory: helixlab neurons on {n_pairs} toy pairs: {rss:.0f} MiB", flush=True)

    write(out, rows, peak, mm["threads"])


def patch_flops_done(run, model_dir, patches):
    """The matmul FLOPs helixlab's patch sweep ran, from the token-blocks it counted
    (patch/timing.json), plus one unembedding per patch."""
    n, d, d_mlp, vocab = config(model_dir)
    timing = json.loads((run / "patch" / "timing.json").read_text())
    return (timing["token_blocks_run"] * 2 * (4 * d * d + 2 * d * d_mlp)
            + patches * 2 * d * vocab)


def prompt_tokens(run, model_dir):
    """Tokens per prompt of the run's problems, by HF's tokenizer of the checkpoint (the
    benchmark's prompts all have one length)."""
    prompts = pq.read_table(run / "problems.parquet", columns=["prompt"]).column(0).to_pylist()
    json_file = pathlib.Path(model_dir) / "tokenizer.json"
    if json_file.exists():
        from tokenizers import Tokenizer
        tok = Tokenizer.from_file(str(json_file))
        lengths = {len(tok.encode(p).ids) for p in prompts}
    else:
        from transformers import AutoTokenizer
        tok = AutoTokenizer.from_pretrained(model_dir)
        lengths = {len(ids) for ids in tok(prompts)["input_ids"]}
    if len(lengths) != 1:
        sys.exit(f"{run}: the benchmark's prompts must all have the same length, not {lengths}")
    return lengths.pop()


def extract_checksum(run):
    """Sum of |activation| over every layer and position, as torch_bench.py sums it."""
    total = 0.0
    for f in sorted((run / "activations" / "site=hook_resid_pre").glob("layer=*/*.parquet")):
        t = pq.read_table(f, columns=["activation"])
        x = np.asarray(t.column("activation").combine_chunks().flatten(), dtype=np.float32)
        total += float(np.abs(x).sum())
    return total


def patch_checksum(run):
    t = pq.read_table(run / "patch" / "patching.parquet", columns=["patched_logit"])
    return float(sum(t.column("patched_logit").to_pylist()))


def attribution_checksum(run):
    t = pq.read_table(run / "neurons" / "attribution.parquet", columns=["abs_score"])
    return float(sum(t.column("abs_score").to_pylist()))


def grad_checksum(run):
    t = pq.read_table(run / "neurons" / "gradients.parquet", columns=["grad_abs_mean"])
    return float(sum(t.column("grad_abs_mean").to_pylist()))


def write(out, rows, peak, threads):
    table = pa.Table.from_pylist(rows)
    pq.write_table(table, out / "bench.parquet")
    base = {(r["model"], r["work"]): r["work_s"] / r["units"]
            for r in rows if r["tool"] == "helixlab"}
    lines = [
        f"Measured by `make bench` on {os.cpu_count()} CPU cores; f32 matmul peak "
        f"{peak:.1f} GFLOP/s (torch, {threads} threads). Times are the work after the model "
        "is loaded, median of the runs, which ran in rounds (helixlab and Python side by side); x helixlab = that time / helixlab's, per patch for "
        "the patch sweeps (units: prompts, or pair patches). Prompts: `a+b=` (4 tokens, the "
        "toy's word-level tokenizer) or the paper's `Output ONLY a number.\\n{a}+{b}=` (10 "
        "GPT-2 BPE tokens). GFLOP/s is the matmul work of running every prompt whole (every "
        "patch a whole forward) per second, whatever a tool skips, so the tools compare; "
        "% of matmul peak is of the work the tool ran, where that is known (helixlab skips "
        "work it can prove unchanged: counted for the patch sweep, blank elsewhere).",
        "",
        "| model | prompts | work | tool | units | runs | time (s) | fastest-slowest (s) "
        "| x helixlab | peak RSS (MiB) | GFLOP/s | GFLOP/s run | % of matmul peak | checksum |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        ref = base.get((r["model"], r["work"]))
        ratio = f"{r['work_s'] / r['units'] / ref:.1f}" if ref else ""
        gf = f"{r['gflops']:.1f}" if r["gflops"] else ""
        gfd = f"{r['gflops_done']:.1f}" if r.get("gflops_done") else ""
        pct = f"{r['pct_of_matmul_peak']:.0f}" if r["pct_of_matmul_peak"] else ""
        ck = f"{r['checksum']:.6g}" if r["checksum"] is not None else ""
        spread = (f"{r['work_s_min']:.2f}-{r['work_s_max']:.2f}"
                  if r.get("work_s_min") is not None and r["runs"] > 1 else "")
        lines.append(f"| {r['model']} | {r['prompt']} | {r['work']} | {r['tool']} | "
                     f"{r['units']} | {r['runs']} | {r['work_s']:.2f} | {spread} | {ratio} | "
                     f"{r['peak_rss_mib']:.0f} | {gf} | {gfd} | {pct} | {ck} |")
    (out / "bench.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"wrote {out / 'bench.md'} and {out / 'bench.parquet'}")


if __name__ == "__main__":
    main()
