//! Sharded stages (`--shard I/N`, or a Slurm array task's / an Indexed Job pod's index),
//! `helixlab gather`, and `helixlab slurm`, which writes a study as Slurm jobs.
//!
//! The contract is helixlab_store::shard's: each shard runs its slice into a private
//! directory, commits its parts create-only, and whoever commits last gathers the usual
//! tables. Shardable: `accuracy` and `extract` (slices of the prompts), `patch` and
//! `patch-last` (slices of the pairs; their summaries, and patch-last's fits, are made after
//! gathering), and `components` in two phases (each gathered before the next: the second
//! ranks by the first's means over every pair; see helixlab_patch::components), and `neurons`
//! (slices of the top neurons and of the sparsity sweep; see helixlab_attribute::stage).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;
use helixlab_pipeline::{Pipeline, TaskKind};
use helixlab_store::lock::StageLock;
use helixlab_store::shard::{unix_seconds, Shard, ShardSet};
use sha2::{Digest, Sha256};

use crate::remote_run::Workspace;
use crate::stage_cmd::{Bar, Stage, StageArgs};

/// The stages whose work splits into shards.
pub const SHARDED: [Stage; 6] = [
    Stage::Accuracy,
    Stage::Extract,
    Stage::Patch,
    Stage::PatchLast,
    Stage::Components,
    Stage::Neurons,
];

/// How many phases a sharded stage runs as, each gathered before the next starts.
pub fn phases(stage: Stage) -> u32 {
    match stage {
        Stage::Components => 2,
        _ => 1,
    }
}

/// What identifies a shard set's work: the study file's bytes and this build's version, so
/// shards of an edited study, or of another helixlab, are never gathered together.
fn work_hash(pipeline: &Path) -> Result<String> {
    let bytes = std::fs::read(pipeline).with_context(|| pipeline.display().to_string())?;
    let mut h = Sha256::new();
    h.update(&bytes);
    h.update(env!("CARGO_PKG_VERSION").as_bytes());
    Ok(format!("{:x}", h.finalize()))
}

/// The shard set of `stage` (phase `phase` of a stage that has several) for the study in
/// `pipeline` with `count` shards.
fn shard_set(
    stage: Stage,
    phase: u32,
    pipeline: &Path,
    p: &Pipeline,
    count: u32,
) -> Result<ShardSet> {
    let work = work_hash(pipeline)?;
    Ok(if phases(stage) > 1 {
        ShardSet::phase(&p.run_dir(), stage.name(), phase, &work, count)
    } else {
        ShardSet::new(&p.run_dir(), stage.name(), &work, count)
    })
}

/// The phase `--phase` names (checked against the stage's), else the first whose shards have
/// not all committed (locally or in the run's bucket).
fn phase_of(stage: Stage, a: &StageArgs, ws: &Workspace, count: u32) -> Result<u32> {
    let n = phases(stage);
    if let Some(k) = a.phase {
        if k == 0 || k > n {
            bail!(
                "--phase {k}: {} runs as {n} phase(s), numbered from 1",
                stage.name()
            );
        }
        return Ok(k);
    }
    for k in 1..n {
        let set = shard_set(stage, k, &a.pipeline, &ws.p, count)?;
        ws.pull_set_commits(&set)?;
        if !set.missing().is_empty() {
            return Ok(k);
        }
    }
    Ok(n)
}

/// The shard this process runs: `--shard I/N`; `--shards N` with the array's index; else the
/// scheduler's environment (index and count), else none.
pub fn shard_of(a: &StageArgs) -> Result<Option<Shard>> {
    let env = |k: &str| std::env::var(k).ok();
    match (&a.shard, a.shards) {
        (Some(text), _) => Ok(Some(Shard::parse(text)?)),
        (None, Some(n)) => Ok(Some(Shard::from_index_env(&env, n)?)),
        (None, None) => Ok(Shard::from_env(&env)?),
    }
}

