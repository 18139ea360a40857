//! [`Model`]: loading, hook validation, the forward driver and gradients at hook sites.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor, Var};

use crate::arch::{self, Arch};
use crate::attention::Env;
use crate::batch::Batch;
use crate::checkpoint::{Checkpoint, CheckpointInfo};
use crate::config::ModelConfig;
use crate::context::HookCtx;
use crate::error::{ModelError, Result};
use crate::hook::{HookPoint, Stage};
use crate::request::{
    Capture, Edit, ForwardOutput, ForwardRequest, Intervention, Logits, Positions,
};

/// How to load a model.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// The run dtype, what the weight matrices are held in: f32 by default; bf16 and f16 halve
    /// the memory. On the CPU a half-precision model computes in f32 (see
    /// [`crate::weights::compute_dtype`]); on a GPU in the run dtype itself.
    pub dtype: DType,
    /// Where to run.
    pub device: Device,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            dtype: DType::F32,
            device: Device::Cpu,
        }
    }
}

/// `f32`, `bf16`, `f16` (and the torch spellings `float32`, `bfloat16`, `float16`).
pub fn parse_dtype(s: &str) -> Result<DType> {
    match s {
        "f32" | "float32" => Ok(DType::F32),
        "bf16" | "bfloat16" => Ok(DType::BF16),
        "f16" | "float16" => Ok(DType::F16),
        other => Err(ModelError::BadRequest(format!(
            "dtype `{other}` is not supported (f32, bf16, f16)"
        ))),
    }
}

/// The name [`parse_dtype`] reads (`f32`, `bf16`, `f16`; candle's own name for others).
pub fn dtype_name(d: DType) -> &'static str {
    match d {
        DType::F32 => "f32",
        DType::BF16 => "bf16",
        DType::F16 => "f16",
        other => other.as_str(),
    }
}

/// `cpu`, `cuda`, `cuda:N` or `metal`; the GPU ones need the matching cargo feature.
pub fn parse_device(s: &str) -> Result<Device> {
    let gpu = |r: candle_core::Result<Device>, name: &str, feature: &str| {
        r.map_err(|e| {
            ModelError::BadRequest(format!(
                "device `{name}` is not available ({e}); build with `--features {feature}`"
            ))
        })
    };
    match s {
        "cpu" => Ok(Device::Cpu),
        "metal" => gpu(Device::new_metal(0), s, "metal"),
        "cuda" => gpu(Device::new_cuda(0), s, "cuda"),
        other => match other.strip_prefix("cuda:").map(str::parse::<usize>) {
            Some(Ok(i)) => gpu(Device::new_cuda(i), s, "cuda"),
            _ => Err(ModelError::BadRequest(format!(
                "device `{other}` is not one of cpu, cuda, cuda:N, metal"
            ))),
        },
    }
}

/// A loaded model.
pub struct Model {
    info: CheckpointInfo,
    dir: PathBuf,
    /// What activations are computed in.
    dtype: DType,
    /// What weight matrices are held in.
    weight_dtype: DType,
    device: Device,
    arch: Box<dyn Arch>,
}

impl Model {
    /// Loads the checkpoint at `path`: an HF directory (`config.json` and the weights beside
    /// it), a `.gguf` file, or a directory holding one (see [`Checkpoint::locate`]).
    pub fn load(path: &Path, opts: &LoadOptions) -> Result<Self> {
        let (info, weights) = CheckpointInfo::open(path, opts.dtype, &opts.device)?;
        info.check_fits(opts.dtype, &opts.device)?;
        let arch = arch::load(&info.config, &weights)?;
        if let Some((deepest, example)) = weights.deepest_layer() {
            let n = info.config.n_layers;
            if deepest >= n {
                let config = match &info.checkpoint {
                    crate::checkpoint::Checkpoint::HfDir(d) => d.join("config.json"),
                    crate::checkpoint::Checkpoint::Gguf(f) => f.clone(),
                };
                return Err(ModelError::BadConfig {
                    path: config,
                    field: info.config.arch.layer_count_field().into(),
                    message: format!(
                        "{n} layers, but the checkpoint holds tensors of layer {deepest} (e.g. \
                         `{example}`), which would go unused"
                    ),
                });
            }
        }
        Ok(Self {
            info,
            dir: path.to_path_buf(),
            dtype: weights.compute_dtype(),
            weight_dtype: opts.dtype,
            device: opts.device.clone(),
            arch,
        })
    }

