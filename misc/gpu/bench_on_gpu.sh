#!/usr/bin/env bash
# The worker's start-up benchmark on a GPU machine, against a real ComfyUI 0.3.75 and a FULL-SIZE random-weight
# SD1.5 checkpoint (its images are noise; only the timings mean anything).
#
# Prepare with misc/gpu/prepare.sh. Run from the repository root on a machine with no network, with carried paths .gpu (wheels, stubs, a dummy
# frontend) and .comfyui/ComfyUI (ComfyUI's source), and OUT set to an empty folder whose files come back:
#     bash misc/gpu/bench_on_gpu.sh
# Writes to $OUT: bench.txt, benchmark.json (from the worker), comfyui.log, checkpoint.txt, env.txt.
# Local dry run only: COMFY_EXTRA_ARGS=--cpu (and BENCHMARK_TEST_WIDTH/HEIGHT/STEPS) pass through.
set -euo pipefail
export PYTHONUNBUFFERED=1
export PYTHONDONTWRITEBYTECODE=1

: "${OUT:?OUT must name the folder for results}"
mkdir -p "$OUT"
REPO=$(pwd)
COMFY="$REPO/.comfyui/ComfyUI"
SITE=/tmp/site
BASE=/tmp/base
PORT=8188
URL="http://127.0.0.1:$PORT"
COMFY_PID=""

for need in "$COMFY/main.py" "$REPO/.gpu/whl" "$REPO/.gpu/stubs/av/__init__.py" "$REPO/.gpu/frontend/index.html" \
            "$REPO/pyworker/__main__.py" "$REPO/misc/comfyui/make_checkpoint.py"; do
    [[ -e "$need" ]] || { echo "missing: $need (run from the repo root with carry .gpu and .comfyui/ComfyUI)" >&2; exit 2; }
done

finish() {
    local rc=$?
    if [[ -n "$COMFY_PID" ]] && kill -0 "$COMFY_PID" 2>/dev/null; then
        kill "$COMFY_PID" 2>/dev/null || true
        for _ in $(seq 20); do kill -0 "$COMFY_PID" 2>/dev/null || break; sleep 0.5; done
        kill -9 "$COMFY_PID" 2>/dev/null || true
    fi
    if [[ $rc -ne 0 && -f "$OUT/comfyui.log" ]]; then
        echo "=== exit $rc; last 80 lines of $OUT/comfyui.log ==="
        tail -n 80 "$OUT/comfyui.log" || true
    fi
    echo "=== done (exit $rc) ==="
    exit "$rc"
}
trap finish EXIT

step() { echo "=== [$(date +%T)] $* ==="; }

step "machine"
nvidia-smi -L || echo "nvidia-smi not found"
{ nvidia-smi || true; python3 --version; } > "$OUT/env.txt" 2>&1
python3 - <<'EOF' 2>&1 | tee -a "$OUT/env.txt"
import torch
print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available(),
      torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")
EOF

step "install wheels into $SITE"
rm -rf "$SITE"
if ! python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" \
        "$REPO"/.gpu/whl/*.whl; then
    echo "pip failed; unpacking the wheels instead"
    mkdir -p "$SITE"
    for w in "$REPO"/.gpu/whl/*.whl; do python3 -m zipfile -e "$w" "$SITE"; done
fi
ls "$SITE"
# ComfyUI: the wheels (torchsde, trampoline) plus the av stub (PyAV is imported at start-up, never used by SD1.5).
COMFY_PYTHONPATH="$SITE:$REPO/.gpu/stubs"
# The worker: the repo (pyworker) plus the wheels (msgspec, websockets). No stubs.
WORKER_PYTHONPATH="$REPO:$SITE"

step "generate the full-size random SD1.5 checkpoint"
mkdir -p "$BASE/models/checkpoints" "$BASE/custom_nodes"
PYTHONPATH="$COMFY_PYTHONPATH" timeout 600 python3 "$REPO/misc/comfyui/make_checkpoint.py" --comfyui "$COMFY" \
    --out-dir "$BASE/models/checkpoints" --unet full --vae full --seed 0 | tee "$OUT/checkpoint.txt"
CKPT=$(tail -n 1 "$OUT/checkpoint.txt")
[[ -f "$BASE/models/checkpoints/$CKPT" ]] || { echo "no checkpoint file named '$CKPT'" >&2; exit 1; }
ls -l "$BASE/models/checkpoints"

step "start ComfyUI on $URL"
PYTHONPATH="$COMFY_PYTHONPATH" python3 "$COMFY/main.py" --listen 127.0.0.1 --port "$PORT" \
    --base-directory "$BASE" --database-url "sqlite:///$BASE/comfyui.db" \
    --front-end-root "$REPO/.gpu/frontend" --disable-auto-launch ${COMFY_EXTRA_ARGS:-} > "$OUT/comfyui.log" 2>&1 &
COMFY_PID=$!
python3 - "$URL/system_stats" "$COMFY_PID" <<'EOF'
import os, sys, time, urllib.request
url, pid = sys.argv[1], int(sys.argv[2])
start = time.monotonic()
while time.monotonic() - start < 180:
    try:
        os.kill(pid, 0)
    except OSError:
        sys.exit(f"ComfyUI exited before answering (after {time.monotonic() - start:.1f} s)")
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            if r.status == 200:
                print(f"ComfyUI answered after {time.monotonic() - start:.1f} s: {r.read(600).decode()}")
                sys.exit(0)
    except OSError:
        pass
    time.sleep(0.5)
sys.exit("ComfyUI did not answer within 180 s")
EOF

step "benchmark (checkpoint $CKPT)"
set +e
DEFAULT_CHECKPOINT="$CKPT" WORKER_DATA_DIR="$OUT" BENCHMARK_RUNS=5 PYTHONPATH="$WORKER_PYTHONPATH" \
    timeout 420 python3 -m pyworker bench --comfy-url "$URL" --fresh 2>&1 | tee "$OUT/bench.txt"
BENCH_RC=${PIPESTATUS[0]}
set -e
echo "bench exit status: $BENCH_RC (1 means the verdict was 'slow'; the report is still written)"
ls -l "$OUT"
if [[ -f "$OUT/benchmark.json" ]]; then
    cat "$OUT/benchmark.json"; echo
fi
step "ComfyUI log, last 30 lines"
tail -n 30 "$OUT/comfyui.log" || true
[[ -f "$OUT/benchmark.json" ]] || exit 1
exit "$BENCH_RC"
