//! `helixlab inspect`: a table's schema, size, provenance and first rows, as text.

use std::fmt::Write;
use std::fs::File;
use std::path::Path;

use parquet::file::reader::{FileReader, SerializedFileReader};

use crate::activations::partition_file;
use crate::read::scan;
use crate::{io, Result, StoreError};

/// Describes the Parquet file at `path` (or a partition directory's data file).
pub fn inspect(path: &Path, head: usize) -> Result<String> {
    let file = if path.is_dir() {
        partition_file(path)
    } else {
        path.to_path_buf()
    };
    let f = File::open(&file).map_err(io(&file))?;
    let reader = SerializedFileReader::new(f).map_err(|e| StoreError::Format {
        path: file.clone(),
        message: format!("not a Parquet file: {e}"),
    })?;
    let meta = reader.metadata();
    let fm = meta.file_metadata();
    let mut out = String::new();
    let _ = writeln!(out, "{}", file.display());
    let _ = writeln!(
        out,
        "rows: {}   row groups: {}",
        fm.num_rows(),
        meta.num_row_groups()
    );
    let lf = scan(&file)?;
    let df = lf
        .limit(head as u32)
        .collect()
        .map_err(|source| StoreError::Polars {
            path: file.clone(),
            source,
        })?;
    let _ = writeln!(out, "schema:");
    for (name, dtype) in df.schema().iter() {
        let _ = writeln!(out, "  {name}: {dtype}");
    }
    for kv in fm.key_value_metadata().into_iter().flatten() {
        if kv.key == "ARROW:schema" {
            continue;
        }
        let value = kv.value.clone().unwrap_or_default();
        let pretty = serde_json::from_str::<serde_json::Value>(&value)
            .map(|v| serde_json::to_string_pretty(&v).unwrap_or(value.clone()))
            .unwrap_or(value);
        let _ = writeln!(out, "metadata {}:\n{}", kv.key, pretty);
    }
    let _ = writeln!(out, "first {} rows:\n{}", df.height(), df);
    Ok(out)
}