/// Runs shard `shard` of `stage`: skipped when committed; otherwise the slice runs in the
/// shard's private directory and is committed (for a run in object storage: its parts
/// uploaded, then its commit put create-only, so of two attempts on one shard exactly one
/// commits); the last shard to commit gathers.
pub fn run_shard(stage: Stage, a: &StageArgs, ws: &Workspace, shard: Shard) -> Result<()> {
    if !SHARDED.contains(&stage) {
        bail!(
            "{} does not take a shard (--shard {shard}, or a Slurm array / Indexed Job index \
             in the environment): only {} do; run it as one job",
            stage.name(),
            SHARDED.map(Stage::name).join(", ")
        );
    }
    let p = &ws.p;
    let phase = phase_of(stage, a, ws, shard.count)?;
    let set = shard_set(stage, phase, &a.pipeline, p, shard.count)?;
    let label = if phases(stage) > 1 {
        format!("{} phase {phase}", stage.name())
    } else {
        stage.name().to_string()
    };
    if phase > 1 {
        // The phase before must be gathered: gather it here when all its shards are in (its
        // own gather job may not have run, or ran on another node).
        let before = shard_set(stage, phase - 1, &a.pipeline, p, shard.count)?;
        ws.pull_set(&before)?;
        if before.missing().is_empty() {
            gather_set(stage, phase - 1, &a.pipeline, ws, &before)?;
        }
    }
    let private = set.private_dir(shard.index);
    let commit_rel = set.relative_commit(shard.index);
    // Two processes on one shard (a retry racing the original): the second waits, then sees
    // the commit.
    let lock = StageLock::acquire(&private, stage.name())?;
    let remote_commit = match &ws.remote {
        Some(r) => r.exists(&commit_rel)?,
        None => false,
    };
    if remote_commit || set.committed(shard.index)?.is_some() {
        println!(
            "{label} shard {shard}: committed already ({}); skipped",
            committed_at(ws, &set, shard)
        );
    } else {
        let started = unix_seconds();
        let mut q = p.clone();
        q.output.dir = private.display().to_string();
        let bar = Bar::new();
        let context = || format!("{label} shard {shard} of {}", a.pipeline.display());
        // The private directory holds nothing committed: whatever is there is redone.
        match stage {
            Stage::Accuracy => helixlab_extract::accuracy::run(&q, true, &bar, Some(shard))
                .map(|_| ())
                .with_context(context)?,
            Stage::Extract => helixlab_extract::extraction::run(&q, true, &bar, Some(shard))
                .map(|_| ())
                .with_context(context)?,
            // Reads the run's inputs, writes its slice to the private directory.
            Stage::Patch => {
                helixlab_patch::patching::run_patch(p, true, &bar, Some((shard, &private)))
                    .map(|_| ())
                    .with_context(context)?
            }
            Stage::Components => {
                use helixlab_patch::components::{run_components, ComponentsShard};
                let part = if phase == 1 {
                    ComponentsShard::Effects(shard, &private)
                } else {
                    ComponentsShard::Joint(shard, &private)
                };
                run_components(p, true, &bar, Some(part))
                    .map(|_| ())
                    .with_context(context)?
            }
            Stage::Neurons => {
                helixlab_attribute::stage::run_neurons(p, true, &bar, Some((shard, &private)))
                    .map(|_| ())
                    .with_context(context)?
            }
            _ => helixlab_patch::patch_last::run_last(p, true, &bar, Some((shard, &private)))
                .map(|_| ())
                .with_context(context)?,
        }
        let commit = set.commit(shard, started).with_context(context)?;
        if let Some(r) = &ws.remote {
            ws.push()?;
            let bytes = std::fs::read(set.commit_path(shard.index))
                .with_context(|| set.commit_path(shard.index).display().to_string())?;
            if !r.create(&commit_rel, bytes)? {
                // Another attempt committed first: this one's parts go, its commit stays theirs.
                std::fs::remove_file(set.commit_path(shard.index))?;
                for part in commit.tables.values() {
                    let _ = std::fs::remove_file(set.root().join(&part.file));
                }
                ws.push()?;
                bail!(
                    "{}: shard {shard} of {label} was committed by another attempt first; \
                     this attempt's commit is refused and its parts removed",
                    r.url_of(&commit_rel),
                );
            }
        }
        let rows: u64 = commit.tables.values().map(|t| t.rows).sum();
        println!(
            "{label} shard {shard}: {} table part(s), {rows} rows, committed to {}",
            commit.tables.len(),
            committed_at(ws, &set, shard)
        );
    }
    drop(lock);
    ws.pull_set(&set)?;
    if set.missing().is_empty() {
        gather_set(stage, phase, &a.pipeline, ws, &set)?;
    }
    Ok(())
}

/// Where shard `shard`'s commit is, for messages.
fn committed_at(ws: &Workspace, set: &ShardSet, shard: Shard) -> String {
    match &ws.remote {
        Some(r) => r.url_of(&set.relative_commit(shard.index)),
        None => set.commit_path(shard.index).display().to_string(),
    }
}

