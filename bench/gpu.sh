#!/usr/bin/env bash
# GPU benchmark, ready for a machine with one or more CUDA GPUs: cifar2 and IMDB on one GPU
# (trainer=gpu) and on every visible GPU (trainer=ddp), each printing s/epoch, train samples/s and
# the test metrics as one table row (bench/run.py).
#   DATA_DIR=../shared/data bash bench/gpu.sh                 # default epochs of each task
#   DATA_DIR=../shared/data bash bench/gpu.sh trainer.max_epochs=3
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python}
$python -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else "bench/gpu.sh needs a CUDA GPU")'
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
for task in cifar2 imdb; do
  for trainer in gpu ddp; do
    echo "== task=$task trainer=$trainer"
    $python bench/run.py "task=$task" "trainer=$trainer" "$@"
  done
done
