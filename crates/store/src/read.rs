//! Readers: lazy polars scans of any table; and, on the parquet crate without polars (whose
//! query planning and thread pools cost more than these reads), the matrix of one (site,
//! layer, position) with its number labels, the form every analysis stage starts from, the
//! problems and the drawn pairs every model stage starts from.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use arrow::array::{Array, Int64Array, StringArray, UInt32Array};
use arrow::record_batch::RecordBatch;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ProjectionMask;
use parquet::column::reader::ColumnReader;
use parquet::file::reader::{FileReader, SerializedFileReader};
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

/// The rows of `problems.parquet` whose prompt id passes `keep` (arrow underneath, see
/// [`crate::problems::read`]).
pub fn problem_rows(
    run_dir: &Path,
    keep: impl Fn(u32) -> bool,
) -> Result<Vec<crate::problems::ProblemRow>> {
    let run = crate::run::RunLayout::new(run_dir);
    let path = run.path(crate::run::tables::PROBLEMS);
    if Manifest::read_for(&path).is_none() {
        return Err(run.missing(crate::run::tables::PROBLEMS));
    }
    crate::problems::read_where(&path, keep)
}

/// The pairs of `patch/pairs.parquet` (at `path`) for `operand`, in table order: their pair
/// ids and clean and corrupt prompt ids. Read with arrow: every patching stage starts here,
/// and polars' query machinery took longer than the toy's gradient pass would read.
pub fn pair_ids(path: &Path, operand: &str) -> Result<(Vec<u32>, Vec<u32>, Vec<u32>)> {
    let fmt = |message: String| StoreError::Format {
        path: path.to_path_buf(),
        message,
    };
    let file = std::fs::File::open(path).map_err(crate::io(path))?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .and_then(|b| b.with_batch_size(65_536).build())
        .map_err(|e| fmt(e.to_string()))?;
    let (mut pid, mut clean, mut corrupt) = (Vec::new(), Vec::new(), Vec::new());
    for batch in reader {
        let batch = batch.map_err(|e| fmt(e.to_string()))?;
        let (op, p, c, x) = (|| {
            Ok::<_, String>((
                typed_column::<StringArray>(&batch, "operand", "a string")?,
                typed_column::<UInt32Array>(&batch, "pair_id", "u32")?,
                typed_column::<UInt32Array>(&batch, "clean_prompt_id", "u32")?,
                typed_column::<UInt32Array>(&batch, "corrupt_prompt_id", "u32")?,
            ))
        })()
        .map_err(fmt)?;
        if op.null_count() + p.null_count() + c.null_count() + x.null_count() > 0 {
            return Err(fmt("null in `operand` or an id column".into()));
        }
        for i in (0..batch.num_rows()).filter(|&i| op.value(i) == operand) {
            pid.push(p.value(i));
            clean.push(c.value(i));
            corrupt.push(x.value(i));
        }
    }
    Ok((pid, clean, corrupt))
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
///
/// Read with the parquet crate rather than polars: polars decodes a `FixedSizeList<Float32>`
/// column value by value through its nested-level machinery, which was 28 % of the toy
/// adder's whole patch stage (`perf`).
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
    let mut m = read_partition(&file, position)?;
    if m.rows() == 0 {
        return Err(StoreError::Format {
            path: file,
            message: format!("no rows at position `{position}`"),
        });
    }
    m.sort_by_prompt();
    Ok(m)
}

/// A column of `batch` as the arrow array type `T` (`what` names that type in the error).
pub(crate) fn typed_column<'a, T: 'static>(
    batch: &'a RecordBatch,
    name: &str,
    what: &str,
) -> std::result::Result<&'a T, String> {
    optional_column(batch, name, what)?.ok_or_else(|| format!("no column `{name}`"))
}

/// [`typed_column`], `None` where the table has no such column.
pub(crate) fn optional_column<'a, T: 'static>(
    batch: &'a RecordBatch,
    name: &str,
    what: &str,
) -> std::result::Result<Option<&'a T>, String> {
    match batch.column_by_name(name) {
        None => Ok(None),
        Some(c) => c
            .as_any()
            .downcast_ref::<T>()
            .map(Some)
            .ok_or_else(|| format!("column `{name}` is not {what}")),
    }
}

