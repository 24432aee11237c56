"""PyTorch (CPU) reference implementation of the original IPCGAN networks and training step.

IPCGAN: Wang, Tang, Luo, Gao, "Face Aging with Identity-Preserved Conditional GANs",
CVPR 2018 (official code: TensorFlow 1.4). This file re-implements, from a description of
the original code (the points of docs/faithfulness.md) and independently of any released
port and of this project's JAX code, the generator, the conditional patch discriminator,
the frozen AlexNet + age head, the losses and one training step, for side-by-side speed
comparisons (benchmarks/bench_step.py, bench_inference.py). It needs only numpy and torch.

Run
  python torch_reference.py --batch 8 --steps 12 --warmup 2 --threads 2 [--bf16] [--json FILE]
                            [--channels-last]
      times the full training step (one D update + one G update, data already in memory)
      on random data and prints one JSON line (batch, median_ms, min_ms, max_ms,
      images_per_s = batch / median, torch, threads, ...).
  python torch_reference.py --check DIR [--tol 1e-3] [--json FILE]
      loads DIR/weights.npz (TF1 names -> arrays), DIR/inputs.npz, DIR/golden.npz and
      DIR/golden_step.npz as written by an independent TensorFlow computation of the original graph and prints the max
      abs / relative differences against TF: G (train and test mode), D, every AlexNet
      layer and the four losses in float32; and one full training step in float64 (losses,
      all D and G gradients, all updated parameters, TF1 Adam near epsilon). Exit code 0
      when every relative difference is within --tol.

Semantics kept from the original
  * TF "SAME" padding, reproduced exactly: odd padding goes bottom/right (F.pad where
    asymmetric); conv2d_transpose SAME gives 32->64->128 (full transposed conv, cropped).
  * BatchNorm over (N,H,W) with biased variance, eps 1e-3; moving averages with decay 0.9
    and TF1's zero-debiasing (assign_moving_average(zero_debias=True)); the 12 residual
    BNs always use batch statistics; D always runs in batch-statistics mode.
  * AlexNet: Caffe trunk, conv -> ReLU -> maxpool -> LRN(depth_radius 2, alpha 2e-5 with no
    division by the window, beta 0.75, bias 1), 2-group conv2/4/5, NHWC flatten order for
    fc6/age_fc6. Frozen (eval mode, no parameter gradients).
  * G output -> AlexNet: (G+1)*127.5, TF1 legacy bilinear resize 128->227
    (align_corners=False, half_pixel_centers=False), minus [104,117,124].
  * Step: Adam(lr 1e-3, betas (0.5, 0.999), eps 1e-8 placed as TF1 places it) for D and G;
    one D update (G forward without gradients, D(x_t,c_t), D(x_t,c_f), D(G(x_s),c_t)),
    then one G update on a fresh source batch; one target group t for the whole batch.
  * Not reproduced, on purpose: TF's G step also re-ran D(x_t,c_t) and D(x_t,c_f) forward
    only to refresh D's BN moving averages (grouped into g_optim); those averages are never
    read (D always uses batch statistics), so this step skips that work.
"""
import argparse
import platform
import json
import math
import os
import statistics
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

MEAN_RGB = (104.0, 117.0, 124.0)
NUM_GROUPS = 5
NUM_IDENTITIES = 2000
BN_EPS = 1e-3
BN_DECAY = 0.9
W_GAN, W_FEA, W_AGE = 75.0, 0.5e-4, 30.0
ADAM_LR, ADAM_B1, ADAM_B2, ADAM_EPS = 1e-3, 0.5, 0.999, 1e-8


