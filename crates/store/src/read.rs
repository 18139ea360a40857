//! Readers, on polars: lazy scans of any table and the matrix of one (site, layer, position)
//! with its number labels, the form every analysis stage starts from.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use polars::prelude::*;

use crate::activations::{partition_dir, partition_file};
use crate::manifest::Manifest;
use crate::{Result, StoreError};

fn pl(path: &Path) -> impl FnOnce(PolarsError) -> StoreError + '_ {
    move |source| StoreError::Polars {
        path: path.to_path_buf(),
        source,
    }
}

/// A lazy scan of one Parquet file, or of a directory of hive partitions
/// (`activations/` gives `site` and `layer` columns).
pub fn scan(path: &Path) -> Result<LazyFrame> {
    let args = ScanArgsParquet {
        hive_options: HiveOptions {
            enabled: Some(path.is_dir()),
            ..Default::default()
        },
        ..Default::default()
    };
    let p = if path.is_dir() {
        path.join("**/*.parquet")
    } else {
        path.to_path_buf()
    };
    LazyFrame::scan_parquet(PlRefPath::new(p.to_string_lossy().as_ref()), args).map_err(pl(path))
}

/// problems.parquet of a run, checked complete.
pub fn problems(run_dir: &Path) -> Result<DataFrame> {
    let run = crate::run::RunLayout::new(run_dir);
    let path = run.path(crate::run::tables::PROBLEMS);
    if Manifest::read_for(&path).is_none() {
        return Err(run.missing(crate::run::tables::PROBLEMS));
    }
    scan(&path)?.collect().map_err(pl(&path))
}

/// Activations of one (site, layer, position) as a row-major matrix with labels.
#[derive(Clone, Debug)]
pub struct ActivationMatrix {
    /// Prompt ids, one per row.
    pub prompt_id: Vec<u32>,
    /// First operand per row.
    pub a: Vec<i64>,
    /// Second operand per row.
    pub b: Vec<Option<i64>>,
    /// Answer per row.
    pub answer: Vec<Option<i64>>,
    /// Width.
    pub d: usize,
    /// `rows x d` values.
    pub values: Vec<f32>,
}

impl ActivationMatrix {
    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.prompt_id.len()
    }

    /// Row `i`.
    pub fn row(&self, i: usize) -> &[f32] {
        &self.values[i * self.d..(i + 1) * self.d]
    }
}

/// Loads `site`/`layer` at the named position, ordered by prompt id.
pub fn activations(
    run_dir: &Path,
    site: &str,
    layer: usize,
    position: &str,
) -> Result<ActivationMatrix> {
    let dir = partition_dir(run_dir, site, layer);
    if Manifest::read_for(&dir).is_none() {
        return Err(StoreError::Missing {
            path: dir,
            hint: format!("run `helixlab extract` with site {site} and layer {layer}"),
        });
    }
    let file: PathBuf = partition_file(&dir);
    let df = scan(&file)?
        .filter(col("position_name").eq(lit(position)))
        .sort(["prompt_id"], Default::default())
        .collect()
        .map_err(pl(&file))?;
    if df.height() == 0 {
        return Err(StoreError::Format {
            path: file,
            message: format!("no rows at position `{position}`"),
        });
    }
    let err = pl(&file);
    let get = |name: &str| df.column(name).map(|c| c.as_materialized_series().clone());
    let out = (|| -> PolarsResult<ActivationMatrix> {
        let prompt_id: Vec<u32> = get("prompt_id")?.u32()?.into_no_null_iter().collect();
        let a: Vec<i64> = get("a")?.i64()?.into_no_null_iter().collect();
        let b: Vec<Option<i64>> = get("b")?.i64()?.iter().collect();
        let answer: Vec<Option<i64>> = get("answer")?.i64()?.iter().collect();
        let act = get("activation")?;
        let arr = act.array()?;
        let d = arr.width();
        let inner = arr.get_inner();
        let values: Vec<f32> = inner.f32()?.into_no_null_iter().collect();
        Ok(ActivationMatrix {
            prompt_id,
            a,
            b,
            answer,
            d,
            values,
        })
    })();
    out.map_err(err)
}

