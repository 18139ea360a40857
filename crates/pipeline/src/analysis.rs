//! The analysis sections of a pipeline: which activations the analysis stages read
//! (`[analysis]`), and the settings of `spectral` and `fit`. Every field has a default, so a
//! study that only extracts needs none of them.

use serde::{Deserialize, Serialize};

use crate::vocab::{NumberLabel, PatchKind, Position, Site};

/// `[analysis]`: the activations spectral and fit analyse, one row per number.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnalysisSection {
    /// Sites to analyse (default: every extracted site).
    #[serde(default)]
    pub sites: Option<Vec<Site>>,
    /// The extracted position to read (default: the task's first operand, `a` or `x`).
    #[serde(default)]
    pub position: Option<Position>,
    /// Which value labels a row: an operand (`a`, `b`, `x`) or `answer` (default: the
    /// position's operand). Rows with the same label are averaged, which is exact at an
    /// operand's own token (a causal model has not seen the later operands there).
    #[serde(default)]
    pub number: Option<NumberLabel>,
    /// Inclusive range of labels analysed (default: the operand's range in the task).
    #[serde(default)]
    pub range: Option<[i64; 2]>,
}

// Defaults, named by the setting they are the default of (the paper's values where it gives
// one; docs/method.md).
fn probe_periods() -> Vec<u32> {
    let mut v: Vec<u32> = (2..=12).collect();
    v.extend([25, 50, 100]);
    v
}
fn probe_alpha() -> f64 {
    1.0
}
fn probe_holdout() -> f64 {
    0.3
}
fn periods_discovered() -> usize {
    4
}
fn fit_pca_dim() -> usize {
    100
}
fn paper_periods() -> Vec<f64> {
    vec![2.0, 5.0, 10.0, 100.0]
}
fn poly_degrees() -> Vec<usize> {
    vec![3, 5, 7, 9]
}
fn pca_baselines() -> Vec<usize> {
    vec![3, 5, 7, 9]
}
fn fit_holdout() -> f64 {
    0.2
}
fn continuity_digit() -> i64 {
    3
}

/// `[spectral]`: settings of `helixlab spectral`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpectralSection {
    /// Number ranges for the spectra and PCA (the paper's T = 2 peak depends on the window);
    /// default: the analysis range only.
    #[serde(default)]
    pub ranges: Option<Vec<[i64; 2]>>,
    /// Periods T of the mod-T separability probes.
    #[serde(default = "probe_periods")]
    pub probe_periods: Vec<u32>,
    /// Ridge penalty of the probes (features standardised).
    #[serde(default = "probe_alpha")]
    pub probe_alpha: f64,
    /// Fraction of numbers held out to score the probes.
    #[serde(default = "probe_holdout")]
    pub probe_holdout: f64,
    /// How many periods the greedy search discovers.
    #[serde(default = "periods_discovered")]
    pub discover: usize,
    /// Seed of the probe split.
    #[serde(default)]
    pub seed: u64,
}

impl Default for SpectralSection {
    fn default() -> Self {
        toml::from_str("").expect("every field has a default")
    }
}

/// `[fit]`: settings of `helixlab fit`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FitSection {
    /// PCA dimension the fits work in (clipped to the numbers and the width).
    #[serde(default = "fit_pca_dim")]
    pub pca_dim: usize,
    /// The helix periods (the paper's 2, 5, 10, 100).
    #[serde(default = "paper_periods")]
    pub periods: Vec<f64>,
    /// Degrees of the scaled-polynomial baselines.
    #[serde(default = "poly_degrees")]
    pub poly_degrees: Vec<usize>,
    /// k of the PCA-k reconstruction baselines.
    #[serde(default = "pca_baselines")]
    pub pca_baselines: Vec<usize>,
    /// Fraction of numbers held out for the out-of-sample scores.
    #[serde(default = "fit_holdout")]
    pub holdout: f64,
    /// Last digit left out by the continuity control.
    #[serde(default = "continuity_digit")]
    pub continuity_digit: i64,
    /// Seed of the held-out split, the shuffled control and the random periods.
    #[serde(default)]
    pub seed: u64,
}

impl Default for FitSection {
    fn default() -> Self {
        toml::from_str("").expect("every field has a default")
    }
}

/// The analysis selection with defaults filled in and checked.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AnalysisTarget {
    /// Sites.
    pub sites: Vec<Site>,
    /// The extracted position read.
    pub position: Position,
    /// Label column in the activation tables (`a`, `b` or `answer`; `x` is stored as `a`).
    pub number_column: &'static str,
    /// The label as the user wrote it.
    pub number: NumberLabel,
    /// Inclusive label range.
    pub range: [i64; 2],
}

fn pairs_per_experiment() -> usize {
    100
}
fn pair_seed() -> u64 {
    42
}
fn pca_patches() -> Vec<usize> {
    vec![3, 5, 7, 9]
}

