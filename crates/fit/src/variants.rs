//! The variants fitted at every (site, layer), named as they appear in `fits.parquet`.

use helixlab_pipeline::FitName;

use helixlab_numeric::BasisKind;

/// What a variant is, for grouping in tables and figures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    /// A helix (periods plus a linear term).
    Helix,
    /// A helix on a subset of the paper's periods.
    HelixSubset,
    /// Periods without the linear term.
    Circle,
    /// Scaled polynomial.
    Poly,
    /// PCA-k reconstruction (a baseline with no number model).
    Pca,
    /// A control that should fit worse: random periods, shuffled numbers, continuity.
    Control,
}

impl Family {
    /// The name in tables.
    pub fn as_str(self) -> &'static str {
        match self {
            Family::Helix => "helix",
            Family::HelixSubset => "helix_subset",
            Family::Circle => "circle",
            Family::Poly => "poly",
            Family::Pca => "pca",
            Family::Control => "control",
        }
    }
}

/// How a variant is computed.
#[derive(Clone, Debug, PartialEq)]
pub enum Method {
    /// Basis fit on the numbers as they are.
    Basis(BasisKind),
    /// Basis fit with the numbers permuted across rows (must fail out of sample).
    Shuffled(BasisKind),
    /// Basis fit without numbers ending in a digit; those are then decoded.
    Continuity(BasisKind),
    /// PCA-k reconstruction.
    Pca(usize),
}

/// One variant.
#[derive(Clone, Debug, PartialEq)]
pub struct Variant {
    /// Name in tables (`helix`, `helix[2,10]`, `circle`, `poly5`, `pca9`, ...).
    pub name: FitName,
    /// Group.
    pub family: Family,
    /// Computation.
    pub method: Method,
}

impl Variant {
    /// The periods, for helix-like variants.
    pub fn periods(&self) -> Vec<f64> {
        match &self.method {
            Method::Basis(BasisKind::Helix { periods, .. })
            | Method::Shuffled(BasisKind::Helix { periods, .. })
            | Method::Continuity(BasisKind::Helix { periods, .. }) => periods.clone(),
            _ => Vec::new(),
        }
    }
}

fn helix(periods: &[f64]) -> BasisKind {
    BasisKind::Helix {
        periods: periods.to_vec(),
        linear: true,
    }
}

/// Every variant for one (site, layer): `paper` periods, `discovered` periods (if the spectral
/// stage ran), `random` periods (as many as discovered, or as the paper's), degrees and PCA
/// ks of the baselines, and the continuity digit.
pub fn variants(
    paper: &[f64],
    discovered: Option<&[f64]>,
    random: &[f64],
    poly_degrees: &[usize],
    pca_ks: &[usize],
    continuity_digit: i64,
) -> Vec<Variant> {
    let mut v = vec![Variant {
        name: FitName::Helix,
        family: Family::Helix,
        method: Method::Basis(helix(paper)),
    }];
    if let Some(d) = discovered {
        v.push(Variant {
            name: FitName::HelixDiscovered,
            family: Family::Helix,
            method: Method::Basis(helix(d)),
        });
    }
    // Proper, non-empty subsets of the paper's periods, in order of size then position.
    let n = paper.len().min(16);
    let mut subsets: Vec<Vec<f64>> = (1u32..(1 << n) - 1)
        .map(|mask| {
            (0..n)
                .filter(|i| mask & (1 << i) != 0)
                .map(|i| paper[i])
                .collect()
        })
        .collect();
    subsets.sort_by_key(|s| s.len());
    for s in subsets {
        v.push(Variant {
            name: FitName::HelixSubset(s.clone()),
            family: Family::HelixSubset,
            method: Method::Basis(helix(&s)),
        });
    }
    v.push(Variant {
        name: FitName::Circle,
        family: Family::Circle,
        method: Method::Basis(BasisKind::Helix {
            periods: paper.to_vec(),
            linear: false,
        }),
    });
    for &degree in poly_degrees {
        v.push(Variant {
            name: FitName::Poly(degree),
            family: Family::Poly,
            method: Method::Basis(BasisKind::Poly { degree }),
        });
    }
    for &k in pca_ks {
        v.push(Variant {
            name: FitName::Pca(k),
            family: Family::Pca,
            method: Method::Pca(k),
        });
    }
    v.push(Variant {
        name: FitName::HelixRandom,
        family: Family::Control,
        method: Method::Basis(helix(random)),
    });
    v.push(Variant {
        name: FitName::HelixShuffled,
        family: Family::Control,
        method: Method::Shuffled(helix(paper)),
    });
    v.push(Variant {
        name: FitName::HelixContinuity(continuity_digit),
        family: Family::Control,
        method: Method::Continuity(helix(paper)),
    });
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_paper_set_gives_fourteen_proper_subsets() {
        let v = variants(&[2.0, 5.0, 10.0, 100.0], None, &[7.5], &[3], &[9], 3);
        let subsets = v.iter().filter(|v| v.family == Family::HelixSubset).count();
        assert_eq!(subsets, 14);
        assert!(v.iter().any(|v| v.name.to_string() == "helix[5,100]"));
        assert_eq!(v.last().unwrap().name.to_string(), "helix_continuity3");
    }
}
