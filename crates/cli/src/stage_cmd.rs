//! The study stages: `accuracy`, `extract`, `report`, and `inspect` for any table.

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
}

impl StageArgs {
    fn load(&self) -> Result<Pipeline> {
        Ok(Pipeline::from_file(&self.pipeline)?)
    }
}

/// A progress bar on stderr.
struct Bar(ProgressBar);

impl Bar {
    fn new() -> Self {
        Bar(ProgressBar::hidden())
    }
}

impl Progress for Bar {
    fn start(&self, label: &str, total: u64) {
        self.0
            .set_draw_target(indicatif::ProgressDrawTarget::stderr());
        self.0.set_length(total);
        self.0.set_style(
            ProgressStyle::with_template(
                "{prefix:>9} {bar:30} {pos}/{len} {msg} [{elapsed} < {eta}]",
            )
            .expect("valid template"),
        );
        self.0.set_prefix(label.to_string());
        // Model stages count prompts; analysis stages count (site, layer) partitions.
        let unit = match label {
            "spectral" | "fit" => "partitions",
            "patch" => "pair patches",
            _ => "prompts",
        };
        self.0.set_message(unit);
    }
    fn advance(&self, n: u64) {
        self.0.inc(n);
    }
    fn finish(&self) {
        self.0.finish_and_clear();
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

/// `helixlab accuracy`.
pub fn accuracy(a: &StageArgs) -> Result<()> {
    let p = a.load()?;
    let out = helixlab_extract::accuracy::run(&p, a.force, &Bar::new())
        .with_context(|| format!("accuracy stage of {}", a.pipeline.display()))?;
    report("accuracy", &p, out);
    Ok(())
}

/// `helixlab extract`.
pub fn extract(a: &StageArgs) -> Result<()> {
    let p = a.load()?;
    let out = helixlab_extract::extraction::run(&p, a.force, &Bar::new())
        .with_context(|| format!("extract stage of {}", a.pipeline.display()))?;
    report("extract", &p, out);
    Ok(())
}

/// `helixlab spectral`.
pub fn spectral(a: &StageArgs) -> Result<()> {
    let p = a.load()?;
    let out = helixlab_spectral::stage::run(&p, a.force, &Bar::new())
        .with_context(|| format!("spectral stage of {}", a.pipeline.display()))?;
    report("spectral", &p, out);
    Ok(())
}

/// `helixlab fit`.
pub fn fit(a: &StageArgs) -> Result<()> {
    let p = a.load()?;
    let out = helixlab_fit::stage::run(&p, a.force, &Bar::new())
        .with_context(|| format!("fit stage of {}", a.pipeline.display()))?;
    report("fit", &p, out);
    Ok(())
}

/// `helixlab pairs`.
pub fn pairs(a: &StageArgs) -> Result<()> {
    let p = a.load()?;
    let out = helixlab_patch::stage::run_pairs(&p, a.force)
        .with_context(|| format!("pairs stage of {}", a.pipeline.display()))?;
    report("pairs", &p, out);
    Ok(())
}

/// `helixlab patch`.
pub fn patch(a: &StageArgs) -> Result<()> {
    let p = a.load()?;
    let out = helixlab_patch::stage::run_patch(&p, a.force, &Bar::new())
        .with_context(|| format!("patch stage of {}", a.pipeline.display()))?;
    report("patch", &p, out);
    Ok(())
}

/// `helixlab patch-last`.
pub fn patch_last(a: &StageArgs) -> Result<()> {
    let p = a.load()?;
    let out = helixlab_patch::last::run_last(&p, a.force, &Bar::new())
        .with_context(|| format!("patch-last stage of {}", a.pipeline.display()))?;
    report("patch-last", &p, out);
    Ok(())
}

/// `helixlab components`.
pub fn components(a: &StageArgs) -> Result<()> {
    let p = a.load()?;
    let out = helixlab_patch::components::run_components(&p, a.force, &Bar::new())
        .with_context(|| format!("components stage of {}", a.pipeline.display()))?;
    report("components", &p, out);
    Ok(())
}

/// `helixlab neuron-grads`.
pub fn neuron_grads(a: &StageArgs) -> Result<()> {
    let p = a.load()?;
    let out = helixlab_patch::gradients::run_neuron_grads(&p, a.force, &Bar::new())
        .with_context(|| format!("neuron-grads stage of {}", a.pipeline.display()))?;
    report("neuron-grads", &p, out);
    Ok(())
}

/// `helixlab report`.
pub fn report_stage(a: &StageArgs) -> Result<()> {
    let p = a.load()?;
    let index = helixlab_report::write_report(&p)
        .with_context(|| format!("report of {}", a.pipeline.display()))?;
    println!("report: {}", index.display());
    Ok(())
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
