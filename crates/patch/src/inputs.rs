//! What the patching stages (pairs, patch, patch-last, components) read: the analysed operand
//! here; the study's model with the stage's run record and the drawn pairs from
//! `helixlab_study::pairs`, which the neuron stage shares.

use helixlab_pipeline::{AnalysisTarget, Pipeline, Position};

use crate::{PatchError, Result};

/// The `[analysis]` target, whose position must be an operand's token (`a` or `b`).
pub(crate) fn target(p: &Pipeline) -> Result<AnalysisTarget> {
    let t = p.analysis_target().map_err(|(field, message)| {
        PatchError::Input(format!("{}: {field}: {message}", p.path.display()))
    })?;
    if t.position != Position::A && t.position != Position::B {
        return Err(PatchError::Input(format!(
            "{}: analysis.position: patching varies an operand at its own token (a or b), \
             not `{}`",
            p.path.display(),
            t.position
        )));
    }
    Ok(t)
}

pub(crate) use helixlab_study::pairs::{
    clean_run_request, load, prompt_ids, read_pairs, stage_run,
};
