//! The `helixlab` command: one subcommand per stage. This crate parses arguments, shows
//! progress and reports errors; the work happens in the library crates.

mod model_cmd;
mod remote_run;
mod shard_cmd;
mod stage_cmd;
mod train_cmd;

use std::process::ExitCode;

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use stage_cmd::Stage;

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

/// Turns transparent huge pages off for this process. mimalloc asks the kernel for huge pages
/// on its arenas (`MADV_HUGEPAGE`), and the first touch of each 2 MiB region then zeroes all
/// of it: `perf` of the toy adder's gradient pass put 32 % of its samples in the kernel's
/// `clear_page_rep` under `do_huge_pmd_anonymous_page`, and its resident memory was 104-114 MB
/// for a 2-layer model (72-76 MB without). The arenas are mapped before `main` runs, so the
/// process-wide switch (`PR_SET_THP_DISABLE`, which covers regions already mapped) is used
/// rather than mimalloc's option; `MIMALLOC_ALLOW_THP` in the environment still wins.
fn refuse_huge_pages() {
    if std::env::var_os("MIMALLOC_ALLOW_THP").is_none() {
        // SAFETY: a process-wide flag with integer arguments; no memory is passed.
        unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
    }
}

/// How often candle's element-wise worker threads spin (a `pause` each) before they park when
/// an op ends; candle's default is 25,000.
const BARRIER_POOL_SPIN_LIMIT: &str = "100";

/// Shortens the spinning of candle's element-wise thread pool. Its workers spin after every
/// op, and the matrix products that follow run on rayon's own threads: on 2 cores a spinning
/// worker takes a core from them (`perf`: 9 % of the neuron stage's samples in that spin loop;
/// `helixlab neuron-grads` on the Pythia-160m-shaped bench checkpoint, median of 6 runs:
/// 1.89 s at 25,000, 1.55 s at 1,000, 1.37-1.52 s at 200, 1.41 s at 50, 1.58 s at 0 where
/// workers park at once). `CANDLE_BARRIER_POOL_SPIN_LIMIT` in the environment still wins.
fn shorten_pool_spinning() {
    if std::env::var_os("CANDLE_BARRIER_POOL_SPIN_LIMIT").is_none() {
        // Read once by candle when its pool starts, after this (the first thing main does).
        std::env::set_var("CANDLE_BARRIER_POOL_SPIN_LIMIT", BARRIER_POOL_SPIN_LIMIT);
    }
}

/// Fixes the thread count candle's matrix products ask for. Without `RAYON_NUM_THREADS` set,
/// candle counts the physical cores again for every product, and on Linux that count reads
/// and parses `/proc/cpuinfo` (num_cpus): 4 % of the toy adder's gradient pass (`perf`).
/// With the variable set to the count candle would find, the products read a variable
/// instead; a `RAYON_NUM_THREADS` in the environment still wins. rayon's own pool, which
/// would read the variable too, is started first at its usual size (the logical CPUs).
fn count_cores_once() {
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        let n = candle_core::utils::get_num_threads();
        // Fails only if a pool was started already, which then keeps its size.
        let _ = rayon::ThreadPoolBuilder::new().build_global();
        // Its workers are idle and read no environment; nothing else runs yet.
        std::env::set_var("RAYON_NUM_THREADS", n.to_string());
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
    /// Show a table's schema, size, provenance and first rows.
    #[command(display_order = 20)]
    Inspect(stage_cmd::InspectArgs),
    #[command(display_order = 21)]
    /// Train a toy adder (a small GPT-2 that adds) and export it as an HF checkpoint.
    Train(train_cmd::TrainArgs),
    /// Compare finished studies (the paper's Table 1): each run's best layer per patch kind
    /// (largest mean logit difference) and per fit (largest held-out R^2), in one Parquet
    /// table and an HTML page.
    #[command(display_order = 19)]
    Compare(CompareArgs),
    /// Write the usual tables of a sharded stage from its shards' committed parts (the last
    /// shard to commit does this itself); fails naming the shards not committed.
    #[command(display_order = 22)]
    Gather(shard_cmd::GatherArgs),
    /// Write the study as a Slurm batch script: job arrays for the sharded stages (accuracy,
    /// extract, patch, patch-last) with a GPU per task, each followed by its gather job, one
    /// job per other stage, chained with --dependency=afterok (`bash <run>/slurm/submit.sh`
    /// submits it).
    #[command(display_order = 23)]
    Slurm(shard_cmd::SlurmArgs),
}

/// Arguments of `compare`.
#[derive(Args)]
struct CompareArgs {
    /// Run directories of finished studies (each with fit/fits.parquet; patching is used where
    /// it was run), e.g. data/runs/toy-adder data/runs/toy-adder-b.
    #[arg(required = true, num_args = 1..)]
    runs: Vec<std::path::PathBuf>,
    /// Where compare.parquet and compare.html go.
    #[arg(long, default_value = "data/compare")]
    out: std::path::PathBuf,
}

/// The whole command line: the derived subcommands plus one per [`Stage`], in running order
/// after `model`.
fn command() -> clap::Command {
    let mut cmd = Cli::command();
    for (i, stage) in Stage::ALL.into_iter().enumerate() {
        // The stage's own about replaces the one `StageArgs` brings.
        let sub = stage_cmd::StageArgs::augment_args(clap::Command::new(stage.name()))
            .about(stage.about())
            .display_order(i + 1);
        cmd = cmd.subcommand(sub);
    }
    cmd
}

fn run(matches: clap::ArgMatches) -> anyhow::Result<()> {
    if let Some((name, sub)) = matches.subcommand() {
        if let Some(stage) = Stage::named(name) {
            return stage.run(&stage_cmd::StageArgs::from_arg_matches(sub)?);
        }
    }
    match Cli::from_arg_matches(&matches)?.command {
        Command::Model(cmd) => model_cmd::run(cmd),
        Command::Train(args) => train_cmd::run(&args),
        Command::Inspect(args) => stage_cmd::inspect(&args),
        Command::Gather(args) => shard_cmd::gather(&args),
        Command::Slurm(args) => shard_cmd::slurm(&args),
        Command::Compare(args) => {
            let page = helixlab_report::compare::compare(&args.runs, &args.out)?;
            println!("compare: {} runs, {}", args.runs.len(), page.display());
            Ok(())
        }
    }
}

/// A closed stdout (`helixlab inspect ... | head`) ends the process quietly, as it does for
/// other Unix tools, instead of a panic in `println!`: Rust ignores SIGPIPE by default.
fn quiet_on_closed_stdout() {
    // SAFETY: sets the default disposition of one signal before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

fn main() -> ExitCode {
    shorten_pool_spinning();
    count_cores_once();
    quiet_on_closed_stdout();
    keep_freed_pages();
    refuse_huge_pages();
    let result = run(command().get_matches());
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
