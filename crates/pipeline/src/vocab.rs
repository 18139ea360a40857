//! The study's domain values as types: sites, named positions, number labels, dtype and
//! device. Each prints and parses as the name a study file uses (`"a"`, `"last"`, `"bf16"`,
//! `"cuda:1"`), so tables and manifests read the same as before they were typed, and a
//! misspelt value is refused when the file is read, naming the values that exist.

use std::fmt;
use std::str::FromStr;

use helixlab_hooks::HookPoint;
use serde::{Deserialize, Serialize};

/// Serde through `Display` / `FromStr`, so a value is spelt one way everywhere.
macro_rules! string_serde {
    ($t:ty) => {
        impl Serialize for $t {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

/// An enum of named values, declared with each variant's name beside it, with `name()`,
/// `Display`, `FromStr` and serde from that one table (`what` and `hint` word the error of a
/// name that is not in it).
macro_rules! named_enum {
    (
        $(#[$meta:meta])*
        pub enum $t:ident ($what:literal, $hint:literal) {
            $($(#[$vmeta:meta])* $v:ident = $name:literal),* $(,)?
        }
    ) => {
        $(#[$meta])*
        pub enum $t {
            $($(#[$vmeta])* $v,)*
        }
        impl $t {
            /// The name in study files and tables.
            pub fn name(self) -> &'static str {
                match self {
                    $($t::$v => $name,)*
                }
            }
        }
        impl FromStr for $t {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                match s {
                    $($name => Ok($t::$v),)*
                    _ => Err(format!(concat!("`{}` is not ", $what, ": ", $hint), s)),
                }
            }
        }
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.name())
            }
        }
        string_serde!($t);
    };
}

/// A block hook to extract, named as after `blocks.{l}.` (e.g. `hook_resid_pre`,
/// `attn.hook_z`, `mlp.hook_post`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Site(String);

impl Site {
    /// The hook of this site at `layer`.
    pub fn at(&self, layer: usize) -> HookPoint {
        format!("blocks.{layer}.{}", self.0)
            .parse()
            .expect("validated when the site was made")
    }

    /// The suffix (`hook_resid_pre`).
    pub fn name(&self) -> &str {
        &self.0
    }
}

impl FromStr for Site {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        format!("blocks.0.{s}")
            .parse::<HookPoint>()
            .map(|_| Site(s.to_string()))
            .map_err(|e| e.to_string().replace("blocks.0.", ""))
    }
}

impl fmt::Display for Site {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
string_serde!(Site);

named_enum! {
    /// A named token position of a prompt: an operand's token, or the last token.
    ///
    /// A number the tokenizer splits (SmolLM2 writes 37 as "3" "7") has several tokens: `a`
    /// names its last (where a causal model has read the whole number), `a_first` its first.
    /// For one-token numbers the two are the same token.
    ///
    /// Variants are in the order of their names, so maps keyed by position iterate as maps keyed
    /// by the name did.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
    pub enum Position (
        "a position",
        "positions (extract.positions, analysis.position) are a, a_first, b, b_first, x, \
         x_first or last"
    ) {
        /// The (last) token of operand `a`.
        A = "a",
        /// The first token of operand `a`.
        AFirst = "a_first",
        /// The (last) token of operand `b`.
        B = "b",
        /// The first token of operand `b`.
        BFirst = "b_first",
        /// The last token (where a causal model predicts the answer).
        Last = "last",
        /// The (last) token of the bare number `x` (the `numbers` task).
        X = "x",
        /// The first token of `x`.
        XFirst = "x_first",
    }
}

impl Position {
    /// The operand whose token this is (`None` for `last`).
    pub fn operand(self) -> Option<NumberLabel> {
        match self {
            Position::A | Position::AFirst => Some(NumberLabel::A),
            Position::B | Position::BFirst => Some(NumberLabel::B),
            Position::X | Position::XFirst => Some(NumberLabel::X),
            Position::Last => None,
        }
    }

    /// Whether this names an operand's first token rather than its last.
    pub fn is_first(self) -> bool {
        matches!(self, Position::AFirst | Position::BFirst | Position::XFirst)
    }

    /// The positions of operand `name` (`a`, `b` or `x`): its last token, then its first.
    pub fn of_operand(name: &str) -> Option<(Position, Position)> {
        match name {
            "a" => Some((Position::A, Position::AFirst)),
            "b" => Some((Position::B, Position::BFirst)),
            "x" => Some((Position::X, Position::XFirst)),
            _ => None,
        }
    }
}

named_enum! {
    /// Which value labels a row of the number representation: an operand or the answer.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
    pub enum NumberLabel ("a number label", "a, b, x or answer") {
        /// Operand `a`.
        A = "a",
        /// Operand `b`.
        B = "b",
        /// The bare number `x` (stored in the tables' `a` column).
        X = "x",
        /// The task's answer.
        Answer = "answer",
    }
}

impl NumberLabel {
    /// The column of the activation and problem tables that holds this label (`x` is stored
    /// as `a`).
    pub fn column(self) -> &'static str {
        match self {
            NumberLabel::A | NumberLabel::X => "a",
            NumberLabel::B => "b",
            NumberLabel::Answer => "answer",
        }
    }

    /// The token position of this operand (`None` for the answer, which has no token of the
    /// prompt).
    pub fn position(self) -> Option<Position> {
        [Position::A, Position::B, Position::X]
            .into_iter()
            .find(|p| p.operand() == Some(self))
    }
}

named_enum! {
    /// What a model's weight matrices are held in.
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
    pub enum Dtype ("a dtype", "f32, bf16 or f16") {
        /// 32-bit floats (the default; exact against HF in f32).
        #[default]
        F32 = "f32",
        /// bfloat16 (half the memory; f32 arithmetic on the CPU).
        Bf16 = "bf16",
        /// float16.
        F16 = "f16",
    }
}

/// Where a model runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Device {
    /// The CPU (the default).
    #[default]
    Cpu,
    /// CUDA GPU number N (`cuda` is `cuda:0`).
    Cuda(usize),
    /// Apple's Metal GPU.
    Metal,
}

impl FromStr for Device {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("`{s}` is not a device (cpu, cuda, cuda:N or metal)");
        Ok(match s {
            "cpu" => Device::Cpu,
            "cuda" => Device::Cuda(0),
            "metal" => Device::Metal,
            _ => Device::Cuda(
                s.strip_prefix("cuda:")
                    .and_then(|n| n.parse().ok())
                    .ok_or_else(bad)?,
            ),
        })
    }
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Device::Cpu => f.write_str("cpu"),
            Device::Cuda(0) => f.write_str("cuda"),
            Device::Cuda(n) => write!(f, "cuda:{n}"),
            Device::Metal => f.write_str("metal"),
        }
    }
}
string_serde!(Device);

