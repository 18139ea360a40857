//! What the end-to-end tests share: the repository root, the real `helixlab` binary, and study
//! files written from their sections. Each test binary uses part of it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// The repository root (the tests live in crates/cli's package).
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The shipped toy adder.
pub fn toy_adder() -> PathBuf {
    root().join("data/models/toy-adder")
}

/// Runs the CLI with extra environment variables: (success, stdout, stderr).
pub fn helixlab_with(args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_helixlab"));
    cmd.args(args).envs(env.iter().copied());
    let out = cmd.output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs the CLI: (success, stdout, stderr).
pub fn helixlab(args: &[&str]) -> (bool, String, String) {
    helixlab_with(args, &[])
}

/// Runs the CLI, which must succeed; its stdout.
pub fn run_ok(args: &[&str]) -> String {
    let (ok, stdout, stderr) = helixlab(args);
    assert!(ok, "helixlab {args:?} failed:\n{stderr}");
    stdout
}

/// The task section of an addition over the word-level `a+b=` prompts of the toy adder.
pub fn addition(a: (u32, u32), b: (u32, u32)) -> String {
    format!(
        "kind = \"addition\"\ntemplate = \"{{a}}+{{b}}=\"\na = [{}, {}]\nb = [{}, {}]",
        a.0, a.1, b.0, b.1
    )
}

/// Writes `dir/name`: a study of `model` with these task and extract sections and any further
/// sections (`more`, whole TOML tables), writing its run to `dir/run`.
pub fn write_study(
    dir: &Path,
    name: &str,
    model: &Path,
    task: &str,
    extract: &str,
    more: &str,
) -> PathBuf {
    let text = format!(
        "[model]\ndir = \"{}\"\n\n[task]\n{task}\n\n[extract]\n{extract}\n\n{more}\n\n[output]\ndir = \"{}\"\n",
        model.display(),
        dir.join("run").display()
    );
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// `helixlab model run MODEL --prompt PROMPT --hook H.. --out OUT`: (success, stdout, stderr).
pub fn model_run(
    model: &Path,
    prompt: &str,
    hooks: &[&str],
    out: &Path,
    env: &[(&str, &str)],
) -> (bool, String, String) {
    let mut args = vec!["model", "run", model.to_str().unwrap(), "--prompt", prompt];
    for h in hooks {
        args.extend(["--hook", h]);
    }
    args.extend(["--out", out.to_str().unwrap()]);
    helixlab_with(&args, env)
}

/// `helixlab model check MODEL --json`, which must succeed: its report.
pub fn model_check(model: &Path) -> serde_json::Value {
    let (ok, stdout, stderr) = helixlab(&["model", "check", model.to_str().unwrap(), "--json"]);
    assert!(ok, "model check {} failed:\n{stderr}", model.display());
    serde_json::from_str(&stdout).unwrap()
}
