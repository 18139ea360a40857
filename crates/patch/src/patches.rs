//! What is patched in for a corrupt number: the activation itself, a PCA projection of it, a
//! fit's prediction, or the mean over numbers.

use std::collections::{BTreeMap, BTreeSet};

use helixlab_numeric::{BasisTerm, Pca};
use helixlab_pipeline::{AnalysisTarget, FitName, PatchKind};
use helixlab_store::{read, tables, Frame, RunLayout};
use ndarray::{Array1, Array2};
use polars::prelude::*;

use crate::{PatchError, Result};

/// A stored fit, as a predictor from a number to an activation.
#[derive(Clone, Debug)]
pub struct FitPredictor {
    /// Variant.
    pub variant: FitName,
    /// Basis functions, in the order of C's rows.
    pub basis: Vec<BasisTerm>,
    /// x is divided by this in `linear` and `x^k`.
    pub scale: f64,
    /// `basis x d`.
    pub c: Array2<f64>,
    /// The activation mean.
    pub mean: Array1<f64>,
    /// An orthonormal basis of the span of C's rows, bias aside (for ablations).
    pub row_space: Vec<Array1<f64>>,
}

impl FitPredictor {
    /// An orthonormal basis of the span of C's rows, the bias row aside (Gram-Schmidt).
    fn span_of_rows(basis: &[BasisTerm], c: &Array2<f64>) -> Vec<Array1<f64>> {
        let mut q: Vec<Array1<f64>> = Vec::new();
        for (j, term) in basis.iter().enumerate() {
            if *term == BasisTerm::Bias {
                continue;
            }
            let mut v = c.row(j).to_owned();
            let scale = v.dot(&v).sqrt();
            for _ in 0..2 {
                for b in &q {
                    let c = b.dot(&v);
                    v.scaled_add(-c, b);
                }
            }
            let norm = v.dot(&v).sqrt();
            if norm > 1e-9 * scale && norm > 0.0 {
                q.push(v / norm);
            }
        }
        q
    }

    /// The predicted activation of number `x`.
    pub fn predict(&self, x: i64) -> Result<Array1<f64>> {
        let b: Vec<f64> = self
            .basis
            .iter()
            .map(|t| t.eval(x as f64, self.scale))
            .collect();
        Ok(Array1::from(b).dot(&self.c) + &self.mean)
    }
}

/// Every fit stored for (site, layer) in `<run>/fit/coefficients.parquet`, by variant.
pub fn fit_predictors(run: &RunLayout, site: &str, layer: usize) -> Result<Vec<FitPredictor>> {
    Frame::check(run, tables::COEFFICIENTS)?;
    let path = run.path(tables::COEFFICIENTS);
    let df = Frame::query(&path, |lf| {
        lf.filter(
            col("site")
                .eq(lit(site))
                .and(col("layer").eq(lit(layer as u32))),
        )
        .sort(["variant", "basis_index"], Default::default())
    })?;
    let bad = |what: String| PatchError::Input(format!("{}: {what}", path.display()));
    let (variant, basis, scale) = (df.str("variant")?, df.str("basis")?, df.f64("x_scale")?);
    let (d, flat) = df.vectors("coefficient")?;
    let vec_of =
        |i: usize| -> Array1<f64> { flat[i * d..(i + 1) * d].iter().map(|&x| x as f64).collect() };
    // Rows per variant, in basis order; the `mean` row is the activation mean, not a term.
    let mut rows: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, v) in variant.iter().enumerate() {
        rows.entry(v.as_str()).or_default().push(i);
    }
    let mut out = Vec::new();
    for (v, idx) in rows {
        let name: FitName = v.parse().map_err(bad)?;
        let Some(&mean_row) = idx.iter().find(|&&i| basis[i] == "mean") else {
            return Err(bad(format!("variant {v} has no mean row")));
        };
        let funcs: Vec<usize> = idx.into_iter().filter(|&i| basis[i] != "mean").collect();
        let terms = funcs
            .iter()
            .map(|&i| basis[i].parse::<BasisTerm>())
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(bad)?;
        let mut c = Array2::zeros((funcs.len(), d));
        for (j, &i) in funcs.iter().enumerate() {
            c.row_mut(j).assign(&vec_of(i));
        }
        out.push(FitPredictor {
            variant: name,
            row_space: FitPredictor::span_of_rows(&terms, &c),
            basis: terms,
            scale: scale[mean_row],
            c,
            mean: vec_of(mean_row),
        });
    }
    Ok(out)
}

