#!/usr/bin/env bash
# snndist's train step on a GPU machine, in under 5 minutes (about 3 on one H100-class GPU):
#   - the tutorial and bench_shd configs, and a large one (1024 recurrent LIF, batch 1024, T 250),
#     each in f32, tf32 and bf16: ms/step, samples/s, compile time, peak memory, and the achieved
#     matmul FLOP/s of the step against the matmul peak measured here (f32 and bf16);
#   - 1 vs 2 replicas on one GPU (two processes, each held to 45% of its memory);
#   - loss and gradients on the GPU against the CPU (scripts/gpu_parity.py);
#   - Ray workers on the GPUs against one CPU process, every topology that fits (scripts/gpu_topology.py).
# Run from a checkout with snndist and the cuda extra installed:
#   pip install -e ".[cuda]" && bash scripts/gpu_bench.sh
# It prints markdown tables, to paste into BENCHMARKS.md, and keeps the raw JSON in $OUT. A run that
# fails is reported and left out of the table; the others go on.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python}
STEPS=${STEPS:-20}
OUT=${OUT:-gpu_bench_out}
mkdir -p "$OUT"
export XLA_PYTHON_CLIENT_PREALLOCATE=false  # each process takes what it uses, so two can share the GPU

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "no nvidia-smi"
"$PYTHON" -c "import jax; print('jax', jax.__version__, jax.devices())"

LARGE=${LARGE:-"--set model.layers[0].size=1024 --set train.global_batch=1024 --set data.timesteps=250 --set data.num_samples=2048"}
# f32: true f32 products (train.matmul_precision: highest, the default); tf32: JAX's default precision,
# TF32 products on NVIDIA GPUs; bf16: bf16 products with f32 accumulation.
declare -A SETS=([f32]="--set train.precision=f32" [tf32]="--set train.matmul_precision=default"
                 [bf16]="--set train.precision=bf16")
run() {  # name, config, precision, extra --set arguments
    local name=$1 config=$2 precision=$3; shift 3
    echo "== $name ($precision)" >&2
    # shellcheck disable=SC2086
    timeout 120 "$PYTHON" -m snndist bench --config "$config" ${SETS[$precision]} "$@" \
        --steps "$STEPS" --json > "$OUT/$name-$precision.json" || { echo "FAILED: $name ($precision)" >&2; rm -f "$OUT/$name-$precision.json"; }
}
for precision in f32 tf32 bf16; do
    run tutorial configs/tutorial.yaml "$precision"
    run shd configs/bench_shd.yaml "$precision"
    # shellcheck disable=SC2086
    run large configs/bench_shd.yaml "$precision" $LARGE
done

# Two replicas of the shd step sharing the GPU: their samples/s added, against one alone.
for i in 1 2; do
    XLA_PYTHON_CLIENT_MEM_FRACTION=0.45 timeout 120 "$PYTHON" -m snndist bench --config configs/bench_shd.yaml \
        --steps "$STEPS" --json > "$OUT/shared-$i.json" || echo "FAILED: shared replica $i" >&2 &
done
wait

"$PYTHON" - "$OUT" <<'PY'
import json, pathlib, sys
out = pathlib.Path(sys.argv[1])
print("| config | precision | ms/step | samples/s | compile s | peak memory GiB | step GFLOP | achieved TFLOP/s "
      "| matmul peak TFLOP/s | step / floor |")
print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
def read(name):
    path = out / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() and path.stat().st_size else None
for name in ("tutorial", "shd", "large"):
    for precision in ("f32", "tf32", "bf16"):
        r = read(f"{name}-{precision}")
        if r is None:
            print(f"| {name} | {precision} | failed | | | | | | | |")
            continue
        achieved = r["step_gflop"] / r["ms_per_step"]  # GFLOP per ms = TFLOP/s
        print(f"| {name} | {precision} | {r['ms_per_step']:.2f} | {r['samples_per_s']:.0f} | {r['compile_s']:.1f} "
              f"| {r['peak_memory_bytes'] / 2**30:.2f} | {r['step_gflop']:.1f} | {achieved:.2f} "
              f"| {r['matmul_gflop_per_s'] / 1000:.1f} | {r['ms_per_step'] / r['flop_floor_ms']:.2f} |")
alone, shared = read("shd-f32"), [read(f"shared-{i}") for i in (1, 2)]
if alone and all(shared):
    together = sum(r["samples_per_s"] for r in shared)
    print(f"\nshd f32, one GPU: 1 replica {alone['samples_per_s']:.0f} samples/s; 2 replicas together "
          f"{together:.0f} samples/s ({together / alone['samples_per_s']:.2f}x)")
    print(f"device: {alone['device']}")
PY

echo
"$PYTHON" scripts/gpu_parity.py || echo "gpu_parity: exit $?" >&2
echo
"$PYTHON" scripts/gpu_topology.py || echo "gpu_topology: exit $?" >&2
