//! `helixlab train`.

use std::path::PathBuf;

use anyhow::{anyhow, Result};
use clap::Args;
use helixlab_train::{export, train, Provenance, Recipe};
use indicatif::{ProgressBar, ProgressStyle};

/// Train a toy adder and write it as an HF GPT-2 directory (config.json, model.safetensors,
/// tokenizer.json, training_manifest.json).
///
/// Recipes: adder-decimal (addition plus x mod 10, x // 10, x+1, x-1 and x<y tasks, which make
/// T = 10 the dominant period of the number embeddings) and adder-plain (addition only).
/// Deterministic for a seed on a given machine.
#[derive(Args)]
pub struct TrainArgs {
    /// The recipe: adder-decimal or adder-plain.
    #[arg(long)]
    pub recipe: String,
    /// Seed of the split, the initialisation and the batches.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Output directory.
    #[arg(long)]
    pub out: PathBuf,
    /// Override the recipe's number of steps (e.g. for a quick check).
    #[arg(long)]
    pub steps: Option<usize>,
    /// Override the recipe's peak learning rate.
    #[arg(long)]
    pub lr: Option<f64>,
    /// Override the recipe's AdamW weight decay.
    #[arg(long)]
    pub weight_decay: Option<f64>,
    /// Replace an existing output directory.
    #[arg(long)]
    pub force: bool,
    /// No progress bar; print evaluation lines only.
    #[arg(long)]
    pub quiet: bool,
}

fn git_revision() -> Option<String> {
    let out = std::process::Command::new("git")
        .args(["rev-parse", "HEAD"])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

pub fn run(a: &TrainArgs) -> Result<()> {
    let mut recipe = Recipe::named(&a.recipe)
        .ok_or_else(|| anyhow!("unknown recipe `{}` (recipes: {})", a.recipe, Recipe::NAMES))?;
    // The manifest records the steps actually run.
    recipe.steps = a.steps.unwrap_or(recipe.steps);
    recipe.lr = a.lr.unwrap_or(recipe.lr);
    recipe.weight_decay = a.weight_decay.unwrap_or(recipe.weight_decay);
    if a.out.exists() && !a.force {
        return Err(anyhow!(
            "{} exists (use --force to replace it)",
            a.out.display()
        ));
    }
    let steps = recipe.steps;
    let bar = if a.quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(steps as u64)
    };
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} steps  {msg}  [{elapsed} < {eta}]")
            .expect("valid template"),
    );
    let trained = train(&recipe, a.seed, Some(steps), |l| {
        bar.set_position(l.step as u64);
        bar.set_message(format!("loss {:.4}", l.loss));
        if let (Some(tr), Some(ho)) = (l.train_accuracy, l.heldout_accuracy) {
            let line = format!(
                "step {:>5}  loss {:.4}  lr {:.2e}  train acc {:.4}  held-out acc {:.4}  ({:.0} s)",
                l.step, l.loss, l.lr, tr, ho, l.elapsed_s
            );
            if a.quiet {
                println!("{line}");
            } else {
                bar.println(line);
            }
        }
    })?;
    bar.finish_and_clear();
    let provenance = Provenance {
        git_revision: git_revision(),
        command: helixlab_store::manifest::command_line(),
    };
    export(&trained, &recipe, a.seed, &provenance, &a.out, a.force)?;
    let (tr, ho) = trained.final_accuracy();
    println!(
        "{}: {} steps in {:.0} s, train accuracy {:.4}, held-out accuracy {:.4}",
        a.out.display(),
        trained.log.len(),
        trained.wall_s,
        tr,
        ho
    );
    Ok(())
}
