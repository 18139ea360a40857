//! Small building blocks shared by every architecture: linear layers, norms, activations.
//!
//! candle's fused CPU kernels (layer_norm, rms_norm, softmax_last_dim) are faster but are not
//! recorded by autograd: a gradient asked through them silently comes back incomplete. Every
//! function here therefore takes `differentiable` and uses plain tensor ops when it is set.

use candle_core::{DType, Tensor, D};

use crate::config::Activation;
use crate::error::Result;
use crate::half_matmul::HalfMatmul;
use crate::weights::Vb;

/// A dense layer `x W^T + b` with HF's `nn.Linear` weight `W: (out, in)`, multiplied as the
/// right-hand side `W^T: (in, out)`.
///
/// How `W^T` is held depends on where and in what it runs:
/// - f32 on the CPU: transposed once at load into a contiguous `(in, out)` copy. candle's CPU
///   matmul (the `gemm` crate) multiplies by a row-major `(in, out)` right-hand side up to 2.2x
///   faster than by a transposed view of `(out, in)` (measured here: 400 x 3072 x 768, 9.2 ms
///   against 20.6 ms; 20 x 768 x 3072, 0.6 ms against 1.6 ms).
/// - bf16 / f16 on the CPU: the stored `(out, in)` matrix as it was read, viewed transposed, and
///   multiplied by [`HalfMatmul`] (f32 arithmetic, widened block by block): no copy at load.
/// - on a GPU: a transposed view; cuBLAS takes the transpose as a flag.
#[derive(Clone, Debug)]
pub struct Linear {
    /// `W^T`, `(in, out)`: contiguous, or a transposed view.
    wt: Tensor,
    b: Option<Tensor>,
}

/// `t` transposed into a new contiguous matrix, rows split across threads (f32 on the CPU; any
/// other tensor through candle's copy).
fn transposed(t: &Tensor) -> Result<Tensor> {
    use rayon::prelude::*;
    let (r, c) = t.dims2()?;
    if !t.device().is_cpu() || t.dtype() != DType::F32 || r * c < 1 << 16 {
        return Ok(t.t()?.contiguous()?);
    }
    let src: Vec<f32> = t.flatten_all()?.to_vec1()?;
    let mut out = vec![0f32; r * c];
    const B: usize = 32;
    // Output row j is input column j; a band of 32 output rows reads 32-wide tiles of the input.
    out.par_chunks_mut(B * r)
        .enumerate()
        .for_each(|(band, rows)| {
            let j0 = band * B;
            let nj = rows.len() / r;
            for i0 in (0..r).step_by(B) {
                for i in i0..(i0 + B).min(r) {
                    let line = &src[i * c + j0..i * c + j0 + nj];
                    for (jj, &v) in line.iter().enumerate() {
                        rows[jj * r + i] = v;
                    }
                }
            }
        });
    Ok(Tensor::from_vec(out, (c, r), t.device())?)
}

impl Linear {
    /// Loads `weight` (and `bias` when `bias`) of shape `(out, in)`.
    pub fn load(vb: &Vb, d_in: usize, d_out: usize, bias: bool) -> Result<Self> {
        let w = vb.get_matrix("weight", &[d_out, d_in])?;
        let b = if bias {
            Some(vb.get("bias", &[d_out])?)
        } else {
            None
        };
        let wt = if w.device().is_cpu() && w.dtype() == DType::F32 {
            transposed(&w)?
        } else {
            w.t()?
        };
        Ok(Self { wt, b })
    }

    /// Loads GPT-2's `Conv1D`, whose weight is stored `(in, out)` already.
    pub fn load_conv1d(vb: &Vb, d_in: usize, d_out: usize) -> Result<Self> {
        Ok(Self {
            wt: vb.get_matrix("weight", &[d_in, d_out])?,
            b: Some(vb.get("bias", &[d_out])?),
        })
    }

    /// `W^T`, `(in, out)`: row i is what input feature i adds to the output (an MLP's output
    /// projection: neuron i's direction in the residual stream).
    pub fn weight_t(&self) -> &Tensor {
        &self.wt
    }

