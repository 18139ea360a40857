//! `helixlab neuron-grads`: the gradient of the clean answer's logit with respect to every
//! neuron's activation (`mlp.hook_post`) at the last token, for the clean prompts of the
//! last-token pairs, in one forward and one backward per batch: the gradient half of attribution
//! patching ([`crate::forwards::last_token_gradients`], which `helixlab neurons` runs on the
//! corrupt prompts), kept as its own command because `make bench` times it against PyTorch.
//!
//! Writes `neurons/gradients.parquet`: one row per layer x neuron with the mean gradient and
//! the mean absolute gradient over the prompts.

use candle_core::DType;
use helixlab_model::ForwardRequest;
use helixlab_pipeline::{Pipeline, Position};
use helixlab_store::stage::{Outcome, Progress};
use helixlab_store::table::{Table, Values};
use helixlab_store::{tables, RunLayout};
use helixlab_study::pairs::{load, prompt_ids, read_pairs};

use crate::forwards::last_token_gradients;
use crate::Result;

/// `helixlab neuron-grads`.
pub fn run_neuron_grads(p: &Pipeline, force: bool, progress: &dyn Progress) -> Result<Outcome> {
    let run = RunLayout::new(p.run_dir());
    let (study, mut m) = load(
        p,
        "neuron-grads",
        serde_json::json!({
            "hook": "mlp.hook_post", "position": "last",
            "metric": "clean answer logit", "batch_size": p.extract.batch_size,
        }),
    )?;
    let (model, tok) = (&study.model, &study.tokenizer);
    let cfg = model.config().clone();

    m.input_table(&run, tables::PAIRS)?;
    if !force && m.tables_fresh(&run, &[tables::NEURON_GRADS]) {
        return Ok(Outcome::UpToDate);
    }
    m.begin();
    let pairs = read_pairs(&run, Position::Last)?;
    let mut sum = vec![0f64; cfg.n_layers * cfg.d_mlp];
    let mut abs = vec![0f64; cfg.n_layers * cfg.d_mlp];
    progress.start("neuron gradients", pairs.len() as u64);
    for chunk in pairs.chunks(p.extract.batch_size.max(1)) {
        let seqs = prompt_ids(tok, p, chunk.iter().map(|pr| &pr.clean))?;
        let batch = model.batch(&seqs)?;
        let answers: Vec<u32> = chunk.iter().map(|x| x.clean.answer_token).collect();
        let (_, grads) = last_token_gradients(model, &batch, ForwardRequest::new(), &answers)?;
        for (l, g) in grads.iter().enumerate() {
            // (b, 1, d_mlp)
            let g = g.to_dtype(DType::F32)?.squeeze(1)?.to_vec2::<f32>()?;
            for row in g {
                for (j, v) in row.into_iter().enumerate() {
                    sum[l * cfg.d_mlp + j] += v as f64;
                    abs[l * cfg.d_mlp + j] += (v as f64).abs();
                }
            }
        }
        progress.advance(chunk.len() as u64);
    }
    progress.finish();
    let n = pairs.len() as f64;
    let rows = cfg.n_layers * cfg.d_mlp;
    let table = Table::new()
        .column(
            "layer",
            Values::U32((0..rows).map(|i| (i / cfg.d_mlp) as u32).collect()),
        )
        .column(
            "neuron",
            Values::U32((0..rows).map(|i| (i % cfg.d_mlp) as u32).collect()),
        )
        .column(
            "grad_mean",
            Values::F64(sum.iter().map(|v| v / n).collect()),
        )
        .column(
            "grad_abs_mean",
            Values::F64(abs.iter().map(|v| v / n).collect()),
        );
    m.write_table(&run, tables::NEURON_GRADS, &table)?;
    Ok(m.outcome())
}
