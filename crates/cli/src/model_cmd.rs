//! `helixlab model check` and `helixlab model run`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use helixlab_model::checkpoint::{available_memory, GB};
use helixlab_model::{
    dtype_name, Checkpoint, CheckpointInfo, DType, ForwardRequest, HookPoint, LoadOptions, Logits,
    Model, Positions, Tensor, Tokenizer,
};
use helixlab_pipeline::{Device, Dtype};

#[derive(Subcommand)]
pub enum ModelCommand {
    /// Load a checkpoint (an HF directory or a GGUF file) and report its architecture, sizes,
    /// stored tensor types, hooks and the range of numbers that are single tokens.
    Check(CheckArgs),
    /// Run one prompt and save its token ids, logits and hook activations to a
    /// .safetensors file (for quick looks and comparisons with other tools).
    Run(RunArgs),
}

#[derive(Args)]
pub struct Load {
    /// The checkpoint: an HF directory (config.json, model.safetensors or pytorch_model.bin,
    /// tokenizer), a .gguf file, or a directory holding one .gguf file.
    pub dir: PathBuf,
    /// Run dtype, what the weights are held in: f32, bf16 or f16. On the CPU, bf16 and f16
    /// halve the memory and compute in f32 (as fast as f32); on a GPU they compute natively.
    #[arg(long, default_value = "f32")]
    pub dtype: Dtype,
    /// Device: cpu, cuda, cuda:N or metal (GPU builds need the cuda/metal feature).
    #[arg(long, default_value = "cpu")]
    pub device: Device,
}

impl Load {
    fn options(&self) -> Result<LoadOptions> {
        Ok(helixlab_study::candle_options(self.dtype, self.device)?)
    }

    fn open(&self) -> Result<Model> {
        let opts = self.options()?;
        Model::load(&self.dir, &opts).with_context(|| format!("loading {}", self.dir.display()))
    }
}

#[derive(Args)]
pub struct CheckArgs {
    #[command(flatten)]
    pub load: Load,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub load: Load,
    /// The prompt text (use $'...' in bash for newlines).
    #[arg(long, required_unless_present = "ids", conflicts_with = "ids")]
    pub prompt: Option<String>,
    /// Token ids instead of a prompt, comma separated (no tokenizer needed; special tokens
    /// are not added).
    #[arg(long, value_delimiter = ',')]
    pub ids: Option<Vec<u32>>,
    /// A hook to save, TransformerLens name (e.g. blocks.3.hook_resid_post); repeatable.
    #[arg(long = "hook")]
    pub hooks: Vec<String>,
    /// Where to write the .safetensors file.
    #[arg(long)]
    pub out: PathBuf,
    /// Do not add the tokenizer's special tokens (Llama 3's BOS).
    #[arg(long)]
    pub no_special_tokens: bool,
}

pub fn run(cmd: ModelCommand) -> Result<()> {
    match cmd {
        ModelCommand::Check(a) => check(&a),
        ModelCommand::Run(a) => run_prompt(&a),
    }
}