/// Activations averaged per number: one row per label value, ascending.
#[derive(Clone, Debug)]
pub struct NumberRows {
    /// The numbers, ascending.
    pub numbers: Vec<i64>,
    /// How many activation rows each number averages.
    pub counts: Vec<u32>,
    /// Width.
    pub d: usize,
    /// `numbers.len() x d` means, row-major.
    pub values: Vec<f64>,
}

impl ActivationMatrix {
    /// Averages rows by the label `column` (`a`, `b` or `answer`), keeping labels in
    /// `range` (inclusive). Rows without the label are skipped.
    pub fn mean_by(
        &self,
        column: &str,
        range: [i64; 2],
    ) -> std::result::Result<NumberRows, String> {
        let label = |i: usize| -> Option<i64> {
            match column {
                "a" => Some(self.a[i]),
                "b" => self.b[i],
                "answer" => self.answer[i],
                _ => None,
            }
        };
        if !matches!(column, "a" | "b" | "answer") {
            return Err(format!("unknown label column `{column}`"));
        }
        let mut sums: std::collections::BTreeMap<i64, (u32, Vec<f64>)> = Default::default();
        for i in 0..self.rows() {
            let Some(x) = label(i).filter(|x| (range[0]..=range[1]).contains(x)) else {
                continue;
            };
            let e = sums.entry(x).or_insert_with(|| (0, vec![0.0; self.d]));
            e.0 += 1;
            for (s, &v) in e.1.iter_mut().zip(self.row(i)) {
                *s += v as f64;
            }
        }
        let mut out = NumberRows {
            numbers: Vec::with_capacity(sums.len()),
            counts: Vec::with_capacity(sums.len()),
            d: self.d,
            values: Vec::with_capacity(sums.len() * self.d),
        };
        for (x, (n, s)) in sums {
            out.numbers.push(x);
            out.counts.push(n);
            out.values.extend(s.iter().map(|v| v / n as f64));
        }
        Ok(out)
    }
}

/// The complete (manifested) layers extracted for `site` in a run, ascending, with the sha256
/// of each partition's manifest (what a downstream stage records as its input).
pub fn extracted_layers(run_dir: &Path, site: &str) -> Result<Vec<(usize, PathBuf, String)>> {
    let dir = run_dir.join("activations").join(format!("site={site}"));
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(_) => {
            return Err(StoreError::Missing {
                path: dir,
                hint: format!("run `helixlab extract` with site {site}"),
            })
        }
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        let Some(layer) = name.strip_prefix("layer=").and_then(|l| l.parse().ok()) else {
            continue;
        };
        let part = e.path();
        // Every partition present must be complete and intact (the path names its site and
        // layer): a reader that skipped one would write a complete-looking result from a
        // subset of the layers.
        if Manifest::verified_for(&part, "rerun `helixlab extract`")?.is_none() {
            return Err(StoreError::Missing {
                path: part,
                hint: "the partition has no manifest: an extraction stopped before finishing \
                       it; rerun `helixlab extract`"
                    .into(),
            });
        }
        let sha = crate::manifest::sha256_file(&Manifest::path_for(&part))?;
        out.push((layer, part, sha));
    }
    out.sort_by_key(|x| x.0);
    if out.is_empty() {
        return Err(StoreError::Missing {
            path: dir,
            hint: format!("run `helixlab extract` with site {site}"),
        });
    }
    Ok(out)
}