    /// What the checkpoint is: config, files, stored types (also readable without loading,
    /// [`CheckpointInfo::read`]).
    pub fn info(&self) -> &CheckpointInfo {
        &self.info
    }

    /// Where the checkpoint was found.
    pub fn checkpoint(&self) -> &Checkpoint {
        &self.info.checkpoint
    }

    /// sha256 of what configures the model: config.json, or a GGUF file's header (metadata,
    /// tokenizer and tensor directory).
    pub fn config_sha256(&self) -> &str {
        &self.info.config_sha256
    }

    /// Tensors per stored type (`F32`, `BF16`; `Q4_1`, `Q8_0`, ... for GGUF).
    pub fn stored_types(&self) -> &BTreeMap<String, usize> {
        &self.info.stored_types
    }

    /// The normalised config.
    pub fn config(&self) -> &ModelConfig {
        &self.info.config
    }

    /// The path it was loaded from (a directory, or a GGUF file).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The weight files read.
    pub fn weight_files(&self) -> &[PathBuf] {
        &self.info.weight_files
    }

    /// Scalars in the checkpoint (tied weights counted once, unused ones included).
    pub fn parameter_count(&self) -> usize {
        self.info.parameter_count
    }

    /// What activations (and every hook's values) are computed in: the run dtype, or f32 for
    /// a bf16 / f16 model on the CPU.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// What the weight matrices are held in (the run dtype asked for at load).
    pub fn weight_dtype(&self) -> DType {
        self.weight_dtype
    }

    /// Device.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Every hook this model has, in forward order.
    pub fn hooks(&self) -> Vec<HookPoint> {
        self.info.config.hooks()
    }

    /// Whether this model has `hook`; the error says why not and what it has instead.
    pub fn check_hook(&self, hook: HookPoint) -> Result<()> {
        self.info.config.check_hook(hook)
    }

    /// The per-token shape of `hook` (see [`HookPoint`]) for sequences of padded length `t`.
    pub fn hook_shape(&self, hook: HookPoint, t: usize) -> Vec<usize> {
        let c = &self.info.config;
        use HookPoint::*;
        match hook {
            AttnQ(_) | AttnZ(_) => vec![c.n_heads, c.d_head],
            AttnK(_) | AttnV(_) => vec![c.n_kv_heads, c.d_head],
            AttnPattern(_) => vec![c.n_heads, t],
            MlpPre(_) | MlpPreLinear(_) | MlpPost(_) => vec![c.d_mlp],
            Logits => vec![c.vocab_size],
            _ => vec![c.d_model],
        }
    }

    /// A left-padded batch on this model's device, padded with the config's pad (or eos)
    /// token when it is in the vocabulary, else 0: pads are masked, so the id does not matter.
    pub fn batch(&self, sequences: &[Vec<u32>]) -> Result<Batch> {
        let vocab = self.info.config.vocab_size;
        if let Some((s, id)) = sequences.iter().enumerate().find_map(|(s, seq)| {
            seq.iter()
                .find(|&&id| id as usize >= vocab)
                .map(|&id| (s, id))
        }) {
            return Err(ModelError::BadRequest(format!(
                "sequence {s} has token id {id}, outside the vocabulary of {vocab}"
            )));
        }
        if let Some(limit) = self.info.config.max_positions {
            if let Some((s, seq)) = sequences.iter().enumerate().find(|(_, q)| q.len() > limit) {
                return Err(ModelError::BadRequest(format!(
                    "sequence {s} has {} tokens, more than the model's context of {limit} \
                     positions",
                    seq.len()
                )));
            }
        }
        let pad = self
            .info
            .config
            .pad_token_id
            .or(self.info.config.eos_token_id)
            .filter(|&p| (p as usize) < vocab)
            .unwrap_or(0);
        Batch::new(sequences, pad, &self.device)
    }