/// A fit variant of the fit stage, named as in `fits.parquet` (`helix`, `helix[2,10]`,
/// `poly9`, `pca9`, `helix_continuity3`, ...).
#[derive(Clone, Debug, PartialEq)]
pub enum FitName {
    /// The helix on the study's periods (`helix`).
    Helix,
    /// The helix on the periods the spectral stage discovered (`helix_discovered`).
    HelixDiscovered,
    /// The helix on a proper subset of the study's periods (`helix[2,10]`).
    HelixSubset(Vec<f64>),
    /// The periods without the linear term (`circle`).
    Circle,
    /// The scaled polynomial of this degree (`poly9`).
    Poly(usize),
    /// The PCA-k reconstruction (`pca9`).
    Pca(usize),
    /// The helix on random periods (`helix_random`), a control.
    HelixRandom,
    /// The helix with the numbers shuffled across rows (`helix_shuffled`), a control.
    HelixShuffled,
    /// The helix fitted without the numbers ending in this digit (`helix_continuity3`).
    HelixContinuity(i64),
    /// A variant fitted on the training split only (`helix:train`), stored for the patches
    /// of held-out numbers.
    Train(Box<FitName>),
}

/// Periods as fit names write them: whole periods without decimals, others with two.
pub fn period_list(periods: &[f64]) -> String {
    periods
        .iter()
        .map(|t| {
            if t.fract() == 0.0 {
                format!("{t:.0}")
            } else {
                format!("{t:.2}")
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

impl FitName {
    /// How many periods a helix variant has (`None` for the others), with `study` the number
    /// of the study's periods.
    pub fn helix_periods(&self, study: usize) -> Option<usize> {
        match self {
            FitName::Helix => Some(study),
            FitName::HelixSubset(p) => Some(p.len()),
            _ => None,
        }
    }
}

impl fmt::Display for FitName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FitName::Helix => f.write_str("helix"),
            FitName::HelixDiscovered => f.write_str("helix_discovered"),
            FitName::HelixSubset(p) => write!(f, "helix[{}]", period_list(p)),
            FitName::Circle => f.write_str("circle"),
            FitName::Poly(d) => write!(f, "poly{d}"),
            FitName::Pca(k) => write!(f, "pca{k}"),
            FitName::HelixRandom => f.write_str("helix_random"),
            FitName::HelixShuffled => f.write_str("helix_shuffled"),
            FitName::HelixContinuity(d) => write!(f, "helix_continuity{d}"),
            FitName::Train(v) => write!(f, "{v}:train"),
        }
    }
}

impl FromStr for FitName {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || {
            format!(
                "`{s}` is not a fit (helix, helix_discovered, helix[T,...], circle, polyN, pcaK, \
                 helix_random, helix_shuffled, helix_continuityD)"
            )
        };
        Ok(match s {
            "helix" => FitName::Helix,
            "helix_discovered" => FitName::HelixDiscovered,
            "circle" => FitName::Circle,
            "helix_random" => FitName::HelixRandom,
            "helix_shuffled" => FitName::HelixShuffled,
            _ => {
                if let Some(v) = s.strip_suffix(":train") {
                    FitName::Train(Box::new(v.parse()?))
                } else if let Some(list) =
                    s.strip_prefix("helix[").and_then(|r| r.strip_suffix(']'))
                {
                    let periods = list
                        .split(',')
                        .map(|t| t.parse::<f64>().map_err(|_| bad()))
                        .collect::<Result<Vec<_>, _>>()?;
                    FitName::HelixSubset(periods)
                } else if let Some(d) = s.strip_prefix("helix_continuity") {
                    FitName::HelixContinuity(d.parse().map_err(|_| bad())?)
                } else if let Some(d) = s.strip_prefix("poly") {
                    FitName::Poly(d.parse().map_err(|_| bad())?)
                } else if let Some(k) = s.strip_prefix("pca") {
                    FitName::Pca(k.parse().map_err(|_| bad())?)
                } else {
                    return Err(bad());
                }
            }
        })
    }
}
string_serde!(FitName);