    /// The weights and biases of the outputs `idx` only: `(k, in)` and `(k,)`, in the
    /// input's arithmetic dtype `dtype` (what one logit per row needs, instead of the whole
    /// product).
    pub fn output_rows(&self, idx: &Tensor, dtype: DType) -> Result<(Tensor, Option<Tensor>)> {
        // Rows of the stored `(out, in)` matrix where it is one (a view `wt` transposes),
        // else columns of `wt`.
        let w = match self.wt.t()? {
            w if w.is_contiguous() => w.index_select(idx, 0)?,
            _ => self.wt.contiguous()?.index_select(idx, 1)?.t()?,
        };
        let w = w.to_dtype(dtype)?;
        let b = match &self.b {
            Some(b) => Some(b.index_select(idx, 0)?.to_dtype(dtype)?),
            None => None,
        };
        Ok((w, b))
    }

    /// From an existing `(out, in)` weight (a tied unembedding): a view, not a copy, so the
    /// table is not held twice.
    pub fn from_weight(w: Tensor, b: Option<Tensor>) -> Self {
        Self {
            wt: w.t().expect("a weight matrix has two dimensions"),
            b,
        }
    }

    /// Applies the layer to `(..., in)`.
    ///
    /// Under autograd on the CPU the product goes through [`InputOnlyLinear`] (or
    /// [`HalfMatmul`]), whose backward gives the input's gradient only: candle's matmul
    /// backward also computes the weight's (a second matmul per layer and a weight-sized
    /// buffer), which helixlab never needs.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let dims = x.dims().to_vec();
        let Some((&k, lead)) = dims.split_last() else {
            return Err(crate::error::ModelError::BadRequest(
                "a linear layer's input needs at least one dimension".into(),
            ));
        };
        let rows: usize = lead.iter().product();
        // A non-contiguous input would otherwise need the weight broadcast over the batch:
        // slower, and under autograd a weight-sized gradient per sequence (24 GB for a
        // last-position unembedding of 100 prompts of a GPT-2-sized model).
        let x2 = if x.is_contiguous() {
            x.reshape((rows, k))?
        } else {
            x.contiguous()?.reshape((rows, k))?
        };
        let cpu = x2.device().is_cpu();
        let half_weight = matches!(self.wt.dtype(), DType::BF16 | DType::F16);
        let y = if cpu && half_weight && x2.dtype() == DType::F32 {
            x2.apply_op2(&self.wt, HalfMatmul)?
        } else if x2.track_op() && cpu && !self.wt.track_op() {
            x2.apply_op2(&self.wt, InputOnlyLinear)?
        } else {
            x2.matmul(&self.wt)?
        };
        let mut out = lead.to_vec();
        out.push(self.wt.dim(1)?);
        let y = y.reshape(out)?;
        Ok(match &self.b {
            Some(b) => y.broadcast_add(b)?,
            None => y,
        })
    }
}

/// `x Wt` for `x: (m, k)` and `Wt: (k, n)` whose backward returns the gradient of `x` and
/// none for the weight (the model's weights are constants to every gradient helixlab takes).
struct InputOnlyLinear;

impl candle_core::CustomOp2 for InputOnlyLinear {
    fn name(&self) -> &'static str {
        "linear-input-grad-only"
    }

    fn cpu_fwd(
        &self,
        x: &candle_core::CpuStorage,
        lx: &candle_core::Layout,
        wt: &candle_core::CpuStorage,
        lw: &candle_core::Layout,
    ) -> candle_core::Result<(candle_core::CpuStorage, candle_core::Shape)> {
        use candle_core::backend::BackendStorage;
        let (m, k) = lx.shape().dims2()?;
        let (k2, n) = lw.shape().dims2()?;
        if k != k2 {
            candle_core::bail!("linear: input width {k}, weight width {k2}");
        }
        let y = x.matmul(wt, (1, m, n, k), lx, lw)?;
        Ok((y, candle_core::Shape::from((m, n))))
    }

    fn bwd(
        &self,
        _x: &Tensor,
        wt: &Tensor,
        _y: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        Ok((Some(grad.matmul(&wt.t()?)?), None))
    }
}

/// LayerNorm with weight and bias.
#[derive(Clone, Debug)]
pub struct LayerNorm {
    w: Tensor,
    b: Tensor,
    eps: f64,
}

impl LayerNorm {
    /// Loads `weight` and `bias` of width `d`.
    pub fn load(vb: &Vb, d: usize, eps: f64) -> Result<Self> {
        Ok(Self {
            w: vb.get("weight", &[d])?,
            b: vb.get("bias", &[d])?,
            eps,
        })
    }