    /// The logits of final residual-stream vectors `(n, d_model)` (the output of the last
    /// block at one position each): the final norm and the unembedding, nothing else. Direct
    /// effects use it: a component's change added to the final residual reaches the logits
    /// only through here.
    pub fn logits_from_final_residual(&self, resid: &Tensor) -> Result<Tensor> {
        if !self.info.config.arch.is_causal_lm() {
            return Err(ModelError::BadRequest(format!(
                "{} has no LM head: there are no logits",
                self.info.config.arch.model_type()
            )));
        }
        let (_, d) = resid.dims2()?;
        if d != self.info.config.d_model {
            return Err(ModelError::BadRequest(format!(
                "final residual has width {d}, the model {}",
                self.info.config.d_model
            )));
        }
        let x = resid.to_dtype(self.dtype)?.unsqueeze(1)?;
        let n = self.arch.final_norm(&x, false)?.unwrap_or(x);
        Ok(self
            .arch
            .unembed(&n)?
            .expect("causal LMs have a head")
            .squeeze(1)?)
    }

    /// The unembedding of `x` (`(n, d_model)`) without the final norm, `(n, vocab)`: the
    /// logit lens of a direction in the residual stream (a neuron's W_out row), as the paper
    /// reads it (Figs 39-40).
    pub fn unembed_without_norm(&self, x: &Tensor) -> Result<Tensor> {
        if !self.info.config.arch.is_causal_lm() {
            return Err(ModelError::BadRequest(format!(
                "{} has no LM head: there is no unembedding",
                self.info.config.arch.model_type()
            )));
        }
        let x = x.to_dtype(self.dtype)?.unsqueeze(1)?;
        Ok(self
            .arch
            .unembed(&x)?
            .expect("causal LMs have a head")
            .squeeze(1)?)
    }

    /// The logit of `tokens[i]` from row i of `ln_final`, `(b, d_model)` (the final norm's
    /// output at one position), as `(b,)`: what a metric on the answer's logit needs. Only
    /// those rows of the unembedding are read, instead of the `(b, vocab)` product and, under
    /// autograd, its backward through the whole head (both pack the head, 154 MB for a
    /// GPT-2-sized vocabulary, to multiply 100 rows). Differentiable; the head's bias and
    /// Gemma 2's final softcap apply.
    pub fn token_logits(&self, ln_final: &Tensor, tokens: &[u32]) -> Result<Tensor> {
        let head = self.arch.head().ok_or_else(|| {
            ModelError::BadRequest(format!(
                "{} has no LM head: there are no logits",
                self.info.config.arch.model_type()
            ))
        })?;
        let (rows, _) = ln_final.dims2()?;
        if rows != tokens.len() {
            return Err(ModelError::BadRequest(format!(
                "{} tokens for {rows} rows of ln_final",
                tokens.len()
            )));
        }
        let idx = Tensor::new(tokens, ln_final.device())?;
        let (w, b) = head.output_rows(&idx, ln_final.dtype())?;
        let mut y = (ln_final * w)?.sum(1)?;
        if let Some(b) = b {
            y = (y + b)?;
        }
        if let Some(cap) = self.arch.final_softcap() {
            y = ((y / cap)?.tanh()? * cap)?;
        }
        Ok(y)
    }

    /// Neuron n's direction in the residual stream, for every neuron (`mlp.hook_post`) of block
    /// `layer`: `(d_mlp, d_model)`, row n = W_out[n, :] (the MLP output bias is not in it, so
    /// a change of activation times its row is the change of `hook_mlp_out`).
    pub fn neuron_directions(&self, layer: usize) -> Result<Tensor> {
        if layer >= self.info.config.n_layers {
            return Err(ModelError::BadRequest(format!(
                "layer {layer}: the model has {} layers",
                self.info.config.n_layers
            )));
        }
        Ok(self.arch.mlp_out_rows(layer).clone())
    }

    /// Runs `batch` under `req`.
    pub fn forward(&self, batch: &Batch, req: &ForwardRequest) -> Result<ForwardOutput> {
        self.run(batch, req, &req.interventions, false)
    }

