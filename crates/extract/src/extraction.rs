//! `helixlab extract`: activations at the pipeline's sites x layers x named positions, one
//! hive partition per (site, layer), streamed batch by batch.

use std::path::PathBuf;
use std::time::Instant;

use helixlab_model::{DType, ForwardRequest, HookPoint, Positions};
use helixlab_pipeline::Pipeline;
use helixlab_store::activations::{ActivationRows, PartitionWriter};
use helixlab_store::shard::Shard;
use helixlab_store::{RunLayout, StageRun};
use helixlab_study::StudyModel;

use crate::prompts::{encode_task, extraction_offsets};
use crate::{Outcome, Progress, Result};

struct Target {
    hook: HookPoint,
    dir: PathBuf,
    run: StageRun,
}

/// Extracts every (site, layer) partition that is missing or stale (all of them with
/// `force`); current partitions are left untouched.
/// With a `shard`, only its slice of the prompts (whole batches) is extracted.
pub fn run(
    p: &Pipeline,
    force: bool,
    progress: &dyn Progress,
    shard: Option<Shard>,
) -> Result<Outcome> {
    let study = StudyModel::load(p)?;
    let model = &study.model;
    let encoded = encode_task(p, &study.tokenizer, model.config().max_positions)?;
    let offsets = extraction_offsets(p, &encoded);
    let encoded = crate::prompts::slice(encoded, shard, p.extract.batch_size);
    let layout = RunLayout::new(p.run_dir());
    let mut targets = Vec::new();
    for (site, layer, hook) in study.sites(p)? {
        let run = StageRun::new(
            "extract",
            serde_json::json!({
                "task": p.task,
                "site": site.name(),
                "layer": layer,
                "n_layers": model.config().n_layers,
                "hook": hook.to_string(),
                "positions": offsets,
                "share_prefixes": p.extract.share_prefixes,
            }),
        )
        .with_model(study.identity.clone());
        let dir = layout.partition(site.name(), layer);
        if force || !run.is_fresh(std::slice::from_ref(&dir)) {
            targets.push(Target { hook, dir, run });
        }
    }
    if targets.is_empty() {
        return Ok(Outcome::UpToDate);
    }
    let start = Instant::now();
    for t in &mut targets {
        t.run.begin();
    }
    // One offset per name for the whole task, or each prompt's own (multi-token numbers).
    let uniform: Option<Vec<i64>> = offsets.iter().map(|(_, o)| *o).collect();
    let mut writers = Vec::with_capacity(targets.len());
    for t in &targets {
        let d: usize = model.hook_shape(t.hook, 0).iter().product();
        writers.push(PartitionWriter::create(&t.dir, d, t.run.manifest())?);
    }
    let request = |chunk: &[crate::prompts::Encoded]| {
        let positions = match &uniform {
            Some(ps) => Positions::At(ps.clone()),
            None => Positions::Each(
                chunk
                    .iter()
                    .map(|e| offsets.iter().map(|(n, _)| e.positions[n]).collect())
                    .collect(),
            ),
        };
        targets.iter().fold(ForwardRequest::new(), |r, t| {
            r.capture(t.hook, positions.clone())
        })
    };
    // Test hook: abort (like a kill -9: no destructors, no flushes) after this many batches,
    // so tests can check what an interrupted extraction leaves behind.
    let abort_after: Option<usize> = std::env::var("HELIXLAB_ABORT_AFTER_BATCHES")
        .ok()
        .and_then(|v| v.parse().ok());
    progress.start("extract", encoded.len() as u64);
    for (done, chunk) in encoded.chunks(p.extract.batch_size).enumerate() {
        if abort_after == Some(done) {
            std::process::abort();
        }
        let seqs: Vec<Vec<u32>> = chunk.iter().map(|e| e.ids.clone()).collect();
        let out = study.forward_prompts(p, &seqs, &request(chunk))?;
        for (w, t) in writers.iter_mut().zip(&targets) {
            let values: Vec<f32> = out
                .capture(t.hook)?
                .to_dtype(DType::F32)
                .and_then(|t| t.flatten_all())
                .and_then(|t| t.to_vec1())
                .map_err(helixlab_model::ModelError::from)?;
            if values.iter().any(|v| !v.is_finite()) {
                return Err(crate::ExtractError::NonFinite {
                    what: format!(
                        "the activations at {} of the batch from prompt id {}",
                        t.hook, chunk[0].problem.prompt_id
                    ),
                });
            }
            let mut rows = ActivationRows {
                values,
                ..Default::default()
            };
            for e in chunk {
                for (name, _) in &offsets {
                    rows.prompt_id.push(e.problem.prompt_id);
                    rows.a.push(e.problem.a);
                    rows.b.push(e.problem.b);
                    rows.answer.push(e.problem.answer);
                    rows.position.push(e.positions[name] as i32);
                    rows.position_name.push(name.to_string());
                }
            }
            w.write(rows)?;
        }
        progress.advance(chunk.len() as u64);
    }
    progress.finish();
    let seconds = start.elapsed().as_secs_f64();
    let mut rows = 0;
    let mut tables = Vec::new();
    for (w, t) in writers.into_iter().zip(targets) {
        rows += w.finish(t.run.finished())?;
        tables.push(t.dir);
    }
    Ok(Outcome::Wrote {
        tables,
        rows,
        seconds,
    })
}
