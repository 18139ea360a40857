//! The `helixlab` command: one subcommand per stage. This crate parses arguments, shows
//! progress and reports errors; the work happens in the library crates.

mod model_cmd;
mod stage_cmd;
mod train_cmd;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

// candle allocates a fresh buffer for every op; glibc hands large ones back to the kernel and
// faults them in again on the next op. mimalloc reuses them (training steps ~1.7x faster).
// The wrapper lets weights stay mapped from their safetensors files (no copy at load).
#[global_allocator]
static GLOBAL: helixlab_model::mapped::MappedAwareAlloc<mimalloc::MiMalloc> =
    helixlab_model::mapped::MappedAwareAlloc(mimalloc::MiMalloc);

/// `mi_option_purge_delay` in mimalloc v3's `mi_option_t` (include/mimalloc.h); the Rust
/// binding does not name it.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Keeps memory mimalloc has freed mapped instead of returning it to the kernel after its
/// default 1 s: candle frees and reallocates every activation on each op, and the kernel
/// zeroing re-faulted pages was 12 % of an extraction and half of a gradient pass (`perf`).
/// Peak memory is unchanged (the pages are reused, not added); `MIMALLOC_PURGE_DELAY` in the
/// environment still wins.
fn keep_freed_pages() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: sets a process-wide integer option; mimalloc reads it on later frees.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
    }
}

/// helixlab: how language models represent numbers and add them (Kantamneni & Tegmark 2025),
/// measured on checkpoints on disk, with results as Parquet tables.
#[derive(Parser)]
#[command(name = "helixlab", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Inspect and run a checkpoint: an HF directory (config.json, weights, tokenizer) or a
    /// GGUF file.
    #[command(subcommand)]
    Model(model_cmd::ModelCommand),
    /// Run every prompt of the study's task; write problems.parquet (answer, prediction,
    /// correctness, answer logit and rank).
    Accuracy(stage_cmd::StageArgs),
    /// Write activations at the study's sites, layers and positions to Parquet partitions
    /// (only those missing or stale).
    Extract(stage_cmd::StageArgs),
    /// Fourier spectra, PCA, similarity, mod-T probes and discovered periods of the number
    /// representation at the study's [analysis] sites (reads activations; no model).
    Spectral(stage_cmd::StageArgs),
    /// Helix fits of the number representation, with baselines (circle, polynomials, PCA-k)
    /// and controls (held-out numbers, shuffled numbers, random periods, continuity).
    Fit(stage_cmd::StageArgs),
    /// Draw clean/corrupt pairs of correct problems for patching, seeded: for the analysed
    /// operand (same other operand, different answer) and for the last token (any different
    /// answer); writes patch/pairs.parquet.
    Pairs(stage_cmd::StageArgs),
    /// Activation patching at the analysed operand's token, every layer: the corrupt
    /// activation, its PCA-k projections, every stored fit's prediction, and a mean ablation;
    /// logit difference, accuracy and normalised effect per pair.
    Patch(stage_cmd::StageArgs),
    /// The last token (hook_resid_post, every layer): fit helix(a+b), helix(a,b) and
    /// helix(a,b,a+b) over every correct problem and patch their predictions for the corrupt
    /// problem, against the activation itself and PCA-9/27; writes patch/last_token*.parquet
    /// and patch/last_fits.parquet.
    PatchLast(stage_cmd::StageArgs),
    /// Total and direct effects of every MLP, attention layer and head at the last token;
    /// top-k joint patches, the MLP circuit, helix fits of heads and MLPs, head types; writes
    /// patch/components*.parquet and patch/component_roles.parquet.
    Components(stage_cmd::StageArgs),
    /// The gradient of the clean answer's logit with respect to every neuron (mlp.hook_post)
    /// at the last token, for the last-token pairs' clean prompts, one forward and backward
    /// per batch; writes patch/neuron_grads.parquet (mean and mean |gradient| per neuron).
    NeuronGrads(stage_cmd::StageArgs),
    /// Write the HTML report with figures from the study's tables.
    Report(stage_cmd::StageArgs),
    /// Show a table's schema, size, provenance and first rows.
    Inspect(stage_cmd::InspectArgs),
    /// Train a toy adder (a small GPT-2 that adds) and export it as an HF checkpoint.
    Train(train_cmd::TrainArgs),
}

fn main() -> ExitCode {
    keep_freed_pages();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Model(cmd) => model_cmd::run(cmd),
        Command::Train(args) => train_cmd::run(&args),
        Command::Accuracy(args) => stage_cmd::accuracy(&args),
        Command::Extract(args) => stage_cmd::extract(&args),
        Command::Spectral(args) => stage_cmd::spectral(&args),
        Command::Fit(args) => stage_cmd::fit(&args),
        Command::Pairs(args) => stage_cmd::pairs(&args),
        Command::Patch(args) => stage_cmd::patch(&args),
        Command::PatchLast(args) => stage_cmd::patch_last(&args),
        Command::Components(args) => stage_cmd::components(&args),
        Command::NeuronGrads(args) => stage_cmd::neuron_grads(&args),
        Command::Report(args) => stage_cmd::report_stage(&args),
        Command::Inspect(args) => stage_cmd::inspect(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_purge_delay_option_is_the_one_set() {
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
            return;
        }
        // SAFETY: reads and sets process-wide integer options.
        let before = unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) };
        assert_eq!(
            before, 1000,
            "mimalloc v3's default purge delay is 1000 ms (src/options.c)"
        );
        keep_freed_pages();
        let after = unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) };
        assert_eq!(after, -1);
    }
}
