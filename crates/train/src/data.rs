//! The training tasks: addition `[a, +, b, =] -> a+b` on a seeded 60/40 split of a, b in
//! 0..=99, and auxiliary tasks on every number 0..=199 (`[x, OP, NUL, =]` for x mod 10,
//! x // 10, x + 1, x - 1, and `[x, <, y, =]` -> 1 or 0) that make T = 10 the dominant period.

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::Rng;

use crate::vocab::{Token, N_NUMBERS};

/// One example: four input tokens and the answer token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Example {
    /// Input token ids.
    pub input: [u32; 4],
    /// The answer's token id (the next token after `=`).
    pub target: u32,
}

/// The addition example a + b.
pub fn addition(a: u32, b: u32) -> Example {
    Example {
        input: [
            Token::Num(a).id(),
            Token::Plus.id(),
            Token::Num(b).id(),
            Token::Eq.id(),
        ],
        target: Token::Num(a + b).id(),
    }
}

/// Which addition problems are for training: `train[a * 100 + b]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Split {
    /// Training membership of each of the 10,000 problems.
    pub train: Vec<bool>,
}

impl Split {
    /// A seeded random `fraction` of the 10,000 problems for training.
    pub fn new(rng: &mut StdRng, fraction: f64) -> Self {
        let mut order: Vec<usize> = (0..10_000).collect();
        order.shuffle(rng);
        let n_train = (10_000.0 * fraction).round() as usize;
        let mut train = vec![false; 10_000];
        for &i in &order[..n_train] {
            train[i] = true;
        }
        Self { train }
    }

    /// The problems in the held-out part, as (a, b).
    pub fn held_out(&self) -> Vec<(u32, u32)> {
        self.pairs(false)
    }

    /// The problems in the training part, as (a, b).
    pub fn training(&self) -> Vec<(u32, u32)> {
        self.pairs(true)
    }

    fn pairs(&self, train: bool) -> Vec<(u32, u32)> {
        (0..10_000u32)
            .filter(|&i| self.train[i as usize] == train)
            .map(|i| (i / 100, i % 100))
            .collect()
    }

    /// Compact form for the manifest: one character per problem, '1' = train.
    pub fn to_bits(&self) -> String {
        self.train
            .iter()
            .map(|&t| if t { '1' } else { '0' })
            .collect()
    }
}

/// Every auxiliary example over 0..=199 (unary tasks), plus `n_less` random comparisons.
fn unary_examples() -> Vec<Example> {
    let mut out = Vec::new();
    let nul = Token::Nul.id();
    let eq = Token::Eq.id();
    for x in 0..N_NUMBERS {
        let xs = Token::Num(x).id();
        let mut push = |op: Token, y: u32| {
            out.push(Example {
                input: [xs, op.id(), nul, eq],
                target: Token::Num(y).id(),
            })
        };
        push(Token::Mod10, x % 10);
        push(Token::Div10, x / 10);
        if x + 1 < N_NUMBERS {
            push(Token::Succ, x + 1);
        }
        if x > 0 {
            push(Token::Pred, x - 1);
        }
    }
    out
}

/// Draws training batches.
pub struct Sampler {
    train: Vec<(u32, u32)>,
    unary: Vec<Example>,
    auxiliary: bool,
}

/// The five auxiliary task kinds, sampled uniformly.
const AUX_KINDS: usize = 5;

impl Sampler {
    /// A sampler over the training split; `auxiliary` adds the auxiliary tasks.
    pub fn new(split: &Split, auxiliary: bool) -> Self {
        Self {
            train: split.training(),
            unary: unary_examples(),
            auxiliary,
        }
    }

    /// `n_add` addition examples and (with auxiliary tasks) `n_aux` auxiliary ones, tasks
    /// drawn uniformly.
    pub fn batch(&self, rng: &mut StdRng, n_add: usize, n_aux: usize) -> Vec<Example> {
        let mut out = Vec::with_capacity(n_add + n_aux);
        for _ in 0..n_add {
            let (a, b) = self.train[rng.random_range(0..self.train.len())];
            out.push(addition(a, b));
        }
        if self.auxiliary {
            for _ in 0..n_aux {
                let kind = rng.random_range(0..AUX_KINDS);
                if kind == AUX_KINDS - 1 {
                    let x = rng.random_range(0..N_NUMBERS);
                    let y = rng.random_range(0..N_NUMBERS);
                    out.push(Example {
                        input: [
                            Token::Num(x).id(),
                            Token::Less.id(),
                            Token::Num(y).id(),
                            Token::Eq.id(),
                        ],
                        target: Token::Num(u32::from(x < y)).id(),
                    });
                } else {
                    // The unary list is grouped by x with up to 4 ops each: draw an op kind,
                    // then an x that has it.
                    let op = [Token::Mod10, Token::Div10, Token::Succ, Token::Pred][kind].id();
                    loop {
                        let e = self.unary[rng.random_range(0..self.unary.len())];
                        if e.input[1] == op {
                            out.push(e);
                            break;
                        }
                    }
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn split_is_seeded_and_sized() {
        let s1 = Split::new(&mut StdRng::seed_from_u64(7), 0.6);
        let s2 = Split::new(&mut StdRng::seed_from_u64(7), 0.6);
        let s3 = Split::new(&mut StdRng::seed_from_u64(8), 0.6);
        assert_eq!(s1, s2);
        assert_ne!(s1, s3);
        assert_eq!(s1.training().len(), 6000);
        assert_eq!(s1.held_out().len(), 4000);
    }

    #[test]
    fn examples_have_the_right_answers() {
        let e = addition(37, 45);
        assert_eq!(e.input, [37, 200, 45, 201]);
        assert_eq!(e.target, 82);
        let s = Sampler::new(&Split::new(&mut StdRng::seed_from_u64(1), 0.6), true);
        let batch = s.batch(&mut StdRng::seed_from_u64(2), 4, 400);
        for e in &batch[4..] {
            let x = e.input[0];
            let want = match e.input[1] {
                op if op == Token::Mod10.id() => x % 10,
                op if op == Token::Div10.id() => x / 10,
                op if op == Token::Succ.id() => x + 1,
                op if op == Token::Pred.id() => x - 1,
                op if op == Token::Less.id() => u32::from(x < e.input[2]),
                op => panic!("unexpected op {op}"),
            };
            assert_eq!(e.target, want, "{e:?}");
        }
        // Every task kind shows up.
        for op in [
            Token::Mod10,
            Token::Div10,
            Token::Succ,
            Token::Pred,
            Token::Less,
        ] {
            assert!(batch.iter().any(|e| e.input[1] == op.id()), "{op:?}");
        }
    }
}
