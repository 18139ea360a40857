#!/usr/bin/env bash
# Builds the GPU binary (target/cuda/release/helixlab) on a machine without a GPU, against the
# CUDA toolkit that `make cuda-toolkit` unpacks from NVIDIA's PyPI wheels:
#
#   tools/build_cuda.sh TOOLKIT_DIR [COMPUTE_CAP]
#
# candle's kernels are compiled to PTX by nvcc; cudarc (candle's CUDA binding) links the
# binary against libcudart, libcublas, libcublasLt, libcurand, libnvrtc (all in the wheels) and
# the driver's libcuda, which only exists where a GPU is. For that one a stub is made: a shared
# library named libcuda.so.1 that defines every driver function the binary calls (their names
# read from the linker's own list of what is missing), so the binary links here and the real
# driver supplies them at run time. The stub is only for linking: nothing here runs CUDA.
set -euo pipefail
TK=$(cd "$1" && pwd)
CAP=${2:-90}
export PATH="$TK/bin:$PATH" CUDA_ROOT="$TK" CUDA_PATH="$TK" CUDA_COMPUTE_CAP="$CAP"
export CARGO_TARGET_DIR=target/cuda
CARGO=${CARGO:-cargo}

# -lcublas etc. need the unversioned names the wheels do not ship.
(cd "$TK/lib" && for f in lib*.so.*; do base=${f%%.so.*}; [ -e "$base.so" ] || ln -s "$f" "$base.so"; done)

stub() {
  mkdir -p "$TK/lib/stubs"
  {
    echo "/* Link-time stand-in for the NVIDIA driver (tools/build_cuda.sh); never run. */"
    for s in "$@"; do echo "void $s(void) {}"; done
  } > "$TK/lib/stubs/libcuda_stub.c"
  # Beside the other libraries, where cudarc points the linker; the loader looks for
  # libcuda.so.1, so the stub never stands in for the driver at run time.
  cc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$TK/lib/libcuda.so" "$TK/lib/stubs/libcuda_stub.c"
}

[ -e "$TK/lib/libcuda.so" ] || stub
# The flag goes to the final link only (RUSTFLAGS would rebuild every dependency).
build() {
  $CARGO rustc --release -p helixlab-cli --bin helixlab --features cuda -- \
    -C link-arg=-Wl,--error-limit=0
}
log=$(mktemp)
if build 2>&1 | tee "$log"; then
  rm -f "$log"
  exit 0
fi
missing=$( (grep -o 'undefined symbol: cu[A-Za-z0-9_]*' "$log" | awk '{print $3}' || true;
  grep -o '^void cu[A-Za-z0-9_]*' "$TK/lib/stubs/libcuda_stub.c" | awk '{print $2}') | sort -u || true)
if ! grep -q 'undefined symbol: cu' "$log"; then
  echo "build_cuda.sh: the build failed for another reason than driver symbols (above)" >&2
  rm -f "$log"
  exit 1
fi
rm -f "$log"
echo "build_cuda.sh: stubbing $(echo "$missing" | wc -l) driver functions, linking again" >&2
# shellcheck disable=SC2086
stub $missing
build