/// The per-number activations of one (site, layer) and what is derived from them.
pub struct NumberActivations {
    /// Numbers, ascending.
    pub numbers: Vec<i64>,
    /// One row per number.
    pub x: Array2<f64>,
    /// PCA of the rows (as many components as the largest k asked).
    pub pca: Pca,
    /// The exact activation of each prompt a pair uses, by prompt id (at a later operand's
    /// token the activation depends on the earlier operands too, so a number's mean is not
    /// the prompt's own activation).
    pub prompts: BTreeMap<u32, Array1<f64>>,
}

impl NumberActivations {
    /// Loads and averages per number; fits the PCA; keeps the rows of `prompts`.
    pub fn load(
        run: &RunLayout,
        (site, layer): (&str, usize),
        target: &AnalysisTarget,
        max_k: usize,
        prompts: &BTreeSet<u32>,
    ) -> Result<Self> {
        let (column, range) = (target.number_column, target.range);
        let m = read::activations(run.root(), site, layer, target.position.name())?;
        let kept: BTreeMap<u32, Array1<f64>> = (0..m.rows())
            .filter(|&i| prompts.contains(&m.prompt_id[i]))
            .map(|i| (m.prompt_id[i], m.row(i).iter().map(|&v| v as f64).collect()))
            .collect();
        let rows = m.mean_by(column, range).map_err(PatchError::Input)?;
        let x =
            Array2::from_shape_vec((rows.numbers.len(), rows.d), rows.values).expect("numbers x d");
        let pca = Pca::fit(x.view(), max_k.max(1))?;
        Ok(NumberActivations {
            numbers: rows.numbers,
            x,
            pca,
            prompts: kept,
        })
    }

    /// The extracted activation of prompt `id`.
    pub fn prompt(&self, id: u32) -> Result<Array1<f64>> {
        self.prompts
            .get(&id)
            .cloned()
            .ok_or_else(|| PatchError::Input(format!("prompt {id} has no extracted activation")))
    }

    /// The row of number `n`.
    pub fn row(&self, n: i64) -> Result<Array1<f64>> {
        let i = self
            .numbers
            .binary_search(&n)
            .map_err(|_| PatchError::Input(format!("number {n} has no extracted activation")))?;
        Ok(self.x.row(i).to_owned())
    }

    /// The patch of `kind` for a pair: the corrupt number `n`, the corrupt and clean prompt
    /// ids (`fits` supplies fit kinds).
    pub fn patch(
        &self,
        kind: &PatchKind,
        n: i64,
        corrupt_prompt: u32,
        clean_prompt: u32,
        fits: &[FitPredictor],
    ) -> Result<Array1<f64>> {
        let fit = |v: &FitName| {
            fits.iter()
                .find(|f| f.variant == *v)
                .ok_or_else(|| PatchError::Input(format!("no stored fit `{v}`")))
        };
        match kind {
            PatchKind::FitAblation(v) => {
                let f = fit(v)?;
                let h = self.prompt(clean_prompt)?;
                let mut centred = &h - &f.mean;
                for q in &f.row_space {
                    let c = q.dot(&centred);
                    centred.scaled_add(-c, q);
                }
                Ok(centred + &f.mean)
            }
            PatchKind::Layer => self.prompt(corrupt_prompt),
            PatchKind::Pca(k) => {
                let r = self.prompt(corrupt_prompt)?.insert_axis(ndarray::Axis(0));
                Ok(self.pca.reconstruct(r.view(), *k).row(0).to_owned())
            }
            PatchKind::MeanAblation => Ok(self.pca.mean.clone()),
            PatchKind::Fit(v) => fit(v)?.predict(n),
            PatchKind::HelixBest(_) => Err(PatchError::Input(format!(
                "`{kind}` is a summary of other patches, not a patch"
            ))),
        }
    }
}
