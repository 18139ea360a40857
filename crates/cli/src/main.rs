//! The `helixlab` command: one subcommand per stage. This crate parses arguments, shows
//! progress and reports errors; the work happens in the library crates.

mod model_cmd;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

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
    /// Inspect and run a model directory (HF format: config.json, weights, tokenizer).
    #[command(subcommand)]
    Model(model_cmd::ModelCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Model(cmd) => model_cmd::run(cmd),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
