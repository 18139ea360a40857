#!/usr/bin/env python3
"""Reads every table of a helixlab run with pyarrow, polars and DuckDB, checks they agree
with each other and carry their provenance, then runs the README's query snippets against
the run (with `data/runs/toy-adder` replaced by the run directory).

    python tools/check_tables.py data/runs/check README.md

Exits non-zero on the first failure; prints 'N passed, 0 failed' at the end.
"""
import json
import pathlib
import re
import sys

import duckdb
import polars as pl
import pyarrow.dataset as ds
import pyarrow.parquet as pq

passed = 0


def check(cond, what):
    global passed
    if not cond:
        print(f"FAILED: {what}")
        print(f"{passed} passed, 1 failed")
        sys.exit(1)
    passed += 1


def main(run, readme):
    run = pathlib.Path(run)
    files = sorted(p for p in run.rglob("*.parquet") if not p.name.startswith("."))
    check(len(files) >= 2, f"tables under {run}: {[str(f) for f in files]}")
    for f in files:
        t = pq.read_table(f)
        meta = pq.read_metadata(f).metadata or {}
        manifest = json.loads(meta[b"helixlab.manifest"])
        stage = manifest["stage"]
        check(stage in ("accuracy", "extract", "spectral", "fit", "clock", "pairs", "patch",
                        "patch-last", "components", "neurons"),
              f"{f}: manifest names its stage")
        if stage in ("accuracy", "extract", "patch", "patch-last", "components", "neurons"):
            check(manifest["model"]["architecture"] == "gpt2", f"{f}: manifest names the model")
        else:
            check(len(manifest["inputs"]) > 0, f"{f}: manifest lists the partitions it read")
        df = pl.read_parquet(f)
        check(df.height == t.num_rows > 0, f"{f}: polars and pyarrow read {t.num_rows} rows")
        n = duckdb.sql(f"SELECT count(*) FROM '{f}'").fetchall()[0][0]
        check(n == t.num_rows, f"{f}: DuckDB reads {n} rows")

    problems = pl.read_parquet(run / "problems.parquet")
    check(problems.height == 10_000, "problems.parquet has the 10,000 problems")
    check(problems["correct"].mean() > 0.95, "the toy adder is mostly right")
    check(problems["answer_tokens"].list.len().max() == 1 and (problems["token_layout"] == "1,1").all(),
          "one-token numbers and answers: every answer_tokens list has one token, every layout is 1,1")
    check((problems["answer_logprob"] <= 0).all(), "answer_logprob is a log-probability")

    acts = pl.scan_parquet(str(run / "activations" / "**" / "*.parquet"), hive_partitioning=True)
    sites = acts.select(pl.col("site").unique()).collect()["site"].to_list()
    check(sorted(sites) == ["hook_resid_post", "hook_resid_pre"], f"hive sites {sites}")
    a_rows = acts.filter((pl.col("site") == "hook_resid_pre") & (pl.col("layer") == 0)
                         & (pl.col("position_name") == "a")).collect()
    x = a_rows["activation"].to_numpy()
    check(x.shape == (10_000, 128), f"a-token matrix shape {x.shape}")
    dataset = ds.dataset(run / "activations", format="parquet", partitioning="hive")
    check(dataset.count_rows() == 2 * 2 * 3 * 10_000, "pyarrow dataset sees every partition")

    # The analysis tables: tidy rows with list and vector columns numpy can take.
    fits = pl.read_parquet(run / "fit" / "fits.parquet")
    check({"helix", "helix_discovered", "pca9", "helix_shuffled"} <= set(fits["variant"]),
          "fits.parquet has the helix, discovered, PCA and shuffled variants")
    coef = pl.read_parquet(run / "fit" / "coefficients.parquet").filter(
        (pl.col("variant") == "helix") & (pl.col("layer") == 0) & (pl.col("site") == "hook_resid_pre"))
    c = coef["coefficient"].to_numpy()
    check(c.shape == (11, 128), f"helix C plus the mean as a matrix {c.shape}")
    periods = duckdb.sql(f"SELECT period FROM '{run}/spectral/periods.parquet' "
                         "WHERE site = 'hook_resid_pre' AND layer = 0").fetchall()
    check(any(abs(p[0] - 10) < 0.05 for p in periods), f"DuckDB reads period 10 ({periods})")

    patching = pl.read_parquet(run / "patch" / "patching.parquet")
    layer0 = patching.filter((pl.col("site") == "hook_resid_pre") & (pl.col("layer") == 0)
                             & (pl.col("kind") == "layer"))
    check(layer0.height == 100 and layer0["correct"].mean() > 0.9,
          "layer patching at the a token before layer 0 moves the answer")

    # Last token and components: one tidy row per pair x component x effect, nullable heads.
    last = pl.read_parquet(run / "patch" / "last_token_summary.parquet")
    check({"layer", "pca9", "pca27", "helix(a+b)", "helix(a,b)", "helix(a,b,a+b)"}
          <= set(last["effect"]), "last_token_summary has every last-token patch")
    comps = pl.read_parquet(run / "patch" / "components.parquet")
    heads = comps.filter((pl.col("component") == "head") & (pl.col("effect") == "total"))
    check(heads["head"].null_count() == 0 and heads.height == 8 * 100,
          "every head's total effect for the 100 pairs")
    check(comps.filter(pl.col("component") == "mlp")["head"].null_count()
          == comps.filter(pl.col("component") == "mlp").height, "MLP rows have no head")
    roles = duckdb.sql(f"SELECT layer FROM '{run}/patch/component_roles.parquet' "
                       "WHERE role = 'circuit'").fetchall()
    check(len(roles) >= 1, f"DuckDB reads the MLP circuit ({roles})")

    # Neurons: every neuron attributed; the top neurons' grids as numpy matrices.
    attribution = pl.read_parquet(run / "neurons" / "attribution.parquet")
    check(attribution.height == 2 * 512 and attribution["rank"].min() == 1,
          "attribution.parquet ranks every neuron of both layers")
    pre = pl.read_parquet(run / "neurons" / "preactivations.parquet")
    grid = pre["preactivation"].to_numpy()
    check(grid.shape == (200, 10_000), f"preactivation grids as a matrix {grid.shape}")
    kept = duckdb.sql(f"SELECT accuracy, logit_diff FROM '{run}/neurons/sparsity.parquet' "
                      "WHERE kind = 'real' ORDER BY kept DESC LIMIT 1").fetchall()
    check(kept == [(1.0, 0.0)], f"every neuron kept changes nothing ({kept})")

    text = pathlib.Path(readme).read_text()
    section = text.split("## Query the outputs", 1)[1].split("\n## ", 1)[0]
    snippets = re.findall(r"```python\n(.*?)```", section, re.S)
    check(len(snippets) >= 3, f"README has query snippets ({len(snippets)})")
    for i, code in enumerate(snippets):
        code = code.replace("data/runs/toy-adder", str(run))
        try:
            exec(compile(code, f"README snippet {i + 1}", "exec"), {})
        except Exception as e:  # noqa: BLE001 - report which snippet broke
            check(False, f"README snippet {i + 1} raised {e!r}")
        check(True, f"README snippet {i + 1} ran")
    print(f"{passed} passed, 0 failed")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
