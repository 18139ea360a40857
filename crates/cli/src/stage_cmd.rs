//! The study stages ([`Stage`]: accuracy to report) and `inspect` for any table.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use helixlab_extract::{Outcome, Progress};
use helixlab_pipeline::Pipeline;
use indicatif::{ProgressBar, ProgressStyle};

/// Arguments every stage takes.
#[derive(Args)]
pub struct StageArgs {
    /// The study file (pipelines/*.toml).
    #[arg(long, default_value = "pipelines/toy-adder.toml")]
    pub pipeline: PathBuf,
    /// Redo the stage even if its outputs are current.
    #[arg(long)]
    pub force: bool,
    /// Run one shard of the stage's work, I of N (0-based; accuracy, extract, patch,
    /// patch-last, components and neurons): its slice of the prompts (the patching stages: of
    /// the pairs; neurons: of the top neurons and the sweep), committed to <run>/shards/; the
    /// last shard to commit gathers the usual tables. Without it, a Slurm array task's index (SLURM_ARRAY_TASK_ID of
    /// SLURM_ARRAY_TASK_COUNT) or a Kubernetes Indexed Job's (JOB_COMPLETION_INDEX of
    /// HELIXLAB_SHARDS) is used.
    #[arg(long, value_name = "I/N", conflicts_with = "shards")]
    pub shard: Option<String>,
    /// Run one of N shards, the index being the job array's (SLURM_ARRAY_TASK_ID or
    /// JOB_COMPLETION_INDEX as it stands), so that resubmitting one index (`sbatch --array=2`)
    /// reruns that shard. What `helixlab slurm` writes.
    #[arg(long, value_name = "N")]
    pub shards: Option<u32>,
    /// With a shard of `components`, which of its two phases to run: 1, each component patched
    /// alone; 2, the top-k and fit patches, path patching and head attention, which rank by
    /// phase 1's means over every pair. Default: 1 until every phase-1 shard has committed,
    /// then 2.
    #[arg(long, value_name = "K")]
    pub phase: Option<u32>,
}

impl StageArgs {
    fn load(&self) -> Result<Pipeline> {
        Ok(Pipeline::from_file(&self.pipeline)?)
    }
}

/// A progress bar on stderr; where stderr is not a terminal (a batch job, a pipe, `nohup`), a
/// plain line every tenth of the work instead, so a log shows a long stage moving.
pub(crate) struct Bar {
    bar: ProgressBar,
    plain: Option<std::sync::Mutex<Plain>>,
}

/// The state of the plain-line progress.
struct Plain {
    label: String,
    unit: &'static str,
    total: u64,
    done: u64,
    next: u64,
    start: std::time::Instant,
}

impl Bar {
    pub(crate) fn new() -> Self {
        use std::io::IsTerminal;
        Bar {
            bar: ProgressBar::hidden(),
            plain: (!std::io::stderr().is_terminal()).then(|| {
                std::sync::Mutex::new(Plain {
                    label: String::new(),
                    unit: "",
                    total: 0,
                    done: 0,
                    next: 0,
                    start: std::time::Instant::now(),
                })
            }),
        }
    }
}

/// What a stage's progress counts.
fn unit(label: &str) -> &'static str {
    // Model stages count prompts; analysis stages count (site, layer) partitions.
    match label {
        "spectral" | "fit" => "partitions",
        "clock" => "steps",
        "patch" => "pair patches",
        _ => "prompts",
    }
}

impl Progress for Bar {
    fn start(&self, label: &str, total: u64) {
        if let Some(p) = &self.plain {
            let mut p = p.lock().expect("progress lock");
            *p = Plain {
                label: label.to_string(),
                unit: unit(label),
                total,
                done: 0,
                next: total.div_ceil(10).max(1),
                start: std::time::Instant::now(),
            };
            return;
        }
        self.bar
            .set_draw_target(indicatif::ProgressDrawTarget::stderr());
        self.bar.set_length(total);
        self.bar.set_style(
            ProgressStyle::with_template(
                "{prefix:>9} {bar:30} {pos}/{len} {msg} [{elapsed} < {eta}]",
            )
            .expect("valid template"),
        );
        self.bar.set_prefix(label.to_string());
        self.bar.set_message(unit(label));
    }
    fn advance(&self, n: u64) {
        let Some(p) = &self.plain else {
            self.bar.inc(n);
            return;
        };
        let mut p = p.lock().expect("progress lock");
        p.done += n;
        if p.done >= p.next && p.done < p.total {
            let secs = p.start.elapsed().as_secs_f64();
            let eta = secs * (p.total - p.done) as f64 / p.done as f64;
            eprintln!(
                "{}: {}/{} {} ({:.0} %), {secs:.0} s, about {eta:.0} s to go",
                p.label,
                p.done,
                p.total,
                p.unit,
                100.0 * p.done as f64 / p.total as f64
            );
            let step = p.total.div_ceil(10).max(1);
            p.next = (p.done / step + 1) * step;
        }
    }
    fn finish(&self) {
        if self.plain.is_none() {
            self.bar.finish_and_clear();
        }
    }
}