/// Gathers `set` under the stage's lock on the run (the last two shards may both try), and
/// sends the tables to the bucket of a remote run.
fn gather_set(
    stage: Stage,
    phase: u32,
    pipeline: &Path,
    ws: &Workspace,
    set: &ShardSet,
) -> Result<()> {
    let _lock = StageLock::acquire(&ws.p.run_dir(), stage.name())?;
    let label = if phases(stage) > 1 {
        format!("{} phase {phase}", stage.name())
    } else {
        stage.name().to_string()
    };
    // Tables folded into others and removed after gathering (components' phase 1 once phase
    // 2 has started; neurons' lens directions) are not gathered again.
    let folded = match stage {
        Stage::Components if phase == 1 => {
            let last = shard_set(stage, 2, pipeline, &ws.p, set.count())?;
            ws.pull_set_commits(&last)?;
            last.missing().len() < set.count() as usize
        }
        // Gathering writes the tables in name order, top.parquet last.
        Stage::Neurons => set.gathered_into("neurons/top.parquet")?,
        _ => false,
    };
    let written = if folded {
        Vec::new()
    } else {
        set.gather()
            .with_context(|| format!("gathering the {label} shards"))?
    };
    // Tables made from every shard's rows at once.
    match stage {
        Stage::Patch => helixlab_patch::patching::summarize_gathered(&ws.p)
            .context("the patching summary of the gathered rows")?,
        Stage::PatchLast => helixlab_patch::patch_last::finish_gathered(&ws.p, &Bar::new())
            .context("the last-token summary and fits of the gathered rows")?,
        Stage::Components if phase == 2 => helixlab_patch::components::finish_gathered(&ws.p)
            .context("the component summary and roles of the gathered rows")?,
        Stage::Neurons => helixlab_attribute::stage::finish_gathered(&ws.p)
            .context("the neuron tables that need every top neuron")?,
        _ => {}
    }
    if written.is_empty() {
        println!("{label}: gathered already from {}", set.root().display());
    } else {
        println!(
            "{label}: gathered {} table(s) from {}",
            written.len(),
            set.root().display()
        );
    }
    ws.push()
}

/// Arguments of `gather`.
#[derive(Args)]
pub struct GatherArgs {
    /// The sharded stage (accuracy, extract, patch, patch-last, components or neurons).
    pub stage: String,
    /// The study file.
    #[arg(long, default_value = "pipelines/toy-adder.toml")]
    pub pipeline: PathBuf,
    /// How many shards the stage ran as.
    #[arg(long)]
    pub shards: u32,
    /// Which phase to gather, for a stage that runs in phases (components: 1 or 2; default
    /// the last).
    #[arg(long, value_name = "K")]
    pub phase: Option<u32>,
}

/// `helixlab gather`: the usual tables from all shards' parts; fails naming the shards that
/// have not committed.
pub fn gather(a: &GatherArgs) -> Result<()> {
    let stage = Stage::named(&a.stage)
        .filter(|s| SHARDED.contains(s))
        .with_context(|| {
            format!(
                "gather {:?}: not a sharded stage (only {} are)",
                a.stage,
                SHARDED.map(Stage::name).join(", ")
            )
        })?;
    if a.shards == 0 {
        bail!("gather: --shards must be at least 1");
    }
    let phase = a.phase.unwrap_or(phases(stage));
    if phase == 0 || phase > phases(stage) {
        bail!(
            "gather {}: --phase {phase}: it runs as {} phase(s), numbered from 1",
            stage.name(),
            phases(stage)
        );
    }
    let ws = Workspace::open(&Pipeline::from_file(&a.pipeline)?)?;
    let set = shard_set(stage, phase, &a.pipeline, &ws.p, a.shards)?;
    ws.pull_set(&set)?;
    gather_set(stage, phase, &a.pipeline, &ws, &set)
}