/// What `helixlab patch` puts in for the corrupt number, named as in `patching.parquet`.
#[derive(Clone, Debug, PartialEq)]
pub enum PatchKind {
    /// The corrupt number's own activation (`layer`: activation patching).
    Layer,
    /// Its projection on the first k principal components, plus the mean (`pca9`).
    Pca(usize),
    /// A stored fit's prediction for the corrupt number (the fit's name).
    Fit(FitName),
    /// The mean over numbers, an ablation that carries no number (`mean_ablation`).
    MeanAblation,
    /// The clean activation with a fit's subspace projected out (`helix_ablation`).
    FitAblation(FitName),
    /// Summary rows only: the best subset of the study's periods with this many parameters
    /// (`helix_best5`), chosen on even pairs and scored on odd ones.
    HelixBest(usize),
}

impl fmt::Display for PatchKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PatchKind::Layer => f.write_str("layer"),
            PatchKind::Pca(k) => write!(f, "pca{k}"),
            PatchKind::Fit(v) => write!(f, "{v}"),
            PatchKind::MeanAblation => f.write_str("mean_ablation"),
            PatchKind::FitAblation(v) => write!(f, "{v}_ablation"),
            PatchKind::HelixBest(n) => write!(f, "helix_best{n}"),
        }
    }
}

