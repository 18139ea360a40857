//! How far apart the representations of a and a + dn are, against dn (Fig 14): on a helix the
//! distance grows with dn and dips at multiples of the periods (a + 10 sits on the same place
//! of the period-10 circle as a).

use ndarray::ArrayView2;

/// The mean Euclidean distance between the rows of a and a + dn, over a in `range` with a + dn
/// among `numbers` (rows of `x`, ascending), for dn = 1, 2, ...: `(dn, mean, pairs)`.
pub fn by_offset(numbers: &[i64], x: ArrayView2<f64>, range: [i64; 2]) -> Vec<(i64, f64, u32)> {
    let index = |n: i64| numbers.binary_search(&n).ok();
    let Some(&top) = numbers.last() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for dn in 1..=(top - range[0]) {
        let (mut sum, mut count) = (0.0, 0u32);
        for a in range[0]..=range[1] {
            if let (Some(i), Some(j)) = (index(a), index(a + dn)) {
                let d = &x.row(j) - &x.row(i);
                sum += d.dot(&d).sqrt();
                count += 1;
            }
        }
        if count > 0 {
            out.push((dn, sum / count as f64, count));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array2;

    #[test]
    fn on_a_circle_of_period_ten_the_distance_returns_to_zero_at_ten() {
        let numbers: Vec<i64> = (0..30).collect();
        let x = Array2::from_shape_fn((30, 2), |(i, j)| {
            let t = std::f64::consts::TAU * i as f64 / 10.0;
            if j == 0 {
                t.cos()
            } else {
                t.sin()
            }
        });
        let d = by_offset(&numbers, x.view(), [0, 9]);
        assert_eq!(d[0].0, 1);
        assert!(d[9].1 < 1e-12, "dn = 10: {}", d[9].1);
        assert!(d[4].1 > 1.9, "dn = 5 is across the circle: {}", d[4].1);
        assert_eq!(d[0].2, 10);
        // a + dn must exist: dn = 25 leaves a in 0..=4.
        assert_eq!(d[24].2, 5);
    }
}
