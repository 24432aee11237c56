#!/usr/bin/env bash
# One machine, several GPUs: a single process drives every GPU it can see.
#
#   launch/one_machine_gpus.sh                                  # the paper's run, all GPUs
#   CUDA_VISIBLE_DEVICES=0,1 launch/one_machine_gpus.sh         # only GPUs 0 and 1
#   CONFIG=configs/g75_ablation.py:feature_layer=conv4 WORKDIR=workdirs/g75_conv4 launch/one_machine_gpus.sh \
#       --config.batch_size=64                                  # extra args go to main.py
#
# No --distributed and no launcher: jax sees all local GPUs and the trainer splits each
# global batch over them (ipcgan_jax/parallel.py). The global batch (config.batch_size,
# 32 in the paper) must be divisible by the number of GPUs. BatchNorm statistics are
# computed over the whole global batch, so results do not depend on the GPU count.
# Rerunning the same command resumes from the latest checkpoint in $WORKDIR.
# Needs the CUDA build of jax: pip install "jax[cuda12]==0.10.2" (README: GPU install).
set -euo pipefail
cd "$(dirname "$0")/.."

CONFIG=${CONFIG:-configs/g75_conv5.py}
WORKDIR=${WORKDIR:-workdirs/g75_conv5}

# jax preallocates 75% of each GPU's memory at start. Raise the fraction when nothing
# else shares the GPUs; or set XLA_PYTHON_CLIENT_PREALLOCATE=false to allocate on demand
# (slower, but leaves room for other processes, e.g. an evaluation beside training).
export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.90}
# Quieter TensorFlow (it only runs the input pipeline here, on the CPU).
export TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-2}

python main.py --config="$CONFIG" --workdir="$WORKDIR" "$@"