    /// Normalises the last dimension.
    pub fn forward(&self, x: &Tensor, differentiable: bool) -> Result<Tensor> {
        Ok(if differentiable {
            candle_nn::ops::layer_norm_slow(x, &self.w, &self.b, self.eps as f32)?
        } else {
            candle_nn::ops::layer_norm(&x.contiguous()?, &self.w, &self.b, self.eps as f32)?
        })
    }
}

/// RMSNorm (Llama), computed in f32 as HF does.
#[derive(Clone, Debug)]
pub struct RmsNorm {
    w: Tensor,
    eps: f64,
    /// Gemma: the scale is `1 + weight`, applied in f32 before casting back (Llama casts back
    /// first, then multiplies in the model dtype).
    scale_in_f32: bool,
}

impl RmsNorm {
    /// Loads `weight` of width `d`.
    pub fn load(vb: &Vb, d: usize, eps: f64) -> Result<Self> {
        Ok(Self {
            w: vb.get("weight", &[d])?,
            eps,
            scale_in_f32: false,
        })
    }

    /// Gemma's RMSNorm (`modeling_gemma2.py`): `weight` is stored as an offset from one.
    pub fn load_one_plus(vb: &Vb, d: usize, eps: f64) -> Result<Self> {
        Ok(Self {
            w: (vb.get_f32("weight", &[d])? + 1.0)?,
            eps,
            scale_in_f32: true,
        })
    }

    /// Normalises the last dimension.
    pub fn forward(&self, x: &Tensor, differentiable: bool) -> Result<Tensor> {
        if self.scale_in_f32 && (differentiable || x.dtype() != DType::F32) {
            let dtype = x.dtype();
            let xf = x.to_dtype(DType::F32)?;
            let var = xf.sqr()?.mean_keepdim(D::Minus1)?;
            let normed = xf.broadcast_div(&(var + self.eps)?.sqrt()?)?;
            return Ok(normed.broadcast_mul(&self.w)?.to_dtype(dtype)?);
        }
        if differentiable || x.dtype() != DType::F32 {
            // HF: hidden.to(f32) * rsqrt(mean(hidden^2) + eps), back to the input dtype, then
            // times the weight.
            let dtype = x.dtype();
            let xf = x.to_dtype(DType::F32)?;
            let var = xf.sqr()?.mean_keepdim(D::Minus1)?;
            let normed = xf.broadcast_div(&(var + self.eps)?.sqrt()?)?;
            Ok(normed.to_dtype(dtype)?.broadcast_mul(&self.w)?)
        } else {
            Ok(candle_nn::ops::rms_norm(
                &x.contiguous()?,
                &self.w,
                self.eps as f32,
            )?)
        }
    }
}

/// Applies an activation function.
pub fn activate(x: &Tensor, act: Activation) -> Result<Tensor> {
    Ok(match act {
        // As for the tanh below: candle's calls scalar libm `erff` (3-4 % of a Pythia forward)
        // and takes its backward op by op.
        Activation::GeluErf if x.dtype() == DType::F32 && x.device().is_cpu() => {
            fused(x, FastGeluErf)?
        }
        Activation::GeluErf => x.gelu_erf()?,
        // f32 on the CPU: a tanh the compiler vectorises (candle's calls scalar libm `tanhf`,
        // 15 % of a GPT-2 forward), and under autograd a vectorised slope (candle's backward
        // takes `powf` and `tanh` op by op: 8 % of GPT-2's neuron gradients).
        Activation::GeluTanh if x.dtype() == DType::F32 && x.device().is_cpu() => {
            fused(x, FastGeluTanh)?
        }
        Activation::GeluTanh => x.gelu()?,
        Activation::Relu => x.relu()?,
        Activation::Silu => x.silu()?,
    })
}

/// Softmax over the last dimension.
pub fn softmax_last(x: &Tensor, differentiable: bool) -> Result<Tensor> {
    Ok(if differentiable {
        candle_nn::ops::softmax(x, D::Minus1)?
    } else {
        candle_nn::ops::softmax_last_dim(&x.contiguous()?)?
    })
}

/// A token (or position) embedding table.
#[derive(Clone, Debug)]
pub struct Embedding {
    /// `(n, d)`, in the run dtype (a tied unembedding multiplies by it).
    pub table: Tensor,
    /// What looked-up rows are given in (the compute dtype).
    out: DType,
}