/// Arguments of `slurm`.
#[derive(Args)]
pub struct SlurmArgs {
    /// The study file.
    #[arg(long, default_value = "pipelines/toy-adder.toml")]
    pub pipeline: PathBuf,
    /// Array tasks per sharded stage (accuracy, extract, patch, patch-last, each phase of
    /// components, neurons).
    #[arg(long, default_value_t = 4)]
    pub shards: u32,
    /// GPUs per forward task (`--gres=gpu:K`); 0 for CPU-only nodes.
    #[arg(long, default_value_t = 1)]
    pub gpus: u32,
    /// Slurm partition (`--partition`); the cluster's default when unset.
    #[arg(long)]
    pub partition: Option<String>,
    /// Extra `sbatch` options for every job (e.g. "--time=2:00:00 --account=lab").
    #[arg(long, default_value = "")]
    pub sbatch_options: String,
    /// Where the script goes (default: the logs directory's submit.sh).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Where the jobs' logs go (default: <run>/slurm, or slurm-logs/<study> in the working
    /// directory for a run in object storage).
    #[arg(long)]
    pub logs: Option<PathBuf>,
}

/// The jobs' log directory.
fn logs_dir(a: &SlurmArgs, p: &Pipeline, cwd: &Path) -> PathBuf {
    let abs = |x: &Path| {
        if x.is_absolute() {
            x.to_path_buf()
        } else {
            cwd.join(x)
        }
    };
    match &a.logs {
        Some(l) => abs(l),
        None if helixlab_remote::is_remote(&p.output.dir) => cwd.join("slurm-logs").join(&p.name),
        None => abs(&p.run_dir()).join("slurm"),
    }
}

