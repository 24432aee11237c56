#!/usr/bin/env bash
# Cloud TPU VM pod slices (e.g. v4-32, v5e-16): the same command runs on every worker VM.
#
#   TPU_NAME=my-pod ZONE=us-central2-b launch/tpu_pod.sh setup   # once: copy this checkout, install
#   TPU_NAME=my-pod ZONE=us-central2-b launch/tpu_pod.sh train   # every (re)start
#
# Each worker VM runs one process that drives its local TPU chips; `main.py
# --distributed` calls jax.distributed.initialize(), which finds the pod's other
# workers from the TPU metadata (no addresses to pass). config.batch_size must be
# divisible by the total number of TPU cores. The workdir and the TFDS data_dir must be
# a path every worker sees the same (e.g. a Filestore/NFS mount at /mnt/shared):
# checkpoints are written by the primary process and read by all at resume.
# A single TPU VM (v4-8, v5e-8) needs none of this: run launch/one_machine_gpus.sh on it
# (with the TPU build of jax installed).
set -euo pipefail

: "${TPU_NAME:?set TPU_NAME to the pod slice name}"
: "${ZONE:?set ZONE to its zone}"
PROJECT_FLAG=${PROJECT:+--project=$PROJECT}
REPO_DIR=${REPO_DIR:-ipcgan_jax}   # where the code lives on each worker (relative to ~)
CONFIG=${CONFIG:-configs/g75_conv5.py}
WORKDIR=${WORKDIR:-/mnt/shared/workdirs/g75_conv5}
DATA_DIR=${DATA_DIR:-/mnt/shared/tensorflow_datasets}

cd "$(dirname "$0")/.."

on_all_workers() {
  # --worker=all runs the command on every VM of the slice at once, as the pod needs.
  gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone="$ZONE" $PROJECT_FLAG --worker=all \
    --command="$1"
}

case "${1:-}" in
  setup)
    # Every worker gets the same code: this checkout, without local runs and caches.
    tar --exclude=./workdirs --exclude=./.git --exclude=./.venv --exclude='*/__pycache__' -czf /tmp/ipcgan_jax.tgz .
    gcloud compute tpus tpu-vm scp /tmp/ipcgan_jax.tgz "$TPU_NAME":/tmp/ --zone="$ZONE" \
      $PROJECT_FLAG --worker=all
    on_all_workers "set -e; mkdir -p $REPO_DIR && tar -xzf /tmp/ipcgan_jax.tgz -C $REPO_DIR \
      && cd $REPO_DIR && python3 -m pip install -r requirements.txt \
      && python3 -m pip install --no-deps -e . && python3 -m pip install 'jax[tpu]==0.10.2'"
    ;;
  train)
    # nohup + log file: the training survives a dropped ssh connection; rerunning
    # `train` after a preemption resumes from the latest checkpoint.
    on_all_workers "cd $REPO_DIR && TF_CPP_MIN_LOG_LEVEL=2 nohup python3 main.py \
      --config=$CONFIG --workdir=$WORKDIR --config.data.data_dir=$DATA_DIR --distributed \
      > train_\$(hostname).log 2>&1 &"
    ;;
  *)
    echo "usage: TPU_NAME=... ZONE=... $0 setup|train" >&2
    exit 2
    ;;
esac