// Long (about 145 lines): it prints every fact of `model check` in both text and JSON, side by
// side, so the two stay in step.
fn check(a: &CheckArgs) -> Result<()> {
    // Headers only: no tensor is read, so a 6B checkpoint is checked as fast as a toy.
    let LoadOptions { dtype, device } = a.load.options()?;
    let info = CheckpointInfo::read(&a.load.dir)
        .with_context(|| format!("reading {}", a.load.dir.display()))?;
    let c = &info.config;
    let tok = Tokenizer::for_checkpoint(&a.load.dir);
    let (tokenizer, numbers, plus_eq) = match &tok {
        Ok(t) => (
            Some(t.source.display().to_string()),
            t.single_token_numbers(100_000)?,
            Some(t.single_token("+")?.is_some() && t.single_token("=")?.is_some()),
        ),
        Err(_) => (None, None, None),
    };
    let hooks = c.hooks();
    let rotary = c.rotary.map(|r| {
        serde_json::json!({"dim": r.dim, "theta": r.theta, "style": format!("{:?}", r.style),
            "llama3_scaling": r.llama3.is_some()})
    });
    let memory_gb: std::collections::BTreeMap<_, _> = [DType::F32, DType::BF16]
        .iter()
        .map(|&d| (dtype_name(d), info.weight_bytes(d) as f64 / GB))
        .collect();
    let report = serde_json::json!({
        "dir": a.load.dir.display().to_string(),
        "architecture": c.arch.model_type(),
        "layers": c.n_layers,
        "d_model": c.d_model,
        "heads": c.n_heads,
        "kv_heads": c.n_kv_heads,
        "d_head": c.d_head,
        "d_mlp": c.d_mlp,
        "vocab_size": c.vocab_size,
        "parameters": info.parameter_count,
        "parallel_block": c.parallel_block,
        "gated_mlp": c.gated_mlp,
        "rotary": rotary,
        "dtype": dtype_name(dtype),
        "device": format!("{:?}", device),
        "weight_files": &info.weight_files.iter().map(|p| p.display().to_string()).collect::<Vec<_>>(),
        "format": match info.checkpoint { Checkpoint::HfDir(_) => "hf", Checkpoint::Gguf(_) => "gguf" },
        "stored_types": &info.stored_types,
        "memory_gb": memory_gb,
        "memory_available_gb": available_memory().map(|b| b as f64 / GB),
        "context": c.max_positions,
        "tokenizer": tokenizer,
        "single_token_numbers": numbers.map(|n| format!("0..={n}")),
        "plus_and_equals_single_tokens": plus_eq,
        "hooks_per_block": HookPoint::block_hooks(0).iter().filter(|h| hooks.contains(h))
            .map(|h| h.to_string().trim_start_matches("blocks.0.").to_string()).collect::<Vec<_>>(),
    });
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    println!("{}", a.load.dir.display());
    println!(
        "  architecture  {} ({} layers, d_model {}, {} heads{} x {}, d_mlp {}, vocab {})",
        c.arch.model_type(),
        c.n_layers,
        c.d_model,
        c.n_heads,
        if c.n_kv_heads != c.n_heads {
            format!(" / {} kv", c.n_kv_heads)
        } else {
            String::new()
        },
        c.d_head,
        c.d_mlp,
        c.vocab_size
    );
    println!("  parameters    {}", info.parameter_count);
    println!(
        "  blocks        {}{}",
        if c.parallel_block {
            "parallel attention + MLP"
        } else {
            "sequential"
        },
        if c.gated_mlp { ", gated MLP" } else { "" }
    );
    if let Some(r) = c.rotary {
        println!(
            "  rotary        {} of {} dims, theta {}, {:?}{}",
            r.dim,
            c.d_head,
            r.theta,
            r.style,
            if r.llama3.is_some() {
                ", llama3 scaling"
            } else {
                ""
            }
        );
    }
    println!(
        "  run as        {} on {:?} (--dtype, --device of model run)",
        dtype_name(dtype),
        device
    );
    for f in &info.weight_files {
        println!("  weights       {}", f.display());
    }
    println!(
        "  stored types  {}",
        info.stored_types
            .iter()
            .map(|(t, n)| format!("{t} x {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    if let Some(n) = c.max_positions {
        println!("  context       {n} positions");
    }
    println!(
        "  memory        {:.2} GB in f32, {:.2} GB in bf16 or f16{}",
        info.weight_bytes(DType::F32) as f64 / GB,
        info.weight_bytes(DType::BF16) as f64 / GB,
        match available_memory() {
            Some(b) => format!(" ({:.1} GB available here)", b as f64 / GB),
            None => String::new(),
        }
    );
    match &tok {
        Ok(t) => {
            println!("  tokenizer     {}", t.source.display());
            match numbers {
                Some(n) => println!("  numbers       0..={n} are single tokens"),
                None => println!("  numbers       0 is not a single token"),
            }
        }
        Err(e) => println!("  tokenizer     none ({e})"),
    }
    println!(
        "  hooks         {}",
        report["hooks_per_block"].as_array().map_or(0, |h| h.len())
    );
    for h in report["hooks_per_block"].as_array().into_iter().flatten() {
        println!(
            "                blocks.{{l}}.{}",
            h.as_str().unwrap_or_default()
        );
    }
    Ok(())
}

// Long (about 120 lines): `model run` prints the load, the forward and every capture in text or
// JSON, side by side.
fn run_prompt(a: &RunArgs) -> Result<()> {
    let started = std::time::Instant::now();
    let model = a.load.open()?;
    let load_s = started.elapsed().as_secs_f64();
    let tok = match &a.ids {
        Some(_) => Tokenizer::for_checkpoint(&a.load.dir).ok(),
        None => Some(Tokenizer::for_checkpoint(&a.load.dir)?),
    };
    let (ids, prompt) = match (&a.ids, &a.prompt, &tok) {
        (Some(ids), _, _) => (ids.clone(), String::new()),
        (None, Some(p), Some(t)) => (t.encode(p, !a.no_special_tokens)?, p.clone()),
        _ => unreachable!("clap requires --prompt or --ids"),
    };
    if ids.is_empty() {
        bail!("the prompt {prompt:?} has no tokens");
    }
    if let Some(limit) = model.config().max_positions.filter(|&l| ids.len() > l) {
        bail!(
            "the prompt {prompt:?} has {} tokens, more than the model's context of {limit} \
             positions",
            ids.len()
        );
    }
    let hooks = a
        .hooks
        .iter()
        .map(|h| {
            let hook: HookPoint = h.parse()?;
            model.check_hook(hook)?;
            Ok(hook)
        })
        .collect::<Result<Vec<_>>>()?;
    let causal = model.config().arch.is_causal_lm();
    let mut req = ForwardRequest::new().logits(if causal { Logits::All } else { Logits::None });
    for h in &hooks {
        req = req.capture(*h, Positions::All);
    }
    let batch = model.batch(std::slice::from_ref(&ids))?;
    let forward_started = std::time::Instant::now();
    let out = model.forward(&batch, &req)?;
    let forward_s = forward_started.elapsed().as_secs_f64();

    let t = ids.len();
    let mut tensors: HashMap<String, Tensor> = HashMap::new();
    tensors.insert(
        "input_ids".into(),
        Tensor::from_vec(ids.clone(), t, &helixlab_model::Device::Cpu)?,
    );
    let to_cpu = |x: &Tensor| -> Result<Tensor> {
        Ok(x.squeeze(0)?
            .to_dtype(DType::F32)?
            .to_device(&helixlab_model::Device::Cpu)?)
    };
    if let Some(l) = &out.logits {
        tensors.insert("logits".into(), to_cpu(l)?);
    }
    for (h, x) in hooks.iter().zip(&out.captures) {
        tensors.insert(h.to_string(), to_cpu(x)?);
    }
    let decode = |i: u32| {
        tok.as_ref()
            .and_then(|t| t.decode(&[i]).ok())
            .unwrap_or_default()
    };
    let tokens: Vec<String> = ids.iter().map(|&i| decode(i)).collect();
    let meta = HashMap::from([
        ("model_dir".to_string(), model.dir().display().to_string()),
        (
            "architecture".to_string(),
            model.config().arch.model_type().to_string(),
        ),
        (
            "dtype".to_string(),
            dtype_name(model.weight_dtype()).to_string(),
        ),
        (
            "compute_dtype".to_string(),
            dtype_name(model.dtype()).to_string(),
        ),
        ("device".to_string(), format!("{:?}", model.device())),
        ("prompt".to_string(), prompt.clone()),
        ("tokens".to_string(), serde_json::to_string(&tokens)?),
        (
            "layout".to_string(),
            "activations are (position, per-token shape...), f32".to_string(),
        ),
        (
            "helixlab_version".to_string(),
            env!("CARGO_PKG_VERSION").to_string(),
        ),
    ]);
    save(&tensors, meta, &a.out)?;

    println!("{} tokens:", t);
    for (i, (id, s)) in ids.iter().zip(&tokens).enumerate() {
        println!("  {:>4} {:>4}  {:>7}  {:?}", i, i as i64 - t as i64, id, s);
    }
    if let Some(l) = &out.logits {
        let last = l
            .squeeze(0)?
            .get(t - 1)?
            .to_dtype(DType::F32)?
            .to_vec1::<f32>()?;
        let mut order: Vec<usize> = (0..last.len()).collect();
        order.sort_by(|&x, &y| last[y].total_cmp(&last[x]));
        println!("next token (top 5 logits):");
        for &i in order.iter().take(5) {
            println!("  {:>7}  {:>10.4}  {:?}", i, last[i], decode(i as u32));
        }
    }
    println!("wrote {} ({} tensors)", a.out.display(), tensors.len());
    println!(
        "loaded in {load_s:.2} s ({} weights, {} arithmetic), forward in {forward_s:.2} s",
        dtype_name(model.weight_dtype()),
        dtype_name(model.dtype())
    );
    Ok(())
}

/// Writes safetensors with metadata; the library writes a temp file and renames it.
fn save(
    tensors: &HashMap<String, Tensor>,
    meta: HashMap<String, String>,
    out: &Path,
) -> Result<()> {
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    safetensors::serialize_to_file(tensors.iter(), Some(meta), out)
        .with_context(|| format!("writing {}", out.display()))
}