impl Embedding {
    /// Loads `weight` of shape `(n, d)`.
    pub fn load(vb: &Vb, n: usize, d: usize) -> Result<Self> {
        Ok(Self {
            table: vb.get_matrix("weight", &[n, d])?,
            out: vb.weights().compute_dtype(),
        })
    }

    /// Looks up `ids` of shape `(b, t)` giving `(b, t, d)`.
    pub fn forward(&self, ids: &Tensor) -> Result<Tensor> {
        let (b, t) = ids.dims2()?;
        let d = self.table.dim(1)?;
        Ok(self
            .table
            .index_select(&ids.flatten_all()?, 0)?
            .reshape((b, t, d))?
            .to_dtype(self.out)?)
    }
}

/// tanh(x) as x P(x^2) / Q(x^2), the rational approximation Eigen uses for float (a few ulp
/// on its clamped range, where tanh is 1 to float precision beyond): only multiplies, adds, one
/// division and a clamp, so a loop over a slice vectorises.
#[inline(always)]
pub fn tanh_f32(x: f32) -> f32 {
    const CLAMP: f32 = 7.905_311;
    let x = x.clamp(-CLAMP, CLAMP);
    let x2 = x * x;
    let mut p = -2.760_768_5e-16_f32;
    p = p * x2 + 2.000_188e-13;
    p = p * x2 - 8.604_672e-11;
    p = p * x2 + 5.122_297e-8;
    p = p * x2 + 1.485_722_4e-5;
    p = p * x2 + 6.372_619_3e-4;
    p = p * x2 + 4.893_524_6e-3;
    let mut q = 1.198_258_4e-6_f32;
    q = q * x2 + 1.185_347e-4;
    q = q * x2 + 2.268_434_6e-3;
    q = q * x2 + 4.893_525e-3;
    x * p / q
}

/// erf(x) as x P(x^2) / Q(x^2), the rational approximation Eigen and XLA use for float, on
/// [-4, 4] (erf is +-1 to float precision beyond): vectorises as [`tanh_f32`] does.
#[inline(always)]
pub fn erf_f32(x: f32) -> f32 {
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let mut p = -2.726_142_3e-10_f32;
    p = p * x2 + 2.770_681_4e-8;
    p = p * x2 - 2.101_024e-6;
    p = p * x2 - 5.692_506_4e-5;
    p = p * x2 - 7.349_906_3e-4;
    p = p * x2 - 2.954_6e-3;
    p = p * x2 - 1.609_603_3e-2;
    let mut q = -1.456_607_2e-5_f32;
    q = q * x2 - 2.133_740_6e-4;
    q = q * x2 - 1.682_827e-3;
    q = q * x2 - 7.373_329e-3;
    q = q * x2 - 1.426_474e-2;
    x * p / q
}

/// `op` on `x`, recorded for autograd only when `x` is tracked.
fn fused<C: candle_core::CustomOp1 + Send + Sync + 'static>(x: &Tensor, op: C) -> Result<Tensor> {
    let x = x.contiguous()?;
    Ok(match x.track_op() {
        true => x.apply_op1(op)?,
        false => x.apply_op1_no_bwd(&op)?,
    })
}

/// `f` over every element of a contiguous f32 CPU tensor (`op` names it in the error): a
/// branch-free `f` makes the loop vectorise.
fn map_f32(
    op: &str,
    storage: &candle_core::CpuStorage,
    layout: &candle_core::Layout,
    f: impl Fn(f32) -> f32,
) -> candle_core::Result<(candle_core::CpuStorage, candle_core::Shape)> {
    let (candle_core::CpuStorage::F32(v), Some((start, end))) =
        (storage, layout.contiguous_offsets())
    else {
        candle_core::bail!("{op} takes a contiguous f32 tensor");
    };
    let out: Vec<f32> = v[start..end].iter().map(|&x| f(x)).collect();
    Ok((candle_core::CpuStorage::F32(out), layout.shape().clone()))
}

/// The exact GELU, 0.5 x (1 + erf(x / sqrt(2))) (HF's `gelu`, Pythia's), with [`erf_f32`].
struct FastGeluErf;