/// Records the activation column is read in: level and value buffers of this many rows are
/// reused, so they stay in cache and no memory is touched for the first time but the result.
const ACTIVATION_CHUNK_ROWS: usize = 512;

fn read_partition(file: &Path, position: &str) -> Result<ActivationMatrix> {
    let fmt = |message: String| StoreError::Format {
        path: file.to_path_buf(),
        message,
    };
    let open = || std::fs::File::open(file).map_err(crate::io(file));
    let builder =
        ParquetRecordBatchReaderBuilder::try_new(open()?).map_err(|e| fmt(e.to_string()))?;
    let schema = builder.parquet_schema();
    let leaf = |name: &str| {
        schema
            .columns()
            .iter()
            .position(|c| c.path().parts()[0] == name)
            .ok_or_else(|| fmt(format!("no column `{name}`")))
    };
    let labels = ["prompt_id", "a", "b", "answer", "position_name"]
        .iter()
        .map(|n| leaf(n))
        .collect::<Result<Vec<_>>>()?;
    let act_leaf = leaf("activation")?;
    let act_desc = schema.column(act_leaf);
    let rows = builder.metadata().file_metadata().num_rows().max(0) as usize;
    let labels = ProjectionMask::leaves(schema, labels);

    // The labels through arrow (small columns); which rows are at `position`.
    let reader = builder
        .with_projection(labels)
        .with_batch_size(rows.max(1))
        .build()
        .map_err(|e| fmt(e.to_string()))?;
    let mut m = ActivationMatrix {
        prompt_id: Vec::new(),
        a: Vec::new(),
        b: Vec::new(),
        answer: Vec::new(),
        d: 0,
        values: Vec::new(),
    };
    let mut keep = Vec::with_capacity(rows);
    for batch in reader {
        let batch = batch.map_err(|e| fmt(e.to_string()))?;
        let (pid, a, b, answer, names) = (|| {
            Ok::<_, String>((
                typed_column::<UInt32Array>(&batch, "prompt_id", "u32")?,
                typed_column::<Int64Array>(&batch, "a", "i64")?,
                typed_column::<Int64Array>(&batch, "b", "i64")?,
                typed_column::<Int64Array>(&batch, "answer", "i64")?,
                typed_column::<StringArray>(&batch, "position_name", "a string")?,
            ))
        })()
        .map_err(fmt)?;
        if pid.null_count() + a.null_count() + names.null_count() > 0 {
            return Err(fmt("null in `prompt_id`, `a` or `position_name`".into()));
        }
        let opt = |c: &Int64Array, i: usize| c.is_valid(i).then(|| c.value(i));
        for i in 0..batch.num_rows() {
            let here = names.value(i) == position;
            keep.push(here);
            if here {
                m.prompt_id.push(pid.value(i));
                m.a.push(a.value(i));
                m.b.push(opt(b, i));
                m.answer.push(opt(answer, i));
            }
        }
    }
    if keep.len() != rows {
        return Err(fmt(format!(
            "{} label rows for {rows} rows in the file",
            keep.len()
        )));
    }

    // The activations with parquet's column reader rather than arrow's list reader: arrow
    // grows a fresh buffer per batch for the values and both level streams, and touching that
    // memory for the first time was most of the toy adder's patch stage (`perf`: 38 % of it
    // zeroing pages), while the rows wanted here are a third of the file.
    let (max_def, max_rep) = (act_desc.max_def_level(), act_desc.max_rep_level());
    if max_rep != 1 {
        return Err(fmt("column `activation` is not a list of floats".into()));
    }
    let reader = SerializedFileReader::new(open()?).map_err(|e| fmt(e.to_string()))?;
    let (mut def, mut rep, mut vals) = (Vec::new(), Vec::new(), Vec::<f32>::new());
    let mut row = 0;
    for g in 0..reader.num_row_groups() {
        let group = reader.get_row_group(g).map_err(|e| fmt(e.to_string()))?;
        let ColumnReader::FloatColumnReader(mut col) = group
            .get_column_reader(act_leaf)
            .map_err(|e| fmt(e.to_string()))?
        else {
            return Err(fmt("column `activation` does not hold f32 values".into()));
        };
        let group_rows = group.metadata().num_rows().max(0) as usize;
        let mut done = 0;
        while done < group_rows {
            def.clear();
            rep.clear();
            vals.clear();
            let want = ACTIVATION_CHUNK_ROWS.min(group_rows - done);
            let (records, values, levels) = col
                .read_records(want, Some(&mut def), Some(&mut rep), &mut vals)
                .map_err(|e| fmt(e.to_string()))?;
            if records == 0 {
                return Err(fmt(format!("column `activation` ends at row {}", row)));
            }
            // Every row holds d values, none null: d levels per row, each at the deepest
            // definition, and d rows' worth of values.
            if values != levels || def.iter().any(|&l| l != max_def) || values % records != 0 {
                return Err(fmt(format!(
                    "column `activation` has null or ragged rows near row {row}"
                )));
            }
            let d = values / records;
            if m.d == 0 {
                m.d = d;
                m.values.reserve_exact(m.prompt_id.len() * d);
            } else if d != m.d {
                return Err(fmt(format!(
                    "column `activation` has rows of {d} and {} values",
                    m.d
                )));
            }
            for (k, v) in vals.chunks_exact(d).enumerate() {
                if keep[row + k] {
                    m.values.extend_from_slice(v);
                }
            }
            row += records;
            done += records;
        }
    }
    if row != rows || m.values.len() != m.prompt_id.len() * m.d {
        return Err(fmt(format!(
            "column `activation` has {row} rows, the file {rows}"
        )));
    }
    Ok(m)
}

