//! A hooked transformer runtime on candle: GPT-2, GPT-J, GPT-NeoX (Pythia), Llama 3.x and BERT
//! loaded from HF checkpoint directories, with TransformerLens hook points.
//!
//! The main type is [`Model`]: [`Model::load`] reads a local checkpoint (no network): an HF
//! directory (`config.json` and its weights) or a GGUF file ([`gguf`]), and [`Model::forward`] runs a left-padded [`Batch`] under a
//! [`ForwardRequest`]: captures and interventions at [`HookPoint`]s, which logits to return,
//! and optionally a layer to resume from. [`Model::forward_with_grad`] returns gradients of a
//! scalar metric at hook sites. [`Tokenizer`] reads the directory's tokenizer.
//!
//! A key design decision is that hooks are plain function calls placed in each
//! architecture's forward, where TransformerLens puts its HookPoints, rather than a module
//! system that wraps HF's module tree. Two reasons: the Rust forward of each model reads line
//! by line against HF's Python (one file per architecture), and a forward knows from the
//! request which hooks are live, so it stops after the last layer it needs and costs nothing
//! at hooks nobody asked for.
//!
//! What this crate does not do: tasks, prompts, storage or analysis. Those live in the stage
//! crates, which meet only through Parquet files.
#![deny(missing_docs)]

pub mod arch;
pub mod attention;
pub mod batch;
pub mod checkpoint;
pub mod config;
pub mod context;
mod decode;
pub mod error;
pub mod gguf;
pub mod half_matmul;
pub mod hook;
mod kv_cache;
pub mod mapped;
mod model;
pub mod ops;
mod prefix;
pub mod request;
pub mod rotary;
mod safetensors_reader;
pub mod tokenizer;
pub mod weights;

pub use batch::Batch;
pub use checkpoint::{Checkpoint, CheckpointInfo};
pub use config::{Architecture, ModelConfig};
pub use error::{ModelError, Result};
pub use hook::HookPoint;
pub use kv_cache::KvCache;
pub use model::{dtype_name, parse_device, parse_dtype, LoadOptions, Model};
pub use prefix::shared_prefix_split;
pub use request::{Capture, Edit, ForwardOutput, ForwardRequest, Intervention, Logits, Positions};
pub use tokenizer::Tokenizer;

pub use candle_core::{DType, Device, Tensor};
