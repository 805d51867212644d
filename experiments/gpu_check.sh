#!/usr/bin/env bash
# One prepared run of the GPU checks that issue #13 owes, for a lent GPU machine (this project's
# sessions get 15 minutes of device time in all): the Pallas kernel's tests compiled for the GPU
# (not interpret mode), the benchmark with its peers (cuDNN through PyTorch and through
# jax.experimental.rnn, ours_pallas, and the levers of issue #13 item 1: ours_wavefront,
# ours_unroll8), and the XLA command-buffer lever of that item; with GPU_CHECK_PARTS naming
# `packs`, also the packed Greff trials of issue #16 (packs of 64, 256 and 1024 trials at
# widths 63 and 200). Every result goes to $OUT (default ./gpu_out).
# Wall time on an H200: expected under 8 minutes for the default parts, a few more for `packs`
# (NOT yet run there: no GPU was lent to the sessions since these parts were written).
#
#   bash experiments/gpu_check.sh            # on the GPU machine, from the repository root
#   GPU_CHECK_PARTS=packs bash experiments/gpu_check.sh   # only the packs (or any comma list of
#                                            # pallas, bench, cmdbuf, packs)
#   GPU_CHECK_DRY=1 bash experiments/gpu_check.sh   # a CPU dry run of the same steps (minutes)
#
# The GPU machine's image has jax, flax, optax, torch, pytest but not ml_collections: carry its
# wheel (pure Python): `pip download ml_collections==1.1.0 --no-deps -d .wheels` here, then name
# `.wheels` in the device tool's `carry` (list it in .git/info/exclude; never commit it). The
# `packs` part trains on JSB Chorales, and ../shared does not travel to the device: copy it into
# an ignored folder of the checkout, `mkdir -p .device_data && cp -r ../shared/data/jsb_chorales
# .device_data/` (also in .git/info/exclude), and carry `.device_data` too; this script then
# points LSTM_RESEARCH_DATA at it.
set -uo pipefail
OUT="${OUT:-$PWD/gpu_out}"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
py=python3
if [ -d .wheels ]; then $py -m pip install -q --no-index --find-links .wheels ml_collections \
    2>&1 | tail -n 2; fi
if [ -z "${LSTM_RESEARCH_DATA:-}" ] && [ -d .device_data ]; then
    export LSTM_RESEARCH_DATA="$PWD/.device_data"
fi
{ nvidia-smi -L || true; $py -c "import jax; print('jax', jax.__version__, jax.devices())"; } \
    2>&1 | tee "$OUT/machine.txt"
quick=""
suites="lstm,greff,tscale"
packs=(--widths 63,200 --timing_epochs 1 --pack_sizes 64,256,1024)
parts=",${GPU_CHECK_PARTS:-pallas,bench,cmdbuf},"
if [ -n "${GPU_CHECK_DRY:-}" ]; then
    quick="--quick"; suites="greff"; packs=(--widths 20 --timing_epochs 1 --pack_sizes 2,4)
fi

# 1. the Pallas LSTM kernel compiled for the GPU (interpret=None: real lowering off CPU)
if [[ $parts == *,pallas,* ]]; then
$py -m pytest -q -x tests/test_pallas_lstm.py -p no:cacheprovider 2>&1 | tee "$OUT/pallas_tests.txt"
fi

# 2. the benchmark with every peer (ours, ours_scan, ours_pallas, flax, torch, cudnn_jax)
if [[ $parts == *,bench,* ]]; then
$py experiments/benchmark.py $quick --suite "$suites" --out "$OUT/benchmark.json" \
    2>&1 | tee "$OUT/benchmark.txt"
fi

# 3. XLA command buffers that capture the time loops (issue #13 item 1): the same suites
if [[ $parts == *,cmdbuf,* ]]; then
XLA_FLAGS="--xla_gpu_enable_command_buffer=+WHILE,+CONDITIONAL --xla_gpu_graph_min_graph_size=1" \
    $py experiments/benchmark.py $quick --suite "$suites" --out "$OUT/benchmark_cmdbuf.json" \
    2>&1 | tee "$OUT/benchmark_cmdbuf.txt"
fi

# 4. packed Greff trials (issue #16 item 5): one trial at a time against packs of K, per width
if [[ $parts == *,packs,* ]]; then
$py experiments/sweep_throughput.py --modes none "${packs[@]}" --parallel 1 \
    --out "$OUT/sweep_throughput_packs.json" 2>&1 | tee "$OUT/sweep_throughput_packs.txt"
fi
echo "gpu_check done; results in $OUT"