    /// Runs `batch` under `req`, then returns, for each of `targets`, the gradient of
    /// `metric(output)` (a scalar) with respect to the activation at that hook and those
    /// positions, shaped like a capture of it. One forward and one backward for the batch.
    ///
    /// The gradient is taken at an added zero perturbation, after the request's own
    /// interventions at that hook.
    ///
    /// When everything the request and the targets touch is at the last position of unpadded
    /// sequences (attribution to the answer token), only the last position is differentiated:
    /// the positions before it cannot see it in a causal model, so they run once without
    /// autograd (fused kernels) and the last token attends over their keys and values. Same
    /// gradients, a quarter of the graph for `a+b=` prompts.
    pub fn forward_with_grad(
        &self,
        batch: &Batch,
        req: &ForwardRequest,
        targets: &[Capture],
        metric: impl Fn(&ForwardOutput) -> candle_core::Result<Tensor>,
    ) -> Result<(ForwardOutput, Vec<Tensor>)> {
        self.forward_with_grad_as(batch, req, targets, metric, true)
    }

    /// [`Model::forward_with_grad`], with the last-position shortcut allowed or not (tests
    /// compare the two).
    pub(crate) fn forward_with_grad_as(
        &self,
        batch: &Batch,
        req: &ForwardRequest,
        targets: &[Capture],
        metric: impl Fn(&ForwardOutput) -> candle_core::Result<Tensor>,
        last_only_shortcut: bool,
    ) -> Result<(ForwardOutput, Vec<Tensor>)> {
        let mut interventions = req.interventions.clone();
        let mut vars = Vec::with_capacity(targets.len());
        for t in targets {
            self.check_hook(t.hook)?;
            let n = t.positions.count(batch.seq_len);
            let mut shape = vec![batch.size(), n];
            shape.extend(self.hook_shape(t.hook, batch.seq_len));
            let var = Var::zeros(shape, self.dtype, &self.device)?;
            interventions.push(Intervention {
                hook: t.hook,
                positions: t.positions.clone(),
                index: None,
                edit: Edit::Add,
                value: var.as_tensor().clone(),
            });
            vars.push(var);
        }
        let out = if last_only_shortcut && self.last_position_only(batch, req, targets) {
            self.run_last_position_differentiable(batch, req, &interventions)?
        } else {
            self.run(batch, req, &interventions, true)?
        };
        let m = metric(&out)?;
        if m.elem_count() != 1 {
            return Err(ModelError::BadRequest(format!(
                "the gradient metric must be a scalar, got shape {:?}",
                m.dims()
            )));
        }
        let grads = m.sum_all()?.backward()?;
        let mut out_grads = Vec::with_capacity(vars.len());
        for v in &vars {
            out_grads.push(match grads.get(v.as_tensor()) {
                Some(g) => g.clone(),
                // No path from the hook to the metric: the gradient is zero.
                None => v.as_tensor().zeros_like()?,
            });
        }
        Ok((out, out_grads))
    }

    /// How far a forward under `req` (with `interventions`) must run.
    pub(crate) fn plan(
        &self,
        req: &ForwardRequest,
        interventions: &[Intervention],
    ) -> Result<Plan> {
        let c = &self.info.config;
        let hooks = hooks_of(req, interventions);
        let mut stop = Stage::Embedding;
        for h in hooks.clone() {
            self.check_hook(h)?;
            stop = stop.max(h.stage());
        }
        if req.logits != Logits::None {
            if !c.arch.is_causal_lm() {
                return Err(ModelError::BadRequest(format!(
                    "{} has no LM head: ask for hooks, not logits",
                    c.arch.model_type()
                )));
            }
            stop = Stage::Final;
        }
        // When the last block the request reaches is only read at its input (resid_pre, the
        // usual extraction), that block is not run: its input is the previous block's output.
        let stop_at_input = match stop {
            Stage::Block(l) => hooks
                .clone()
                .all(|h| h.stage() < stop || h == HookPoint::ResidPre(l)),
            _ => false,
        };
        Ok(Plan {
            stop,
            stop_at_input,
        })
    }

