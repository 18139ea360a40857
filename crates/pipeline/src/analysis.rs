//! The analysis sections of a pipeline: which activations the analysis stages read
//! (`[analysis]`), and the settings of `spectral` and `fit`. Every field has a default, so a
//! study that only extracts needs none of them.

use serde::{Deserialize, Serialize};

use crate::file::Site;

/// `[analysis]`: the activations spectral and fit analyse, one row per number.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnalysisSection {
    /// Sites to analyse (default: every extracted site).
    #[serde(default)]
    pub sites: Option<Vec<Site>>,
    /// The extracted position to read (default: the task's first operand, `a` or `x`).
    #[serde(default)]
    pub position: Option<String>,
    /// Which value labels a row: an operand (`a`, `b`, `x`) or `answer` (default: the
    /// position's operand). Rows with the same label are averaged, which is exact at an
    /// operand's own token (a causal model has not seen the later operands there).
    #[serde(default)]
    pub number: Option<String>,
    /// Inclusive range of labels analysed (default: the operand's range in the task).
    #[serde(default)]
    pub range: Option<[i64; 2]>,
}

fn default_probe_periods() -> Vec<u32> {
    let mut v: Vec<u32> = (2..=12).collect();
    v.extend([25, 50, 100]);
    v
}
fn one() -> f64 {
    1.0
}
fn point_three() -> f64 {
    0.3
}
fn point_two() -> f64 {
    0.2
}
fn four() -> usize {
    4
}
fn hundred() -> usize {
    100
}
fn paper_periods() -> Vec<f64> {
    vec![2.0, 5.0, 10.0, 100.0]
}
fn odd_degrees() -> Vec<usize> {
    vec![3, 5, 7, 9]
}
fn three() -> i64 {
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
    #[serde(default = "default_probe_periods")]
    pub probe_periods: Vec<u32>,
    /// Ridge penalty of the probes (features standardised).
    #[serde(default = "one")]
    pub probe_alpha: f64,
    /// Fraction of numbers held out to score the probes.
    #[serde(default = "point_three")]
    pub probe_holdout: f64,
    /// How many periods the greedy search discovers.
    #[serde(default = "four")]
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
    #[serde(default = "hundred")]
    pub pca_dim: usize,
    /// The helix periods (the paper's 2, 5, 10, 100).
    #[serde(default = "paper_periods")]
    pub periods: Vec<f64>,
    /// Degrees of the scaled-polynomial baselines.
    #[serde(default = "odd_degrees")]
    pub poly_degrees: Vec<usize>,
    /// k of the PCA-k reconstruction baselines.
    #[serde(default = "odd_degrees")]
    pub pca_baselines: Vec<usize>,
    /// Fraction of numbers held out for the out-of-sample scores.
    #[serde(default = "point_two")]
    pub holdout: f64,
    /// Last digit left out by the continuity control.
    #[serde(default = "three")]
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
    /// Extracted position name.
    pub position: String,
    /// Label column in the activation tables (`a`, `b` or `answer`; `x` is stored as `a`).
    pub number_column: String,
    /// The label as the user wrote it.
    pub number: String,
    /// Inclusive label range.
    pub range: [i64; 2],
}

fn hundred_pairs() -> usize {
    100
}
fn forty_two() -> u64 {
    42
}

/// `[patch]`: settings of `helixlab pairs` and `helixlab patch`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatchSection {
    /// Clean/corrupt pairs per experiment.
    #[serde(default = "hundred_pairs")]
    pub pairs: usize,
    /// Seed of the pair sample (the paper's code used 42).
    #[serde(default = "forty_two")]
    pub seed: u64,
    /// k of the PCA-k patches.
    #[serde(default = "odd_degrees")]
    pub pca_ks: Vec<usize>,
    /// Last token (E4): PCA components the multi-number helices are fitted in (at most the
    /// width and the number of problems; the paper used 500).
    #[serde(default = "five_hundred")]
    pub last_pca_dim: usize,
    /// Last token (E4): k of its PCA-k patches (the paper: 9 and 27, the helices' sizes).
    #[serde(default = "nine_and_twenty_seven")]
    pub last_pca_ks: Vec<usize>,
    /// Components (E5): the MLP circuit is the smallest top-k set whose joint patch reaches
    /// this fraction of the best joint patch.
    #[serde(default = "ninety_five_percent")]
    pub circuit_fraction: f64,
    /// Components (E5): heads labelled by type (the top ones by total effect).
    #[serde(default = "twenty")]
    pub head_top: usize,
    /// Components (E5): of the labelled heads, this many with the lowest scores are "mixed".
    #[serde(default = "four")]
    pub mixed_heads: usize,
    /// Components (E5): correct problems the head and MLP output fits are fitted on.
    #[serde(default = "two_thousand")]
    pub component_fit_problems: usize,
    /// Draw pairs and fit only on problems the model answers correctly (the paper's rule).
    /// `false` is for benchmarks on random-weight checkpoints, which answer nothing right.
    #[serde(default = "yes")]
    pub correct_only: bool,
    /// Run only these patch kinds of `helixlab patch` (names as in patching.parquet, e.g.
    /// `layer`, `pca9`, `helix`); empty: every kind.
    #[serde(default)]
    pub kinds: Vec<String>,
}

fn yes() -> bool {
    true
}

fn five_hundred() -> usize {
    500
}
fn nine_and_twenty_seven() -> Vec<usize> {
    vec![9, 27]
}
fn ninety_five_percent() -> f64 {
    0.95
}
fn twenty() -> usize {
    20
}
fn two_thousand() -> usize {
    2000
}

impl Default for PatchSection {
    fn default() -> Self {
        toml::from_str("").expect("every field has a default")
    }
}
