#!/usr/bin/env bash
# Every figure of the README's speed tables in one run, with the settings those tables were measured with:
#
#     bash speed/all_figures.sh [LOG_DIR]          # LOG_DIR defaults to speed_logs/<date>
#
# 1. speed/train_throughput.py --profile --steps 30 --compile-modes default reduce-overhead --images 600  (issue 10)
# 2. speed/stylise_speed.py (512 px, batch 16, the folder CLI rows, the 4096 px memory row)              (issue 12)
# 3. speed/gatys_speed.py --iterations 200 --warmup 8 (512 px, the 2048 px memory row)                  (issue 12)
# 4. the CUDA-only tests (compiled vs eager training step, nvJPEG decode, progress bar, Gatys CUDA graph)
#
# Each step's full output goes to LOG_DIR/<step>.log and a failing step does not stop the others; the end prints
# every step's final table and exit status. Set SPEED_QUICK=1 for a smoke run on a CPU (tiny sizes, no bf16 rows, no
# tests).
set -u
cd "$(dirname "$0")/.."
logs="${1:-speed_logs/$(date +%Y%m%d-%H%M%S)}"
mkdir -p "$logs"
python="${PYTHON:-python3}"

if [ "${SPEED_QUICK:-0}" = 1 ]; then
  train_args=(--device cpu --size 64 --batch 2 --steps 3 --images 8 --skip-train-py --no-bf16)
  stylise_args=(--device cpu --size 64 --batch 2 --steps 2 --warmup 1 --compile-modes --folder-images 4 --big 0
    --no-bf16)
  gatys_args=(--device cpu --size 64 --iterations 5 --warmup 2 --big 0 --no-lightning --no-bf16)
else
  train_args=(--profile --steps 30 --compile-modes default reduce-overhead --images 600)
  stylise_args=()
  gatys_args=(--iterations 200 --warmup 8)
fi

declare -A status
run_step() {  # name, command...: run it, keep its output in LOG_DIR/name.log, remember its exit status
  local name="$1"
  shift
  echo "== $name: $* (log: $logs/$name.log)"
  local start=$SECONDS
  "$@" >"$logs/$name.log" 2>&1
  status[$name]=$?
  echo "   exit ${status[$name]} after $((SECONDS - start)) s"
}

"$python" - >"$logs/machine.txt" 2>&1 <<'EOF'
import torch
name = torch.cuda.get_device_name() if torch.cuda.is_available() else "no CUDA device"
print(f"device: {name}; torch {torch.__version__}; CUDA {torch.version.cuda}")
EOF
cat "$logs/machine.txt"

run_step train_throughput "$python" speed/train_throughput.py "${train_args[@]}"
run_step stylise_speed "$python" speed/stylise_speed.py "${stylise_args[@]}"
run_step gatys_speed "$python" speed/gatys_speed.py "${gatys_args[@]}"
if [ "${SPEED_QUICK:-0}" != 1 ]; then
  if "$python" -c "import pytest" 2>/dev/null; then
    run_step cuda_tests "$python" -m pytest -q -p no:cacheprovider -k "cuda or gpu" tests/test_adain_speed.py \
      tests/test_data_cache.py tests/test_progress.py tests/test_gatys_speed.py tests/test_stylise_speed.py
  else
    echo "== cuda_tests: skipped (pytest is not installed for $python)"
  fi
fi

echo
cat "$logs/machine.txt"
for name in train_throughput stylise_speed gatys_speed cuda_tests; do
  [ -f "$logs/$name.log" ] || continue
  echo
  echo "## $name (exit ${status[$name]})"
  if [ "$name" = cuda_tests ]; then
    tail -n 5 "$logs/$name.log"
  else
    # The last block of table lines (each script prints its result table last).
    awk '/^\| / {table = table $0 "\n"; next} {if (table != "") last = table; table = ""} END {printf "%s", table != "" ? table : last}' \
      "$logs/$name.log"
  fi
done
