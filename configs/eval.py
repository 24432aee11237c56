"""Evaluate a trained GAN run: age, identity, FID and (synthetic data) ground-truth errors.

  python main.py --config=configs/eval.py --workdir=workdirs/demo
  python main.py --config=configs/eval.py --workdir=workdirs/g75_conv5 --config.step=200000 \
      --config.evaluator=../age_evaluator/export

--workdir is the GAN run (it is read, never changed). Its latest checkpoint (or
--config.step) ages every test-split source face to every age group; the results go to
a new WORKDIR/eval/step_<N>/ (results.json, results.md, samples.png) and the table is
printed. Expect per target group: the independent age evaluator's accuracy and mean
estimated group, dlib's identity verification rate and cosine similarity, FID when
--config.fid_inception_weights (pytorch-fid's .pth) is set, the grid-artefact ratio (the
outputs' power at the 2- and 4-pixel pattern frequencies of transposed-conv upsampling over
their inputs', beside the real test faces' ratio) and the colour cast against the input, and
on the synthetic data the pixel errors against the ground-truth aged face. The demo's test split (about 100 source faces)
takes a few minutes on a CPU, mostly in dlib. See ipcgan_jax/evaluation.py.

No argument: every setting (configs/defaults.py, `evaluation()`) is a --config.<field> override.
"""
import ml_collections

from configs import defaults
from ipcgan_jax import configlib


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    configlib.parse_arg(arg)  # takes no argument
    return defaults.evaluation()
