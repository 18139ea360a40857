#!/usr/bin/env bash
# The GPU checks, on a CUDA machine, with a helixlab binary built elsewhere (`make build-cuda`
# needs no GPU; this machine needs no Rust toolchain, only the NVIDIA driver, python3 with numpy,
# and for the speed row PyTorch + transformers):
#
#   HELIXLAB=target/cuda/release/helixlab tools/gpu_check.sh [OUT_DIR]
#
# 1. parity: every architecture's parity fixture (crates/model/tests/fixtures/parity) run on the
#    GPU in f32 and bf16 against the same binary on the CPU, which `cargo test` checks against
#    HF transformers to 1e-4: logits (BERT: the last block's output), largest difference over
#    the largest |value|.
# 2. the default study (pipelines/toy-adder.toml) on the GPU, every stage, against the CPU run:
#    prompts whose predicted token differs, largest answer-logit difference.
# 3. speed: the accuracy stage of the toy study (10,000 prompts) on the GPU, prompts/s, against
#    PyTorch + HF on the same GPU doing the same batched last-token forwards.
# Writes OUT_DIR/gpu_check.md (default data/gpu-check). DEVICE=cpu runs the script's own logic
# on a machine without a GPU (the comparisons are then trivially exact).
set -euo pipefail
HX=${HELIXLAB:-target/cuda/release/helixlab}
DEVICE=${DEVICE:-cuda}
OUT=${1:-data/gpu-check}
PY=${PYTHON:-python3}
mkdir -p "$OUT"
# cuBLAS, curand and the CUDA runtime (CUDA 13): from CUDA_LIBS, else the ones PyTorch's
# nvidia-* wheels installed; the driver (libcuda.so.1) comes with the NVIDIA driver.
if [ -z "${CUDA_LIBS:-}" ]; then
  CUDA_LIBS=$("$PY" -c "import importlib.util as u, os; s = u.find_spec('nvidia'); \
print(os.path.join(list(s.submodule_search_locations)[0], 'cu13', 'lib'))" 2>/dev/null || true)
fi
[ -n "$CUDA_LIBS" ] && export LD_LIBRARY_PATH="$CUDA_LIBS${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
REPORT="$OUT/gpu_check.md"
FIX=crates/model/tests/fixtures/parity
IDS=3,14,15,9,26,5,35,8,97,93,23,84

{
  echo "# GPU check ($(date -u +%Y-%m-%dT%H:%MZ))"
  echo
  echo "CUDA libraries: ${CUDA_LIBS:-system}"
  echo "binary: $HX ($("$HX" --version 2>/dev/null || echo '?')); device: $DEVICE"
  (nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null \
    | sed 's/^/gpu: /') || echo "gpu: nvidia-smi not available"
  echo
} > "$REPORT"

echo "1. parity per architecture" >&2
echo "| fixture | dtype | max abs diff / max abs (GPU vs CPU f32) |" >> "$REPORT"
echo "|---|---|---:|" >> "$REPORT"
for case in gpt2_tied gptj_rotary_partial neox_parallel neox_sequential llama_gqa_llama3 bert; do
  hook=()
  [ "$case" = bert ] && hook=(--hook blocks.1.hook_resid_post)
  "$HX" model run "$FIX/$case" --ids "$IDS" --device cpu "${hook[@]}" \
    --out "$OUT/$case-cpu.safetensors" > /dev/null
  for dt in f32 bf16; do
    "$HX" model run "$FIX/$case" --ids "$IDS" --device "$DEVICE" --dtype "$dt" "${hook[@]}" \
      --out "$OUT/$case-$DEVICE-$dt.safetensors" > /dev/null
    rel=$("$PY" - "$OUT/$case-cpu.safetensors" "$OUT/$case-$DEVICE-$dt.safetensors" <<'EOF'
import json, struct, sys
import numpy as np
def load(path):
    b = open(path, "rb").read()
    n = struct.unpack("<Q", b[:8])[0]
    h = json.loads(b[8:8 + n])
    out = {}
    for k, v in h.items():
        if k == "__metadata__" or v["dtype"] != "F32":
            continue
        s, e = v["data_offsets"]
        out[k] = np.frombuffer(b[8 + n + s:8 + n + e], dtype="<f4").reshape(v["shape"])
    return out
a, b = load(sys.argv[1]), load(sys.argv[2])
key = "logits" if "logits" in a else "blocks.1.hook_resid_post"
print(f"{float(np.abs(a[key] - b[key]).max() / np.abs(a[key]).max()):.2e}")
EOF
)
    echo "| $case | $dt | $rel |" >> "$REPORT"
  done
