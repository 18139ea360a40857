//! Activation tables: hive partitions `activations/site=<hook>/layer=<l>/part-0.parquet`, one
//! row per (prompt, position), the activation as `FixedSizeList<Float32, d>`.
//!
//! Rows stream in as batches of prompts are run; each partition's writer flushes a row group
//! once it holds [`ROW_GROUP_BYTES`], so memory stays flat however many prompts there are.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{
    ArrayRef, FixedSizeListArray, Float32Array, Int32Array, Int64Array, StringArray, UInt32Array,
};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;
use parquet::schema::types::ColumnPath;

use crate::manifest::Manifest;
use crate::{atomic, io, Result, StoreError};

/// Buffered bytes after which a partition writes a row group.
pub const ROW_GROUP_BYTES: usize = 4 << 20;

/// The directory of one (site, layer) partition under a run directory.
pub fn partition_dir(run_dir: &Path, site: &str, layer: usize) -> PathBuf {
    run_dir
        .join("activations")
        .join(format!("site={site}"))
        .join(format!("layer={layer}"))
}

/// The data file of a partition.
pub fn partition_file(dir: &Path) -> PathBuf {
    dir.join("part-0.parquet")
}

/// Parquet writer settings shared by every table: snappy, the manifest in the footer.
pub fn writer_properties(manifest: &Manifest) -> WriterProperties {
    WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_key_value_metadata(Some(vec![KeyValue::new(
            "helixlab.manifest".to_string(),
            serde_json::to_string(manifest).expect("manifests serialise"),
        )]))
        .build()
}

/// [`writer_properties`] without a dictionary for the activation values: hashing every float
/// into a dictionary that random-looking activations overflow at once was 4 % of an
/// extraction (`perf`, the Pythia-160m-shaped bench checkpoint); the repeated rows a dictionary
/// catches (an operand's token sees the same prefix in many prompts) lie close together,
/// where snappy finds them too.
fn activation_properties(manifest: &Manifest) -> WriterProperties {
    writer_properties(manifest)
        .into_builder()
        .set_column_dictionary_enabled(
            ColumnPath::new(["activation", "list", "item"].map(String::from).to_vec()),
            false,
        )
        .build()
}

/// The arrow schema of an activation partition of width `d`.
pub fn schema(d: usize) -> Schema {
    Schema::new(vec![
        Field::new("prompt_id", DataType::UInt32, false),
        Field::new("a", DataType::Int64, false),
        Field::new("b", DataType::Int64, true),
        Field::new("answer", DataType::Int64, true),
        Field::new("position", DataType::Int32, false),
        Field::new("position_name", DataType::Utf8, false),
        Field::new(
            "activation",
            DataType::FixedSizeList(
                Arc::new(Field::new("item", DataType::Float32, false)),
                d as i32,
            ),
            false,
        ),
    ])
}

/// Rows of one batch for one partition, column-wise.
#[derive(Clone, Debug, Default)]
pub struct ActivationRows {
    /// prompt ids.
    pub prompt_id: Vec<u32>,
    /// first operands.
    pub a: Vec<i64>,
    /// second operands.
    pub b: Vec<Option<i64>>,
    /// answers.
    pub answer: Vec<Option<i64>>,
    /// position from the end (-1 = last).
    pub position: Vec<i32>,
    /// position name (a, b, x, last).
    pub position_name: Vec<String>,
    /// activations, row-major, `d` per row.
    pub values: Vec<f32>,
}

/// A streaming writer of one partition: data to a temporary file, renamed into place and
/// followed by the manifest in [`PartitionWriter::finish`].
pub struct PartitionWriter {
    dir: PathBuf,
    d: usize,
    writer: ArrowWriter<File>,
    rows: u64,
    temp: atomic::Temp,
}

impl PartitionWriter {
    /// Starts writing the partition `dir` with activations of width `d`.
    pub fn create(dir: &Path, d: usize, manifest: &Manifest) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        // A stale manifest must go first: from here on the partition is incomplete.
        let m = Manifest::path_for(dir);
        if m.exists() {
            std::fs::remove_file(&m).map_err(io(&m))?;
        }
        let path = partition_file(dir);
        let (temp, file) = atomic::Temp::create(&path)?;
        let writer = ArrowWriter::try_new(
            file,
            Arc::new(schema(d)),
            Some(activation_properties(manifest)),
        )
        .map_err(|e| StoreError::Format {
            path: path.clone(),
            message: e.to_string(),
        })?;
        Ok(Self {
            dir: dir.to_path_buf(),
            d,
            writer,
            rows: 0,
            temp,
        })
    }

    /// Appends rows.
    pub fn write(&mut self, r: ActivationRows) -> Result<()> {
        let n = r.prompt_id.len();
        let path = partition_file(&self.dir);
        let fmt = |e: arrow::error::ArrowError| StoreError::Format {
            path: path.clone(),
            message: e.to_string(),
        };
        assert_eq!(
            r.values.len(),
            n * self.d,
            "activation rows of width {}",
            self.d
        );
        let list = FixedSizeListArray::try_new(
            Arc::new(Field::new("item", DataType::Float32, false)),
            self.d as i32,
            Arc::new(Float32Array::from(r.values)),
            None,
        )
        .map_err(fmt)?;
        let cols: Vec<ArrayRef> = vec![
            Arc::new(UInt32Array::from(r.prompt_id)),
            Arc::new(Int64Array::from(r.a)),
            Arc::new(Int64Array::from(r.b)),
            Arc::new(Int64Array::from(r.answer)),
            Arc::new(Int32Array::from(r.position)),
            Arc::new(StringArray::from(r.position_name)),
            Arc::new(list),
        ];
        let batch = RecordBatch::try_new(Arc::new(schema(self.d)), cols).map_err(fmt)?;
        self.writer.write(&batch).map_err(|e| StoreError::Format {
            path: path.clone(),
            message: e.to_string(),
        })?;
        if self.writer.in_progress_size() >= ROW_GROUP_BYTES {
            self.writer.flush().map_err(|e| StoreError::Format {
                path: path.clone(),
                message: e.to_string(),
            })?;
        }
        self.rows += n as u64;
        Ok(())
    }

    /// Closes the file, renames it into place and writes the manifest (with the row count).
    pub fn finish(self, mut manifest: Manifest) -> Result<u64> {
        let path = partition_file(&self.dir);
        self.writer.close().map_err(|e| StoreError::Format {
            path: path.clone(),
            message: e.to_string(),
        })?;
        self.temp.commit()?;
        manifest.rows = self.rows;
        manifest.write_for(&self.dir)?;
        Ok(self.rows)
    }
}
