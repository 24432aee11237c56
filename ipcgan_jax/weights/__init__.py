"""Readers of weights made elsewhere, mapped onto this project's Flax variables.

  templates         the variables' names and shapes each reader fills (shapes only)
  mismatch          the error, and its message, for weights that do not fit a template
  bvlc              ImageNet AlexNet, `bvlc_alexnet.npy`
  tf1               the official IPCGAN's TF1 checkpoints (TensorFlow deferred to the data code)
  torch_state_dict  PyTorch state dicts (`torch.save` files) read with numpy, no torch
  fid_inception     pytorch-fid's InceptionV3 state dict -> `models.FIDInceptionV3`

`python -m ipcgan_jax.convert` writes the original networks' weights with these.
"""
