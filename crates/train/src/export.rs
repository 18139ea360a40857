//! Writes a trained toy adder as an HF GPT-2 directory (config.json, model.safetensors,
//! tokenizer.json) plus training_manifest.json, all into a temporary directory that is renamed
//! into place at the end, so a directory at `out` is always complete.

use std::path::{Path, PathBuf};

use serde_json::json;

use crate::model::LN_EPS;
use crate::recipe::Recipe;
use crate::trainer::Trained;
use crate::vocab::{tokenizer_json, Token, VOCAB_SIZE};
use crate::TrainError;

/// Who and what produced a checkpoint, recorded in its manifest.
#[derive(Clone, Debug, Default)]
pub struct Provenance {
    /// `git rev-parse HEAD` of the tool, if known.
    pub git_revision: Option<String>,
    /// The command line.
    pub command: String,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> TrainError + '_ {
    move |source| TrainError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The HF config.json of the toy adder.
pub fn config_json(recipe: &Recipe) -> serde_json::Value {
    let s = recipe.shape;
    json!({
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "vocab_size": VOCAB_SIZE,
        "n_positions": s.positions,
        "n_embd": s.d_model,
        "n_layer": s.layers,
        "n_head": s.heads,
        "n_inner": null,
        "activation_function": "gelu_new",
        "layer_norm_epsilon": LN_EPS,
        "tie_word_embeddings": false,
        "resid_pdrop": 0.0,
        "embd_pdrop": 0.0,
        "attn_pdrop": 0.0,
        "bos_token_id": null,
        "eos_token_id": null,
        "pad_token_id": Token::Unk.id(),
    })
}

/// Writes the checkpoint to `out` (which must not exist unless `overwrite`).
pub fn export(
    trained: &Trained,
    recipe: &Recipe,
    seed: u64,
    provenance: &Provenance,
    out: &Path,
    overwrite: bool,
) -> Result<(), TrainError> {
    if out.exists() && !overwrite {
        return Err(TrainError::Exists(out.to_path_buf()));
    }
    let parent = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(io(parent))?;
    let name = out
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let tmp: PathBuf = parent.join(format!(".{name}.partial-{}", std::process::id()));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(io(&tmp))?;
    }
    std::fs::create_dir_all(&tmp).map_err(io(&tmp))?;

    let write_json = |file: &str, v: &serde_json::Value| -> Result<(), TrainError> {
        let p = tmp.join(file);
        let text = serde_json::to_string_pretty(v).expect("JSON values serialise");
        std::fs::write(&p, text + "\n").map_err(io(&p))
    };
    write_json("config.json", &config_json(recipe))?;
    write_json("tokenizer.json", &tokenizer_json())?;
    let tensors = trained.model.named_tensors();
    let weights = tmp.join("model.safetensors");
    safetensors::serialize_to_file(
        tensors.iter().map(|(k, v)| (k.as_str(), v)),
        Some(std::collections::HashMap::from([(
            "format".to_string(),
            "pt".to_string(),
        )])),
        &weights,
    )
    .map_err(|e| TrainError::Io {
        path: weights.clone(),
        source: std::io::Error::other(e.to_string()),
    })?;
    let (train_acc, held_acc) = trained.final_accuracy();
    let last = trained.log.last();
    let manifest = json!({
        "tool": "helixlab train",
        "helixlab_version": env!("CARGO_PKG_VERSION"),
        "git_revision": provenance.git_revision,
        "command": provenance.command,
        "recipe": recipe,
        "seed": seed,
        "steps": trained.log.len(),
        "parameters": trained.model.parameter_count(),
        "wall_time_s": trained.wall_s,
        "threads": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        "final_loss": last.map(|l| l.loss),
        "final_train_accuracy": train_acc,
        "final_heldout_accuracy": held_acc,
        "addition_split": {
            "encoding": "one character per problem a*100+b, '1' = training, '0' = held out",
            "bits": trained.split.to_bits(),
        },
        "evaluations": trained.log.iter().filter(|l| l.heldout_accuracy.is_some()).collect::<Vec<_>>(),
    });
    write_json("training_manifest.json", &manifest)?;
    if out.exists() {
        std::fs::remove_dir_all(out).map_err(io(out))?;
    }
    std::fs::rename(&tmp, out).map_err(io(out))
}