/// The offset from the end (-1 = last token) of the named position in every prompt of a
/// partition, by prompt id (numbers of several tokens move the positions after them).
pub fn position_offsets(
    run_dir: &Path,
    site: &str,
    layer: usize,
    position: &str,
) -> Result<BTreeMap<u32, i64>> {
    let dir = partition_dir(run_dir, site, layer);
    let file = partition_file(&dir);
    let df = scan(&file)?
        .filter(col("position_name").eq(lit(position)))
        .select([col("prompt_id"), col("position")])
        .collect()
        .map_err(pl(&file))?;
    let ids = df
        .column("prompt_id")
        .and_then(|c| c.u32().cloned())
        .map_err(pl(&file))?;
    let pos = df
        .column("position")
        .and_then(|c| c.i32().cloned())
        .map_err(pl(&file))?;
    let out: BTreeMap<u32, i64> = ids
        .iter()
        .zip(pos.iter())
        .filter_map(|(i, p)| Some((i?, i64::from(p?))))
        .collect();
    if out.is_empty() {
        return Err(StoreError::Format {
            path: file,
            message: format!("no rows at position `{position}`"),
        });
    }
    Ok(out)
}

/// The offset from the end (-1 = last token) of the named position in a partition.
pub fn position_offset(run_dir: &Path, site: &str, layer: usize, position: &str) -> Result<i64> {
    let dir = partition_dir(run_dir, site, layer);
    let file = partition_file(&dir);
    let df = scan(&file)?
        .filter(col("position_name").eq(lit(position)))
        .select([
            col("position").min().alias("lo"),
            col("position").max().alias("hi"),
        ])
        .collect()
        .map_err(pl(&file))?;
    let get = |c: &str| {
        df.column(c)
            .and_then(|c| c.i32().map(|c| c.get(0)))
            .map_err(pl(&file))
    };
    match (get("lo")?, get("hi")?) {
        (Some(lo), Some(hi)) if lo == hi => Ok(i64::from(lo)),
        (Some(lo), Some(hi)) => Err(StoreError::Format {
            path: file,
            message: format!(
                "position `{position}` is at offsets {lo}..={hi} from the end in different \
                 prompts (numbers of several tokens): a stage that patches one offset for the \
                 whole task cannot use it"
            ),
        }),
        _ => Err(StoreError::Format {
            path: file,
            message: format!("no rows at position `{position}`"),
        }),
    }
}

/// Every complete (site, layer) partition of `sites`, in site then layer order, and the
/// sha256 of each one's manifest keyed by its path: the work list and the recorded inputs
/// of a stage that reads activations.
pub type Partitions = (
    Vec<(String, usize)>,
    std::collections::BTreeMap<String, String>,
);

/// See [`Partitions`].
///
/// Every layer the study extracts must be there: `layers` lists them, or `None` ("all") means
/// every layer of the model (the count its partitions' manifests record). A reader never works
/// on a subset of what the settings ask for.
pub fn extracted_partitions<'a>(
    run_dir: &Path,
    sites: impl IntoIterator<Item = &'a str>,
    layers: Option<&[usize]>,
) -> Result<Partitions> {
    let mut work = Vec::new();
    let mut inputs = std::collections::BTreeMap::new();
    for site in sites {
        let found = extracted_layers(run_dir, site)?;
        let asked: Vec<usize> = match layers {
            Some(l) => l.to_vec(),
            None => found
                .first()
                .and_then(|(_, part, _)| Manifest::read_for(part))
                .and_then(|m| m.settings.get("n_layers").and_then(|n| n.as_u64()))
                .map_or_else(Vec::new, |n| (0..n as usize).collect()),
        };
        if let Some(l) = asked.iter().find(|l| !found.iter().any(|f| f.0 == **l)) {
            return Err(StoreError::Missing {
                path: partition_dir(run_dir, site, *l),
                hint: format!(
                    "the study extracts layer {l} of site {site}; run `helixlab extract`"
                ),
            });
        }
        for (layer, part, sha) in found {
            inputs.insert(crate::run::run_key(run_dir, &part), sha);
            work.push((site.to_string(), layer));
        }
    }
    Ok((work, inputs))
}
