#!/usr/bin/env bash
# The full IPCGAN reproduction on CACD, in order, on one machine (all its GPUs).
#
#   CACD_DIR=/data/cacd launch/reproduce_cacd.sh
#
# CACD_DIR holds what the CACD site distributes: the CACD2000/ image folder and
# celebrity2000_meta.mat. Every step writes only into its own folder and can be rerun:
# a finished dataset build is kept, and each training run resumes from its latest
# checkpoint (so after an interruption just run the script again). For a cluster, run the
# same `main.py` commands through launch/slurm_multinode.sbatch or launch/tpu_pod.sh,
# one after the other.
set -euo pipefail
if [[ $# -gt 0 ]]; then  # it takes no arguments: --help (or anything else) shows this header
  sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'
  [[ $1 == --help || $1 == -h ]] && exit 0 || exit 2
fi
cd "$(dirname "$0")/.."

: "${CACD_DIR:?set CACD_DIR to the folder holding CACD2000/ and celebrity2000_meta.mat}"
DATA_DIR=${DATA_DIR:-$HOME/tensorflow_datasets}   # where TFDS writes the built dataset
RUNS=${RUNS:-workdirs}                           # one sub-folder per run, side by side
export TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-2}

run() {  # run CONFIG NAME [overrides...]: train CONFIG into $RUNS/NAME on the built CACD
  local config=$1 name=$2
  shift 2
  echo "=== $name ($config)"
  python main.py --config="$config" --workdir="$RUNS/$name" --config.data.data_dir="$DATA_DIR" "$@"
}

# 1. Build the dataset: detect and align every CACD image to a 400x400 crop (dlib, as the
#    original), identity-disjoint train/test split, array_record files for random access.
#    Hours on many cores; skipped images are listed in build_report.json beside the data.
python -m ipcgan_jax.data.build cacd --manual_dir="$CACD_DIR" --data_dir="$DATA_DIR"

# 2. The frozen networks of the GAN's losses (docs/faithfulness.md §6). The identity
#    AlexNet first (from scratch; add --config.init.bvlc_npy=/path/bvlc_alexnet.npy to
#    fine-tune from ImageNet), then the age classifier on its frozen trunk: configs/age_classifier.py
#    reads ../alexnet_identity/export, i.e. $RUNS/alexnet_identity/export.
run configs/alexnet_identity.py alexnet_identity
run configs/age_classifier.py age_classifier

# 3. The independent age evaluator that grades the generated faces (another network,
#    never seen by the GAN).
run configs/age_evaluator.py age_evaluator

# 4. The GAN: G75 with conv5 identity features, 400,000 steps of batch 32. Its frozen
#    inputs default to ../alexnet_identity/export and ../age_classifier/export, the
#    folders of step 2. Sample grids appear in $RUNS/g75_conv5/samples every 5,000 steps.
#    The ablations (configs/g75_ablation.py:feature_layer=conv4, :feature_layer=none,
#    :age_weight=10, ...) run the same way, each in its own $RUNS/<name>.
run configs/g75_conv5.py g75_conv5

# 5. Evaluate the trained generator on the test split: age accuracy by the evaluator of
#    step 3 (configs/eval.py looks for it relative to the GAN's workdir, hence the
#    override), identity preservation (dlib), optionally FID. Results (results.md,
#    results.json, samples.png) go to a new $RUNS/g75_conv5/eval/step_<N>/.
run configs/eval.py g75_conv5 --config.evaluator=../age_evaluator/export
