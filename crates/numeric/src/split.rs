//! Seeded splits. ChaCha8 with a fixed seed gives the same split on every machine and every
//! run, so a split is drawn once per (seed, items) and can be stored and checked.

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// Marks `round(fraction * n)` of `n` items as held out (true), chosen by `seed`.
pub fn holdout(n: usize, fraction: f64, seed: u64) -> Vec<bool> {
    let k = ((fraction * n as f64).round() as usize).min(n);
    let mut idx: Vec<usize> = (0..n).collect();
    idx.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
    let mut out = vec![false; n];
    for &i in &idx[..k] {
        out[i] = true;
    }
    out
}

/// A seeded permutation of `0..n`.
pub fn permutation(n: usize, seed: u64) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..n).collect();
    idx.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
    idx
}

/// `k` values uniform in `[lo, hi)`, seeded.
pub fn uniform(k: usize, lo: f64, hi: f64, seed: u64) -> Vec<f64> {
    use rand::Rng;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..k).map(|_| rng.random_range(lo..hi)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_are_seeded_and_sized() {
        let a = holdout(100, 0.2, 7);
        assert_eq!(a.iter().filter(|&&h| h).count(), 20);
        assert_eq!(a, holdout(100, 0.2, 7));
        assert_ne!(a, holdout(100, 0.2, 8));
        let p = permutation(10, 1);
        let mut s = p.clone();
        s.sort();
        assert_eq!(s, (0..10).collect::<Vec<_>>());
    }
}
