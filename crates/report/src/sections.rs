//! What the report's sections share: how they read tables and order (site, layer) keys.

/// Result tables are read as [`Frame`]s (typed columns; errors name the table).
pub(crate) use helixlab_store::Frame as Tbl;

use crate::charts::{palette, Mark, Series};

/// (site, layer) keys: sites in the order the stage wrote them (the pipeline's), layers
/// ascending.
pub(crate) fn keys(sites: &[String], layers: &[i64]) -> Vec<(String, i64)> {
    let mut order: Vec<&String> = Vec::new();
    for s in sites {
        if !order.contains(&s) {
            order.push(s);
        }
    }
    let mut k: Vec<(String, i64)> = sites.iter().cloned().zip(layers.iter().copied()).collect();
    k.sort_by_key(|(s, l)| (order.iter().position(|o| *o == s), *l));
    k.dedup();
    k
}

/// (site, layer, range low, range high).
pub(crate) type RangeKey = (String, i64, i64, i64);

/// Up to `n` layers spread over `layers` (first and last included).
pub(crate) fn spread(layers: &[i64], n: usize) -> Vec<i64> {
    if layers.len() <= n {
        return layers.to_vec();
    }
    let mut out: Vec<i64> = (0..n)
        .map(|i| layers[i * (layers.len() - 1) / (n - 1)])
        .collect();
    out.dedup();
    out
}

pub(crate) fn short(site: &str) -> String {
    site.trim_start_matches("hook_").to_string()
}

/// A line series of the palette's colour `ci`.
pub(crate) fn line(label: &str, ci: usize, points: Vec<(f64, f64)>) -> Series {
    Series {
        label: label.into(),
        points,
        mark: Mark::Line,
        color: palette(ci),
    }
}

/// Of `sizes` (polynomial degrees, PCA ks), the one closest to the helix's parameter count
/// (2 per period plus the linear term: 9 for the paper's four periods), the baseline the
/// paper compares the helix with at equal size.
pub(crate) fn matched_size(sizes: &[usize], periods: &[f64]) -> Option<usize> {
    let helix = 2 * periods.len() + 1;
    sizes
        .iter()
        .copied()
        .min_by_key(|&k| (k.abs_diff(helix), k))
}

/// The first site of `keys` and its layers: the figures that show one site show this one.
pub(crate) fn first_site(keys: &[(String, i64)]) -> (String, Vec<i64>) {
    let site0 = keys[0].0.clone();
    let layers = keys.iter().filter(|k| k.0 == site0).map(|k| k.1).collect();
    (site0, layers)
}

/// The distinct values of `sites`, in order of first appearance.
pub(crate) fn distinct<'a>(sites: impl IntoIterator<Item = &'a String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for s in sites {
        if !out.contains(s) {
            out.push(s.clone());
        }
    }
    out
}

/// The columns of a per-(site, layer, name) summary table.
pub(crate) struct ByLayer<'a> {
    /// Site per row.
    pub site: &'a [String],
    /// Layer per row.
    pub layer: &'a [i64],
    /// Variant or patch kind per row.
    pub name: &'a [String],
}

impl ByLayer<'_> {
    /// One line per name of `shown` over the layers of `site`, at `value(row)`.
    pub(crate) fn lines(
        &self,
        shown: &[String],
        site: &str,
        value: impl Fn(usize) -> f64,
    ) -> Vec<Series> {
        shown
            .iter()
            .enumerate()
            .map(|(ci, name)| {
                let rows =
                    (0..self.site.len()).filter(|&i| self.site[i] == site && self.name[i] == *name);
                line(
                    name,
                    ci,
                    rows.map(|i| (self.layer[i] as f64, value(i))).collect(),
                )
            })
            .collect()
    }
}
