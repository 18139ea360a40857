//! What is patched in for a corrupt number: the activation itself, a PCA projection of it, a
//! fit's prediction, or the mean over numbers.

use std::collections::BTreeMap;
use std::path::Path;

use helixlab_numeric::Pca;
use helixlab_store::read;
use ndarray::{Array1, Array2};
use polars::prelude::*;

use crate::{PatchError, Result};

/// A patch kind, named as in patching.parquet.
#[derive(Clone, Debug, PartialEq)]
pub enum Kind {
    /// The corrupt number's own activation (activation patching).
    Layer,
    /// Its projection on the first k principal components, plus the mean.
    Pca(usize),
    /// A fit's prediction for the corrupt number (variant name of fits.parquet).
    Fit(String),
    /// The mean over numbers: an ablation that carries no number.
    Mean,
    /// The clean activation with a fit's subspace (the span of its C rows, bias aside)
    /// projected out around the mean: ablates only what the fit describes.
    AblateFit(String),
}

impl Kind {
    /// The name in tables.
    pub fn name(&self) -> String {
        match self {
            Kind::Layer => "layer".into(),
            Kind::Pca(k) => format!("pca{k}"),
            Kind::Fit(v) => v.clone(),
            Kind::Mean => "mean_ablation".into(),
            Kind::AblateFit(v) => format!("{v}_ablation"),
        }
    }
}

/// A stored fit, as a predictor from a number to an activation.
#[derive(Clone, Debug)]
pub struct FitPredictor {
    /// Variant.
    pub variant: String,
    /// Basis function names (`cos_T`, `sin_T`, `linear`, `x^k`, `bias`).
    pub basis: Vec<String>,
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
    fn eval(name: &str, x: f64, scale: f64) -> Result<f64> {
        let period = |s: &str| -> Result<f64> {
            s.parse()
                .map_err(|_| PatchError::Input(format!("basis function `{name}`: bad period")))
        };
        Ok(if let Some(t) = name.strip_prefix("cos_") {
            (2.0 * std::f64::consts::PI * x / period(t)?).cos()
        } else if let Some(t) = name.strip_prefix("sin_") {
            (2.0 * std::f64::consts::PI * x / period(t)?).sin()
        } else if name == "linear" {
            x / scale
        } else if let Some(k) = name.strip_prefix("x^") {
            let k: i32 = k
                .parse()
                .map_err(|_| PatchError::Input(format!("basis function `{name}`: bad power")))?;
            (x / scale).powi(k)
        } else if name == "bias" {
            1.0
        } else {
            return Err(PatchError::Input(format!(
                "unknown basis function `{name}`"
            )));
        })
    }

    /// An orthonormal basis of the span of C's rows, the bias row aside (Gram-Schmidt).
    fn span_of_rows(basis: &[String], c: &Array2<f64>) -> Vec<Array1<f64>> {
        let mut q: Vec<Array1<f64>> = Vec::new();
        for (j, name) in basis.iter().enumerate() {
            if name == "bias" {
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
            .map(|n| Self::eval(n, x as f64, self.scale))
            .collect::<Result<_>>()?;
        Ok(Array1::from(b).dot(&self.c) + &self.mean)
    }
}

/// Every fit stored for (site, layer) in `<run>/fit/coefficients.parquet`, by variant.
pub fn fit_predictors(run_dir: &Path, site: &str, layer: usize) -> Result<Vec<FitPredictor>> {
    let path = run_dir.join("fit").join("coefficients.parquet");
    if helixlab_store::Manifest::read_for(&path).is_none() {
        return Err(PatchError::Store(helixlab_store::StoreError::Missing {
            path,
            hint: "run `helixlab fit` first".into(),
        }));
    }
    let e = |source| {
        PatchError::Store(helixlab_store::StoreError::Polars {
            path: path.clone(),
            source,
        })
    };
    let df = read::scan(&path)?
        .filter(
            col("site")
                .eq(lit(site))
                .and(col("layer").eq(lit(layer as u32))),
        )
        .sort(["variant", "basis_index"], Default::default())
        .collect()
        .map_err(e)?;
    let variant = df.column("variant").map_err(e)?.str().map_err(e)?.clone();
    let basis = df.column("basis").map_err(e)?.str().map_err(e)?.clone();
    let scale = df.column("x_scale").map_err(e)?.f64().map_err(e)?.clone();
    let arr = df
        .column("coefficient")
        .map_err(e)?
        .array()
        .map_err(e)?
        .clone();
    let d = arr.width();
    let flat: Vec<f32> = arr
        .get_inner()
        .f32()
        .map_err(e)?
        .into_no_null_iter()
        .collect();
    let mut rows: BTreeMap<String, Vec<(String, f64, usize)>> = BTreeMap::new();
    for i in 0..df.height() {
        let (Some(v), Some(b), Some(s)) = (variant.get(i), basis.get(i), scale.get(i)) else {
            continue;
        };
        rows.entry(v.to_string())
            .or_default()
            .push((b.to_string(), s, i));
    }
    let mut out = Vec::new();
    for (v, r) in rows {
        let vec_of = |i: usize| -> Array1<f64> {
            flat[i * d..(i + 1) * d].iter().map(|&x| x as f64).collect()
        };
        let Some(mean_row) = r.iter().find(|x| x.0 == "mean") else {
            return Err(PatchError::Input(format!(
                "{}: variant {v} has no mean row",
                path.display()
            )));
        };
        let funcs: Vec<&(String, f64, usize)> = r.iter().filter(|x| x.0 != "mean").collect();
        let mut c = Array2::zeros((funcs.len(), d));
        for (j, f) in funcs.iter().enumerate() {
            c.row_mut(j).assign(&vec_of(f.2));
        }
        let basis: Vec<String> = funcs.iter().map(|f| f.0.clone()).collect();
        out.push(FitPredictor {
            variant: v,
            row_space: FitPredictor::span_of_rows(&basis, &c),
            basis,
            scale: mean_row.1,
            c,
            mean: vec_of(mean_row.2),
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
    #[allow(clippy::too_many_arguments)]
    pub fn load(
        run_dir: &Path,
        site: &str,
        layer: usize,
        position: &str,
        column: &str,
        range: [i64; 2],
        max_k: usize,
        prompts: &std::collections::BTreeSet<u32>,
    ) -> Result<Self> {
        let m = read::activations(run_dir, site, layer, position)?;
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
        kind: &Kind,
        n: i64,
        corrupt_prompt: u32,
        clean_prompt: u32,
        fits: &[FitPredictor],
    ) -> Result<Array1<f64>> {
        let fit = |v: &str| {
            fits.iter()
                .find(|f| f.variant == v)
                .ok_or_else(|| PatchError::Input(format!("no stored fit `{v}`")))
        };
        match kind {
            Kind::AblateFit(v) => {
                let f = fit(v)?;
                let h = self.prompt(clean_prompt)?;
                let mut centred = &h - &f.mean;
                for q in &f.row_space {
                    let c = q.dot(&centred);
                    centred.scaled_add(-c, q);
                }
                Ok(centred + &f.mean)
            }
            Kind::Layer => self.prompt(corrupt_prompt),
            Kind::Pca(k) => {
                let r = self.prompt(corrupt_prompt)?.insert_axis(ndarray::Axis(0));
                Ok(self.pca.reconstruct(r.view(), *k).row(0).to_owned())
            }
            Kind::Mean => Ok(self.pca.mean.clone()),
            Kind::Fit(v) => fit(v)?.predict(n),
        }
    }
}
