//! Result tables of the analysis stages, built column by column and written in one go.
//!
//! Analysis results are small (thousands to millions of rows of scalars) and are produced
//! whole, so they are written as one file with its manifest, atomically, rather than streamed.
//! Vectors (an activation-space coefficient, a prediction) are `FixedSizeList<Float32, d>`,
//! as in the activation tables, so readers unpack them the same way.

use std::path::Path;
use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanArray, FixedSizeListArray, Float32Array, Float64Array, Int64Array, ListArray,
    StringArray, UInt32Array,
};
use arrow::buffer::OffsetBuffer;
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;
use parquet::arrow::ArrowWriter;

use crate::manifest::Manifest;
use crate::{atomic, io, Result, StoreError};

/// One column's values.
#[derive(Clone, Debug)]
pub enum Values {
    /// Unsigned integers.
    U32(Vec<u32>),
    /// Integers.
    I64(Vec<i64>),
    /// Integers with nulls.
    OptI64(Vec<Option<i64>>),
    /// Floats.
    F64(Vec<f64>),
    /// Floats with nulls.
    OptF64(Vec<Option<f64>>),
    /// Booleans.
    Bool(Vec<bool>),
    /// Strings.
    Str(Vec<String>),
    /// A variable-length list of f64 per row (e.g. the periods of a fit).
    ListF64(Vec<Vec<f64>>),
    /// A vector of width `d` per row, stored as f32 (`values.len() == rows * d`).
    Vector {
        /// Width.
        d: usize,
        /// Row-major values.
        values: Vec<f32>,
    },
}

impl Values {
    fn len(&self) -> usize {
        match self {
            Values::U32(v) => v.len(),
            Values::I64(v) => v.len(),
            Values::OptI64(v) => v.len(),
            Values::F64(v) => v.len(),
            Values::OptF64(v) => v.len(),
            Values::Bool(v) => v.len(),
            Values::Str(v) => v.len(),
            Values::ListF64(v) => v.len(),
            Values::Vector { d, values } => values.len() / (*d).max(1),
        }
    }

    fn field(&self, name: &str) -> Field {
        let item = |t| Arc::new(Field::new("item", t, false));
        let (t, nullable) = match self {
            Values::U32(_) => (DataType::UInt32, false),
            Values::I64(_) => (DataType::Int64, false),
            Values::OptI64(_) => (DataType::Int64, true),
            Values::F64(_) => (DataType::Float64, false),
            Values::OptF64(_) => (DataType::Float64, true),
            Values::Bool(_) => (DataType::Boolean, false),
            Values::Str(_) => (DataType::Utf8, false),
            Values::ListF64(_) => (DataType::List(item(DataType::Float64)), false),
            Values::Vector { d, .. } => (
                DataType::FixedSizeList(item(DataType::Float32), *d as i32),
                false,
            ),
        };
        Field::new(name, t, nullable)
    }

    fn array(&self) -> std::result::Result<ArrayRef, arrow::error::ArrowError> {
        let item = |t| Arc::new(Field::new("item", t, false));
        Ok(match self {
            Values::U32(v) => Arc::new(UInt32Array::from(v.clone())),
            Values::I64(v) => Arc::new(Int64Array::from(v.clone())),
            Values::OptI64(v) => Arc::new(Int64Array::from(v.clone())),
            Values::F64(v) => Arc::new(Float64Array::from(v.clone())),
            Values::OptF64(v) => Arc::new(Float64Array::from(v.clone())),
            Values::Bool(v) => Arc::new(BooleanArray::from(v.clone())),
            Values::Str(v) => Arc::new(StringArray::from_iter_values(v)),
            Values::ListF64(v) => {
                let flat: Vec<f64> = v.iter().flatten().copied().collect();
                Arc::new(ListArray::try_new(
                    item(DataType::Float64),
                    OffsetBuffer::from_lengths(v.iter().map(Vec::len)),
                    Arc::new(Float64Array::from(flat)),
                    None,
                )?)
            }
            Values::Vector { d, values } => Arc::new(FixedSizeListArray::try_new(
                item(DataType::Float32),
                *d as i32,
                Arc::new(Float32Array::from(values.clone())),
                None,
            )?),
        })
    }
}