    /// The last block a forward under `req` through `plan` runs, when that block needs its
    /// output at the last position only: a causal forward that reads and changes nothing in
    /// that block (past its input, its keys and its values) or after it but at the last
    /// position, and no logits but the last position's. The other positions' outputs would feed
    /// nothing: three quarters of that block's work on them is saved. Keys and values still
    /// cover every position, so a recorded cache is whole.
    fn last_block_last_only(
        &self,
        batch: &Batch,
        req: &ForwardRequest,
        interventions: &[Intervention],
        plan: Plan,
    ) -> Option<usize> {
        let c = &self.info.config;
        let last = match (plan.stop, plan.stop_at_input) {
            (Stage::Final, _) => c.n_layers - 1,
            (Stage::Block(l), false) => l,
            _ => return None,
        };
        // One position per sequence, its last (-1, or counted from the first token).
        let is_last = |s: usize, p: i64| batch.index(s, p).ok() == Some(batch.seq_len - 1);
        let only_last = |p: &Positions| match p {
            Positions::All => false,
            Positions::At(ps) => ps.len() == 1 && (0..batch.size()).all(|s| is_last(s, ps[0])),
            Positions::Each(per) => per
                .iter()
                .enumerate()
                .all(|(s, ps)| ps.len() == 1 && is_last(s, ps[0])),
        };
        let fine = |h: HookPoint, p: &Positions| match h {
            HookPoint::ResidPre(_) => true,
            HookPoint::AttnQ(l) | HookPoint::AttnK(l) | HookPoint::AttnV(l) => l < last,
            HookPoint::AttnPattern(l) => l < last,
            _ => match h.stage() {
                Stage::Block(l) if l < last => true,
                Stage::Embedding => true,
                _ => only_last(p),
            },
        };
        let starts_before_last = req.resume.as_ref().is_none_or(|r| r.layer <= last);
        let fits = c.arch.is_causal_lm()
            && batch.seq_len > 1
            && req.logits != Logits::All
            && starts_before_last
            && req
                .captures
                .iter()
                .map(|c| (c.hook, &c.positions))
                .chain(interventions.iter().map(|i| (i.hook, &i.positions)))
                .all(|(h, p)| fine(h, p));
        fits.then_some(last)
    }

    /// Whether a gradient request reads and changes the last position only, of sequences
    /// without padding (see [`Model::forward_with_grad`]).
    fn last_position_only(&self, batch: &Batch, req: &ForwardRequest, targets: &[Capture]) -> bool {
        let last = |p: &Positions| matches!(p, Positions::At(ps) if ps.iter().all(|&i| i == -1 || i == batch.seq_len as i64 - 1));
        let hooks_ok =
            |h: HookPoint| !matches!(h, HookPoint::AttnPattern(_)) && h.stage() != Stage::Embedding;
        self.info.config.arch.is_causal_lm()
            && batch.seq_len > 1
            && batch.lengths.iter().all(|&l| l == batch.seq_len)
            && req.resume.is_none()
            && req.logits != Logits::All
            && targets
                .iter()
                .all(|t| last(&t.positions) && hooks_ok(t.hook))
            && req
                .captures
                .iter()
                .all(|c| last(&c.positions) && hooks_ok(c.hook))
            && req
                .interventions
                .iter()
                .all(|i| last(&i.positions) && hooks_ok(i.hook))
    }

