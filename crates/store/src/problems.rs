//! `problems.parquet`: one row per prompt of the task, with what the model answered.

use std::path::Path;
use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanArray, Float32Array, Int64Array, ListArray, StringArray, UInt32Array,
};
use arrow::datatypes::{DataType, Field, Schema, UInt32Type};
use arrow::record_batch::RecordBatch;
use parquet::arrow::ArrowWriter;

use crate::manifest::Manifest;
use crate::{atomic, io, Result, StoreError};

/// One prompt and the model's answer.
#[derive(Clone, Debug, PartialEq)]
pub struct ProblemRow {
    /// Row id within the task.
    pub prompt_id: u32,
    /// First operand (x for bare numbers).
    pub a: i64,
    /// Second operand.
    pub b: Option<i64>,
    /// Correct answer.
    pub answer: Option<i64>,
    /// The prompt.
    pub prompt: String,
    /// The token of the answer (the bare number, no special tokens).
    pub answer_token: Option<u32>,
    /// Argmax token at the last position (`None` for tasks without answers, which are not run).
    pub pred_token: Option<u32>,
    /// Its text.
    pub pred_text: Option<String>,
    /// The predicted token read as a number, when it is one.
    pub pred_value: Option<i64>,
    /// pred_token == answer_token.
    pub correct: Option<bool>,
    /// Logit of the answer token.
    pub answer_logit: Option<f32>,
    /// Rank of the answer token among all tokens (0 = top).
    pub answer_rank: Option<u32>,
    /// The largest logit.
    pub top_logit: Option<f32>,
    /// Every token of the answer (one for the paper's models; digit by digit for SmolLM2).
    pub answer_tokens: Option<Vec<u32>>,
    /// log P(answer | prompt): the sum over the answer's tokens of the log-softmax of the
    /// logits before each, the tokens before it given (teacher forcing).
    pub answer_logprob: Option<f32>,
    /// How many tokens each operand takes, in template order (`"2,1"`: a two tokens, b one).
    /// Problems with the same layout have every named position at the same offset, so
    /// patching pairs them only with each other.
    pub token_layout: Option<String>,
}

/// The arrow schema of problems.parquet.
pub fn schema() -> Schema {
    Schema::new(vec![
        Field::new("prompt_id", DataType::UInt32, false),
        Field::new("a", DataType::Int64, false),
        Field::new("b", DataType::Int64, true),
        Field::new("answer", DataType::Int64, true),
        Field::new("prompt", DataType::Utf8, false),
        Field::new("answer_token", DataType::UInt32, true),
        Field::new("pred_token", DataType::UInt32, true),
        Field::new("pred_text", DataType::Utf8, true),
        Field::new("pred_value", DataType::Int64, true),
        Field::new("correct", DataType::Boolean, true),
        Field::new("answer_logit", DataType::Float32, true),
        Field::new("answer_rank", DataType::UInt32, true),
        Field::new("top_logit", DataType::Float32, true),
        Field::new(
            "answer_tokens",
            DataType::List(Arc::new(Field::new("item", DataType::UInt32, true))),
            true,
        ),
        Field::new("answer_logprob", DataType::Float32, true),
        Field::new("token_layout", DataType::Utf8, true),
    ])
}

fn batch(rows: &[ProblemRow]) -> std::result::Result<RecordBatch, arrow::error::ArrowError> {
    let cols: Vec<ArrayRef> = vec![
        Arc::new(UInt32Array::from_iter_values(
            rows.iter().map(|r| r.prompt_id),
        )),
        Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.a))),
        Arc::new(Int64Array::from_iter(rows.iter().map(|r| r.b))),
        Arc::new(Int64Array::from_iter(rows.iter().map(|r| r.answer))),
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| &r.prompt),
        )),
        Arc::new(UInt32Array::from_iter(rows.iter().map(|r| r.answer_token))),
        Arc::new(UInt32Array::from_iter(rows.iter().map(|r| r.pred_token))),
        Arc::new(StringArray::from_iter(
            rows.iter().map(|r| r.pred_text.as_deref()),
        )),
        Arc::new(Int64Array::from_iter(rows.iter().map(|r| r.pred_value))),
        Arc::new(BooleanArray::from_iter(rows.iter().map(|r| r.correct))),
        Arc::new(Float32Array::from_iter(rows.iter().map(|r| r.answer_logit))),
        Arc::new(UInt32Array::from_iter(rows.iter().map(|r| r.answer_rank))),
        Arc::new(Float32Array::from_iter(rows.iter().map(|r| r.top_logit))),
        Arc::new(ListArray::from_iter_primitive::<UInt32Type, _, _>(
            rows.iter().map(|r| {
                r.answer_tokens
                    .as_ref()
                    .map(|t| t.iter().map(|&x| Some(x)).collect::<Vec<_>>())
            }),
        )),
        Arc::new(Float32Array::from_iter(
            rows.iter().map(|r| r.answer_logprob),
        )),
        Arc::new(StringArray::from_iter(
            rows.iter().map(|r| r.token_layout.as_deref()),
        )),
    ];
    RecordBatch::try_new(Arc::new(schema()), cols)
}

/// Writes `rows` to `path` (temp + rename), then its manifest.
pub fn write(path: &Path, rows: &[ProblemRow], manifest: &Manifest) -> Result<()> {
    let fmt = |e: &dyn std::fmt::Display| StoreError::Format {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
    }
    let (temp, file) = atomic::Temp::create(path)?;
    let props = crate::activations::writer_properties(manifest);
    let mut w = ArrowWriter::try_new(file, Arc::new(schema()), Some(props)).map_err(|e| fmt(&e))?;
    for chunk in rows.chunks(65_536) {
        w.write(&batch(chunk).map_err(|e| fmt(&e))?)
            .map_err(|e| fmt(&e))?;
    }
    w.close().map_err(|e| fmt(&e))?;
    temp.commit()?;
    manifest.write_for(path)
}
