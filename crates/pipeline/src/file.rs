//! The pipeline file: parsing, `${VAR}` expansion, validation with errors that name the file
//! and the field.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::analysis::{
    AnalysisSection, AnalysisTarget, ClockSection, FitSection, NeuronsSection, PatchSection,
    SpectralSection,
};
use crate::task::{Task, TaskKind};
use crate::vocab::{Device, Dtype, NumberLabel, Position, Site};

/// Errors in a pipeline file.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// The file cannot be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// TOML syntax, an unknown field, a missing field or a wrong type (toml's message names
    /// the field and the line).
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// toml's message.
        message: String,
    },
    /// A field with a value that parses but cannot be used.
    #[error("{path}: field `{field}`: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The field, dotted (`extract.sites`).
        field: String,
        /// What is wrong.
        message: String,
    },
}

/// `[model]`: which checkpoint, how to run it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSection {
    /// The checkpoint: an HF model directory, a `.gguf` file or a directory holding one;
    /// `${VAR}` is replaced by the environment variable.
    pub dir: String,
    /// f32 (default), bf16 or f16.
    #[serde(default)]
    pub dtype: Dtype,
    /// cpu (default), cuda, cuda:N, metal.
    #[serde(default)]
    pub device: Device,
    /// Where `dir` was fetched from (an `s3://` model, read from a local cache), which is what
    /// the manifests name: every machine's cache is elsewhere, the model is the same. Not read
    /// from the study file.
    #[serde(skip)]
    pub fetched_from: Option<String>,
}

fn share_prefixes_by_default() -> bool {
    true
}

fn prompts_per_batch() -> usize {
    256
}

/// Which layers: `"all"` or a list.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Layers {
    /// Every layer of the model (`"all"`).
    All(String),
    /// These layers.
    List(Vec<usize>),
}

impl<'de> Deserialize<'de> for Layers {
    // By hand, so a bad value says what a layer list is (serde's untagged enums say only "did
    // not match any variant").
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Layers;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("\"all\" or a list of layer indices counted from 0, such as [0, 5, 10]")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Layers, E> {
                Ok(Layers::All(s.to_string()))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Layers, A::Error> {
                let mut v = Vec::new();
                while let Some(l) = seq.next_element::<i64>()? {
                    if l < 0 {
                        return Err(serde::de::Error::custom(format!(
                            "{l} is not a layer: layers are counted from 0 (write \"all\" or \
                             a list such as [0, 5, 10])"
                        )));
                    }
                    v.push(l as usize);
                }
                Ok(Layers::List(v))
            }
        }
        d.deserialize_any(Visitor)
    }
}

impl Layers {
    /// The layers listed, `None` for `"all"`.
    pub fn listed(&self) -> Option<&[usize]> {
        match self {
            Layers::List(v) => Some(v),
            Layers::All(_) => None,
        }
    }

    /// The layers for a model with `n` of them.
    pub fn resolve(&self, n: usize) -> Result<Vec<usize>, String> {
        match self {
            Layers::All(s) if s == "all" => Ok((0..n).collect()),
            Layers::All(s) => Err(format!("`{s}`: write \"all\" or a list such as [0, 5, 10]")),
            Layers::List(v) => {
                if let Some(l) = v.iter().find(|&&l| l >= n) {
                    return Err(format!(
                        "layer {l} does not exist (the model has {n} layers)"
                    ));
                }
                let mut v = v.clone();
                v.sort();
                v.dedup();
                Ok(v)
            }
        }
    }
}

/// `[extract]`: which activations to write.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExtractSection {
    /// Block hooks.
    pub sites: Vec<Site>,
    /// Layers.
    pub layers: Layers,
    /// Named positions: operands of the task (`a`, `b`, `x`) and `last`.
    pub positions: Vec<Position>,
    /// Prompts per forward pass.
    #[serde(default = "prompts_per_batch")]
    pub batch_size: usize,
    /// Run a prefix several prompts of a batch share (`37+` in `37+45=` and `37+46=`, or an
    /// instruction before every problem) once, and only the rest of each prompt (results equal
    /// to float rounding; a causal model's activations over a prefix do not depend on what
    /// follows). The patching stages likewise run a patched prompt only from the patched
    /// position on, over the clean run's keys and values for the positions before it. On by
    /// default; off runs every prompt, clean or patched, whole.
    #[serde(default = "share_prefixes_by_default")]
    pub share_prefixes: bool,
}

/// The most periods `spectral.discover` may ask for.
pub const MAX_DISCOVERED: usize = 32;

/// `[output]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputSection {
    /// The run directory; `${VAR}` expanded.
    pub dir: String,
}