done

echo "2. the default study" >&2
rm -f "$OUT/stage_times.txt"
for dev in cpu "$DEVICE"; do
  run="$OUT/runs/toy-$dev"
  sed -e "s#data/runs/toy-adder#$run#" -e "s#^device = .*#device = \"$dev\"#" \
    pipelines/toy-adder.toml > "$OUT/toy-$dev.toml"
  grep -q '^device' "$OUT/toy-$dev.toml" || sed -i "s#^\[model\]#[model]\ndevice = \"$dev\"#" "$OUT/toy-$dev.toml"
  for stage in accuracy extract spectral fit pairs patch patch-last components; do
    start=$(date +%s%N)
    "$HX" "$stage" --pipeline "$OUT/toy-$dev.toml" --force > "$OUT/toy-$dev-$stage.log"
    echo "$dev $stage $(( ($(date +%s%N) - start) / 1000000 )) ms" >> "$OUT/stage_times.txt"
  done
done
{
  echo
  echo "Default study, whole stage processes, CPU then $DEVICE:"
  echo
  echo '```'
  cat "$OUT/stage_times.txt"
  echo '```'
} >> "$REPORT"
"$PY" - "$OUT/runs/toy-cpu" "$OUT/runs/toy-$DEVICE" >> "$REPORT" <<'EOF' || echo "(pyarrow not available: tables not compared)" >> "$REPORT"
import sys
import pyarrow.parquet as pq
a = pq.read_table(f"{sys.argv[1]}/problems.parquet").to_pydict()
b = pq.read_table(f"{sys.argv[2]}/problems.parquet").to_pydict()
diff = sum(x != y for x, y in zip(a["pred_token"], b["pred_token"]))
worst = max(abs(x - y) for x, y in zip(a["answer_logit"], b["answer_logit"]))
print(f"\nAccuracy table: {diff} of {len(a['pred_token'])} predictions differ; answer logits "
      f"differ by at most {worst:.2e}.")
EOF

echo "3. speed against PyTorch on the same device" >&2
hx_s=$(grep -o 'rows in [0-9.]* s' "$OUT/toy-$DEVICE-accuracy.log" | grep -o '[0-9.]*' | head -1)
"$PY" - "$DEVICE" "$hx_s" >> "$REPORT" <<'EOF' || echo "(PyTorch + transformers not available: speed not compared)" >> "$REPORT"
import sys, time
import torch
from tokenizers import Tokenizer
from transformers import AutoModelForCausalLM
dev, hx_s = sys.argv[1], float(sys.argv[2])
model = AutoModelForCausalLM.from_pretrained("data/models/toy-adder").to(dev).eval()
tok = Tokenizer.from_file("data/models/toy-adder/tokenizer.json")
prompts = [f"{a}+{b}=" for a in range(100) for b in range(100)]
ids = torch.tensor([tok.encode(p).ids for p in prompts], device=dev)
with torch.no_grad():
    model(input_ids=ids[:100], logits_to_keep=1)
    if dev.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    for lo in range(0, len(ids), 500):
        model(input_ids=ids[lo:lo + 500], logits_to_keep=1).logits.argmax(-1).cpu()
    s = time.perf_counter() - start
print(f"\nAccuracy stage, 10,000 prompts on {dev}: helixlab {len(ids) / hx_s:,.0f} prompts/s "
      f"(stage work {hx_s:.2f} s), PyTorch + HF {len(ids) / s:,.0f} prompts/s ({s:.2f} s, "
      f"batches of 500).")
EOF
cat "$REPORT"
