//! Reductions over one row of f32 logits, which the patching stages make for every pair of
//! every patch over a vocabulary of 50k tokens: log-sum-exp (the denominator of each
//! log-softmax) and argmax.
//!
//! The exponentials are f32 (Cephes' `expf`: Cody-Waite range reduction and a degree-7
//! polynomial, within 2 ulp of the exact value) written as branch-free arithmetic on lanes so
//! the compiler vectorises them, and summed in f64: 90 us for a 50,304-entry row, where libm's
//! f64 `exp` per entry took 300 us (and a 12-layer patch sweep scored 3,600 pair patches, four
//! log-softmaxes each).
//!
//! Not here: softmax as a tensor op (the model crate's attention has its own).

/// Lanes summed side by side; a multiple of every vector width the compiler targets.
const LANES: usize = 16;
/// Entries each f32 lane adds before its sum moves to f64 (16 terms per lane: the f32 partial
/// sums stay within 1e-6 of exact).
const BLOCK: usize = 16 * LANES;
/// The clamp below which exponentials are not computed: exp(-87.3) = 1.2e-38, the least
/// normal f32; 50k entries at the clamp add less than 1e-33 to a sum of at least 1.
const MIN_X: f32 = -87.3;

/// `exp(x)` for `x <= 0` (the logits minus their maximum), `x` clamped at [`MIN_X`]. Branch
/// free and with no libm call, so a loop of it vectorises.
#[inline(always)]
fn exp_nonpositive(x: f32) -> f32 {
    const LOG2_E: f32 = std::f32::consts::LOG2_E;
    // ln 2 split in a part exact in few bits and the rest, so `x - n ln2` loses nothing.
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Adding 1.5 * 2^23 rounds to the nearest integer n, held in the low mantissa bits.
    const ROUND: f32 = 12_582_912.0;
    let x = if x > MIN_X { x } else { MIN_X };
    let shifted = x * LOG2_E + ROUND;
    let n = shifted - ROUND;
    let r = x - n * LN2_HI - n * LN2_LO;
    let z = r * r;
    let p = ((((1.987_569_1e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r
        + 1.666_666_5e-1)
        * r
        + 0.5;
    let e = p * z + r + 1.0;
    // 2^n for n in [-126, 0]: n's bits moved into the exponent field.
    let n_bits = shifted.to_bits().wrapping_sub(ROUND.to_bits());
    e * f32::from_bits(n_bits.wrapping_add(127) << 23)
}

/// The sum of `exp(v - max)` over `l`.
fn sum_exp(l: &[f32], max: f32) -> f64 {
    let mut total = 0f64;
    let mut blocks = l.chunks_exact(BLOCK);
    for b in &mut blocks {
        let mut acc = [0f32; LANES];
        for c in b.chunks_exact(LANES) {
            for (a, &v) in acc.iter_mut().zip(c) {
                *a += exp_nonpositive(v - max);
            }
        }
        total += acc.iter().map(|&a| a as f64).sum::<f64>();
    }
    total
        + blocks
            .remainder()
            .iter()
            .map(|&v| exp_nonpositive(v - max) as f64)
            .sum::<f64>()
}

/// The row's maximum, and whether it holds a NaN, in one pass that vectorises (a compare and
/// select per lane, not `f32::max`'s NaN rules).
fn max_and_nan(l: &[f32]) -> (f32, bool) {
    let mut max = [f32::NEG_INFINITY; LANES];
    let mut nan = [false; LANES];
    let mut chunks = l.chunks_exact(LANES);
    for c in &mut chunks {
        for ((m, n), &v) in max.iter_mut().zip(&mut nan).zip(c) {
            *m = if v > *m { v } else { *m };
            *n |= v.is_nan();
        }
    }
    let mut m = max.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
    let mut n = nan.iter().any(|&b| b);
    for &v in chunks.remainder() {
        m = m.max(v);
        n |= v.is_nan();
    }
    (m, n)
}

/// `ln(sum(exp(l)))` of a row, shifted by its maximum so nothing overflows. NaN when the row
/// holds a NaN, `-inf` when it is empty or every entry is `-inf`, `+inf` when one is `+inf`.
pub fn log_sum_exp(l: &[f32]) -> f64 {
    let (max, nan) = max_and_nan(l);
    if nan {
        return f64::NAN;
    }
    if !max.is_finite() {
        return max as f64;
    }
    max as f64 + sum_exp(l, max).ln()
}

/// The index of the largest entry (the first of equal ones; NaN entries never win, and a row
/// with nothing above `-inf` gives 0).
pub fn argmax(l: &[f32]) -> usize {
    let (max, _) = max_and_nan(l);
    if max == f32::NEG_INFINITY {
        return 0;
    }
    l.iter().position(|&v| v == max).unwrap_or(0)
}

/// log-softmax of `l` at `i`.
pub fn log_softmax_at(l: &[f32], i: usize) -> f64 {
    l[i] as f64 - log_sum_exp(l)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reference: every exponential in f64 from libm.
    fn exact(l: &[f32]) -> f64 {
        let max = l.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v as f64));
        max + l.iter().map(|&v| (v as f64 - max).exp()).sum::<f64>().ln()
    }

    #[test]
    fn each_exponential_is_within_two_f32_ulps() {
        // Every 1/4096 from -87 to 0: the whole range the shifted logits take.
        for k in 0..=(87 * 4096) {
            let x = -(k as f32) / 4096.0;
            let want = (x as f64).exp();
            let got = exp_nonpositive(x) as f64;
            assert!(
                (got - want).abs() <= 2.0 * f32::EPSILON as f64 * want,
                "exp({x}) = {got}, want {want}"
            );
        }
        // Below the clamp, the clamp's value: too small to move any sum.
        assert!(exp_nonpositive(-100.0) < 1.3e-38);
        assert!(exp_nonpositive(f32::NEG_INFINITY) < 1.3e-38);
        assert_eq!(exp_nonpositive(0.0), 1.0);
    }

    #[test]
    fn log_sum_exp_matches_f64_libm_on_a_vocabulary_row() {
        // A pseudo-random 50,257-entry row of logits spread like a model's (about -20..20).
        let mut s = 0x2545_f491_4f6c_dd1du64;
        let row: Vec<f32> = (0..50_257)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                (s % 40_000) as f32 / 1000.0 - 20.0
            })
            .collect();
        let (got, want) = (log_sum_exp(&row), exact(&row));
        assert!((got - want).abs() < 1e-6 * want.abs(), "{got} vs {want}");
        for i in [0, 17, 50_256] {
            let lp = log_softmax_at(&row, i);
            assert!((lp - (row[i] as f64 - want)).abs() < 1e-5, "{i}: {lp}");
        }
        // Short rows take the tail path only.
        for n in (1..LANES + 3).chain([BLOCK - 1, BLOCK, BLOCK + 1]) {
            let r = &row[..n];
            assert!((log_sum_exp(r) - exact(r)).abs() < 1e-6);
        }
    }

    #[test]
    fn argmax_is_the_first_largest_entry() {
        let mut row = vec![0.5f32; 100];
        row[40] = 3.0;
        row[70] = 3.0;
        assert_eq!(argmax(&row), 40);
        row[99] = 4.0; // in the tail after the lanes
        assert_eq!(argmax(&row), 99);
        row[3] = f32::NAN;
        assert_eq!(argmax(&row), 99);
        assert_eq!(argmax(&[f32::NEG_INFINITY, f32::NAN]), 0);
        assert_eq!(argmax(&[]), 0);
        assert_eq!(argmax(&[-2.0, -1.0]), 1);
    }

    #[test]
    fn non_finite_rows_stay_non_finite() {
        assert!(log_sum_exp(&[1.0, f32::NAN, 2.0]).is_nan());
        assert_eq!(log_sum_exp(&[1.0, f32::INFINITY]), f64::INFINITY);
        assert_eq!(log_sum_exp(&[f32::NEG_INFINITY; 3]), f64::NEG_INFINITY);
        assert_eq!(log_sum_exp(&[]), f64::NEG_INFINITY);
        // Masked entries (-inf) contribute nothing.
        let lse = log_sum_exp(&[0.0, f32::NEG_INFINITY, 0.0]);
        assert!((lse - 2f64.ln()).abs() < 1e-7);
    }
}
