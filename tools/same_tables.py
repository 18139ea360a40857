"""Whether two runs of a study hold the same tables: every Parquet table (and activation
partition) of RUN_A is in RUN_B with the same schema and the same rows, value for value.
Manifests are not compared (they hold times and command lines).

    python tools/same_tables.py RUN_A RUN_B

Used to check that a refactor leaves the default study's results unchanged:
    make RUN=/tmp/before ... (old binary), make RUN=/tmp/after ... (new), then this.
Exits 1 and names the first differing table and column otherwise.
"""

import math
import pathlib
import sys

import pyarrow.parquet as pq


def tables(run: pathlib.Path) -> dict:
    return {
        p.relative_to(run).as_posix(): p
        for p in sorted(run.rglob("*.parquet"))
        if not p.name.startswith(".")
    }


def same_values(u, v):
    """Equal, with NaN equal to NaN (a normalised effect is NaN where two runs tie)."""
    if isinstance(u, float) and isinstance(v, float) and math.isnan(u) and math.isnan(v):
        return True
    if isinstance(u, list) and isinstance(v, list):
        return len(u) == len(v) and all(same_values(a, b) for a, b in zip(u, v))
    return u == v


def main() -> int:
    a, b = (pathlib.Path(x) for x in sys.argv[1:3])
    ta, tb = tables(a), tables(b)
    if set(ta) != set(tb):
        print(f"different tables: only in {a}: {sorted(set(ta) - set(tb))}, "
              f"only in {b}: {sorted(set(tb) - set(ta))}")
        return 1
    for name in ta:
        x, y = pq.read_table(ta[name]), pq.read_table(tb[name])
        if x.schema.remove_metadata() != y.schema.remove_metadata():
            print(f"{name}: schemas differ:\n{x.schema}\n{y.schema}")
            return 1
        for col in x.column_names:
            if not (x.column(col).equals(y.column(col))
                    or same_values(x.column(col).to_pylist(), y.column(col).to_pylist())):
                print(f"{name}: column {col} differs")
                return 1
        print(f"same: {name} ({x.num_rows} rows)")
    print(f"{len(ta)} tables identical")
    return 0


if __name__ == "__main__":
    sys.exit(main())