/// A table under construction: named columns of equal length.
#[derive(Clone, Debug, Default)]
pub struct Table {
    columns: Vec<(String, Values)>,
}

impl Table {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a column.
    pub fn column(mut self, name: &str, values: Values) -> Self {
        self.columns.push((name.to_string(), values));
        self
    }

    /// Adds a string column from any strings.
    pub fn strs<S: Into<String>>(self, name: &str, v: impl IntoIterator<Item = S>) -> Self {
        self.column(name, Values::Str(v.into_iter().map(Into::into).collect()))
    }

    /// Adds a u32 column.
    pub fn u32s(self, name: &str, v: impl IntoIterator<Item = u32>) -> Self {
        self.column(name, Values::U32(v.into_iter().collect()))
    }

    /// Adds an f64 column.
    pub fn f64s(self, name: &str, v: impl IntoIterator<Item = f64>) -> Self {
        self.column(name, Values::F64(v.into_iter().collect()))
    }

    /// Rows (of the first column).
    pub fn rows(&self) -> usize {
        self.columns.first().map_or(0, |c| c.1.len())
    }

    /// Writes the table to `path` (temp file + rename), then its manifest with `rows` set.
    pub fn write(&self, path: &Path, manifest: &Manifest) -> Result<()> {
        let fmt = |message: String| StoreError::Format {
            path: path.to_path_buf(),
            message,
        };
        let rows = self.rows();
        if let Some((name, v)) = self.columns.iter().find(|c| c.1.len() != rows) {
            return Err(fmt(format!(
                "column `{name}` has {} rows, expected {rows}",
                v.len()
            )));
        }
        let schema = Arc::new(Schema::new(
            self.columns
                .iter()
                .map(|(n, v)| v.field(n))
                .collect::<Vec<_>>(),
        ));
        let arrays = self
            .columns
            .iter()
            .map(|(_, v)| v.array())
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| fmt(e.to_string()))?;
        let batch = RecordBatch::try_new(schema.clone(), arrays).map_err(|e| fmt(e.to_string()))?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io(dir))?;
        }
        let mut manifest = manifest.clone();
        manifest.rows = rows as u64;
        let (temp, file) = atomic::Temp::create(path)?;
        let props = crate::activations::writer_properties(&manifest);
        let mut w =
            ArrowWriter::try_new(file, schema, Some(props)).map_err(|e| fmt(e.to_string()))?;
        w.write(&batch).map_err(|e| fmt(e.to_string()))?;
        w.close().map_err(|e| fmt(e.to_string()))?;
        temp.commit()?;
        manifest.write_for(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_table_round_trips_through_polars() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.parquet");
        let m = Manifest {
            stage: "test".into(),
            settings: serde_json::json!({}),
            inputs: Default::default(),
            model: None,
            tool_version: "0".into(),
            command: String::new(),
            completed_unix: 0,
            rows: 0,
            wall_s: 0.0,
            data_sha256: None,
            parts: Vec::new(),
        };
        Table::new()
            .column("layer", Values::U32(vec![0, 1]))
            .column("periods", Values::ListF64(vec![vec![2.0, 10.0], vec![]]))
            .column("r2", Values::OptF64(vec![Some(0.5), None]))
            .column(
                "coef",
                Values::Vector {
                    d: 3,
                    values: vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
                },
            )
            .write(&path, &m)
            .unwrap();
        let df = crate::read::scan(&path).unwrap().collect().unwrap();
        assert_eq!(df.height(), 2);
        assert_eq!(Manifest::read_for(&path).unwrap().rows, 2);
        let bad = Table::new()
            .column("a", Values::U32(vec![0]))
            .column("b", Values::U32(vec![]));
        assert!(bad
            .write(&path, &m)
            .unwrap_err()
            .to_string()
            .contains("`b`"));
    }
}