impl candle_core::CustomOp1 for FastGeluErf {
    fn name(&self) -> &'static str {
        "gelu-erf-vectorised"
    }

    fn cpu_fwd(
        &self,
        storage: &candle_core::CpuStorage,
        layout: &candle_core::Layout,
    ) -> candle_core::Result<(candle_core::CpuStorage, candle_core::Shape)> {
        map_f32(self.name(), storage, layout, |x| {
            0.5 * x * (1.0 + erf_f32(x * std::f32::consts::FRAC_1_SQRT_2))
        })
    }

    fn bwd(
        &self,
        arg: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(grad_res.mul(
            &arg.contiguous()?.apply_op1_no_bwd(&GeluErfSlope)?,
        )?))
    }
}

/// The derivative of [`FastGeluErf`]: 0.5 (1 + erf(x / sqrt(2))) + x exp(-x^2 / 2) / sqrt(2 pi).
struct GeluErfSlope;

impl candle_core::CustomOp1 for GeluErfSlope {
    fn name(&self) -> &'static str {
        "gelu-erf-slope-vectorised"
    }

    fn cpu_fwd(
        &self,
        storage: &candle_core::CpuStorage,
        layout: &candle_core::Layout,
    ) -> candle_core::Result<(candle_core::CpuStorage, candle_core::Shape)> {
        const INV_SQRT_2PI: f32 = 0.398_942_3;
        map_f32(self.name(), storage, layout, |x| {
            let cdf = 0.5 * (1.0 + erf_f32(x * std::f32::consts::FRAC_1_SQRT_2));
            cdf + x * (-0.5 * x * x).exp() * INV_SQRT_2PI
        })
    }
}

/// GPT-2's `gelu_new`: 0.5 x (1 + tanh(sqrt(2 / pi) (x + 0.044715 x^3))), with [`tanh_f32`].
struct FastGeluTanh;

impl candle_core::CustomOp1 for FastGeluTanh {
    fn name(&self) -> &'static str {
        "gelu-tanh-vectorised"
    }

    fn cpu_fwd(
        &self,
        storage: &candle_core::CpuStorage,
        layout: &candle_core::Layout,
    ) -> candle_core::Result<(candle_core::CpuStorage, candle_core::Shape)> {
        const K: f32 = 0.797_884_6; // sqrt(2 / pi)
        map_f32(self.name(), storage, layout, |x| {
            0.5 * x * (1.0 + tanh_f32(K * x * (1.0 + 0.044_715 * x * x)))
        })
    }

    fn bwd(
        &self,
        arg: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(grad_res.mul(
            &arg.contiguous()?.apply_op1_no_bwd(&GeluTanhSlope)?,
        )?))
    }
}

/// The derivative of [`FastGeluTanh`]: with u = sqrt(2 / pi) (x + 0.044715 x^3) and
/// t = tanh(u), 0.5 (1 + t) + 0.5 x (1 - t^2) sqrt(2 / pi) (1 + 3 * 0.044715 x^2).
struct GeluTanhSlope;

impl candle_core::CustomOp1 for GeluTanhSlope {
    fn name(&self) -> &'static str {
        "gelu-tanh-slope-vectorised"
    }

    fn cpu_fwd(
        &self,
        storage: &candle_core::CpuStorage,
        layout: &candle_core::Layout,
    ) -> candle_core::Result<(candle_core::CpuStorage, candle_core::Shape)> {
        const K: f32 = 0.797_884_6; // sqrt(2 / pi)
        map_f32(self.name(), storage, layout, |x| {
            let t = tanh_f32(K * x * (1.0 + 0.044_715 * x * x));
            0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * K * (1.0 + 3.0 * 0.044_715 * x * x)
        })
    }
}

#[cfg(test)]
mod tanh_tests {
    use super::*;

    #[test]
    fn the_vectorised_tanh_and_gelu_match_libm() {
        let mut worst = 0f32;
        for i in -20_000..=20_000 {
            let x = i as f32 * 1e-3;
            worst = worst.max((tanh_f32(x) - x.tanh()).abs());
        }
        assert!(worst < 1e-6, "tanh off by {worst}");
        let xs: Vec<f32> = (-1000..=1000).map(|i| i as f32 * 0.01).collect();
        let t = Tensor::new(xs.as_slice(), &candle_core::Device::Cpu).unwrap();
        let fast = activate(&t, Activation::GeluTanh).unwrap();
        let reference = t.gelu().unwrap();
        let diff = (fast - reference)
            .unwrap()
            .abs()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(diff < 1e-5, "gelu off by {diff}");
    }