impl FromStr for PatchKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        // `pcaK` names both a PCA patch and the PCA-k fit; the patch is meant.
        Ok(match s {
            "layer" => PatchKind::Layer,
            "mean_ablation" => PatchKind::MeanAblation,
            _ => {
                if let Some(k) = s.strip_prefix("pca").and_then(|k| k.parse().ok()) {
                    PatchKind::Pca(k)
                } else if let Some(n) = s.strip_prefix("helix_best").and_then(|n| n.parse().ok()) {
                    PatchKind::HelixBest(n)
                } else if let Some(v) = s.strip_suffix("_ablation") {
                    PatchKind::FitAblation(v.parse()?)
                } else {
                    PatchKind::Fit(s.parse().map_err(|e| {
                        format!("{e}; a patch kind is layer, pcaK, mean_ablation, a fit or <fit>_ablation")
                    })?)
                }
            }
        })
    }
}
string_serde!(PatchKind);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_print_as_they_parse() {
        for s in ["a", "b", "last", "x"] {
            assert_eq!(s.parse::<Position>().unwrap().to_string(), s);
        }
        for s in ["a", "b", "x", "answer"] {
            assert_eq!(s.parse::<NumberLabel>().unwrap().to_string(), s);
        }
        for s in ["f32", "bf16", "f16"] {
            assert_eq!(s.parse::<Dtype>().unwrap().to_string(), s);
        }
        for s in ["cpu", "cuda", "cuda:3", "metal"] {
            assert_eq!(s.parse::<Device>().unwrap().to_string(), s);
        }
        assert_eq!("cuda:0".parse::<Device>().unwrap(), Device::Cuda(0));
        assert_eq!(NumberLabel::B.position(), Some(Position::B));
        assert_eq!(NumberLabel::Answer.position(), None);
        assert_eq!(Position::X.operand().map(NumberLabel::column), Some("a"));
        for s in [
            "helix",
            "helix_discovered",
            "helix[2,5,100]",
            "helix[7.50]",
            "circle",
            "poly9",
            "pca9",
            "helix_random",
            "helix_shuffled",
            "helix_continuity3",
            "helix:train",
            "helix_discovered:train",
        ] {
            assert_eq!(s.parse::<FitName>().unwrap().to_string(), s);
        }
        for s in [
            "layer",
            "pca9",
            "helix",
            "helix[2,10]",
            "mean_ablation",
            "helix_ablation",
            "helix_best5",
            "poly3",
        ] {
            assert_eq!(s.parse::<PatchKind>().unwrap().to_string(), s);
        }
        assert_eq!("pca9".parse::<PatchKind>().unwrap(), PatchKind::Pca(9));
        assert!("helix[2,x]".parse::<FitName>().is_err());
        assert!("spline"
            .parse::<PatchKind>()
            .unwrap_err()
            .contains("patch kind"));
    }

    #[test]
    fn misspelt_values_name_the_ones_that_exist() {
        assert!("lats".parse::<Position>().unwrap_err().contains("last"));
        assert!("bf32".parse::<Dtype>().unwrap_err().contains("bf16"));
        assert!("gpu".parse::<Device>().unwrap_err().contains("cuda:N"));
        assert!("hook_resid_middle".parse::<Site>().is_err());
    }

    #[test]
    fn positions_order_as_their_names() {
        let mut names: Vec<&str> = ["x", "last", "b", "a"].to_vec();
        names.sort();
        let mut ps: Vec<Position> = names.iter().map(|n| n.parse().unwrap()).collect();
        ps.sort();
        assert_eq!(ps.iter().map(|p| p.name()).collect::<Vec<_>>(), names);
    }
}
