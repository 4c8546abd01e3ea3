#!/usr/bin/env bash
# Builds everything the GPU checks need into one folder that runs on a CUDA
# host without a Rust toolchain (the binaries load CUDA dynamically):
#   bash kernels/gpu-bundle.sh [DIR]     # default dist/gpu (git-ignored)
# On the GPU host:  bash DIR/run.sh OUT_DIR
# run.sh runs the CUDA kernel tests and the CPU-vs-GPU training test
# (KILN_TEST_CUDA=1, ignored tests included), the
# kernel benchmarks, the mlp/cnn training benchmark and PyTorch's
# cuBLAS/cuDNN reference for the same shapes, writing logs and CSVs to OUT_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-dist/gpu}"
mkdir -p "$out"

cargo build --release -p kiln-kernels --example gpu_bench
cargo build --release -p kiln-ml --example train_bench
# The path of a test binary, from cargo's JSON messages.
test_binary() {
  cargo test --release -p "$1" --test "$2" --no-run --message-format=json 2>/dev/null \
    | python3 -c 'import json,sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("target", {}).get("name") == sys.argv[1] and m.get("executable"):
        print(m["executable"])' "$2" | tail -1
}
target="${CARGO_TARGET_DIR:-target}"
cp "$(test_binary kiln-kernels cuda)" "$out/cuda-tests"
cp "$(test_binary kiln-ml main)" "$out/ml-tests"
cp sql/examples/data/digits.csv "$out/"
cp "$target/release/examples/gpu_bench" "$out/gpu_bench"
cp "$target/release/examples/train_bench" "$out/train_bench"
cp benches/gpu/torch_reference.py "$out/"

cat > "$out/run.sh" <<'RUN'
#!/usr/bin/env bash
# Runs Kiln's GPU tests and benchmarks; results go to $1 (default ./gpu-results).
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
results="${1:-./gpu-results}"
mkdir -p "$results"
# NVRTC 13 from the pip CUDA libraries, if the system has none on its path.
pylib=$(python3 -c 'import nvidia, os; print(os.path.join(list(nvidia.__path__)[0], "cu13", "lib"))' 2>/dev/null || true)
export LD_LIBRARY_PATH="${pylib:+$pylib:}${LD_LIBRARY_PATH:-}"
{ nvidia-smi; date -u; } > "$results/device.txt" 2>&1
KILN_TEST_CUDA=1 "$here/cuda-tests" --include-ignored --test-threads 1 > "$results/tests.txt" 2>&1
echo "kernel tests exit $?" >> "$results/tests.txt"
KILN_TEST_CUDA=1 KILN_DIGITS_CSV="$here/digits.csv" "$here/ml-tests" --ignored >> "$results/tests.txt" 2>&1
echo "training tests exit $?" >> "$results/tests.txt"
"$here/gpu_bench" > "$results/kiln_kernels.csv" 2> "$results/kiln_kernels.log"
python3 "$here/torch_reference.py" > "$results/torch_reference.csv" 2> "$results/torch_reference.log"
"$here/train_bench" > "$results/train.csv" 2> "$results/train.log"
tail -n 3 "$results/tests.txt"; cat "$results/kiln_kernels.csv" "$results/torch_reference.csv" "$results/train.csv"
RUN
chmod +x "$out/run.sh"
du -sh "$out"