    /// The positions before the last without autograd, recording keys and values; then the
    /// last position alone, differentiable, attending over them.
    fn run_last_position_differentiable(
        &self,
        batch: &Batch,
        req: &ForwardRequest,
        interventions: &[Intervention],
    ) -> Result<ForwardOutput> {
        let t = batch.seq_len;
        let plan = self.plan(req, interventions)?;
        let head = crate::kv_cache::batch_until(batch, t - 1)?;
        let tail = crate::kv_cache::batch_from(batch, t - 1)?;
        // Heads that share a prefix (the paper's instruction) run it once.
        let seqs: Vec<Vec<u32>> = head.input_ids.to_vec2()?;
        let kv = match crate::prefix::shared_prefix_split(&seqs) {
            Some(split) => {
                let (_, cache) =
                    self.shared_prefix(&seqs, split, &ForwardRequest::new(), true, Some(plan))?;
                cache.expect("recorded").into_keys_values()
            }
            None => self.run_recording(&head, &ForwardRequest::new(), plan)?.1,
        };
        // Positions were checked to be the last one; in the one-token tail that is -1.
        let at_last = |p: &Positions| match p {
            Positions::All => Positions::All,
            other => Positions::At(vec![-1; other.count(t)]),
        };
        let mut tail_req = req.clone();
        for c in &mut tail_req.captures {
            c.positions = at_last(&c.positions);
        }
        let interventions: Vec<Intervention> = interventions
            .iter()
            .map(|i| Intervention {
                positions: at_last(&i.positions),
                ..i.clone()
            })
            .collect();
        let mask = Tensor::zeros((1, 1, 1, t), DType::F32, &self.device)?;
        Ok(self
            .run_with(
                &tail,
                &tail_req,
                &interventions,
                true,
                RunExtras {
                    plan: Some(plan),
                    record_kv: false,
                    past: Some((kv, mask)),
                },
            )?
            .0)
    }

    /// Runs `batch` under `req` through `plan` without autograd, recording every block's keys
    /// and values (the first half of the shared-prefix and last-position forwards).
    pub(crate) fn run_recording(
        &self,
        batch: &Batch,
        req: &ForwardRequest,
        plan: Plan,
    ) -> Result<(ForwardOutput, KeysValues)> {
        let (out, kv) = self.run_with(
            batch,
            req,
            &[],
            false,
            RunExtras {
                plan: Some(plan),
                record_kv: true,
                past: None,
            },
        )?;
        Ok((out, kv.unwrap_or_default()))
    }

    fn run(
        &self,
        batch: &Batch,
        req: &ForwardRequest,
        interventions: &[Intervention],
        differentiable: bool,
    ) -> Result<ForwardOutput> {
        Ok(self
            .run_with(
                batch,
                req,
                interventions,
                differentiable,
                RunExtras::default(),
            )?
            .0)
    }