/// `[patch]`: settings of `helixlab pairs` and `helixlab patch`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatchSection {
    /// Clean/corrupt pairs per experiment.
    #[serde(default = "pairs_per_experiment")]
    pub pairs: usize,
    /// Seed of the pair sample (the paper's code used 42).
    #[serde(default = "pair_seed")]
    pub seed: u64,
    /// k of the PCA-k patches.
    #[serde(default = "pca_patches")]
    pub pca_ks: Vec<usize>,
    /// Last token (E4): PCA components the multi-number helices are fitted in (at most the
    /// width and the number of problems; the paper used 500).
    #[serde(default = "last_pca_dim")]
    pub last_pca_dim: usize,
    /// Last token (E4): k of its PCA-k patches (the paper: 9 and 27, the helices' sizes).
    #[serde(default = "last_pca_ks")]
    pub last_pca_ks: Vec<usize>,
    /// Components (E5): the MLP circuit is the smallest top-k set whose joint patch reaches
    /// this fraction of the best joint patch.
    #[serde(default = "circuit_fraction")]
    pub circuit_fraction: f64,
    /// Components (E5): heads labelled by type (the top ones by total effect).
    #[serde(default = "head_top")]
    pub head_top: usize,
    /// Components (E5): of the labelled heads, this many with the lowest scores are "mixed".
    #[serde(default = "mixed_heads")]
    pub mixed_heads: usize,
    /// Components (E5): correct problems the head and MLP output fits are fitted on.
    #[serde(default = "component_fit_problems")]
    pub component_fit_problems: usize,
    /// Draw pairs and fit only on problems the model answers correctly (the paper's rule).
    /// `false` is for benchmarks on random-weight checkpoints, which answer nothing right.
    #[serde(default = "correct_only")]
    pub correct_only: bool,
    /// Run only these patch kinds of `helixlab patch` (names as in patching.parquet, e.g.
    /// `layer`, `pca9`, `helix`); empty: every kind.
    #[serde(default)]
    pub kinds: Vec<PatchKind>,
}

fn correct_only() -> bool {
    true
}

fn last_pca_dim() -> usize {
    500
}
fn last_pca_ks() -> Vec<usize> {
    vec![9, 27]
}
fn circuit_fraction() -> f64 {
    0.95
}
fn head_top() -> usize {
    20
}
fn mixed_heads() -> usize {
    4
}
fn component_fit_problems() -> usize {
    2000
}

impl Default for PatchSection {
    fn default() -> Self {
        toml::from_str("").expect("every field has a default")
    }
}

fn top_neurons() -> usize {
    200
}
fn ablation_problems() -> usize {
    100
}

/// `[neurons]`: settings of `helixlab neurons` (docs/method.md E6). Its pairs are the `last`
/// pairs of `helixlab pairs` (`patch.pairs` of them; the paper used 1000).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NeuronsSection {
    /// Neurons, by |attribution|, that are patched exactly, get direct effects, preactivation
    /// grids and fits (the paper: the top 1 %, 4,587 of GPT-J's).
    #[serde(default = "top_neurons")]
    pub top: usize,
    /// Problems (correct or not) whose mean activation an ablated neuron is set to.
    #[serde(default = "ablation_problems")]
    pub ablation_problems: usize,
    /// Numbers of neurons kept in the sparsity sweep; empty: 0, then powers of two, then all.
    #[serde(default)]
    pub keep: Vec<usize>,
    /// Periods of the neuron fits (the paper's 2, 5, 10, 100; a study may use its model's own).
    #[serde(default = "paper_periods")]
    pub periods: Vec<f64>,
    /// Seed of the ablation sample.
    #[serde(default)]
    pub seed: u64,
}

impl Default for NeuronsSection {
    fn default() -> Self {
        toml::from_str("").expect("every field has a default")
    }
}

fn clock_pcs() -> usize {
    50
}
fn clock_alphas() -> Vec<i64> {
    (1..=20).map(|k| 10 * k).collect()
}
fn distance_ranges() -> Vec<[i64; 2]> {
    vec![[0, 9], [0, 99]]
}

/// `[clock]`: settings of `helixlab clock` (docs/method.md, "Why a clock"): the alternatives the
/// paper rules out and the model's errors, from the extracted activations and the accuracy
/// stage's tables (no model run).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClockSection {
    /// The site that represents the numbers, for the line, linear addition and distances
    /// (default: `hook_resid_post` where it is extracted, else `hook_resid_pre`).
    #[serde(default)]
    pub site: Option<Site>,
    /// The layer of that site for the line and linear addition (default: the output of layer
    /// 0, as the paper: layer 0 of `hook_resid_post`, or layer 1 of `hook_resid_pre`, the same
    /// activations; the earliest extracted layer when that one is not).
    #[serde(default)]
    pub layer: Option<usize>,
    /// PCA components the line is fitted in (the paper: 50).
    #[serde(default = "clock_pcs")]
    pub pcs: usize,
    /// Thresholds alpha on a + b: linear addition's and the model's accuracy over the problems
    /// with a + b < alpha.
    #[serde(default = "clock_alphas")]
    pub alphas: Vec<i64>,
    /// Ranges of a whose distance to a + dn is averaged (Fig 14: 0..=9 and 0..=99).
    #[serde(default = "distance_ranges")]
    pub distance_ranges: Vec<[i64; 2]>,
}

impl Default for ClockSection {
    fn default() -> Self {
        toml::from_str("").expect("every field has a default")
    }
}
