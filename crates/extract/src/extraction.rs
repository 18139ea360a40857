//! `helixlab extract`: activations at the pipeline's sites x layers x named positions, one
//! hive partition per (site, layer), streamed batch by batch.

use std::path::PathBuf;
use std::time::Instant;

use helixlab_model::{DType, ForwardRequest, HookPoint, Positions};
use helixlab_pipeline::Pipeline;
use helixlab_store::activations::{partition_dir, ActivationRows, PartitionWriter};
use helixlab_store::manifest::now_unix;
use helixlab_store::Manifest;

use crate::prompts::{encode_task, extraction_offsets};
use crate::{
    command_line, forward_prompts, load_model, model_identity, resolve_sites, Outcome, Progress,
    Result,
};

struct Target {
    hook: HookPoint,
    dir: PathBuf,
    manifest: Manifest,
}

/// Extracts every (site, layer) partition that is missing or stale (all of them with
/// `force`); current partitions are left untouched.
pub fn run(p: &Pipeline, force: bool, progress: &dyn Progress) -> Result<Outcome> {
    let (model, tok) = load_model(p)?;
    let encoded = encode_task(p, &tok, model.config().max_positions)?;
    let offsets = extraction_offsets(p, &encoded)?;
    let identity = model_identity(p, &model)?;
    let mut targets = Vec::new();
    for (site, layer, hook) in resolve_sites(p, &model)? {
        let manifest = Manifest {
            stage: "extract".into(),
            settings: serde_json::json!({
                "task": p.task,
                "site": site.name(),
                "layer": layer,
                "hook": hook.to_string(),
                "positions": offsets,
                "share_prefixes": p.extract.share_prefixes,
            }),
            inputs: Default::default(),
            model: Some(identity.clone()),
            tool_version: env!("CARGO_PKG_VERSION").into(),
            command: command_line(),
            completed_unix: 0,
            rows: 0,
            wall_s: 0.0,
        };
        let dir = partition_dir(&p.run_dir(), site.name(), layer);
        if force || !manifest.is_fresh(&dir) {
            targets.push(Target {
                hook,
                dir,
                manifest,
            });
        }
    }
    if targets.is_empty() {
        return Ok(Outcome::UpToDate);
    }
    let start = Instant::now();
    let positions: Vec<i64> = offsets.iter().map(|(_, o)| *o).collect();
    let mut writers = Vec::with_capacity(targets.len());
    for t in &targets {
        let d: usize = model.hook_shape(t.hook, 0).iter().product();
        writers.push(PartitionWriter::create(&t.dir, d, &t.manifest)?);
    }
    let mut req = ForwardRequest::new();
    for t in &targets {
        req = req.capture(t.hook, Positions::At(positions.clone()));
    }
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
        let out = forward_prompts(p, &model, &seqs, &req)?;
        for (w, captured) in writers.iter_mut().zip(&out.captures) {
            let values: Vec<f32> = captured
                .to_dtype(DType::F32)
                .and_then(|t| t.flatten_all())
                .and_then(|t| t.to_vec1())
                .map_err(helixlab_model::ModelError::from)?;
            let mut rows = ActivationRows {
                values,
                ..Default::default()
            };
            for e in chunk {
                for (name, off) in &offsets {
                    rows.prompt_id.push(e.problem.prompt_id);
                    rows.a.push(e.problem.a);
                    rows.b.push(e.problem.b);
                    rows.answer.push(e.problem.answer);
                    rows.position.push(*off as i32);
                    rows.position_name.push(name.clone());
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
        let mut m = t.manifest;
        m.completed_unix = now_unix();
        m.wall_s = seconds;
        rows += w.finish(m)?;
        tables.push(t.dir);
    }
    Ok(Outcome::Wrote {
        tables,
        rows,
        seconds,
    })
}