# ----------------------------------------------------------------------------- layers
def _same_pads(n, k, s):
    """TF SAME: out = ceil(n/s); total = max((out-1)*s + k - n, 0); extra pad after."""
    out = -(-n // s)
    total = max((out - 1) * s + k - n, 0)
    return total // 2, total - total // 2


class Conv(nn.Module):
    """Conv2d with bias and TF SAME/VALID padding; weight [out, in/groups, k, k]."""

    def __init__(self, cin, cout, k, stride=1, groups=1, padding="SAME"):
        super().__init__()
        self.k, self.stride, self.groups, self.padding = k, stride, groups, padding
        self.weight = nn.Parameter(torch.empty(cout, cin // groups, k, k))
        self.bias = nn.Parameter(torch.zeros(cout))

    def forward(self, x):
        if self.padding == "VALID":
            return F.conv2d(x, self.weight, self.bias, self.stride, 0, 1, self.groups)
        ph = _same_pads(x.shape[2], self.k, self.stride)
        pw = _same_pads(x.shape[3], self.k, self.stride)
        if ph[0] == ph[1] and pw[0] == pw[1]:
            return F.conv2d(x, self.weight, self.bias, self.stride, (ph[0], pw[0]), 1, self.groups)
        x = F.pad(x, (pw[0], pw[1], ph[0], ph[1]))
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, 1, self.groups)


class DeconvSame(nn.Module):
    """tf.nn.conv2d_transpose(..., padding='SAME'), output = input * stride.

    It is the adjoint of a SAME conv from (H*s) to H, whose padding is (k-s)//2 before and
    the rest after; the full transposed conv is therefore cropped [pad_before : pad_before
    + H*s] (for k=3, s=2: drop the last row and column). Weight [in, out, k, k]."""

    def __init__(self, cin, cout, k=3, stride=2):
        super().__init__()
        self.k, self.stride = k, stride
        self.weight = nn.Parameter(torch.empty(cin, cout, k, k))
        self.bias = nn.Parameter(torch.zeros(cout))

    def forward(self, x):
        h, w = x.shape[2] * self.stride, x.shape[3] * self.stride
        y = F.conv_transpose2d(x, self.weight, self.bias, self.stride)
        b = max(self.k - self.stride, 0) // 2
        return y[:, :, b:b + h, b:b + w]


class TFBatchNorm(nn.Module):
    """BN as the official batch_norm(): batch statistics over (N,H,W) with biased
    variance and eps 1e-3; moving averages updated with TF1's zero-debiased EMA
    (decay 0.9). always_batch_stats=True for the residual-block BNs (the quirk)."""

    def __init__(self, c, always_batch_stats=False):
        super().__init__()
        self.always_batch_stats = always_batch_stats
        self.update_stats = True
        self.weight = nn.Parameter(torch.ones(c))   # gamma
        self.bias = nn.Parameter(torch.zeros(c))    # beta
        self.register_buffer("moving_mean", torch.zeros(c))
        self.register_buffer("moving_variance", torch.ones(c))
        # zero-debias shadow variables (TF1: <bn>/<bn>/moving_*/biased, .../local_step)
        self.register_buffer("biased_mean", torch.zeros(c))
        self.register_buffer("biased_variance", torch.zeros(c))
        self.register_buffer("local_step", torch.zeros(()))
        self.register_buffer("_scratch_mean", torch.zeros(c), persistent=False)
        self.register_buffer("_scratch_var", torch.zeros(c), persistent=False)

    def forward(self, x):
        if not (self.training or self.always_batch_stats):
            return F.batch_norm(x, self.moving_mean, self.moving_variance, self.weight,
                                self.bias, False, 0.0, BN_EPS)
        if not (self.training and self.update_stats):
            return F.batch_norm(x, None, None, self.weight, self.bias, True, 0.0, BN_EPS)
        # momentum 1.0 makes the fused kernel hand back this batch's mean and unbiased var
        y = F.batch_norm(x, self._scratch_mean, self._scratch_var, self.weight, self.bias,
                         True, 1.0, BN_EPS)
        with torch.no_grad():
            n = x.numel() // x.shape[1]
            var = self._scratch_var * ((n - 1) / n)
            a = 1.0 - BN_DECAY
            self.local_step += 1.0
            self.biased_mean.sub_((self.biased_mean - self._scratch_mean) * a)
            self.biased_variance.sub_((self.biased_variance - var) * a)
            debias = 1.0 - torch.pow(torch.tensor(BN_DECAY, device=self.local_step.device),
                                     self.local_step)
            self.moving_mean.copy_(self.biased_mean / debias)
            self.moving_variance.copy_(self.biased_variance / debias)
        return y


def lrelu(x):
    return F.leaky_relu(x, 0.2)


# ----------------------------------------------------------------------------- networks
class ResBlock(nn.Module):
    def __init__(self, c=128):
        super().__init__()
        self.conv1 = Conv(c, c, 3)
        self.bn1 = TFBatchNorm(c, always_batch_stats=True)
        self.conv2 = Conv(c, c, 3)
        self.bn2 = TFBatchNorm(c, always_batch_stats=True)

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        return self.bn2(self.conv2(y)) + x  # no ReLU after the add


class Generator(nn.Module):
    """Generator: 8-channel input (image RGB 0..255 minus mean, 5 one-hot maps) -> tanh."""

    def __init__(self):
        super().__init__()
        self.conv1, self.bn1 = Conv(3 + NUM_GROUPS, 32, 7), TFBatchNorm(32)
        self.conv2, self.bn2 = Conv(32, 64, 3, 2), TFBatchNorm(64)
        self.conv3, self.bn3 = Conv(64, 128, 3, 2), TFBatchNorm(128)
        self.units = nn.ModuleList([ResBlock(128) for _ in range(6)])
        self.deconv1, self.bn4 = DeconvSame(128, 64), TFBatchNorm(64)
        self.deconv2, self.bn5 = DeconvSame(64, 32), TFBatchNorm(32)
        self.conv4 = Conv(32, 3, 7)

    def forward(self, images, age_maps):
        x = torch.cat([images, age_maps.to(images.dtype)], dim=1)
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        x = F.relu(self.bn3(self.conv3(x)))
        for u in self.units:
            x = u(x)
        x = F.relu(self.bn4(self.deconv1(x)))
        x = F.relu(self.bn5(self.deconv2(x)))
        return torch.tanh(self.conv4(x))


class Discriminator(nn.Module):
    """Discriminator: conditional patch D; maps concatenated after the first conv (64x64)."""

    def __init__(self):
        super().__init__()
        self.dis = Conv(3, 64, 4, 2)
        self.dis_1, self.dis_bn0 = Conv(64 + NUM_GROUPS, 128, 4, 2), TFBatchNorm(128)
        self.dis_2, self.dis_bn1 = Conv(128, 256, 4, 2), TFBatchNorm(256)
        self.dis_3, self.dis_bn2 = Conv(256, 512, 4, 1), TFBatchNorm(512)
        self.dis_4 = Conv(512, 512, 4, 1)

    def forward(self, images, age_maps_64):
        x = lrelu(self.dis(images))
        x = torch.cat([x, age_maps_64.to(x.dtype)], dim=1)
        x = lrelu(self.dis_bn0(self.dis_1(x)))
        x = lrelu(self.dis_bn1(self.dis_2(x)))
        x = lrelu(self.dis_bn2(self.dis_3(x)))
        return self.dis_4(x)


class AlexNetAge(nn.Module):
    """Caffe AlexNet trunk + identity head (new_1, new_2) + age head."""

    ORDER = ("conv1", "pool1", "norm1", "conv2", "pool2", "norm2", "conv3", "conv4", "conv5",
             "pool5", "fc6", "fc7", "new_1", "new_2", "age_fc6", "age_fc7", "age_fc8")

    def __init__(self):
        super().__init__()
        self.conv1 = Conv(3, 96, 11, 4, padding="VALID")
        self.conv2 = Conv(96, 256, 5, groups=2)
        self.conv3 = Conv(256, 384, 3)
        self.conv4 = Conv(384, 384, 3, groups=2)
        self.conv5 = Conv(384, 256, 3, groups=2)
        self.fc6, self.fc7 = nn.Linear(9216, 4096), nn.Linear(4096, 4096)
        self.new_1, self.new_2 = nn.Linear(4096, 256), nn.Linear(256, NUM_IDENTITIES)
        self.age_fc6, self.age_fc7 = nn.Linear(9216, 4096), nn.Linear(4096, 4096)
        self.age_fc8 = nn.Linear(4096, NUM_GROUPS)

    @staticmethod
    def _lrn(x):
        # TF: x / (1 + 2e-5 * sum_5 x^2)^0.75; torch divides alpha by the window size.
        return F.local_response_norm(x, size=5, alpha=5 * 2e-5, beta=0.75, k=1.0)

    def forward(self, x, wanted=("conv5", "age_fc8")):
        """Returns a dict holding at least `wanted`; stops as early as it can."""
        need_id = any(k in wanted for k in ("fc6", "fc7", "new_1", "new_2"))
        need_age = any(k.startswith("age_") for k in wanted)
        need_fc = need_id or need_age or "pool5" in wanted
        out = {}
        out["conv1"] = F.relu(self.conv1(x))
        out["pool1"] = F.max_pool2d(out["conv1"], 3, 2)
        out["norm1"] = self._lrn(out["pool1"])
        out["conv2"] = F.relu(self.conv2(out["norm1"]))
        out["pool2"] = F.max_pool2d(out["conv2"], 3, 2)
        out["norm2"] = self._lrn(out["pool2"])
        out["conv3"] = F.relu(self.conv3(out["norm2"]))
        out["conv4"] = F.relu(self.conv4(out["conv3"]))
        out["conv5"] = F.relu(self.conv5(out["conv4"]))
        if not need_fc:
            return out
        out["pool5"] = F.max_pool2d(out["conv5"], 3, 2)
        flat = out["pool5"].permute(0, 2, 3, 1).reshape(x.shape[0], 9216)  # TF NHWC order
        if need_id:
            out["fc6"] = F.relu(self.fc6(flat))
            out["fc7"] = F.relu(self.fc7(out["fc6"]))
            out["new_1"] = F.relu(self.new_1(out["fc7"]))
            out["new_2"] = self.new_2(out["new_1"])
        if need_age:
            out["age_fc6"] = F.relu(self.age_fc6(flat))
            out["age_fc7"] = F.relu(self.age_fc7(out["age_fc6"]))
            out["age_fc8"] = self.age_fc8(out["age_fc7"])
        return out


# ----------------------------------------------------------------------------- helpers
_MAP_CACHE = {}


def age_maps(groups, n, size, dtype=torch.float32, device="cpu"):
    """One-hot condition maps (n, 5, size, size); groups: int or sequence of n ints."""
    if isinstance(groups, (int, np.integer)):
        key = (int(groups), n, size, dtype, str(device))
        if key not in _MAP_CACHE:
            m = torch.zeros(n, NUM_GROUPS, size, size, dtype=dtype, device=device)
            m[:, int(groups)] = 1.0
            _MAP_CACHE[key] = m
        return _MAP_CACHE[key]
    g = torch.as_tensor(np.asarray(groups), dtype=torch.long, device=device)
    oh = F.one_hot(g, NUM_GROUPS).to(dtype)
    return oh[:, :, None, None].expand(n, NUM_GROUPS, size, size).contiguous()


class LegacyBilinear(nn.Module):
    """TF1 resize_bilinear(align_corners=False, half_pixel_centers=False): source index
    = dst * (in/out) in float32, floor / min(+1, in-1) neighbours, same lerp order as TF's
    CPU kernel (top, bottom along x, then along y). Differentiable."""

    def __init__(self, n_in, n_out):
        super().__init__()
        scale = np.float32(n_in) / np.float32(n_out)
        src = np.arange(n_out, dtype=np.float32) * scale
        lo = np.floor(src).astype(np.int64)
        hi = np.minimum(lo + 1, n_in - 1)
        frac = (src - lo.astype(np.float32)).astype(np.float32)
        self.register_buffer("lo", torch.from_numpy(lo), persistent=False)
        self.register_buffer("hi", torch.from_numpy(hi), persistent=False)
        self.register_buffer("frac", torch.from_numpy(frac), persistent=False)

    def forward(self, x):
        fx = self.frac.to(x.dtype)
        top_rows = x.index_select(2, self.lo)
        bot_rows = x.index_select(2, self.hi)
        tl, tr = top_rows.index_select(3, self.lo), top_rows.index_select(3, self.hi)
        bl, br = bot_rows.index_select(3, self.lo), bot_rows.index_select(3, self.hi)
        top = tl + (tr - tl) * fx
        bottom = bl + (br - bl) * fx
        return top + (bottom - top) * fx[:, None]


_RESIZE = LegacyBilinear(128, 227)
_MEAN = torch.tensor(MEAN_RGB).view(1, 3, 1, 1)


def _up(x):
    """Low-precision (bf16/fp16) tensors -> float32; float32/float64 unchanged."""
    return x.float() if x.dtype in (torch.bfloat16, torch.float16) else x


def g_to_alexnet_input(g):
    """(G+1)*127.5, legacy bilinear 128 -> 227, minus the mean (at least float32)."""
    g = _up(g)
    return _RESIZE((g + 1.0) * 127.5) - _MEAN.to(g.device, g.dtype)


def d_loss_fn(d1, d2, d3):
    d1, d2, d3 = _up(d1), _up(d2), _up(d3)
    return W_GAN * 0.5 * ((d1 - 1.0).square().mean()
                          + 0.5 * (d2.square().mean() + d3.square().mean()))


def g_losses(d3, gen_conv5, src_conv5, age_logits, t):
    n = d3.shape[0]
    l_adv = W_GAN * 0.5 * (_up(d3) - 1.0).square().mean()
    diff = (_up(gen_conv5) - _up(src_conv5)).reshape(n, -1)
    l_fea = W_FEA * diff.square().sum(dim=1).mean()
    labels = torch.full((n,), int(t), dtype=torch.long, device=d3.device)
    l_age = W_AGE * F.cross_entropy(_up(age_logits), labels)
    return l_adv, l_fea, l_age


def set_bn_updates(module, enabled):
    for m in module.modules():
        if isinstance(m, TFBatchNorm):
            m.update_stats = enabled


# ----------------------------------------------------------------------------- init / load
def init_official(G, D, A, seed=0):
    """Official initialisers: conv truncated normal sd .02 (+-2 sd), deconv normal sd .02,
    biases 0, BN 1/0. The frozen AlexNet gets N(0, .02) (its values do not matter here)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for net in (G, D):
            for m in net.modules():
                if isinstance(m, Conv):
                    w = torch.randn(m.weight.shape, generator=gen)
                    while True:  # redraw beyond 2 sd, like tf.truncated_normal
                        bad = w.abs() > 2.0
                        if not bad.any():
                            break
                        w[bad] = torch.randn(int(bad.sum()), generator=gen)
                    m.weight.copy_(w * 0.02)
                    m.bias.zero_()
                elif isinstance(m, DeconvSame):
                    m.weight.copy_(torch.randn(m.weight.shape, generator=gen) * 0.02)
                    m.bias.zero_()
        for p in A.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.02)


def official_names(G, D, A, age_prefix="alexnet/"):
    """TF1 variable name -> (tensor, kind). kinds: conv, deconv, fc, vec."""
    table = {}

    def conv(name, m):
        table[name + "/weights"] = (m.weight, "conv")
        table[name + "/biases"] = (m.bias, "vec")

    def deconv(name, m):
        table[name + "/weights"] = (m.weight, "deconv")
        table[name + "/biases"] = (m.bias, "vec")

    def bn(name, m):
        table[name + "/gamma"] = (m.weight, "vec")
        table[name + "/beta"] = (m.bias, "vec")
        table[name + "/moving_mean"] = (m.moving_mean, "vec")
        table[name + "/moving_variance"] = (m.moving_variance, "vec")

    def fc(name, m):
        table[name + "/weights"] = (m.weight, "fc")
        table[name + "/biases"] = (m.bias, "vec")

    g = "generator"
    conv(g + "/conv1", G.conv1); bn(g + "/bn1", G.bn1)
    conv(g + "/conv2", G.conv2); bn(g + "/bn2", G.bn2)
    conv(g + "/conv3", G.conv3); bn(g + "/bn3", G.bn3)
    for i, u in enumerate(G.units):
        p = "%s/unit_%d" % (g, i)
        conv(p + "/sub1/conv1", u.conv1); bn(p + "/sub1/bn1", u.bn1)
        conv(p + "/sub2/conv2", u.conv2); bn(p + "/sub2/bn2", u.bn2)
    deconv(g + "/deconv1", G.deconv1); bn(g + "/bn4", G.bn4)
    deconv(g + "/deconv2", G.deconv2); bn(g + "/bn5", G.bn5)
    conv(g + "/conv4", G.conv4)
    d = "discriminator"
    conv(d + "/dis", D.dis)
    conv(d + "/dis_1", D.dis_1); bn(d + "/dis_bn0", D.dis_bn0)
    conv(d + "/dis_2", D.dis_2); bn(d + "/dis_bn1", D.dis_bn1)
    conv(d + "/dis_3", D.dis_3); bn(d + "/dis_bn2", D.dis_bn2)
    conv(d + "/dis_4", D.dis_4)
    a = "alexnet"
    for name in ("conv1", "conv2", "conv3", "conv4", "conv5"):
        conv("%s/%s" % (a, name), getattr(A, name))
    for name in ("fc6", "fc7", "new_1", "new_2"):
        fc("%s/%s" % (a, name), getattr(A, name))
    for name in ("age_fc6", "age_fc7", "age_fc8"):
        fc(age_prefix + name, getattr(A, name))
    return table


def bn_modules(G, D):
    """TF1 BN scope name -> TFBatchNorm module."""
    out = {}
    g = "generator"
    for k in ("bn1", "bn2", "bn3", "bn4", "bn5"):
        out["%s/%s" % (g, k)] = getattr(G, k)
    for i, u in enumerate(G.units):
        out["%s/unit_%d/sub1/bn1" % (g, i)] = u.bn1
        out["%s/unit_%d/sub2/bn2" % (g, i)] = u.bn2
    for k in ("dis_bn0", "dis_bn1", "dis_bn2"):
        out["discriminator/" + k] = getattr(D, k)
    return out


def _to_torch_layout(arr, kind):
    if kind in ("conv", "deconv"):
        # conv [kh,kw,in,out] -> [out,in,kh,kw]; deconv [kh,kw,out,in] -> [in,out,kh,kw]
        return np.ascontiguousarray(np.transpose(arr, (3, 2, 0, 1)))
    if kind == "fc":
        return np.ascontiguousarray(arr.T)  # [in,out] -> nn.Linear [out,in]
    return arr


def load_official(G, D, A, weights):
    """Copy arrays keyed by TF1 names into the modules. Fails listing missing/unexpected
    names; the zero-debias shadows (<bn>/<bn>/moving_*/biased|local_step) are optional."""
    age_prefix = "alexnet/" if any(k.startswith("alexnet/age_fc") for k in weights) else ""
    table = official_names(G, D, A, age_prefix)
    shadows = {}
    for bn_name, m in bn_modules(G, D).items():
        for stat, buf in (("moving_mean", "biased_mean"), ("moving_variance", "biased_variance")):
            base = "%s/%s/%s" % (bn_name, bn_name, stat)
            shadows[base + "/biased"] = (m, buf)
            shadows[base + "/local_step"] = (m, "local_step")
    missing = [k for k in table if k not in weights]
    unexpected = [k for k in weights if k not in table and k not in shadows]
    if missing or unexpected:
        raise KeyError("weights do not match: missing=%s unexpected=%s" % (missing, unexpected))
    with torch.no_grad():
        for name, (tensor, kind) in table.items():
            arr = _to_torch_layout(np.asarray(weights[name], np.float32), kind)
            if tuple(arr.shape) != tuple(tensor.shape):
                raise ValueError("%s: shape %s, expected %s" % (name, arr.shape, tuple(tensor.shape)))
            tensor.copy_(torch.from_numpy(arr))
        for name, (m, buf) in shadows.items():
            if name in weights:
                getattr(m, buf).copy_(torch.from_numpy(np.asarray(weights[name], np.float32)))


def count_trainable(module):
    return sum(p.numel() for p in module.parameters())


# ----------------------------------------------------------------------------- training
class TFAdam:
    """torch Adam with TF1's epsilon placement: TF computes
    lr*sqrt(1-b2^t)/(1-b1^t) * m / (sqrt(v) + eps); torch's formula equals it when its eps
    is eps / sqrt(1 - b2^t), set before every step."""

    def __init__(self, params):
        params = list(params)
        try:
            self.opt = torch.optim.Adam(params, lr=ADAM_LR, betas=(ADAM_B1, ADAM_B2),
                                        eps=ADAM_EPS, fused=True)
            self.kind = "fused"
        except (RuntimeError, TypeError, ValueError):
            self.opt = torch.optim.Adam(params, lr=ADAM_LR, betas=(ADAM_B1, ADAM_B2),
                                        eps=ADAM_EPS, foreach=True)
            self.kind = "foreach"
        self.t = 0

    def zero_grad(self):
        self.opt.zero_grad(set_to_none=True)

    def step(self):
        self.t += 1
        for group in self.opt.param_groups:
            group["eps"] = ADAM_EPS / math.sqrt(1.0 - ADAM_B2 ** self.t)
        self.opt.step()


class IPCGANTrainer:
    def __init__(self, seed=0, bf16=False, weights=None, dtype=torch.float32,
                 channels_last=False, device="cpu"):
        self.G, self.D, self.A = Generator(), Discriminator(), AlexNetAge()
        init_official(self.G, self.D, self.A, seed)
        if weights is not None:
            load_official(self.G, self.D, self.A, weights)
        self.device = torch.device(device)
        _RESIZE.to(self.device)
        for net in (self.G, self.D, self.A):
            net.to(self.device, dtype)
            if channels_last:
                net.to(memory_format=torch.channels_last)
        self.A.eval()
        self.A.requires_grad_(False)
        self.G.train()
        self.D.train()
        self.opt_d = TFAdam(self.D.parameters())
        self.opt_g = TFAdam(self.G.parameters())
        self.bf16 = bf16

    def _ac(self):
        if self.bf16:
            return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)
        return torch.autocast(device_type=self.device.type, enabled=False)

    def step(self, batch_d, batch_g, real, t, f, capture=None):
        """batch_d / batch_g: dicts with 'src128' (N,3,128,128) and, for batch_g, 'src227'
        (N,3,227,227), both RGB 0..255 minus mean; real: (N,3,128,128) in [-1,1]; t != f.
        capture: optional dict that receives copies of the D and G gradients."""
        n = real.shape[0]
        dt = real.dtype
        dev = real.device
        c_t128, c_t64, c_f64 = (age_maps(t, n, 128, dt, dev), age_maps(t, n, 64, dt, dev),
                                age_maps(f, n, 64, dt, dev))
        # ---- D update (G forward without gradients; G's BN moving stats still update)
        with self._ac():
            with torch.no_grad():
                fake = self.G(batch_d["src128"], c_t128)
            d1 = self.D(real, c_t64)
            d2 = self.D(real, c_f64)
            d3 = self.D(fake, c_t64)
        loss_d = d_loss_fn(d1, d2, d3)
        self.opt_d.zero_grad()
        loss_d.backward()
        if capture is not None:
            capture["grad_d"] = {id(p): p.grad.detach().clone() for p in self.D.parameters()}
        self.opt_d.step()
        # ---- G update on a fresh source batch (D frozen, AlexNet frozen)
        self.D.requires_grad_(False)
        with self._ac():
            with torch.no_grad():
                src_conv5 = self.A(batch_g["src227"], wanted=("conv5",))["conv5"]
            fake = self.G(batch_g["src128"], c_t128)
            d3 = self.D(fake, c_t64)
            gen = self.A(g_to_alexnet_input(fake), wanted=("conv5", "age_fc8"))
        l_adv, l_fea, l_age = g_losses(d3, gen["conv5"], src_conv5, gen["age_fc8"], t)
        loss_g = l_adv + l_fea + l_age
        self.opt_g.zero_grad()
        loss_g.backward()
        if capture is not None:
            capture["grad_g"] = {id(p): p.grad.detach().clone() for p in self.G.parameters()}
        self.opt_g.step()
        self.D.requires_grad_(True)
        return dict(L_D=loss_d.detach(), L_adv=l_adv.detach(), L_fea=l_fea.detach(),
                    L_age=l_age.detach())


def random_batches(n, count, seed=0):
    gen = torch.Generator().manual_seed(seed)
    mean = _MEAN
    out = []
    for _ in range(count):
        src128 = torch.rand(n, 3, 128, 128, generator=gen) * 255.0 - mean
        src227 = torch.rand(n, 3, 227, 227, generator=gen) * 255.0 - mean
        real = torch.rand(n, 3, 128, 128, generator=gen) * 2.0 - 1.0
        out.append(dict(src128=src128, src227=src227, real=real))
    return out


def run_benchmark(args):
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    cuda = args.device == "cuda"
    if cuda:
        if not torch.cuda.is_available():
            print(json.dumps({"error": "--device cuda: no CUDA device visible to torch"}))
            return 1
        torch.backends.cudnn.benchmark = True
        # float32 rows: TF32 tensor cores for convs and matmuls, as XLA's default precision
        torch.backends.cuda.matmul.allow_tf32 = not args.strict_fp32
        torch.backends.cudnn.allow_tf32 = not args.strict_fp32
    trainer = IPCGANTrainer(seed=args.seed, bf16=args.bf16, channels_last=args.channels_last,
                            device=args.device)
    if args.compile:
        trainer.G, trainer.D, trainer.A = (torch.compile(trainer.G), torch.compile(trainer.D),
                                           torch.compile(trainer.A))
    pool = [{k: v.to(args.device) for k, v in b.items()}
            for b in random_batches(args.batch, 3, args.seed)]
    if args.channels_last:
        pool = [{k: v.contiguous(memory_format=torch.channels_last) for k, v in b.items()}
                for b in pool]
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    times, losses = [], None
    total = args.warmup + args.steps
    for i in range(total):
        t = int(rng.integers(NUM_GROUPS))
        f = int((t + 1 + rng.integers(NUM_GROUPS - 1)) % NUM_GROUPS)  # f != t
        bd, bg = pool[i % 3], pool[(i + 1) % 3]
        real = pool[(i + 2) % 3]["real"]
        sync()
        t0 = time.perf_counter()
        losses = trainer.step(bd, bg, real, t, f)
        sync()
        dt = time.perf_counter() - t0
        if i >= args.warmup:
            times.append(dt)
    med = statistics.median(times)
    res = dict(batch=args.batch, median_ms=round(med * 1e3, 3), min_ms=round(min(times) * 1e3, 3),
               max_ms=round(max(times) * 1e3, 3), images_per_s=round(args.batch / med, 3),
               torch=torch.__version__, threads=torch.get_num_threads(),
               dtype="bf16" if args.bf16 else "fp32", steps=args.steps, warmup=args.warmup,
               memory_format="channels_last" if args.channels_last else "nchw",
               adam=trainer.opt_g.kind, device=args.device,
               device_name=torch.cuda.get_device_name() if cuda else platform.processor(),
               tf32=cuda and not args.strict_fp32, compiled=bool(args.compile),
               last_losses={k: round(float(v), 5) for k, v in losses.items()})
    if not all(math.isfinite(v) for v in res["last_losses"].values()):
        res["error"] = "non-finite loss"
    line = json.dumps(res)
    print(line)
    if args.json:
        with open(args.json, "w") as fh:
            fh.write(line + "\n")
    return 0 if "error" not in res else 1


def run_inference(args):
    """G in test mode, one face at all five groups (five batch-1 calls): ms per face."""
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    trainer = IPCGANTrainer(seed=args.seed, device=args.device)
    G = trainer.G
    faces = random_batches(1, args.steps, args.seed)
    with torch.no_grad():
        for group in range(NUM_GROUPS):  # moving statistics from training-mode passes
            G(faces[0]["src128"], age_maps(group, 1, 128))
    G.eval()
    maps = [age_maps(group, 1, 128) for group in range(NUM_GROUPS)]

    def one_face(face):
        with torch.no_grad():
            return [G(face["src128"], m) for m in maps]

    for i in range(args.warmup):
        one_face(faces[i % len(faces)])
    times = []
    for face in faces:
        t0 = time.perf_counter()
        one_face(face)
        times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    res = dict(mode="inference", median_ms_per_face=round(med * 1e3, 2), min_ms_per_face=round(min(times) * 1e3, 2),
               max_ms_per_face=round(max(times) * 1e3, 2), faces_per_s=round(1 / med, 3),
               torch=torch.__version__, threads=torch.get_num_threads(), faces=len(faces))
    print(json.dumps(res))
    return 0


# ----------------------------------------------------------------------------- check
def _nchw(a):
    return torch.from_numpy(np.ascontiguousarray(np.transpose(a, (0, 3, 1, 2)))).float()


def _nhwc(t):
    t = t.detach().float()
    return t.permute(0, 2, 3, 1).numpy() if t.dim() == 4 else t.numpy()


def run_check(args):
    torch.set_num_threads(args.threads)
    d = args.check
    weights = dict(np.load(os.path.join(d, "weights.npz")))
    inputs = dict(np.load(os.path.join(d, "inputs.npz")))
    golden = dict(np.load(os.path.join(d, "golden.npz")))
    G, D, A = Generator(), Discriminator(), AlexNetAge()
    load_official(G, D, A, weights)
    counts = dict(generator=count_trainable(G), discriminator=count_trainable(D))
    set_bn_updates(G, False)
    set_bn_updates(D, False)
    A.eval()
    src128, src227 = _nchw(inputs["source_128"]), _nchw(inputs["source_227"])
    real = _nchw(inputs["real_128"])
    n = src128.shape[0]
    rows = []

    def cmp(key, ours):
        ref = golden[key]
        ours = np.asarray(ours, np.float64).reshape(ref.shape)
        diff = float(np.max(np.abs(ours - ref)))
        scale = float(np.max(np.abs(ref)))
        rows.append(dict(key=key, shape=list(ref.shape), max_abs_diff=diff, max_abs_ref=scale,
                         rel=diff / max(scale, 1e-30)))

    with torch.no_grad():
        G.train()
        cmp("g_out_train", np.stack([_nhwc(G(src128, age_maps(t, n, 128))) for t in range(5)]))
        G.eval()
        cmp("g_out_eval", np.stack([_nhwc(G(src128, age_maps(t, n, 128))) for t in range(5)]))
        G.train()
        cmp("d_out_mixed", _nhwc(D(real, age_maps(inputs["age_groups"].tolist(), n, 64))))
        src = A(src227, wanted=AlexNetAge.ORDER)
        for k in AlexNetAge.ORDER:
            cmp("alex_src_" + k, _nhwc(src[k]))
        t, f = int(inputs["target_group"]), int(inputs["false_group"])
        g = G(src128, age_maps(t, n, 128))
        d1, d2 = D(real, age_maps(t, n, 64)), D(real, age_maps(f, n, 64))
        d3 = D(g, age_maps(t, n, 64))
        g227 = g_to_alexnet_input(g)
        gen = A(g227, wanted=AlexNetAge.ORDER)
        cmp("loss_g_out", _nhwc(g))
        for k, v in (("loss_d1", d1), ("loss_d2", d2), ("loss_d3", d3), ("loss_g227", g227)):
            cmp(k, _nhwc(v))
        for k in ("conv5", "pool5", "fc6", "fc7", "new_2", "age_fc8"):
            cmp("alex_gen_" + k, _nhwc(gen[k]))
        l_d = d_loss_fn(d1, d2, d3)
        l_adv, l_fea, l_age = g_losses(d3, gen["conv5"], src["conv5"], gen["age_fc8"], t)
        for k, v in (("L_D", l_d), ("L_adv", l_adv), ("L_fea", l_fea), ("L_age", l_age),
                     ("L_G", l_adv + l_fea + l_age)):
            cmp(k, float(v))
    step_path = os.path.join(d, "golden_step.npz")
    if os.path.exists(step_path):
        rows += check_step(weights, inputs, dict(np.load(step_path)))
    worst = max(r["rel"] for r in rows)
    ok = all(r["rel"] <= args.tol * r.get("tol_scale", 1.0) for r in rows)
    for r in rows:
        print("%-18s %-20s max|diff| %.3e  max|ref| %.3e  rel %.3e%s%s"
              % (r["key"], tuple(r["shape"]), r["max_abs_diff"], r["max_abs_ref"], r["rel"],
                 "  (info only: %.3e)" % r["info_rel"] if "info_rel" in r else "",
                 "  (tol x%g)" % r["tol_scale"] if "tol_scale" in r else ""))
    summary = dict(check_dir=d, worst_rel=worst, param_counts=counts, tolerance=args.tol,
                   ok=bool(ok), torch=torch.__version__)
    print(json.dumps(summary))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(dict(summary, rows=rows), fh, indent=1)
    return 0 if summary["ok"] else 1


def _zero_true_grad(name):
    """Conv biases followed by a BatchNorm: their exact gradient is 0."""
    if not name.endswith("/biases"):
        return False
    if name.startswith("generator/"):
        return not name.startswith("generator/conv4/")
    return name.split("/")[1] in ("dis_1", "dis_2", "dis_3")


def check_step(weights, inputs, ref):
    """One training step from the checkpoint weights vs TF (GradientTape +
    ResourceApplyAdam), both in float64: losses, every D and G gradient, every updated
    parameter, and TF1 Adam on gradients near epsilon. Rows show the worst tensor of each
    group; gradients are scaled by max(max|grad|, 1e-3 * group max) (conv biases right
    before a BN have an exactly-zero true gradient), updated parameters likewise by the
    size of their update."""
    dt = torch.float64
    tr = IPCGANTrainer(seed=0, weights=weights, dtype=dt)
    t, f = int(inputs["target_group"]), int(inputs["false_group"])
    bd = dict(src128=_nchw(inputs["source_128"]).to(dt))
    bg = dict(src128=_nchw(inputs["source2_128"]).to(dt), src227=_nchw(inputs["source2_227"]).to(dt))
    cap = {}
    losses = tr.step(bd, bg, _nchw(inputs["real_128"]).to(dt), t, f, capture=cap)
    table = official_names(tr.G, tr.D, tr.A)
    rows = []
    for key in ("L_D", "L_adv", "L_fea", "L_age"):
        r, o = float(ref["step_" + key]), float(losses[key])
        rows.append(dict(key="step_" + key, shape=[], max_abs_diff=abs(o - r), max_abs_ref=abs(r),
                         rel=abs(o - r) / max(abs(r), 1e-30)))
    for group, prefix, grads in (("grad_d", "discriminator/", cap["grad_d"]),
                                 ("grad_g", "generator/", cap["grad_g"]),
                                 ("new_d", "discriminator/", None), ("new_g", "generator/", None)):
        worst, info = None, None
        names = [k for k in table if k.startswith(prefix) and "moving_" not in k]
        if grads is not None:
            gmax = max(float(np.max(np.abs(ref[group + "/" + k]))) for k in names)
        else:  # largest parameter update in the group
            gmax = max(float(np.max(np.abs(np.asarray(ref["new/" + k], np.float64)
                                           - np.asarray(weights[k], np.float64)))) for k in names)
        for name in names:
            tensor, kind = table[name]
            key = ("new/" if grads is None else group + "/") + name
            r = _to_torch_layout(np.asarray(ref[key], np.float64), kind)
            o = (tensor if grads is None else grads[id(tensor)]).detach().double().numpy()
            diff, scale = float(np.max(np.abs(o - r))), float(np.max(np.abs(r)))
            if grads is None:  # updated params: measure against the size of the update
                start = _to_torch_layout(np.asarray(weights[name], np.float64), kind)
                scale = float(np.max(np.abs(r - start)))
            scale = max(scale, 1e-3 * gmax)
            rel = diff / max(scale, 1e-30)
            row = dict(key="step_%s[%s]" % (group, name), shape=list(r.shape),
                       max_abs_diff=diff, max_abs_ref=scale, rel=rel)
            if grads is None and _zero_true_grad(name):
                # Adam turns round-off-sized gradients into updates of up to ~lr*3e-4:
                # reported, not judged
                if info is None or rel > info["info_rel"]:
                    info = dict(row, key="info:" + row["key"], rel=0.0, info_rel=rel)
            elif worst is None or rel > worst["rel"]:
                worst = row
                if grads is None:
                    # Adam maps the ~1e-7 relative round-off of G's float64 gradients (TF's
                    # legacy resize is float32-only) into update differences of up to ~1e-3
                    # of lr where |grad| is near eps/sqrt(1-b2): judged 10x looser
                    row["tol_scale"] = 10.0
        rows.append(worst)
        if info is not None:
            rows.append(info)
    # TF1 Adam epsilon placement, on gradients around epsilon
    p = nn.Parameter(torch.full((7,), 0.5, dtype=dt))
    opt, plain = TFAdam([p]), None
    q = nn.Parameter(torch.full((7,), 0.5, dtype=dt))
    plain = torch.optim.Adam([q], lr=ADAM_LR, betas=(ADAM_B1, ADAM_B2), eps=ADAM_EPS)
    ours, theirs = [], []
    for g in ref["adam_probe_grads"]:
        p.grad = torch.tensor(g, dtype=dt)
        q.grad = torch.tensor(g, dtype=dt)
        opt.step()
        plain.step()
        ours.append(p.detach().numpy().copy())
        theirs.append(q.detach().numpy().copy())
    r = ref["adam_probe_vars"]
    upd = float(np.max(np.abs(r - 0.5)))
    rows.append(dict(key="adam_probe(TF eps)", shape=list(r.shape),
                     max_abs_diff=float(np.max(np.abs(np.array(ours) - r))), max_abs_ref=upd,
                     rel=float(np.max(np.abs(np.array(ours) - r))) / upd))
    rows.append(dict(key="info:plain_torch_adam", shape=list(r.shape),
                     max_abs_diff=float(np.max(np.abs(np.array(theirs) - r))), max_abs_ref=upd,
                     rel=0.0, info_rel=float(np.max(np.abs(np.array(theirs) - r))) / upd))
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description="IPCGAN PyTorch reference: training-step timing "
                                            "(CPU or CUDA), or --check against TF golden outputs")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                   help="cuda: cuDNN autotuning on, TF32 for float32 unless --strict-fp32")
    p.add_argument("--strict-fp32", action="store_true", help="cuda: no TF32")
    p.add_argument("--compile", action="store_true", help="torch.compile G, D and AlexNet")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=12, help="timed steps")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--bf16", action="store_true", help="autocast forward passes to bfloat16")
    p.add_argument("--channels-last", action="store_true",
                   help="keep weights and activations in channels_last memory format")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None, help="also write the result to this file")
    p.add_argument("--check", default=None, metavar="DIR",
                   help="compare with DIR/golden.npz from a TensorFlow reference run")
    p.add_argument("--tol", type=float, default=1e-3, help="--check: max relative difference")
    p.add_argument("--inference", action="store_true",
                   help="time G in test mode instead: one face at all five groups, batch 1 "
                        "(--steps faces, --warmup untimed)")
    args = p.parse_args(argv)
    if args.inference:
        return run_inference(args)
    if args.check:
        return run_check(args)
    return run_benchmark(args)


if __name__ == "__main__":
    sys.exit(main())
