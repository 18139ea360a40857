//! GELU (tanh approximation, HF's `gelu_new`) as one fused op with a fused backward.
//!
//! candle records `gelu()` fine, but its backward is ~15 separate elementwise ops, each
//! allocating a tensor the size of the MLP activations; in the toy adder that was the largest
//! single cost of a training step. Same formula as candle's forward and HF's `gelu_new`.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor};

const C: f32 = 0.797_884_6; // sqrt(2 / pi)
const A: f32 = 0.044_715;

fn slice<'a>(s: &'a CpuStorage, l: &Layout) -> Result<&'a [f32]> {
    match l.contiguous_offsets() {
        Some((start, end)) => Ok(&s.as_slice::<f32>()?[start..end]),
        None => candle_core::bail!("gelu: expects a contiguous f32 tensor"),
    }
}

struct GeluNew;

impl CustomOp1 for GeluNew {
    fn name(&self) -> &'static str {
        "gelu-new"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = slice(s, l)?;
        let y: Vec<f32> = x
            .iter()
            .map(|&v| 0.5 * v * (1.0 + (C * (v + A * v * v * v)).tanh()))
            .collect();
        Ok((CpuStorage::F32(y), l.shape().clone()))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(
            arg.contiguous()?
                .apply_op2(&grad.contiguous()?, GeluNewGrad)?,
        ))
    }
}

/// d gelu(x) / dx times the incoming gradient.
struct GeluNewGrad;

impl CustomOp2 for GeluNewGrad {
    fn name(&self) -> &'static str {
        "gelu-new-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (x, g) = (slice(s1, l1)?, slice(s2, l2)?);
        let out: Vec<f32> = x
            .iter()
            .zip(g)
            .map(|(&v, &g)| {
                let t = (C * (v + A * v * v * v)).tanh();
                let d = 0.5 * (1.0 + t) + 0.5 * v * (1.0 - t * t) * C * (1.0 + 3.0 * A * v * v);
                g * d
            })
            .collect();
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

/// GELU with the tanh approximation, recorded by autograd with a fused backward.
pub fn gelu_new(x: &Tensor) -> Result<Tensor> {
    x.contiguous()?.apply_op1(GeluNew)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    #[test]
    fn matches_candle_gelu_and_its_gradient() {
        let data: Vec<f32> = (0..200).map(|i| (i as f32 - 100.0) / 17.0).collect();
        let x = Var::from_vec(data, (10, 20), &Device::Cpu).unwrap();
        let w = Tensor::rand(0f32, 1.0, (10, 20), &Device::Cpu).unwrap();
        let fused = gelu_new(x.as_tensor()).unwrap();
        let plain = x.as_tensor().gelu().unwrap();
        let diff = (&fused - &plain).unwrap().abs().unwrap().max_all().unwrap();
        assert!(diff.to_scalar::<f32>().unwrap() < 1e-6);
        let g1 = (fused * &w).unwrap().sum_all().unwrap().backward().unwrap();
        let g2 = (plain * &w).unwrap().sum_all().unwrap().backward().unwrap();
        let (g1, g2) = (
            g1.get(x.as_tensor()).unwrap(),
            g2.get(x.as_tensor()).unwrap(),
        );
        let diff = (g1 - g2).unwrap().abs().unwrap().max_all().unwrap();
        assert!(diff.to_scalar::<f32>().unwrap() < 1e-4);
    }
}