fn report(stage: &str, p: &Pipeline, outcome: Outcome) {
    match outcome {
        Outcome::UpToDate => println!(
            "{stage}: {} is up to date (use --force to redo)",
            p.run_dir().display()
        ),
        Outcome::Wrote {
            tables,
            rows,
            seconds,
        } => {
            println!(
                "{stage}: wrote {} table(s), {rows} rows in {seconds:.3} s",
                tables.len()
            );
            for t in tables {
                println!("  {}", t.display());
            }
        }
    }
}

/// The study's stages, in the order `make` runs them: the one list the CLI builds its stage
/// subcommands from and dispatches through (a test holds it against the Makefile's targets).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// `accuracy`.
    Accuracy,
    /// `extract`.
    Extract,
    /// `spectral`.
    Spectral,
    /// `fit`.
    Fit,
    /// `clock`.
    Clock,
    /// `pairs`.
    Pairs,
    /// `patch`.
    Patch,
    /// `patch-last`.
    PatchLast,
    /// `components`.
    Components,
    /// `neurons`.
    Neurons,
    /// `neuron-grads` (not part of the default study: the benchmark's gradient workload).
    NeuronGrads,
    /// `report`.
    Report,
}

impl Stage {
    /// Every stage, in running order.
    pub const ALL: [Stage; 12] = [
        Stage::Accuracy,
        Stage::Extract,
        Stage::Spectral,
        Stage::Fit,
        Stage::Clock,
        Stage::Pairs,
        Stage::Patch,
        Stage::PatchLast,
        Stage::Components,
        Stage::Neurons,
        Stage::NeuronGrads,
        Stage::Report,
    ];

