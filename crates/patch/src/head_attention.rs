//! Where the top heads look (the paper's Fig 28), run by `helixlab components`: each top head's
//! attention probability from the last token to the a token, the b token and itself, for every
//! prompt of the component-fit sample (the report averages them) (`patch.component_fit_problems` problems, correct ones where
//! the study patches only correct problems). The report colours them by the head's type from
//! component_roles.parquet. Multi-token operands are read at their last token (`a`, `b`).
//!
//! The a and b tokens are found at the offsets the extraction recorded for each prompt: a study
//! that did not extract `a` (or `b`) gets NaN there.

use std::collections::BTreeMap;
use std::path::Path;

use candle_core::DType;
use helixlab_model::{ForwardRequest, HookPoint, Model, Positions, Tokenizer};
use helixlab_pipeline::Pipeline;
use helixlab_store::read;
use helixlab_store::table::{Table, Values};

use crate::inputs::prompt_ids;
use crate::pairs::ProblemInfo;
use crate::Result;

/// Each prompt's offset (from the end) of `position`, from the first extracted partition that
/// has it; empty when none does.
fn offsets(run: &Path, p: &Pipeline, position: &str) -> BTreeMap<u32, i64> {
    let Ok((parts, _)) = read::extracted_partitions(
        run,
        p.extract.sites.iter().map(|s| s.name()),
        p.extract.layers.listed(),
    ) else {
        return BTreeMap::new();
    };
    parts
        .iter()
        .find_map(|(site, layer)| read::position_offsets(run, site, *layer, position).ok())
        .unwrap_or_default()
}

/// head_attention.parquet: one row per sampled prompt x top head, the attention probability
/// from the last token to a, b and itself.
pub fn head_attention(
    model: &Model,
    tok: &Tokenizer,
    p: &Pipeline,
    sample: &[&ProblemInfo],
    heads: &[(usize, usize)],
) -> Result<Table> {
    let run = p.run_dir();
    let (a_at, b_at) = (offsets(&run, p, "a"), offsets(&run, p, "b"));
    let mut layers: Vec<usize> = heads.iter().map(|h| h.0).collect();
    layers.sort_unstable();
    layers.dedup();
    let mut rows = (
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
    );
    for chunk in sample.chunks(p.extract.batch_size.max(1)) {
        let batch = model.batch(&prompt_ids(tok, p, chunk.iter().copied())?)?;
        let mut req = ForwardRequest::new();
        for &l in &layers {
            req = req.capture(HookPoint::AttnPattern(l), Positions::last());
        }
        let out = model.forward(&batch, &req)?;
        let t = batch.seq_len as i64;
        for &(l, h) in heads {
            // (b, 1, heads, keys) at the last query.
            let pat = out
                .capture(HookPoint::AttnPattern(l))?
                .squeeze(1)?
                .narrow(1, h, 1)?
                .squeeze(1)?
                .to_dtype(DType::F32)?
                .to_vec2::<f32>()?;
            for (i, prob) in chunk.iter().enumerate() {
                let at = |o: Option<&i64>| o.map_or(f64::NAN, |&o| pat[i][(t + o) as usize] as f64);
                rows.0.push(prob.prompt_id);
                rows.1.push(l as u32);
                rows.2.push(h as u32);
                rows.3.push(at(a_at.get(&prob.prompt_id)));
                rows.4.push(at(b_at.get(&prob.prompt_id)));
                rows.5.push(at(Some(&-1)));
            }
        }
    }
    Ok(Table::new()
        .column("prompt_id", Values::U32(rows.0))
        .column("layer", Values::U32(rows.1))
        .column("head", Values::U32(rows.2))
        .column("attn_to_a", Values::F64(rows.3))
        .column("attn_to_b", Values::F64(rows.4))
        .column("attn_to_self", Values::F64(rows.5)))
}
