#!/usr/bin/env bash
# One prepared run of the GPU checks that issue #13 owes, for a lent GPU machine (this project's
# sessions get 15 minutes of device time in all): the Pallas kernel's tests compiled for the GPU
# (not interpret mode), the benchmark with its peers (cuDNN through PyTorch and through
# jax.experimental.rnn, and ours_pallas), and the XLA command-buffer lever of issue #13 item 1.
# Every result goes to $OUT (default ./gpu_out). Wall time on an H200: expected under 8 minutes
# (NOT yet run there: no GPU was lent to the sessions since the Pallas kernel landed).
#
#   bash experiments/gpu_check.sh            # on the GPU machine, from the repository root
#   GPU_CHECK_DRY=1 bash experiments/gpu_check.sh   # a CPU dry run of the same steps (minutes)
#
# The GPU machine's image has jax, flax, optax, torch, pytest but not ml_collections: carry its
# wheel (pure Python): `pip download ml_collections==1.1.0 --no-deps -d .wheels` here, then name
# `.wheels` in the device tool's `carry` (listed in .git/info/exclude, not committed).
set -uo pipefail
OUT="${OUT:-$PWD/gpu_out}"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
py=python3
if [ -d .wheels ]; then $py -m pip install -q --no-index --find-links .wheels ml_collections \
    2>&1 | tail -n 2; fi
{ nvidia-smi -L || true; $py -c "import jax; print('jax', jax.__version__, jax.devices())"; } \
    2>&1 | tee "$OUT/machine.txt"
quick=""
suites="lstm,greff,tscale"
if [ -n "${GPU_CHECK_DRY:-}" ]; then quick="--quick"; suites="greff"; fi

# 1. the Pallas LSTM kernel compiled for the GPU (interpret=None: real lowering off CPU)
$py -m pytest -q -x tests/test_pallas_lstm.py -p no:cacheprovider 2>&1 | tee "$OUT/pallas_tests.txt"

# 2. the benchmark with every peer (ours, ours_scan, ours_pallas, flax, torch, cudnn_jax)
$py experiments/benchmark.py $quick --suite "$suites" --out "$OUT/benchmark.json" \
    2>&1 | tee "$OUT/benchmark.txt"

# 3. XLA command buffers that capture the time loops (issue #13 item 1): the same suites
XLA_FLAGS="--xla_gpu_enable_command_buffer=+WHILE,+CONDITIONAL --xla_gpu_graph_min_graph_size=1" \
    $py experiments/benchmark.py $quick --suite "$suites" --out "$OUT/benchmark_cmdbuf.json" \
    2>&1 | tee "$OUT/benchmark_cmdbuf.txt"
echo "gpu_check done; results in $OUT"