/// `s` quoted for a POSIX shell.
fn sh(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The study's stages as `make` would run them: clock for addition, the patching stages for
/// tasks with answers.
fn study_stages(p: &Pipeline) -> Vec<Stage> {
    let answers = p.task.kind != TaskKind::Numbers;
    Stage::ALL
        .into_iter()
        .filter(|s| match s {
            Stage::NeuronGrads => false,
            Stage::Clock => p.task.kind == TaskKind::Addition,
            Stage::Pairs | Stage::Patch | Stage::PatchLast | Stage::Components => answers,
            Stage::Neurons => answers,
            _ => true,
        })
        .collect()
}

/// Whether a stage runs the model (gets a GPU).
fn runs_the_model(s: Stage) -> bool {
    matches!(
        s,
        Stage::Accuracy
            | Stage::Extract
            | Stage::Patch
            | Stage::PatchLast
            | Stage::Components
            | Stage::Neurons
    )
}

/// The batch script: one `sbatch` per stage, chained with `--dependency=afterok`; the sharded
/// stages as job arrays, each followed by its gather.
pub fn slurm_script(a: &SlurmArgs, p: &Pipeline, helixlab: &Path, cwd: &Path) -> String {
    let abs = |x: &Path| {
        if x.is_absolute() {
            x.to_path_buf()
        } else {
            cwd.join(x)
        }
    };
    let pipeline = abs(&a.pipeline);
    let logs = logs_dir(a, p, cwd);
    let mut s = format!(
        "#!/usr/bin/env bash\n\
         # The study {name} as Slurm jobs, written by `helixlab slurm` ({version}):\n\
         #   {cmd}\n\
         # Sharded stages run as job arrays of {n} tasks (the task's index is the shard: see\n\
         # docs/cluster.md); every other stage is one job; each job starts after the one before\n\
         # it succeeded (--dependency=afterok). Submit with `bash {{this file}}`; it prints the\n\
         # job ids. HELIXLAB and SBATCH in the environment override the binary and sbatch.\n\
         set -euo pipefail\n\
         HELIXLAB=${{HELIXLAB:-{bin}}}\n\
         SBATCH=${{SBATCH:-sbatch}}\n\
         PIPELINE={pipeline}\n\
         LOGS={logs}\n\
         mkdir -p \"$LOGS\"\n\
         cd {cwd}\n\
         common=(--parsable --chdir={cwd}{partition}{extra})\n\
         dep=()\n\
         submit() {{ # name gpus array command...\n\
         \x20 local name=$1 gpus=$2 array=$3; shift 3\n\
         \x20 local opts=(\"${{common[@]}}\" \"${{dep[@]}}\" --job-name=\"helixlab-$name\")\n\
         \x20 [ \"$gpus\" -gt 0 ] && opts+=(--gres=gpu:\"$gpus\")\n\
         \x20 if [ -n \"$array\" ]; then opts+=(--array=\"$array\" --output=\"$LOGS/$name-%a.out\")\n\
         \x20 else opts+=(--output=\"$LOGS/$name.out\"); fi\n\
         \x20 local id; id=$(\"$SBATCH\" \"${{opts[@]}}\" --wrap=\"$(printf '%q ' \"$@\")\")\n\
         \x20 id=${{id%%;*}}; echo \"$name $id\"; dep=(--dependency=afterok:\"$id\")\n\
         }}\n",
        name = p.name,
        version = env!("CARGO_PKG_VERSION"),
        cmd = std::env::args().collect::<Vec<_>>().join(" "),
        n = a.shards,
        bin = sh(&helixlab.display().to_string()),
        pipeline = sh(&pipeline.display().to_string()),
        logs = sh(&logs.display().to_string()),
        cwd = sh(&cwd.display().to_string()),
        partition = a
            .partition
            .as_ref()
            .map(|x| format!(" --partition={}", sh(x)))
            .unwrap_or_default(),
        extra = if a.sbatch_options.is_empty() {
            String::new()
        } else {
            format!(" {}", a.sbatch_options)
        },
    );
    for stage in study_stages(p) {
        let gpus = if runs_the_model(stage) { a.gpus } else { 0 };
        let name = stage.name();
        if SHARDED.contains(&stage) && a.shards > 1 {
            for phase in 1..=phases(stage) {
                let (job, flag) = if phases(stage) > 1 {
                    (format!("{name}-{phase}"), format!(" --phase {phase}"))
                } else {
                    (name.to_string(), String::new())
                };
                let _ = writeln!(
                    s,
                    "submit {job} {gpus} 0-{} \"$HELIXLAB\" {name} --pipeline \"$PIPELINE\" \
                     --shards {}{flag}",
                    a.shards - 1,
                    a.shards
                );
                let _ = writeln!(
                    s,
                    "submit gather-{job} 0 '' \"$HELIXLAB\" gather {name} --pipeline \
                     \"$PIPELINE\" --shards {}{flag}",
                    a.shards
                );
            }
        } else {
            let _ = writeln!(
                s,
                "submit {name} {gpus} '' \"$HELIXLAB\" {name} --pipeline \"$PIPELINE\""
            );
        }
    }
    s
}

/// `helixlab slurm`: writes the script and says how to submit it.
pub fn slurm(a: &SlurmArgs) -> Result<()> {
    if a.shards == 0 {
        bail!("slurm: --shards must be at least 1");
    }
    let p = Pipeline::from_file(&a.pipeline)?;
    let cwd = std::env::current_dir().context("the working directory")?;
    let helixlab = std::env::current_exe().context("the helixlab binary's path")?;
    let script = slurm_script(a, &p, &helixlab, &cwd);
    let out = a
        .out
        .clone()
        .unwrap_or_else(|| logs_dir(a, &p, &cwd).join("submit.sh"));
    helixlab_store::atomic::write(&out, script.as_bytes())?;
    println!(
        "slurm: wrote {} (submit it with `bash {}`)",
        out.display(),
        out.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_script_chains_every_stage_and_shards_the_forward_ones() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let a = SlurmArgs {
            pipeline: root.join("pipelines/toy-adder.toml"),
            shards: 4,
            gpus: 1,
            partition: Some("gpu".into()),
            sbatch_options: "--time=1:00:00".into(),
            out: None,
            logs: None,
        };
        let p = Pipeline::from_file(&a.pipeline).unwrap();
        let s = slurm_script(&a, &p, Path::new("/opt/helixlab"), Path::new("/w"));
        let submits: Vec<&str> = s.lines().filter(|l| l.starts_with("submit ")).collect();
        let names: Vec<&str> = submits
            .iter()
            .map(|l| l.split_whitespace().nth(1).unwrap())
            .collect();
        assert_eq!(
            names,
            [
                "accuracy",
                "gather-accuracy",
                "extract",
                "gather-extract",
                "spectral",
                "fit",
                "clock",
                "pairs",
                "patch",
                "gather-patch",
                "patch-last",
                "gather-patch-last",
                "components-1",
                "gather-components-1",
                "components-2",
                "gather-components-2",
                "neurons",
                "gather-neurons",
                "report"
            ]
        );
        assert!(
            submits[0].starts_with("submit accuracy 1 0-3 "),
            "{}",
            submits[0]
        );
        assert!(
            submits[4].starts_with("submit spectral 0 '' "),
            "{}",
            submits[4]
        );
        assert!(s.contains("--partition='gpu' --time=1:00:00"));
        assert!(s.contains("dep=(--dependency=afterok:\"$id\")"));
    }

    #[test]
    fn quoting_survives_spaces_and_quotes() {
        assert_eq!(sh("a b'c"), r"'a b'\''c'");
    }
}