impl ActivationMatrix {
    /// Puts rows in prompt-id order (the extraction writes them so already; a shard gather
    /// need not).
    fn sort_by_prompt(&mut self) {
        if self.prompt_id.windows(2).all(|w| w[0] <= w[1]) {
            return;
        }
        let mut order: Vec<usize> = (0..self.rows()).collect();
        order.sort_by_key(|&i| self.prompt_id[i]);
        let d = self.d;
        let values = order
            .iter()
            .flat_map(|&i| self.values[i * d..(i + 1) * d].iter().copied())
            .collect();
        self.prompt_id = order.iter().map(|&i| self.prompt_id[i]).collect();
        self.a = order.iter().map(|&i| self.a[i]).collect();
        self.b = order.iter().map(|&i| self.b[i]).collect();
        self.answer = order.iter().map(|&i| self.answer[i]).collect();
        self.values = values;
    }
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{ArrayRef, Float32Array, Int32Array, ListArray};
    use arrow::datatypes::{DataType, Field, Schema};
    use parquet::arrow::ArrowWriter;
    use parquet::file::properties::WriterProperties;

    use super::*;
    use crate::activations::ActivationRows;

    const D: usize = 5;
    const NAMES: [&str; 3] = ["a", "b", "last"];

    /// The value stored for (prompt, position k, component j): distinct everywhere.
    fn value(prompt: u32, k: usize, j: usize) -> f32 {
        prompt as f32 * 100.0 + k as f32 * 10.0 + j as f32
    }

    /// A partition of `prompts` prompts (ids in descending order, as a gather of shards may
    /// leave them) with three positions each, in row groups of 700 rows, more than one chunk
    /// of the reader's.
    fn partition(path: &Path, prompts: u32) {
        let mut r = ActivationRows::default();
        for p in (0..prompts).rev() {
            for (k, name) in NAMES.iter().enumerate() {
                r.prompt_id.push(p);
                r.a.push(p as i64 % 100);
                r.b.push((k != 0).then_some(p as i64 / 100));
                r.answer.push((p % 7 != 0).then_some(p as i64 + 1));
                r.position.push(k as i32 - 3);
                r.position_name.push(name.to_string());
                r.values.extend((0..D).map(|j| value(p, k, j)));
            }
        }
        let list = arrow::array::FixedSizeListArray::try_new(
            Arc::new(Field::new("item", DataType::Float32, false)),
            D as i32,
            Arc::new(Float32Array::from(r.values)),
            None,
        )
        .unwrap();
        let cols: Vec<ArrayRef> = vec![
            Arc::new(UInt32Array::from(r.prompt_id)),
            Arc::new(Int64Array::from(r.a)),
            Arc::new(Int64Array::from(r.b)),
            Arc::new(Int64Array::from(r.answer)),
            Arc::new(Int32Array::from(r.position)),
            Arc::new(StringArray::from(r.position_name)),
            Arc::new(list),
        ];
        let schema = Arc::new(crate::activations::schema(D));
        let batch = RecordBatch::try_new(schema.clone(), cols).unwrap();
        let props = WriterProperties::builder()
            .set_max_row_group_row_count(Some(700))
            .build();
        let mut w = ArrowWriter::try_new(std::fs::File::create(path).unwrap(), schema, Some(props))
            .unwrap();
        w.write(&batch).unwrap();
        w.close().unwrap();
    }