/// A study.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pipeline {
    /// A name for reports; defaults to the file stem.
    #[serde(default)]
    pub name: String,
    /// The model.
    pub model: ModelSection,
    /// The task.
    pub task: Task,
    /// Activation extraction.
    pub extract: ExtractSection,
    /// Where outputs go.
    pub output: OutputSection,
    /// What the analysis stages read.
    #[serde(default)]
    pub analysis: AnalysisSection,
    /// Settings of `spectral`.
    #[serde(default)]
    pub spectral: SpectralSection,
    /// Settings of `fit`.
    #[serde(default)]
    pub fit: FitSection,
    /// Settings of `pairs` and `patch`.
    #[serde(default)]
    pub patch: PatchSection,
    /// Settings of `neurons`.
    #[serde(default)]
    pub neurons: NeuronsSection,
    /// Settings of `clock`.
    #[serde(default)]
    pub clock: ClockSection,
    /// The file it was read from.
    #[serde(skip)]
    pub path: PathBuf,
}

fn expand(value: &str, field: &str, path: &Path) -> Result<String, PipelineError> {
    let mut out = String::new();
    let mut rest = value;
    while let Some(i) = rest.find("${") {
        out.push_str(&rest[..i]);
        let end = rest[i..].find('}').ok_or_else(|| PipelineError::Invalid {
            path: path.to_path_buf(),
            field: field.into(),
            message: format!("unclosed ${{ in {value:?}"),
        })?;
        let var = &rest[i + 2..i + end];
        let v = std::env::var(var).map_err(|_| PipelineError::Invalid {
            path: path.to_path_buf(),
            field: field.into(),
            message: format!("environment variable {var} is not set (used in {value:?})"),
        })?;
        out.push_str(&v);
        rest = &rest[i + end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

impl Pipeline {
    /// Reads, expands and validates a pipeline file.
    pub fn from_file(path: &Path) -> Result<Self, PipelineError> {
        let text = std::fs::read_to_string(path).map_err(|source| PipelineError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_toml(&text, path)
    }

    /// Parses pipeline text; `path` names it in errors and gives the default name.
    pub fn from_toml(text: &str, path: &Path) -> Result<Self, PipelineError> {
        let mut p: Pipeline = toml::from_str(text).map_err(|e| PipelineError::Parse {
            path: path.to_path_buf(),
            message: e.to_string().trim_end().to_string(),
        })?;
        p.path = path.to_path_buf();
        if p.name.is_empty() {
            p.name = path
                .file_stem()
                .map(|s| s.to_string_lossy().to_string())
                .unwrap_or_default();
        }
        p.model.dir = expand(&p.model.dir, "model.dir", path)?;
        p.output.dir = expand(&p.output.dir, "output.dir", path)?;
        let invalid = |field: &str, message: String| PipelineError::Invalid {
            path: path.to_path_buf(),
            field: field.into(),
            message,
        };
        p.task.validate().map_err(|m| invalid("task", m))?;
        let out = Path::new(&p.output.dir);
        if out.exists() && !out.is_dir() {
            return Err(invalid(
                "output.dir",
                format!("{} is a file, not a directory", out.display()),
            ));
        }
        if p.extract.sites.is_empty() {
            return Err(invalid("extract.sites", "no sites".into()));
        }
        if p.extract.layers == Layers::List(Vec::new()) {
            return Err(invalid(
                "extract.layers",
                "an empty list extracts nothing: write \"all\" or the layers to extract".into(),
            ));
        }
        if p.extract.batch_size == 0 {
            return Err(invalid("extract.batch_size", "must be at least 1".into()));
        }
        for pos in &p.extract.positions {
            let operand = pos.operand().map(|o| o.name());
            if operand.is_some_and(|o| !p.task.kind.operands().contains(&o)) {
                return Err(invalid(
                    "extract.positions",
                    format!(
                        "`{pos}` is not a position of this task (positions: {}, last)",
                        p.task
                            .kind
                            .operands()
                            .iter()
                            .map(|o| format!("{o}, {o}_first"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ));
            }
        }
        p.analysis_target().map_err(|(f, m)| invalid(f, m))?;
        let n = &p.neurons;
        if n.top == 0 || n.ablation_problems == 0 || n.periods.iter().any(|&t| t <= 0.0) {
            return Err(invalid(
                "neurons",
                "top and ablation_problems must be at least 1, periods positive".into(),
            ));
        }
        let fit = &p.fit;
        if fit.pca_dim == 0 {
            return Err(invalid(
                "fit.pca_dim",
                "the fits are made in a PCA of at least 1 component".into(),
            ));
        }
        if fit.periods.iter().any(|&t| t <= 0.0) || fit.holdout <= 0.0 || fit.holdout >= 1.0 {
            return Err(invalid(
                "fit",
                "periods must be positive and holdout in (0, 1)".into(),
            ));
        }
        let sp = &p.spectral;
        if sp.discover > MAX_DISCOVERED {
            return Err(invalid(
                "spectral.discover",
                format!(
                    "{} periods: the greedy search fits a helix per candidate and step, so at \
                     most {MAX_DISCOVERED} are discovered",
                    sp.discover
                ),
            ));
        }
        if sp.probe_holdout <= 0.0 || sp.probe_holdout >= 1.0 || sp.probe_periods.contains(&0) {
            return Err(invalid(
                "spectral",
                "probe_holdout must be in (0, 1) and probe periods at least 1".into(),
            ));
        }
        if p.patch.pairs == 0 {
            return Err(invalid("patch.pairs", "must be at least 1".into()));
        }
        if !(p.patch.circuit_fraction > 0.0 && p.patch.circuit_fraction <= 1.0) {
            return Err(invalid(
                "patch.circuit_fraction",
                "must be in (0, 1]".into(),
            ));
        }
        if p.patch.last_pca_dim == 0 || p.patch.last_pca_ks.contains(&0) {
            return Err(invalid(
                "patch.last_pca_dim",
                "PCA sizes must be at least 1".into(),
            ));
        }
        if p.patch.component_fit_problems < 10 {
            return Err(invalid(
                "patch.component_fit_problems",
                "needs at least 10 problems to fit".into(),
            ));
        }
        for r in sp.ranges.iter().flatten() {
            if r[1] - r[0] < 3 {
                return Err(invalid(
                    "spectral.ranges",
                    format!("{r:?} holds fewer than 4 numbers"),
                ));
            }
        }
        Ok(p)
    }

    /// The analysis selection with defaults applied; errors name the field.
    pub fn analysis_target(&self) -> Result<AnalysisTarget, (&'static str, String)> {
        let a = &self.analysis;
        let ops = self.task.kind.operands();
        let position = a
            .position
            .unwrap_or_else(|| ops[0].parse().expect("operands are positions"));
        if !self.extract.positions.contains(&position) {
            return Err((
                "analysis.position",
                format!(
                    "`{position}` is not extracted (extract.positions: {})",
                    self.extract
                        .positions
                        .iter()
                        .map(|p| p.name())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        }
        let number = a
            .number
            .unwrap_or_else(|| position.operand().unwrap_or(NumberLabel::Answer));
        let default_range = match number {
            NumberLabel::A | NumberLabel::X if ops.contains(&number.name()) => Some(self.task.a),
            NumberLabel::B if ops.contains(&"b") => self.task.b,
            NumberLabel::Answer if self.task.kind != TaskKind::Numbers => None,
            _ => {
                return Err((
                    "analysis.number",
                    format!(
                        "`{number}` does not label this task's rows (use {} or answer)",
                        ops.join(", ")
                    ),
                ))
            }
        };
        let range = match (a.range, default_range) {
            (Some(r), _) | (None, Some(r)) => r,
            (None, None) => {
                return Err((
                    "analysis.range",
                    format!("give the range of `{number}` to analyse"),
                ))
            }
        };
        if range[1] - range[0] < 3 {
            return Err((
                "analysis.range",
                format!("{range:?} holds fewer than 4 numbers"),
            ));
        }
        let task_range = match number {
            NumberLabel::Answer if self.task.kind == TaskKind::Addition => {
                let b = self.task.b.unwrap_or([0, 0]);
                Some([self.task.a[0] + b[0], self.task.a[1] + b[1]])
            }
            _ => default_range,
        };
        if let Some(t) = task_range.filter(|t| range[0] < t[0] || range[1] > t[1]) {
            return Err((
                "analysis.range",
                format!("{range:?} reaches beyond the task's `{number}`, {t:?}"),
            ));
        }
        let sites = match &a.sites {
            None => self.extract.sites.clone(),
            Some(s) => {
                if let Some(bad) = s.iter().find(|s| !self.extract.sites.contains(s)) {
                    return Err((
                        "analysis.sites",
                        format!("`{}` is not an extracted site", bad.name()),
                    ));
                }
                s.clone()
            }
        };
        Ok(AnalysisTarget {
            sites,
            position,
            number_column: number.column(),
            number,
            range,
        })
    }

    /// The model directory.
    pub fn model_dir(&self) -> PathBuf {
        PathBuf::from(&self.model.dir)
    }

    /// The run directory.
    pub fn run_dir(&self) -> PathBuf {
        PathBuf::from(&self.output.dir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every shipped study file parses and validates (models named through $HELIXLAB_MODELS
    /// pointed at a placeholder).
    #[test]
    fn every_shipped_pipeline_is_valid() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../pipelines");
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                let text = std::fs::read_to_string(&path)
                    .unwrap()
                    .replace("${HELIXLAB_MODELS}", "/models");
                if let Err(e) = Pipeline::from_toml(&text, &path) {
                    panic!("{}: {e}", path.display());
                }
                n += 1;
            }
        }
        assert!(n >= 16, "{n} pipelines");
    }

    const GOOD: &str = r#"
[model]
dir = "data/models/toy-adder"

[task]
kind = "addition"
template = "{a}+{b}="
a = [0, 99]
b = [0, 99]

[extract]
sites = ["hook_resid_pre", "attn.hook_z"]
layers = "all"
positions = ["a", "b", "last"]

[output]
dir = "data/runs/toy-adder"
"#;

    fn parse(text: &str) -> Result<Pipeline, PipelineError> {
        Pipeline::from_toml(text, Path::new("pipelines/test.toml"))
    }

    #[test]
    fn a_good_file_parses_with_defaults() {
        let p = parse(GOOD).unwrap();
        assert_eq!(p.name, "test");
        assert_eq!(p.model.dtype, Dtype::F32);
        assert_eq!(p.extract.batch_size, 256);
        assert_eq!(p.extract.layers.resolve(2).unwrap(), vec![0, 1]);
        assert_eq!(
            p.extract.sites[1].at(3),
            helixlab_hooks::HookPoint::AttnZ(3)
        );
        let t = p.analysis_target().unwrap();
        assert_eq!((t.position, t.number_column), (Position::A, "a"));
        assert_eq!((t.range, t.sites.len()), ([0, 99], 2));
        assert_eq!(p.fit.periods, vec![2.0, 5.0, 10.0, 100.0]);
        assert_eq!(p.spectral.probe_periods.len(), 14);
    }

    #[test]
    fn errors_name_the_file_and_field() {
        let e = parse(&GOOD.replace("[output]", "[output]\nformat = \"csv\""))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("pipelines/test.toml") && e.contains("format"),
            "{e}"
        );
        let e = parse(&GOOD.replace("hook_resid_pre", "hook_resid_middle"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("hook_resid_middle"), "{e}");
        let e = parse(&GOOD.replace("\"a\", \"b\", \"last\"", "\"c\""))
            .unwrap_err()
            .to_string();
        assert!(e.contains("extract.positions") && e.contains("`c`"), "{e}");
        let e = parse(&GOOD.replace("data/models/toy-adder", "${HELIXLAB_NOT_SET_12345}/x"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("model.dir") && e.contains("HELIXLAB_NOT_SET_12345"),
            "{e}"
        );
        let e = parse(&GOOD.replace("kind = \"addition\"", "kind = \"division\""))
            .unwrap_err()
            .to_string();
        assert!(e.contains("division"), "{e}");
        assert!(parse(GOOD).unwrap().extract.layers.resolve(1).is_ok());
        let e = parse(&format!(
            "{GOOD}\n[analysis]\nposition = \"b\"\nnumber = \"x\"\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(e.contains("analysis.number") && e.contains("`x`"), "{e}");
        let e = parse(&format!("{GOOD}\n[analysis]\nsites = [\"hook_mlp_out\"]\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("analysis.sites"), "{e}");
        let p = parse(&GOOD.replace("layers = \"all\"", "layers = [0, 7]")).unwrap();
        assert!(p.extract.layers.resolve(2).unwrap_err().contains("layer 7"));
    }

    /// Damaged study files (bytes overwritten, inserted, deleted; truncated; numbers made
    /// huge or negative): parsing answers with a pipeline or an error, never a panic.
    #[test]
    fn damaged_study_files_give_errors_not_panics() {
        let mut state = 20250601u64;
        let mut next = move || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 24) as usize
        };
        let alphabet = b"[]{}=\"',.-+0123456789aexl\n #$";
        for i in 0..3000 {
            let mut b = GOOD.as_bytes().to_vec();
            for _ in 0..1 + next() % 3 {
                let at = next() % b.len();
                match next() % 4 {
                    0 => b[at] = alphabet[next() % alphabet.len()],
                    1 => b.insert(at, alphabet[next() % alphabet.len()]),
                    2 => {
                        b.remove(at);
                    }
                    _ => b
                        .splice(at..at, b"99999999999999999999".iter().copied())
                        .for_each(drop),
                }
            }
            let text = String::from_utf8_lossy(&b).to_string();
            let r = std::panic::catch_unwind(|| parse(&text));
            assert!(r.is_ok(), "mutation {i} panicked on:\n{text}");
        }
    }
}