    #[test]
    fn the_vectorised_erf_and_exact_gelu_match_libm() {
        let mut worst = 0f32;
        for i in -60_000..=60_000 {
            let x = i as f32 * 1e-4;
            worst = worst.max((erf_f32(x) - libm_erf(x)).abs());
        }
        assert!(worst < 1e-6, "erf off by {worst}");
        let xs: Vec<f32> = (-1000..=1000).map(|i| i as f32 * 0.01).collect();
        let t = Tensor::new(xs.as_slice(), &candle_core::Device::Cpu).unwrap();
        let fast = activate(&t, Activation::GeluErf).unwrap();
        let reference = t.gelu_erf().unwrap();
        let diff = (fast - reference)
            .unwrap()
            .abs()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(diff < 1e-5, "gelu off by {diff}");
    }

    /// erf in f64 (the series and the continued fraction meet well inside float precision).
    fn libm_erf(x: f32) -> f32 {
        let x = x as f64;
        let (a, sign) = (x.abs(), x.signum());
        if a < 2.5 {
            // erf(a) = 2/sqrt(pi) sum (-1)^n a^(2n+1) / (n! (2n+1))
            let (mut term, mut sum) = (a, a);
            for n in 1..200 {
                term *= -a * a / n as f64;
                sum += term / (2 * n + 1) as f64;
            }
            return (sign * sum * 2.0 / std::f64::consts::PI.sqrt()) as f32;
        }
        // erfc(a) = exp(-a^2) / sqrt(pi) * 1 / (a + 1/2 / (a + 1 / (a + 3/2 / (a + ...))))
        let mut f = a;
        for k in (1..200).rev() {
            f = a + (k as f64 / 2.0) / f;
        }
        let erfc = (-a * a).exp() / std::f64::consts::PI.sqrt() / f;
        (sign * (1.0 - erfc)) as f32
    }

    #[test]
    fn the_vectorised_exact_gelu_slope_matches_candles_backward() {
        let xs: Vec<f32> = (-1000..=1000).map(|i| i as f32 * 0.01).collect();
        let weights: Vec<f32> = (0..xs.len()).map(|i| 1.0 + (i % 7) as f32).collect();
        let dev = candle_core::Device::Cpu;
        let w = Tensor::new(weights.as_slice(), &dev).unwrap();
        let grad = |fast: bool| {
            let x = candle_core::Var::new(xs.as_slice(), &dev).unwrap();
            let y = if fast {
                activate(x.as_tensor(), Activation::GeluErf).unwrap()
            } else {
                x.as_tensor().gelu_erf().unwrap()
            };
            let g = (y * &w).unwrap().sum_all().unwrap().backward().unwrap();
            g.get(x.as_tensor()).unwrap().to_vec1::<f32>().unwrap()
        };
        let (fast, reference) = (grad(true), grad(false));
        let worst = fast
            .iter()
            .zip(&reference)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(worst < 1e-5, "slope off by {worst}");
    }

    #[test]
    fn the_vectorised_gelu_slope_matches_candles_backward() {
        let xs: Vec<f32> = (-1000..=1000).map(|i| i as f32 * 0.01).collect();
        let weights: Vec<f32> = (0..xs.len()).map(|i| 1.0 + (i % 7) as f32).collect();
        let dev = candle_core::Device::Cpu;
        let w = Tensor::new(weights.as_slice(), &dev).unwrap();
        let grad = |fast: bool| {
            let x = candle_core::Var::new(xs.as_slice(), &dev).unwrap();
            let y = if fast {
                activate(x.as_tensor(), Activation::GeluTanh).unwrap()
            } else {
                x.as_tensor().gelu().unwrap()
            };
            let g = (y * &w).unwrap().sum_all().unwrap().backward().unwrap();
            g.get(x.as_tensor()).unwrap().to_vec1::<f32>().unwrap()
        };
        let (fast, reference) = (grad(true), grad(false));
        let worst = fast
            .iter()
            .zip(&reference)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        // candle's backward rounds its constants to 6 digits (0.0356774, 0.797885, ...).
        assert!(worst < 1e-4, "slope off by {worst}");
        // Known values: the slope is 1/2 at 0 and 1 far to the right.
        assert!((fast[1000] / weights[1000] - 0.5).abs() < 1e-6);
        assert!((fast[1500] / weights[1500] - 1.0).abs() < 1e-4);
    }
}