    #[test]
    fn every_position_reads_back_in_prompt_order_across_row_groups_and_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("part-0.parquet");
        let prompts = 1_234;
        partition(&path, prompts);
        let groups = SerializedFileReader::new(std::fs::File::open(&path).unwrap())
            .unwrap()
            .num_row_groups();
        assert!(groups > 3, "{groups} row groups");
        for (k, name) in NAMES.iter().enumerate() {
            let mut m = read_partition(&path, name).unwrap();
            m.sort_by_prompt();
            assert_eq!(m.rows(), prompts as usize);
            assert_eq!(m.d, D);
            for (i, p) in (0..prompts).enumerate() {
                assert_eq!(m.prompt_id[i], p);
                assert_eq!(m.a[i], p as i64 % 100);
                assert_eq!(m.b[i], (k != 0).then_some(p as i64 / 100));
                assert_eq!(m.answer[i], (p % 7 != 0).then_some(p as i64 + 1));
                let want: Vec<f32> = (0..D).map(|j| value(p, k, j)).collect();
                assert_eq!(m.row(i), &want[..], "prompt {p} at {name}");
            }
        }
        assert_eq!(read_partition(&path, "x").unwrap().rows(), 0);
    }

    #[test]
    fn ragged_or_missing_activations_are_named_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("part-0.parquet");
        // Rows of 2 and 3 values in a variable-length list: not an activation partition.
        let offsets = arrow::buffer::OffsetBuffer::new(vec![0i32, 2, 5].into());
        let list = ListArray::new(
            Arc::new(Field::new("item", DataType::Float32, false)),
            offsets,
            Arc::new(Float32Array::from(vec![1.0f32, 2.0, 3.0, 4.0, 5.0])),
            None,
        );
        let schema = Arc::new(Schema::new(vec![
            Field::new("prompt_id", DataType::UInt32, false),
            Field::new("a", DataType::Int64, false),
            Field::new("b", DataType::Int64, true),
            Field::new("answer", DataType::Int64, true),
            Field::new("position_name", DataType::Utf8, false),
            Field::new("activation", list.data_type().clone(), false),
        ]));
        let cols: Vec<ArrayRef> = vec![
            Arc::new(UInt32Array::from(vec![0u32, 1])),
            Arc::new(Int64Array::from(vec![0i64, 1])),
            Arc::new(Int64Array::from(vec![Some(0i64), None])),
            Arc::new(Int64Array::from(vec![Some(0i64), None])),
            Arc::new(StringArray::from(vec!["a", "a"])),
            Arc::new(list),
        ];
        let batch = RecordBatch::try_new(schema.clone(), cols).unwrap();
        let mut w =
            ArrowWriter::try_new(std::fs::File::create(&path).unwrap(), schema, None).unwrap();
        w.write(&batch).unwrap();
        w.close().unwrap();
        let e = read_partition(&path, "a").unwrap_err().to_string();
        assert!(e.contains("part-0.parquet") && e.contains("ragged"), "{e}");

        // A file without the activation column names it.
        let schema = Arc::new(Schema::new(vec![Field::new(
            "prompt_id",
            DataType::UInt32,
            false,
        )]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![Arc::new(UInt32Array::from(vec![0u32]))],
        )
        .unwrap();
        let mut w =
            ArrowWriter::try_new(std::fs::File::create(&path).unwrap(), schema, None).unwrap();
        w.write(&batch).unwrap();
        w.close().unwrap();
        let e = read_partition(&path, "a").unwrap_err().to_string();
        assert!(e.contains("no column `a`"), "{e}");
    }
}