    /// The forward driver; `extras` lets the shared-prefix forward run a fixed plan, record
    /// keys and values, or attend over a prefix's (see `prefix.rs`).
    // Long (about 130 lines) because it is the forward driver: embedding or resume, each block
    // with its hooks, the final norm and logits, and where to stop, in that order; each step is
    // one call into the architecture.
    pub(crate) fn run_with(
        &self,
        batch: &Batch,
        req: &ForwardRequest,
        interventions: &[Intervention],
        differentiable: bool,
        extras: RunExtras,
    ) -> Result<(ForwardOutput, Option<KeysValues>)> {
        let c = &self.info.config;
        let hooks = hooks_of(req, interventions);
        let Plan {
            stop,
            stop_at_input,
        } = match extras.plan {
            Some(p) => p,
            None => self.plan(req, interventions)?,
        };
        let start = match &req.resume {
            None => 0,
            Some(r) => {
                if r.layer > c.n_layers {
                    return Err(ModelError::BadRequest(format!(
                        "resume at layer {} but the model has {} layers",
                        r.layer, c.n_layers
                    )));
                }
                let want = [batch.size(), batch.seq_len, c.d_model];
                if r.resid.dims() != want {
                    return Err(ModelError::BadRequest(format!(
                        "resume residual has shape {:?}, expected {:?}",
                        r.resid.dims(),
                        want
                    )));
                }
                if let Some(h) = hooks.clone().find(|h| h.stage() < Stage::Block(r.layer)) {
                    return Err(ModelError::BadRequest(format!(
                        "hook {h} fires before layer {}, where the forward resumes",
                        r.layer
                    )));
                }
                r.layer
            }
        };
        // The last block runs its last position only when nothing else is read there or later.
        let plan = Plan {
            stop,
            stop_at_input,
        };
        let last_only = self.last_block_last_only(batch, req, interventions, plan);
        let mut ctx = HookCtx::new(
            batch,
            &req.captures,
            interventions,
            differentiable,
            &self.device,
        );
        let mut x = match &req.resume {
            Some(r) => r.resid.to_dtype(self.dtype)?,
            None => self.arch.embed(batch, &mut ctx)?,
        };
        if extras.record_kv {
            ctx.kv_record = Some(Vec::new());
        }
        let (past, mask) = match extras.past {
            Some((kv, mask)) => (Some(kv), mask),
            None => (
                None,
                batch.attention_mask(c.arch.is_causal_lm(), &self.device)?,
            ),
        };
        let local_mask = match c.sliding_window {
            Some(w) if c.local_layers.contains(&true) => {
                Some(crate::attention::window_mask(&mask, w)?)
            }
            _ => None,
        };
        let mut env = Env {
            mask,
            rope: match self.arch.rotary() {
                Some(r) => Some(r.tables(&batch.position_ids, self.dtype, &self.device)?),
                None => None,
            },
            past,
            local_mask,
            local: c.local_layers.clone(),
            scale: c.attention_scale,
            softcap: c.attention_softcap,
            last_position_only: false,
        };
        let mut end = start;
        for l in start..c.n_layers {
            if Stage::Block(l) > stop {
                break;
            }
            x = ctx.hook(HookPoint::ResidPre(l), x)?;
            if stop_at_input && Stage::Block(l) == stop {
                break;
            }
            end = l + 1;
            if last_only == Some(l) {
                ctx.narrow_to_last();
                env.last_position_only = true;
            }
            x = self.arch.block(l, &x, &env, &mut ctx)?;
            x = ctx.hook(HookPoint::ResidPost(l), x)?;
        }
        let mut logits = None;
        if stop == Stage::Final {
            if let Some(n) = self.arch.final_norm(&x, differentiable)? {
                let n = ctx.hook(HookPoint::LnFinal, n)?;
                let t = n.dim(1)?;
                if req.logits == Logits::All || ctx.is_live(HookPoint::Logits) {
                    let full = self.arch.unembed(&n)?.expect("causal LMs have a head");
                    let full = ctx.hook(HookPoint::Logits, full)?;
                    logits = Some(match req.logits {
                        Logits::Last => full.narrow(1, t - 1, 1)?.squeeze(1)?,
                        _ => full,
                    });
                } else if req.logits == Logits::Last {
                    let last = n.narrow(1, t - 1, 1)?;
                    logits = Some(
                        self.arch
                            .unembed(&last)?
                            .expect("causal LMs have a head")
                            .squeeze(1)?,
                    );
                }
            }
        }
        if req.logits == Logits::None {
            logits = None;
        }
        let captures = ctx
            .captured
            .into_iter()
            .zip(&req.captures)
            .map(|(t, c)| {
                t.ok_or_else(|| {
                    ModelError::BadRequest(format!("hook {} was never reached", c.hook))
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok((
            ForwardOutput {
                logits,
                captures,
                hooks: req.captures.iter().map(|c| c.hook).collect(),
                layers_run: start..end,
                positions_run: 0..batch.seq_len,
                last_block_last_only: last_only.is_some_and(|l| end == l + 1),
            },
            ctx.kv_record,
        ))
    }
}

/// Every hook a forward under `req` with `interventions` reads or changes.
fn hooks_of<'a>(
    req: &'a ForwardRequest,
    interventions: &'a [Intervention],
) -> impl Iterator<Item = HookPoint> + Clone + 'a {
    req.captures
        .iter()
        .map(|c| c.hook)
        .chain(interventions.iter().map(|i| i.hook))
}

/// How far a forward runs: up to `stop`, and whether it stops at that block's input.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Plan {
    pub stop: Stage,
    pub stop_at_input: bool,
}

/// What the shared-prefix forward adds to a plain one.
#[derive(Default)]
pub(crate) struct RunExtras {
    /// Run this plan instead of the request's own.
    pub plan: Option<Plan>,
    /// Record every block's (rotated) keys and values.
    pub record_kv: bool,
    /// A prefix's keys and values per layer and the mask over prefix + own keys.
    pub past: Option<(KeysValues, Tensor)>,
}

/// Keys and values `(b, t, kv_heads, d)` of every block run, by layer.
pub(crate) type KeysValues = Vec<(Tensor, Tensor)>;
