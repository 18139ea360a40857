#!/usr/bin/env python3
"""Builds tiny random HF checkpoints of every architecture helixlab runs and records what HF
transformers computes on them: logits, the activation at every TransformerLens hook site (read
from HF's own modules with PyTorch hooks) and the gradient of one scalar metric at several
sites. The Rust parity tests (crates/model/tests/parity.rs) compare against these files.

Pinned: torch==2.15.0, transformers==5.23.0 (see tools/requirements-parity.txt).

    python3 -m venv .venv-parity && .venv-parity/bin/pip install -r tools/requirements-parity.txt
    .venv-parity/bin/python tools/make_parity_fixtures.py tests/fixtures/parity

Each case directory holds an HF checkpoint (config.json + weights in the format the case
tests) and `hf_reference.safetensors` with:
  input_ids, attention_mask, position_ids   (left-padded batch, positions from the first real token)
  <hook name>                               activation, laid out (batch, position, per-token shape...)
  grad.<hook name>                          d metric / d activation, same layout
  metric_targets                            (batch, 2) token ids: metric = sum_b logit[b,-1,t0] - logit[b,-1,t1]
                                            (BERT: metric = sum_b resid_post[last layer][b,-1,:] . metric_vector)
"""
import json
import os
import sys

import torch
import transformers
from safetensors.torch import save_file
from transformers import (
    BertConfig,
    BertModel,
    GPT2Config,
    GPT2LMHeadModel,
    GPTJConfig,
    GPTJForCausalLM,
    GPTNeoXConfig,
    GPTNeoXForCausalLM,
    Gemma2Config,
    Gemma2ForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
)

VOCAB = 128
LENGTHS = [7, 5, 3]  # a ragged batch, left-padded to 7