    /// The subcommand.
    pub fn name(self) -> &'static str {
        match self {
            Stage::Accuracy => "accuracy",
            Stage::Extract => "extract",
            Stage::Spectral => "spectral",
            Stage::Fit => "fit",
            Stage::Clock => "clock",
            Stage::Pairs => "pairs",
            Stage::Patch => "patch",
            Stage::PatchLast => "patch-last",
            Stage::Components => "components",
            Stage::Neurons => "neurons",
            Stage::NeuronGrads => "neuron-grads",
            Stage::Report => "report",
        }
    }

    /// Whether `make` runs it in a study (`STAGES` in the Makefile).
    #[cfg(test)]
    fn in_study(self) -> bool {
        self != Stage::NeuronGrads
    }

    /// What `--help` says.
    pub fn about(self) -> &'static str {
        match self {
            Stage::Accuracy => {
                "Run every prompt of the study's task; write problems.parquet (answer, \
                 prediction, correctness, answer logit and rank)."
            }
            Stage::Extract => {
                "Write activations at the study's sites, layers and positions to Parquet \
                 partitions (only those missing or stale)."
            }
            Stage::Spectral => {
                "Fourier spectra, PCA, similarity, mod-T probes and discovered periods of the \
                 number representation at the study's [analysis] sites (reads activations; no \
                 model)."
            }
            Stage::Fit => {
                "Helix fits of the number representation, with baselines (circle, polynomials, \
                 PCA-k) and controls (held-out numbers, shuffled numbers, random periods, \
                 continuity)."
            }
            Stage::Clock => {
                "Why a clock (the paper's appendix; reads tables, no model): a line fitted to \
                 the first [clock] pcs PCs of the numbers' layer-0 representation and linear \
                 addition on it against the model's accuracy, distances between a and a + dn, \
                 the carry test of the model's -10 errors (chi-squared), and the slope and top \
                 period of the final logits over every answer; writes clock/*.parquet."
            }
            Stage::Pairs => {
                "Draw clean/corrupt pairs of correct problems for patching, seeded: for the \
                 analysed operand (same other operand, different answer) and for the last \
                 token (any different answer); writes patch/pairs.parquet."
            }
            Stage::Patch => {
                "Activation patching at the analysed operand's token, every layer: the corrupt \
                 activation, its PCA-k projections, every stored fit's prediction, and a mean \
                 ablation; logit difference, accuracy and normalised effect per pair."
            }
            Stage::PatchLast => {
                "The last token (hook_resid_post, every layer): fit helix(a+b), helix(a,b) and \
                 helix(a,b,a+b) over every correct problem and patch their predictions for the \
                 corrupt problem, against the activation itself and PCA-9/27; writes \
                 patch/last_token*.parquet and patch/last_fits.parquet."
            }
            Stage::Components => {
                "Total and direct effects of every MLP, attention layer and head at the last \
                 token; top-k joint patches, the MLP circuit, helix fits of heads and MLPs, \
                 head types; writes patch/components*.parquet and patch/component_roles.parquet."
            }
            Stage::Neurons => {
                "Single MLP neurons at the last token (mlp.hook_post): attribution patching \
                 over every neuron, the top [neurons] top patched exactly with total and direct \
                 effects, accuracy with only the top k kept (the rest mean-ablated), the top \
                 neurons' preactivations over the a x b grid with their periods and closed-form \
                 fits in a, b and a+b, and the fits patched in; writes neurons/*.parquet."
            }
            Stage::NeuronGrads => {
                "The gradient of the clean answer's logit with respect to every neuron \
                 (mlp.hook_post) at the last token, for the last-token pairs' clean prompts, \
                 one forward and backward per batch; writes neurons/gradients.parquet (mean \
                 and mean |gradient| per neuron)."
            }
            Stage::Report => "Write the HTML report with figures from the study's tables.",
        }
    }

    /// The stage named `name`.
    pub fn named(name: &str) -> Option<Stage> {
        Stage::ALL.into_iter().find(|s| s.name() == name)
    }

    /// Runs the stage of the study in `a` and prints what it did.
    pub fn run(self, a: &StageArgs) -> Result<()> {
        let shard = crate::shard_cmd::shard_of(a)?;
        let ws = crate::remote_run::Workspace::open(&a.load()?)?;
        if let Some(shard) = shard {
            return crate::shard_cmd::run_shard(self, a, &ws, shard);
        }
        let lock = helixlab_store::lock::StageLock::acquire(&ws.p.run_dir(), self.name())
            .with_context(|| format!("{} stage of {}", self.name(), a.pipeline.display()))?;
        self.run_local(a, &ws.p)?;
        drop(lock);
        ws.push()
    }

    /// Runs the stage on a study whose run directory is local, holding the stage's lock.
    fn run_local(self, a: &StageArgs, p: &Pipeline) -> Result<()> {
        let bar = Bar::new();
        let (force, progress) = (a.force, &bar as &dyn Progress);
        let context = || format!("{} stage of {}", self.name(), a.pipeline.display());
        let outcome = match self {
            Stage::Accuracy => {
                helixlab_extract::accuracy::run(p, force, progress, None).with_context(context)?
            }
            Stage::Extract => {
                helixlab_extract::extraction::run(p, force, progress, None).with_context(context)?
            }
            Stage::Spectral => {
                helixlab_spectral::stage::run(p, force, progress).with_context(context)?
            }
            Stage::Fit => helixlab_fit::stage::run(p, force, progress).with_context(context)?,
            Stage::Clock => helixlab_clock::stage::run(p, force, progress).with_context(context)?,
            Stage::Pairs => helixlab_patch::pairs::run_pairs(p, force).with_context(context)?,
            Stage::Patch => helixlab_patch::patching::run_patch(p, force, progress, None)
                .with_context(context)?,
            Stage::PatchLast => helixlab_patch::patch_last::run_last(p, force, progress, None)
                .with_context(context)?,
            Stage::Components => {
                helixlab_patch::components::run_components(p, force, progress, None)
                    .with_context(context)?
            }
            Stage::Neurons => helixlab_attribute::stage::run_neurons(p, force, progress, None)
                .with_context(context)?,
            Stage::NeuronGrads => {
                helixlab_attribute::neuron_grads::run_neuron_grads(p, force, progress)
                    .with_context(context)?
            }
            Stage::Report => {
                let index = helixlab_report::write_report(p)
                    .with_context(|| format!("report of {}", a.pipeline.display()))?;
                println!("report: {}", index.display());
                return Ok(());
            }
        };
        report(self.name(), p, outcome);
        Ok(())
    }
}

/// Arguments of `inspect`.
#[derive(Args)]
pub struct InspectArgs {
    /// A Parquet file or a partition directory (activations/site=.../layer=...).
    pub path: PathBuf,
    /// How many rows to show.
    #[arg(long, default_value_t = 5)]
    pub rows: usize,
}

/// `helixlab inspect`.
pub fn inspect(a: &InspectArgs) -> Result<()> {
    print!("{}", helixlab_store::inspect::inspect(&a.path, a.rows)?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The Makefile's `STAGES` and its targets are the CLI's stages in the same order.
    #[test]
    fn the_makefile_runs_the_cli_stages() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../Makefile");
        let make = std::fs::read_to_string(path).unwrap();
        let line = make
            .lines()
            .find_map(|l| l.strip_prefix("STAGES :="))
            .expect("STAGES in the Makefile");
        let listed: Vec<&str> = line.split_whitespace().collect();
        let study: Vec<&str> = Stage::ALL
            .into_iter()
            .filter(|s| s.in_study())
            .map(Stage::name)
            .collect();
        assert_eq!(listed, study);
        for stage in study {
            assert!(
                make.lines().any(|l| l.starts_with(&format!("{stage}: "))),
                "no `{stage}:` target in the Makefile"
            );
            assert_eq!(Stage::named(stage).map(Stage::name), Some(stage));
        }
    }
}
