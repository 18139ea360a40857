//! A batch of token sequences, left-padded, with the attention mask and position ids that
//! make padding invisible to the real tokens.
//!
//! Left padding puts every sequence's last token at the same index, so the positions the
//! paper works with (a = -4, b = -2, last = -1, counted from the end) are one column of the
//! batch. Position ids count from each sequence's first real token, so a padded sequence sees
//! exactly what it would see alone.

use candle_core::{DType, Device, Tensor};

use crate::error::{ModelError, Result};

/// Token ids of several sequences, left-padded to one length.
#[derive(Clone, Debug)]
pub struct Batch {
    /// `(b, t)` u32 token ids (pads hold the pad id).
    pub input_ids: Tensor,
    /// The real length of each sequence.
    pub lengths: Vec<usize>,
    /// Position ids per sequence, `t` each (0 on pads).
    pub position_ids: Vec<Vec<u32>>,
    /// Padded length.
    pub seq_len: usize,
}

impl Batch {
    /// Left-pads `sequences` with `pad_id`.
    pub fn new(sequences: &[Vec<u32>], pad_id: u32, device: &Device) -> Result<Self> {
        if sequences.is_empty() {
            return Err(ModelError::BadRequest("empty batch".into()));
        }
        if let Some(i) = sequences.iter().position(|s| s.is_empty()) {
            return Err(ModelError::BadRequest(format!(
                "sequence {i} has no tokens"
            )));
        }
        let t = sequences.iter().map(|s| s.len()).max().unwrap_or(0);
        let mut ids = Vec::with_capacity(sequences.len() * t);
        let mut position_ids = Vec::with_capacity(sequences.len());
        for s in sequences {
            let pad = t - s.len();
            ids.extend(std::iter::repeat_n(pad_id, pad));
            ids.extend_from_slice(s);
            position_ids.push(
                std::iter::repeat_n(0, pad)
                    .chain(0..s.len() as u32)
                    .collect(),
            );
        }
        Ok(Self {
            input_ids: Tensor::from_vec(ids, (sequences.len(), t), device)?,
            lengths: sequences.iter().map(|s| s.len()).collect(),
            position_ids,
            seq_len: t,
        })
    }

    /// Number of sequences.
    pub fn size(&self) -> usize {
        self.lengths.len()
    }

    /// The padded index of `position` in sequence `seq`: negative counts from the end
    /// (-1 = last token), non-negative from the first real token.
    pub fn index(&self, seq: usize, position: i64) -> Result<usize> {
        let len = self.lengths[seq] as i64;
        let t = self.seq_len as i64;
        let idx = if position < 0 {
            t + position
        } else {
            t - len + position
        };
        if position >= len || position < -len {
            return Err(ModelError::BadRequest(format!(
                "position {position} is outside sequence {seq}, which has {len} tokens"
            )));
        }
        Ok(idx as usize)
    }

    /// The additive attention mask `(b, 1, t, t)` in f32: 0 where a query may look, a large
    /// negative number elsewhere (finite, so fully masked pad rows stay NaN-free).
    pub fn attention_mask(&self, causal: bool, device: &Device) -> Result<Tensor> {
        let t = self.seq_len;
        let mut m = vec![0f32; self.size() * t * t];
        for (s, &len) in self.lengths.iter().enumerate() {
            let first = t - len;
            for q in 0..t {
                for k in 0..t {
                    if k < first || (causal && k > q) {
                        m[(s * t + q) * t + k] = f32::MIN / 2.0;
                    }
                }
            }
        }
        Ok(Tensor::from_vec(m, (self.size(), 1, t, t), device)?)
    }

    /// A `(b, t)` u32 tensor of the position ids.
    pub fn position_tensor(&self, device: &Device) -> Result<Tensor> {
        let flat: Vec<u32> = self.position_ids.iter().flatten().copied().collect();
        Ok(Tensor::from_vec(flat, (self.size(), self.seq_len), device)?)
    }

    /// A `(b, t)` mask, 1 on real tokens, in `dtype`.
    pub fn token_mask(&self, dtype: DType, device: &Device) -> Result<Tensor> {
        let t = self.seq_len;
        let m: Vec<f32> = self
            .lengths
            .iter()
            .flat_map(|&len| (0..t).map(move |i| if i >= t - len { 1.0 } else { 0.0 }))
            .collect();
        Ok(Tensor::from_vec(m, (self.size(), t), device)?.to_dtype(dtype)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn left_padding_aligns_the_ends() {
        let b = Batch::new(&[vec![5, 6, 7], vec![8]], 0, &Device::Cpu).unwrap();
        assert_eq!(
            b.input_ids.to_vec2::<u32>().unwrap(),
            vec![vec![5, 6, 7], vec![0, 0, 8]]
        );
        assert_eq!(b.position_ids, vec![vec![0, 1, 2], vec![0, 0, 0]]);
        assert_eq!(b.index(1, -1).unwrap(), 2);
        assert_eq!(b.index(1, 0).unwrap(), 2);
        assert_eq!(b.index(0, 0).unwrap(), 0);
        assert!(b
            .index(1, -2)
            .unwrap_err()
            .to_string()
            .contains("outside sequence 1"));
    }
}