def scale_weights(model, seed):
    """Random weights of order one, so that activations and logits are O(1) and an absolute
    tolerance of 1e-4 is a real test (HF's default init makes every logit ~1e-2)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1:
                if "norm" in name.lower() or "ln" in name.lower():
                    if name.endswith("weight"):
                        p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=g))
                    else:
                        p.copy_(0.2 * torch.randn(p.shape, generator=g))
                else:
                    p.copy_(0.2 * torch.randn(p.shape, generator=g))
            else:
                fan_in = p.shape[0] if "c_" in name and "gpt2" in type(model).__name__.lower() else p.shape[-1]
                if "embed" in name or "wte" in name or "wpe" in name or "embed_in" in name:
                    p.copy_(torch.randn(p.shape, generator=g))
                else:
                    p.copy_(torch.randn(p.shape, generator=g) / fan_in**0.5)


def batch(seed):
    g = torch.Generator().manual_seed(seed)
    t = max(LENGTHS)
    ids = torch.zeros(len(LENGTHS), t, dtype=torch.long)
    mask = torch.zeros(len(LENGTHS), t, dtype=torch.long)
    pos = torch.zeros(len(LENGTHS), t, dtype=torch.long)
    for i, n in enumerate(LENGTHS):
        ids[i, t - n :] = torch.randint(3, VOCAB, (n,), generator=g)
        mask[i, t - n :] = 1
        pos[i, t - n :] = torch.arange(n)
    return ids, mask, pos


class Recorder:
    """Registers hooks on HF modules and stores activations under TransformerLens names."""

    def __init__(self):
        self.acts = {}
        self.handles = []

    def keep(self, name, x, shape_fn=None):
        x.retain_grad() if x.requires_grad else None
        self.acts[name] = (x, shape_fn)

    def out(self, module, name, shape_fn=None, index=None):
        def hook(_m, _args, output):
            y = output[0] if isinstance(output, tuple) else output
            self.keep(name, y, shape_fn)

        self.handles.append(module.register_forward_hook(hook))

    def inp(self, module, name, shape_fn=None):
        def hook(_m, args, kwargs):
            x = args[0] if args else kwargs["hidden_states"]
            self.keep(name, x, shape_fn)

        self.handles.append(module.register_forward_pre_hook(hook, with_kwargs=True))

    def qkv_split(self, module, layer, heads, d_head, fused_per_head, kv_heads=None):
        def hook(_m, _args, y):
            b, t, _ = y.shape
            if fused_per_head:  # GPT-NeoX: (b, t, heads, 3*d_head)
                y4 = y.view(b, t, heads, 3 * d_head)
                q, k, v = y4.split(d_head, dim=-1)
            else:  # GPT-2: [q | k | v] along the width
                q, k, v = y.split(heads * d_head, dim=-1)
                q, k, v = (z.reshape(b, t, heads, d_head) for z in (q, k, v))
            self.acts[f"blocks.{layer}.attn.hook_q"] = (q, None)
            self.acts[f"blocks.{layer}.attn.hook_k"] = (k, None)
            self.acts[f"blocks.{layer}.attn.hook_v"] = (v, None)

        self.handles.append(module.register_forward_hook(hook))

    def tensors(self, mask):
        """Activations as contiguous float tensors, (batch, position, ...)."""
        out = {}
        for name, (x, shape_fn) in self.acts.items():
            y = shape_fn(x) if shape_fn else x
            out[name] = y.detach().float().clone().contiguous()
        return out

    def grads(self, names):
        out = {}
        for name in names:
            x, shape_fn = self.acts[name]
            g = x.grad
            assert g is not None, name
            out["grad." + name] = (shape_fn(g) if shape_fn else g).detach().float().clone().contiguous()
        return out


def heads(n, d):
    return lambda x: x.reshape(x.shape[0], x.shape[1], n, d)


def register(arch, model, rec, cfg):
    if arch == "gpt2":
        tr = model.transformer
        H, D = cfg.n_head, cfg.n_embd // cfg.n_head
        rec.out(tr.wte, "hook_embed")
        rec.out(tr.wpe, "hook_pos_embed")
        for l, blk in enumerate(tr.h):
            rec.inp(blk, f"blocks.{l}.hook_resid_pre")
            rec.out(blk, f"blocks.{l}.hook_resid_post")
            rec.qkv_split(blk.attn.c_attn, l, H, D, fused_per_head=False)
            rec.inp(blk.attn.c_proj, f"blocks.{l}.attn.hook_z", heads(H, D))
            rec.out(blk.attn.c_proj, f"blocks.{l}.hook_attn_out")
            rec.inp(blk.ln_2, f"blocks.{l}.hook_resid_mid")
            rec.out(blk.mlp.c_fc, f"blocks.{l}.mlp.hook_pre")
            rec.inp(blk.mlp.c_proj, f"blocks.{l}.mlp.hook_post")
            rec.out(blk.mlp.c_proj, f"blocks.{l}.hook_mlp_out")
        rec.out(tr.ln_f, "ln_final.hook_normalized")
    elif arch == "gptj":
        tr = model.transformer
        H, D = cfg.n_head, cfg.n_embd // cfg.n_head
        rec.out(tr.wte, "hook_embed")
        for l, blk in enumerate(tr.h):
            rec.inp(blk, f"blocks.{l}.hook_resid_pre")
            rec.out(blk, f"blocks.{l}.hook_resid_post")
            rec.out(blk.attn.q_proj, f"blocks.{l}.attn.hook_q", heads(H, D))
            rec.out(blk.attn.k_proj, f"blocks.{l}.attn.hook_k", heads(H, D))
            rec.out(blk.attn.v_proj, f"blocks.{l}.attn.hook_v", heads(H, D))
            rec.inp(blk.attn.out_proj, f"blocks.{l}.attn.hook_z", heads(H, D))
            rec.out(blk.attn.out_proj, f"blocks.{l}.hook_attn_out")
            rec.out(blk.mlp.fc_in, f"blocks.{l}.mlp.hook_pre")
            rec.inp(blk.mlp.fc_out, f"blocks.{l}.mlp.hook_post")
            rec.out(blk.mlp.fc_out, f"blocks.{l}.hook_mlp_out")
        rec.out(tr.ln_f, "ln_final.hook_normalized")
    elif arch == "gpt_neox":
        tr = model.gpt_neox
        H, D = cfg.num_attention_heads, cfg.hidden_size // cfg.num_attention_heads
        rec.out(tr.embed_in, "hook_embed")
        for l, blk in enumerate(tr.layers):
            rec.inp(blk, f"blocks.{l}.hook_resid_pre")
            rec.out(blk, f"blocks.{l}.hook_resid_post")
            rec.qkv_split(blk.attention.query_key_value, l, H, D, fused_per_head=True)
            rec.inp(blk.attention.dense, f"blocks.{l}.attn.hook_z", heads(H, D))
            rec.out(blk.attention.dense, f"blocks.{l}.hook_attn_out")
            if not cfg.use_parallel_residual:
                rec.inp(blk.post_attention_layernorm, f"blocks.{l}.hook_resid_mid")
            rec.out(blk.mlp.dense_h_to_4h, f"blocks.{l}.mlp.hook_pre")
            rec.inp(blk.mlp.dense_4h_to_h, f"blocks.{l}.mlp.hook_post")
            rec.out(blk.mlp.dense_4h_to_h, f"blocks.{l}.hook_mlp_out")
        rec.out(tr.final_layer_norm, "ln_final.hook_normalized")
    elif arch == "gemma2":
        # hook_attn_out / hook_mlp_out: what enters the residual, after the post-norms.
        tr = model.model
        H, KV = cfg.num_attention_heads, cfg.num_key_value_heads
        D = cfg.head_dim
        rec.out(tr.embed_tokens, "hook_embed")
        for l, blk in enumerate(tr.layers):
            rec.inp(blk, f"blocks.{l}.hook_resid_pre")
            rec.out(blk, f"blocks.{l}.hook_resid_post")
            rec.out(blk.self_attn.q_proj, f"blocks.{l}.attn.hook_q", heads(H, D))
            rec.out(blk.self_attn.k_proj, f"blocks.{l}.attn.hook_k", heads(KV, D))
            rec.out(blk.self_attn.v_proj, f"blocks.{l}.attn.hook_v", heads(KV, D))
            rec.inp(blk.self_attn.o_proj, f"blocks.{l}.attn.hook_z", heads(H, D))
            rec.out(blk.post_attention_layernorm, f"blocks.{l}.hook_attn_out")
            rec.inp(blk.pre_feedforward_layernorm, f"blocks.{l}.hook_resid_mid")
            rec.out(blk.mlp.gate_proj, f"blocks.{l}.mlp.hook_pre")
            rec.out(blk.mlp.up_proj, f"blocks.{l}.mlp.hook_pre_linear")
            rec.inp(blk.mlp.down_proj, f"blocks.{l}.mlp.hook_post")
            rec.out(blk.post_feedforward_layernorm, f"blocks.{l}.hook_mlp_out")
        rec.out(tr.norm, "ln_final.hook_normalized")
    elif arch in ("llama", "qwen2", "mistral"):
        tr = model.model
        H, KV = cfg.num_attention_heads, cfg.num_key_value_heads
        D = getattr(cfg, "head_dim", None) or cfg.hidden_size // H
        rec.out(tr.embed_tokens, "hook_embed")
        for l, blk in enumerate(tr.layers):
            rec.inp(blk, f"blocks.{l}.hook_resid_pre")
            rec.out(blk, f"blocks.{l}.hook_resid_post")
            rec.out(blk.self_attn.q_proj, f"blocks.{l}.attn.hook_q", heads(H, D))
            rec.out(blk.self_attn.k_proj, f"blocks.{l}.attn.hook_k", heads(KV, D))
            rec.out(blk.self_attn.v_proj, f"blocks.{l}.attn.hook_v", heads(KV, D))
            rec.inp(blk.self_attn.o_proj, f"blocks.{l}.attn.hook_z", heads(H, D))
            rec.out(blk.self_attn.o_proj, f"blocks.{l}.hook_attn_out")
            rec.inp(blk.post_attention_layernorm, f"blocks.{l}.hook_resid_mid")
            rec.out(blk.mlp.gate_proj, f"blocks.{l}.mlp.hook_pre")
            rec.out(blk.mlp.up_proj, f"blocks.{l}.mlp.hook_pre_linear")
            rec.inp(blk.mlp.down_proj, f"blocks.{l}.mlp.hook_post")
            rec.out(blk.mlp.down_proj, f"blocks.{l}.hook_mlp_out")
        rec.out(tr.norm, "ln_final.hook_normalized")
    elif arch == "bert":
        H, D = cfg.num_attention_heads, cfg.hidden_size // cfg.num_attention_heads
        rec.out(model.embeddings.word_embeddings, "hook_embed")
        rec.out(model.embeddings.position_embeddings, "hook_pos_embed")
        for l, blk in enumerate(model.encoder.layer):
            rec.inp(blk, f"blocks.{l}.hook_resid_pre")
            rec.out(blk, f"blocks.{l}.hook_resid_post")
            rec.out(blk.attention.self.query, f"blocks.{l}.attn.hook_q", heads(H, D))
            rec.out(blk.attention.self.key, f"blocks.{l}.attn.hook_k", heads(H, D))
            rec.out(blk.attention.self.value, f"blocks.{l}.attn.hook_v", heads(H, D))
            rec.inp(blk.attention.output.dense, f"blocks.{l}.attn.hook_z", heads(H, D))
            rec.out(blk.attention.output.dense, f"blocks.{l}.hook_attn_out")
            rec.out(blk.attention.output.LayerNorm, f"blocks.{l}.hook_resid_mid")
            rec.out(blk.intermediate.dense, f"blocks.{l}.mlp.hook_pre")
            rec.inp(blk.output.dense, f"blocks.{l}.mlp.hook_post")
            rec.out(blk.output.dense, f"blocks.{l}.hook_mlp_out")


def save_weights(model, out, fmt):
    """Writes the checkpoint in the format the case tests."""
    import tempfile

    from safetensors.torch import load_file

    model.config.save_pretrained(out)
    # The names HF writes to disk (save_pretrained undoes in-memory renames such as
    # GPT-NeoX's lm_head -> embed_out), so .bin cases look like real checkpoints.
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp)
        sd = load_file(os.path.join(tmp, "model.safetensors"))
    if fmt == "safetensors":
        model.save_pretrained(out)
    elif fmt == "safetensors-sharded":
        model.save_pretrained(out, max_shard_size="40KB")
        assert os.path.exists(os.path.join(out, "model.safetensors.index.json"))
    elif fmt == "bin":
        torch.save(sd, os.path.join(out, "pytorch_model.bin"))
    elif fmt == "bin-sharded":
        names = sorted(sd)
        half = len(names) // 2
        shards = {"pytorch_model-00001-of-00002.bin": names[:half],
                  "pytorch_model-00002-of-00002.bin": names[half:]}
        weight_map = {}
        for fname, keys in shards.items():
            torch.save({k: sd[k] for k in keys}, os.path.join(out, fname))
            weight_map.update({k: fname for k in keys})
        with open(os.path.join(out, "pytorch_model.bin.index.json"), "w") as f:
            json.dump({"metadata": {}, "weight_map": weight_map}, f, indent=1)
    else:
        raise ValueError(fmt)


def word_level_tokenizer(out):
    """A WordLevel tokenizer: numbers 0..=119 are single tokens, then + = and specials."""
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers

    vocab = {str(i): i for i in range(120)}
    for i, tok in enumerate(["+", "=", "-", "*", "<pad>", "<unk>", "<bos>", "\n"]):
        vocab[tok] = 120 + i
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Split(Regex(r"\d+|\S|\n"), behavior="isolated")
    tk.save(os.path.join(out, "tokenizer.json"))


CASES = {
    "gpt2_tied": ("gpt2", "safetensors", lambda: GPT2Config(
        vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=4, n_positions=32,
        tie_word_embeddings=True, bos_token_id=126, eos_token_id=126, pad_token_id=124)),
    "gptj_rotary_partial": ("gptj", "bin-sharded", lambda: GPTJConfig(
        vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=4, rotary_dim=4, n_positions=32,
        tie_word_embeddings=False, bos_token_id=126, eos_token_id=126)),
    "neox_parallel": ("gpt_neox", "safetensors", lambda: GPTNeoXConfig(
        vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=64, rotary_pct=0.5, rotary_emb_base=10000, max_position_embeddings=32,
        use_parallel_residual=True, tie_word_embeddings=False)),
    "neox_sequential": ("gpt_neox", "bin", lambda: GPTNeoXConfig(
        vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=64, rotary_pct=0.25, rotary_emb_base=10000, max_position_embeddings=32,
        use_parallel_residual=False, tie_word_embeddings=False)),
    "llama_gqa_llama3": ("llama", "safetensors-sharded", lambda: LlamaConfig(
        vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, intermediate_size=48, max_position_embeddings=64,
        rope_theta=500000.0, rms_norm_eps=1e-5, tie_word_embeddings=False,
        rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                      "high_freq_factor": 4.0, "original_max_position_embeddings": 16})),
    "bert": ("bert", "safetensors", lambda: BertConfig(
        vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=64, max_position_embeddings=32, type_vocab_size=2)),
    # The window (3 keys) is shorter than the longest sequence (7), so it changes the result;
    # Qwen2 applies it from layer max_window_layers = 1 on, Mistral on every layer.
    "qwen2_bias_window": ("qwen2", "safetensors", lambda: Qwen2Config(
        vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, intermediate_size=48, max_position_embeddings=64,
        rope_theta=1000000.0, rms_norm_eps=1e-6, tie_word_embeddings=True,
        use_sliding_window=True, sliding_window=3, max_window_layers=1)),
    "mistral_window": ("mistral", "safetensors", lambda: MistralConfig(
        vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, intermediate_size=48, max_position_embeddings=64,
        rope_theta=10000.0, rms_norm_eps=1e-5, tie_word_embeddings=False, sliding_window=3)),
    # Caps small enough that tanh bends the O(1) scores and logits; query_pre_attn_scalar
    # unlike head_dim, so the scale is tested; layer 0 local, layer 1 global (HF's default).
    "gemma2_softcap": ("gemma2", "safetensors", lambda: Gemma2Config(
        vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, head_dim=8, intermediate_size=48, max_position_embeddings=64,
        query_pre_attn_scalar=12, sliding_window=3, attn_logit_softcapping=2.0,
        final_logit_softcapping=3.0, rms_norm_eps=1e-6, tie_word_embeddings=True)),
}

MODEL_CLASS = {"gpt2": GPT2LMHeadModel, "gptj": GPTJForCausalLM, "gpt_neox": GPTNeoXForCausalLM,
               "llama": LlamaForCausalLM, "bert": BertModel, "qwen2": Qwen2ForCausalLM,
               "mistral": MistralForCausalLM, "gemma2": Gemma2ForCausalLM}


def make_case(root, name, seed):
    arch, fmt, make_cfg = CASES[name]
    out = os.path.join(root, name)
    os.makedirs(out, exist_ok=True)
    for f in os.listdir(out):
        os.remove(os.path.join(out, f))
    torch.manual_seed(seed)
    cfg = make_cfg()
    cfg._attn_implementation = "eager"  # output_attentions needs the eager path
    model = MODEL_CLASS[arch](cfg) if arch != "bert" else BertModel(cfg, add_pooling_layer=False)
    model = model.float().eval()
    scale_weights(model, seed)
    save_weights(model, out, fmt)
    if name == "gpt2_tied":
        word_level_tokenizer(out)
        # End to end through the tokenizer: what `helixlab model run --prompt` must reproduce.
        from tokenizers import Tokenizer

        prompt = "37+45="
        ids = Tokenizer.from_file(os.path.join(out, "tokenizer.json")).encode(prompt).ids
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([ids])).logits[0]
        save_file({"input_ids": torch.tensor(ids, dtype=torch.int64), "logits": logits.contiguous()},
                  os.path.join(out, "hf_prompt.safetensors"), metadata={"prompt": prompt})

    ids, mask, pos = batch(seed + 1)
    rec = Recorder()
    register(arch, model, rec, cfg)
    kwargs = dict(input_ids=ids, attention_mask=mask, position_ids=pos, output_attentions=True)
    if arch == "bert":
        kwargs["token_type_ids"] = torch.zeros_like(ids)
    outputs = model(**kwargs)
    n_layers = cfg.num_hidden_layers
    refs = {"input_ids": ids.to(torch.int64), "attention_mask": mask.to(torch.int64),
            "position_ids": pos.to(torch.int64)}
    refs.update(rec.tensors(mask))
    for l, a in enumerate(outputs.attentions):  # (b, h, q, k) -> (b, q, h, k)
        refs[f"blocks.{l}.attn.hook_pattern"] = a.detach().permute(0, 2, 1, 3).contiguous().float()

    g = torch.Generator().manual_seed(seed + 2)
    if arch == "bert":
        vec = torch.randn(cfg.hidden_size, generator=g)
        last = rec.acts[f"blocks.{n_layers - 1}.hook_resid_post"][0]
        metric = (last[:, -1, :] * vec).sum()
        refs["metric_vector"] = vec.contiguous()
    else:
        refs["logits"] = outputs.logits.detach().float().contiguous()
        targets = torch.randint(0, VOCAB, (ids.shape[0], 2), generator=g)
        last = outputs.logits[:, -1, :]
        rows = torch.arange(ids.shape[0])
        metric = (last[rows, targets[:, 0]] - last[rows, targets[:, 1]]).sum()
        refs["metric_targets"] = targets.to(torch.int64)
    metric.backward()
    grad_sites = [f"blocks.{l}.mlp.hook_post" for l in range(n_layers)]
    grad_sites += [f"blocks.{l}.attn.hook_z" for l in range(n_layers)]
    grad_sites += ["blocks.1.hook_resid_pre", "hook_embed"]
    refs.update(rec.grads(grad_sites))
    refs["metric"] = metric.detach().reshape(1).float()
    save_file(refs, os.path.join(out, "hf_reference.safetensors"),
              metadata={"torch": torch.__version__, "transformers": transformers.__version__,
                        "architecture": arch, "format": fmt})
    print(f"{name}: {arch} as {fmt}, {len(refs)} reference tensors")


def shipped_toy_adders(root, models="data/models"):
    """HF's logits for the committed toy adders (helixlab train's output), loaded unchanged."""
    from tokenizers import Tokenizer

    prompts = ["37+45=", "0+0=", "99+99=", "12+7=", "50+49=", "3+98=", "81+19=", "64+36=",
               "37%NUL=", "37/NUL=", "37SNUL=", "37PNUL=", "12<99="]
    for name in ["toy-adder", "toy-adder-plain"]:
        d = os.path.join(models, name)
        if not os.path.exists(os.path.join(d, "model.safetensors")):
            print(f"{d}: missing, skipped")
            continue
        model = GPT2LMHeadModel.from_pretrained(d).float().eval()
        tok = Tokenizer.from_file(os.path.join(d, "tokenizer.json"))
        ids = torch.tensor([tok.encode(p).ids for p in prompts])
        with torch.no_grad():
            logits = model(input_ids=ids).logits
        save_file({"input_ids": ids.to(torch.int64), "logits": logits.contiguous()},
                  os.path.join(root, f"{name}_hf.safetensors"),
                  metadata={"prompts": json.dumps(prompts), "torch": torch.__version__,
                            "transformers": transformers.__version__})
        print(f"{name}: HF logits for {len(prompts)} prompts")


def main():
    """`make_parity_fixtures.py ROOT [CASE...]`: every case (and the toy adders' logits), or
    only the cases named; a case's seed is its place in CASES either way."""
    root = sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures/parity"
    only = sys.argv[2:]
    for name in only:
        if name not in CASES:
            sys.exit(f"unknown case {name!r}; cases: {', '.join(CASES)}")
    for i, name in enumerate(CASES):
        if not only or name in only:
            make_case(root, name, seed=100 * (i + 1))
    if not only:
        shipped_toy_adders(root)


if __name__ == "__main__":
    main()
