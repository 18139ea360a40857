//! The carry test (Figs 37-38): the model's errors are mostly -10, as if it dropped a carry.
//! Among the wrong problems, those off by exactly -10 and the others are each split by whether
//! the units needed a carry, and the two shares compared with a chi-squared test of the 2 x 2
//! table (Yates's continuity correction, as `scipy.stats.chi2_contingency` applies by default).
//!
//! "Needed a carry" is `a mod 10 + b mod 10 > 10` in the paper's code (strict: 5 + 5 does not
//! count) and `>= 10` by arithmetic; both are reported.

/// Which sums of the units count as a carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CarryRule {
    /// `a mod 10 + b mod 10 > 10`, the paper's code.
    Strict,
    /// `a mod 10 + b mod 10 >= 10`, a carry in arithmetic.
    AtLeast,
}

impl CarryRule {
    /// Both rules, in table order.
    pub const ALL: [CarryRule; 2] = [CarryRule::Strict, CarryRule::AtLeast];

    /// The rule as written in tables.
    pub fn name(self) -> &'static str {
        match self {
            CarryRule::Strict => "a%10 + b%10 > 10",
            CarryRule::AtLeast => "a%10 + b%10 >= 10",
        }
    }

    /// Whether a + b carries under this rule (operands are non-negative).
    pub fn carries(self, a: i64, b: i64) -> bool {
        let units = a.rem_euclid(10) + b.rem_euclid(10);
        match self {
            CarryRule::Strict => units > 10,
            CarryRule::AtLeast => units >= 10,
        }
    }
}

/// One wrong answer: the operands and the model's error (its number minus the answer).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WrongAnswer {
    /// First operand.
    pub a: i64,
    /// Second operand.
    pub b: i64,
    /// Model minus truth (non-zero).
    pub error: i64,
}

/// The carry test of one rule.
#[derive(Clone, Debug, PartialEq)]
pub struct CarryTest {
    /// The rule.
    pub rule: CarryRule,
    /// Errors of exactly -10, and how many of them carried.
    pub minus_ten: (u32, u32),
    /// Every other error, and how many of them carried.
    pub other: (u32, u32),
    /// The chi-squared statistic (NaN when a row or column of the table is empty).
    pub chi2: f64,
    /// Its p-value, one degree of freedom.
    pub p_value: f64,
}

/// The chi-squared test of independence of a 2 x 2 table with Yates's correction:
/// (statistic, p-value). NaN when an expected count is zero.
pub fn chi2_yates(table: [[f64; 2]; 2]) -> (f64, f64) {
    let rows = [table[0][0] + table[0][1], table[1][0] + table[1][1]];
    let cols = [table[0][0] + table[1][0], table[0][1] + table[1][1]];
    let total = rows[0] + rows[1];
    let mut chi2 = 0.0;
    for (i, row) in table.iter().enumerate() {
        for (j, &observed) in row.iter().enumerate() {
            let expected = rows[i] * cols[j] / total;
            if expected.is_nan() || expected == 0.0 {
                return (f64::NAN, f64::NAN);
            }
            // Each |O - E| is reduced by 0.5, but not past zero.
            let d = (observed - expected).abs();
            let corrected = d - d.min(0.5);
            chi2 += corrected * corrected / expected;
        }
    }
    // The chi-squared survival function with one degree of freedom.
    (chi2, libm::erfc((chi2 / 2.0).sqrt()))
}

/// The carry test of `wrong` under `rule`.
pub fn carry_test(wrong: &[WrongAnswer], rule: CarryRule) -> CarryTest {
    let (mut m, mut o) = ((0u32, 0u32), (0u32, 0u32));
    for w in wrong {
        let group = if w.error == -10 { &mut m } else { &mut o };
        group.0 += 1;
        group.1 += u32::from(rule.carries(w.a, w.b));
    }
    let table = [
        [m.1 as f64, (m.0 - m.1) as f64],
        [o.1 as f64, (o.0 - o.1) as f64],
    ];
    let (chi2, p_value) = chi2_yates(table);
    CarryTest {
        rule,
        minus_ten: m,
        other: o,
        chi2,
        p_value,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_statistic_and_p_value_are_scipys() {
        // scipy.stats.chi2_contingency([[12, 5], [9, 20]]) (correction=True):
        // statistic 5.257853762194534, pvalue 0.021847945168840775 (scipy 1.17.1).
        let (chi2, p) = chi2_yates([[12.0, 5.0], [9.0, 20.0]]);
        assert!((chi2 - 5.257_853_762_194_534).abs() < 1e-9, "{chi2}");
        assert!((p - 0.021_847_945_168_840_775).abs() < 1e-9, "{p}");
        // A table with an empty column has no test.
        assert!(chi2_yates([[3.0, 0.0], [4.0, 0.0]]).0.is_nan());
    }

    #[test]
    fn five_plus_five_carries_only_by_arithmetic() {
        assert!(!CarryRule::Strict.carries(15, 25));
        assert!(CarryRule::AtLeast.carries(15, 25));
        assert!(CarryRule::Strict.carries(19, 2));
        let wrong = [
            WrongAnswer {
                a: 15,
                b: 25,
                error: -10,
            },
            WrongAnswer {
                a: 19,
                b: 2,
                error: -10,
            },
            WrongAnswer {
                a: 1,
                b: 2,
                error: 3,
            },
        ];
        let t = carry_test(&wrong, CarryRule::Strict);
        assert_eq!((t.minus_ten, t.other), ((2, 1), (1, 0)));
        assert_eq!(carry_test(&wrong, CarryRule::AtLeast).minus_ten, (2, 2));
    }
}
