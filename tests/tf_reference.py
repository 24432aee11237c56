"""Independent TensorFlow computation of the ORIGINAL IPCGAN graph, for golden tests.

Written with `tf.compat.v1` graph-mode `tf.nn` ops in the shape of the official code
(variable scopes, `weights`/`biases`, `beta`/`gamma`/`moving_*`, `assign_moving_average`
with its zero-debias shadows, the residual blocks always in 'train' BN mode, AlexNet's
grouped convs by tf.split + concat, `resize_bilinear(align_corners=False)`), so the
checkpoints it writes carry the original variable names. It shares no code with
ipcgan_jax.
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf
from tensorflow.core.protobuf import rewriter_config_pb2
from tensorflow.python.training import moving_averages

tf1 = tf.compat.v1

MEAN = np.array([104.0, 117.0, 124.0], np.float32)
W_GAN, W_FEA, W_AGE = 75.0, 0.5e-4, 30.0
BN_EPS, BN_DECAY = 1e-3, 0.9
# tf.train.AdamOptimizer(1e-3, beta1=0.5) of the original, with TF's default beta2 and epsilon
ADAM_LR, ADAM_B1, ADAM_B2, ADAM_EPS = 1e-3, 0.5, 0.999, 1e-8
# Sessions without Grappler's graph rewrites: they only cost time on graphs this small.
FAST_SESSION = tf1.ConfigProto(graph_options=tf1.GraphOptions(
    rewrite_options=rewriter_config_pb2.RewriterConfig(disable_meta_optimizer=True)))


def _normal(stddev: float, mean: float = 0.0, seed: int = 0):
    return tf1.random_normal_initializer(mean=mean, stddev=stddev, seed=seed)


class OriginalGraph:
    """Builds G, D and AlexNet (+age head) as the official code did, into the current graph.

    Weights are random (seeded), BN gamma/beta and biases non-trivial, so that every
    mapped variable matters. `updates` collects the moving-average update ops of the
    train-mode BNs (the original's `_extra_train_ops`) of the first call of each network;
    a call given its own `updates` list collects that call's into it instead.
    The widths default to the original's; the training-step reference narrows them.
    """

    def __init__(self, seed: int, alexnet_fc: int, alexnet_bottleneck: int,
                 num_identities: int, d_out_features: int = 512, d_bn_epsilon: float = BN_EPS,
                 g_base: int = 32, g_res_blocks: int = 6, d_base: int = 64,
                 alexnet_conv: tuple[int, ...] = (96, 256, 384, 384, 256), alexnet_age_fc: int | None = None,
                 alexnet_init_scale: float = 1.0):
        self.seed = seed
        self.alexnet_fc = alexnet_fc
        self.alexnet_bottleneck = alexnet_bottleneck
        self.num_identities = num_identities
        self.d_out_features = d_out_features
        self.d_bn_epsilon = d_bn_epsilon
        self.g_base = g_base
        self.g_res_blocks = g_res_blocks
        self.d_base = d_base
        self.alexnet_conv = tuple(alexnet_conv)
        self.alexnet_age_fc = alexnet_age_fc or alexnet_fc
        self.alexnet_init_scale = alexnet_init_scale
        self.updates: list = []

    def _next_seed(self) -> int:
        self.seed += 1
        return self.seed

    # ------------------------------------------------------------------ layers
    def conv2d(self, x, out, k, stride, name, stddev=0.02, padding="SAME"):
        with tf1.variable_scope(name):
            w = tf1.get_variable("weights", [k, k, int(x.shape[-1]), out],
                                 initializer=_normal(stddev, seed=self._next_seed()))
            b = tf1.get_variable("biases", [out], initializer=_normal(0.05, seed=self._next_seed()))
            return tf.nn.conv2d(x, w, [1, stride, stride, 1], padding) + b

    def deconv2d(self, x, out, name):
        n, h, w_, c = (int(d) for d in x.shape)
        with tf1.variable_scope(name):
            w = tf1.get_variable("weights", [3, 3, out, c], initializer=_normal(0.02, seed=self._next_seed()))
            b = tf1.get_variable("biases", [out], initializer=_normal(0.05, seed=self._next_seed()))
            return tf.nn.conv2d_transpose(x, w, [n, 2 * h, 2 * w_, out], [1, 2, 2, 1], "SAME") + b

    def batch_norm(self, name, x, mode, updates=None, epsilon=BN_EPS):
        """The official batch_norm(): moments over N,H,W in 'train', moving stats otherwise.
        In 'train' the moving-average update ops go to the list `updates` (None: dropped)."""
        with tf1.variable_scope(name):
            shape = [int(x.shape[-1])]
            beta = tf1.get_variable("beta", shape, initializer=_normal(0.1, seed=self._next_seed()))
            gamma = tf1.get_variable("gamma", shape, initializer=_normal(0.1, 1.0, seed=self._next_seed()))
            moving_mean = tf1.get_variable("moving_mean", shape, initializer=tf1.zeros_initializer(),
                                           trainable=False)
            moving_variance = tf1.get_variable("moving_variance", shape,
                                               initializer=tf1.ones_initializer(), trainable=False)
            if mode == "train":
                mean, variance = tf.nn.moments(x, [0, 1, 2])
                if updates is not None:
                    updates.append(moving_averages.assign_moving_average(moving_mean, mean, BN_DECAY))
                    updates.append(moving_averages.assign_moving_average(moving_variance, variance, BN_DECAY))
            else:
                mean, variance = moving_mean, moving_variance
            return tf.nn.batch_normalization(x, mean, variance, beta, gamma, epsilon)

    # ------------------------------------------------------------------ networks
    def _updates(self, reuse, updates):
        return updates if updates is not None else (None if reuse else self.updates)

    def generator(self, image, condition, mode="train", reuse=False, updates=None):
        first = self._updates(reuse, updates)
        f = self.g_base
        with tf1.variable_scope("generator", reuse=reuse):
            x = tf.concat([image, condition], axis=3)
            x = tf.nn.relu(self.batch_norm("bn1", self.conv2d(x, f, 7, 1, "conv1"), mode, first))
            x = tf.nn.relu(self.batch_norm("bn2", self.conv2d(x, 2 * f, 3, 2, "conv2"), mode, first))
            x = tf.nn.relu(self.batch_norm("bn3", self.conv2d(x, 4 * f, 3, 2, "conv3"), mode, first))
            for i in range(self.g_res_blocks):
                with tf1.variable_scope(f"unit_{i}"):
                    orig = x
                    # the quirk: residual() is called without mode, so 'train' always
                    with tf1.variable_scope("sub1"):
                        x = tf.nn.relu(self.batch_norm("bn1", self.conv2d(x, 4 * f, 3, 1, "conv1"),
                                                       "train", first))
                    with tf1.variable_scope("sub2"):
                        x = self.batch_norm("bn2", self.conv2d(x, 4 * f, 3, 1, "conv2"), "train", first)
                    x = x + orig
            x = tf.nn.relu(self.batch_norm("bn4", self.deconv2d(x, 2 * f, "deconv1"), mode, first))
            x = tf.nn.relu(self.batch_norm("bn5", self.deconv2d(x, f, "deconv2"), mode, first))
            return tf.nn.tanh(self.conv2d(x, 3, 7, 1, "conv4"))

    def discriminator(self, image, condition, reuse=False, updates=None):
        lrelu = lambda v: tf.maximum(v, 0.2 * v)  # noqa: E731
        eps = self.d_bn_epsilon
        f = self.d_base
        with tf1.variable_scope("discriminator", reuse=reuse):
            first = self._updates(reuse, updates)
            x = lrelu(self.conv2d(image, f, 4, 2, "dis"))
            x = tf.concat([x, condition], axis=3)
            x = lrelu(self.batch_norm("dis_bn0", self.conv2d(x, 2 * f, 4, 2, "dis_1"), "train", first, eps))
            x = lrelu(self.batch_norm("dis_bn1", self.conv2d(x, 4 * f, 4, 2, "dis_2"), "train", first, eps))
            x = lrelu(self.batch_norm("dis_bn2", self.conv2d(x, 8 * f, 4, 1, "dis_3"), "train", first, eps))
            return self.conv2d(x, self.d_out_features, 4, 1, "dis_4")

    def _alex_conv(self, x, k, out, stride, name, padding="SAME", groups=1):
        """The Caffe->TF AlexNet port's conv: grouped by tf.split + concat, then ReLU."""
        fan_in = k * k * int(x.shape[-1]) // groups
        with tf1.variable_scope(name):
            scale = self.alexnet_init_scale
            w = tf1.get_variable("weights", [k, k, int(x.shape[-1]) // groups, out],
                                 initializer=_normal(scale * np.sqrt(2.0 / fan_in), seed=self._next_seed()))
            b = tf1.get_variable("biases", [out], initializer=_normal(scale * 0.5, seed=self._next_seed()))
            convolve = lambda i, kk: tf.nn.conv2d(i, kk, [1, stride, stride, 1], padding)  # noqa: E731
            if groups == 1:
                y = convolve(x, w)
            else:
                parts = [convolve(i, kk) for i, kk in zip(tf.split(x, groups, axis=3),
                                                          tf.split(w, groups, axis=3))]
                y = tf.concat(parts, axis=3)
            return tf.nn.relu(y + b)

    def _fc(self, x, out, name, relu=True):
        fan_in = int(x.shape[-1])
        with tf1.variable_scope(name):
            scale = self.alexnet_init_scale
            w = tf1.get_variable("weights", [fan_in, out],
                                 initializer=_normal(scale * np.sqrt(2.0 / fan_in), seed=self._next_seed()))
            b = tf1.get_variable("biases", [out], initializer=_normal(scale * 0.5, seed=self._next_seed()))
            y = tf.compat.v1.nn.xw_plus_b(x, w, b)
            return tf.nn.relu(y) if relu else y

    def alexnet(self, x, reuse=False):
        """face_age_alexnet(if_age=True): trunk, identity head and age head in 'alexnet/'."""
        pool = lambda v: tf.nn.max_pool2d(v, [1, 3, 3, 1], [1, 2, 2, 1], "VALID")  # noqa: E731
        lrn = lambda v: tf.nn.local_response_normalization(  # noqa: E731
            v, depth_radius=2, alpha=2e-5, beta=0.75, bias=1.0)
        a = {}
        c1, c2, c3, c4, c5 = self.alexnet_conv
        with tf1.variable_scope("alexnet", reuse=reuse):
            a["conv1"] = self._alex_conv(x, 11, c1, 4, "conv1", padding="VALID")
            h = lrn(pool(a["conv1"]))
            a["conv2"] = self._alex_conv(h, 5, c2, 1, "conv2", groups=2)
            h = lrn(pool(a["conv2"]))
            a["conv3"] = self._alex_conv(h, 3, c3, 1, "conv3")
            a["conv4"] = self._alex_conv(a["conv3"], 3, c4, 1, "conv4", groups=2)
            a["conv5"] = self._alex_conv(a["conv4"], 3, c5, 1, "conv5", groups=2)
            a["pool5"] = pool(a["conv5"])
            _, ph, pw, pc = (int(d) for d in a["pool5"].shape)  # 6 x 6 x 256 at 227
            flat = tf.reshape(a["pool5"], [-1, ph * pw * pc])
            a["fc6"] = self._fc(flat, self.alexnet_fc, "fc6")
            a["fc7"] = self._fc(a["fc6"], self.alexnet_fc, "fc7")
            a["new_1"] = self._fc(a["fc7"], self.alexnet_bottleneck, "new_1")
            a["identity_logits"] = self._fc(a["new_1"], self.num_identities, "new_2", relu=False)
            age = self._fc(flat, self.alexnet_age_fc, "age_fc6")
            age = self._fc(age, self.alexnet_age_fc, "age_fc7")
            a["age_logits"] = self._fc(age, 5, "age_fc8", relu=False)
        return a


def one_hot_maps(age_group: np.ndarray, size: int) -> np.ndarray:
    maps = np.zeros((len(age_group), size, size, 5), np.float32)
    maps[np.arange(len(age_group)), :, :, age_group] = 1.0
    return maps


def write_tf1_checkpoint(prefix: str, arrays: dict[str, np.ndarray]) -> str:
    """A name-based TF1 checkpoint holding `arrays` under their names: the tensor bundle
    that tf.compat.v1's Saver writes (its SaveV2 op), without building variables. Eager:
    call it outside a graph context."""
    names = list(arrays)
    tf.raw_ops.SaveV2(prefix=prefix, tensor_names=names, shape_and_slices=[""] * len(names),
                      tensors=[tf.constant(arrays[name]) for name in names])
    return prefix


def _saver_save(session, var_list, prefix: str) -> str:
    return tf1.train.Saver(var_list=var_list).save(session, prefix)


def compute_golden(directory: str, *, seed: int = 0, batch: int = 2, alexnet_fc: int = 128,
                   alexnet_bottleneck: int = 32, num_identities: int = 40) -> dict:
    """Runs the original graph on seeded random data and writes its TF1 checkpoints.

    The BN moving statistics are made non-trivial by two train-mode update rounds on other
    data before anything is saved. Writes under `directory`:
      acgan.model-1       generator/ and discriminator/ (+ shadows, Adam slots, beta powers,
                          global_step), as the original GAN saver
      acgan_updated.model-1  the same after one more update round on the test batch
      alexnet.model-1     alexnet/ trunk, identity head and alexnet/age_fc6..8
      age_classifier.model-1  age_fc6..8 without the alexnet/ prefix
    Returns the inputs, the outputs and the checkpoint prefixes.
    """
    rng = np.random.RandomState(seed)
    pixels = lambda: rng.uniform(0, 255, (batch, 150, 150, 3)).astype(np.float32)  # noqa: E731
    groups = lambda: rng.randint(0, 5, batch)  # noqa: E731
    feeds = []
    for _ in range(4):  # two warm-up update rounds, the test batch, the extra update (= test)
        feeds.append(dict(source_pixels=pixels(), real_pixels=pixels(), age_group=groups(),
                          false_group=groups()))
    feeds[3] = feeds[2]
    graph = tf.Graph()
    out: dict = {"inputs": feeds[2]}
    with graph.as_default():
        tf1.set_random_seed(seed)
        source_pixels = tf1.placeholder(tf.float32, [batch, 150, 150, 3])
        real_pixels = tf1.placeholder(tf.float32, [batch, 150, 150, 3])
        cond128 = tf1.placeholder(tf.float32, [batch, 128, 128, 5])
        true64 = tf1.placeholder(tf.float32, [batch, 64, 64, 5])
        false64 = tf1.placeholder(tf.float32, [batch, 64, 64, 5])
        age_label = tf1.placeholder(tf.int32, [batch])
        resize = lambda v, s: tf1.image.resize_bilinear(v, [s, s], align_corners=False)  # noqa: E731
        source_128 = resize(source_pixels, 128) - MEAN
        source_227 = resize(source_pixels, 227) - MEAN
        real = resize(real_pixels, 128) / 127.5 - 1.0

        net = OriginalGraph(seed, alexnet_fc, alexnet_bottleneck, num_identities)
        g_train = net.generator(source_128, cond128, "train")
        g_test = net.generator(source_128, cond128, "test", reuse=True)
        d1 = net.discriminator(real, true64)
        d2 = net.discriminator(real, false64, reuse=True)
        d3 = net.discriminator(g_train, true64, reuse=True)
        alex_source = net.alexnet(source_227)
        g_alexnet_input = resize((g_train + 1.0) * 127.5, 227) - MEAN
        alex_generated = net.alexnet(g_alexnet_input, reuse=True)

        # docs/faithfulness.md §7, as the original's train_age_lsgan_transfer
        d_loss = W_GAN * 0.5 * (tf.reduce_mean(tf.square(d1 - 1.0)) + 0.5 * (
            tf.reduce_mean(tf.square(d2)) + tf.reduce_mean(tf.square(d3))))
        adv_loss = W_GAN * 0.5 * tf.reduce_mean(tf.square(d3 - 1.0))
        fea_loss = W_FEA * tf.reduce_mean(tf.reduce_sum(
            tf.square(alex_generated["conv5"] - alex_source["conv5"]), axis=[1, 2, 3]))
        age_loss = W_AGE * tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
            logits=alex_generated["age_logits"], labels=age_label))

        global_step = tf1.train.get_or_create_global_step()
        d_vars = [v for v in tf1.trainable_variables() if "discriminator" in v.name]
        optimizer = tf1.train.AdamOptimizer(1e-3, beta1=0.5)
        optimizer.minimize(d_loss, var_list=d_vars, global_step=global_step)
        bookkeeping = [global_step] + optimizer.variables()

        gan_vars = [v for v in tf1.global_variables() if not v.name.startswith("alexnet/")]
        alexnet_vars = [v for v in tf1.global_variables() if v.name.startswith("alexnet/")]
        age_vars = {v.op.name[len("alexnet/"):]: v for v in alexnet_vars if "/age_fc" in v.name}

        def feed_dict(f):
            return {source_pixels: f["source_pixels"], real_pixels: f["real_pixels"],
                    cond128: one_hot_maps(f["age_group"], 128),
                    true64: one_hot_maps(f["age_group"], 64),
                    false64: one_hot_maps(f["false_group"], 64), age_label: f["age_group"]}

        with tf1.Session(graph=graph, config=FAST_SESSION) as session:
            session.run(tf1.global_variables_initializer())
            for f in feeds[:2]:
                session.run(net.updates, feed_dict(f))
            out["acgan"] = _saver_save(session, gan_vars, f"{directory}/acgan.model-1")
            out["alexnet"] = _saver_save(session, alexnet_vars, f"{directory}/alexnet.model-1")
            out["age_classifier"] = _saver_save(session, age_vars, f"{directory}/age_classifier.model-1")
            fetched = session.run(dict(
                source_128=source_128, source_227=source_227, real=real,
                g_train=g_train, g_test=g_test, d1=d1, d2=d2, d3=d3,
                g_alexnet_input=g_alexnet_input, alexnet_source=alex_source,
                alexnet_generated=alex_generated, d_loss=d_loss, adv_loss=adv_loss,
                fea_loss=fea_loss, age_loss=age_loss), feed_dict(feeds[2]))
            out.update(fetched)
            session.run(net.updates, feed_dict(feeds[3]))
            out["acgan_updated"] = _saver_save(session, gan_vars, f"{directory}/acgan_updated.model-1")
        out["bookkeeping_names"] = sorted(v.op.name for v in bookkeeping)
        out["num_gan_variables"] = len(gan_vars)
    return out


def compute_discriminator_variant(directory: str, *, seed: int = 1, batch: int = 2) -> dict:
    """The users' D variant (1 output channel, BN epsilon 1e-5), saved and evaluated."""
    rng = np.random.RandomState(seed)
    images = rng.uniform(-1, 1, (batch, 128, 128, 3)).astype(np.float32)
    age_group = rng.randint(0, 5, batch)
    graph = tf.Graph()
    with graph.as_default():
        tf1.set_random_seed(seed)
        net = OriginalGraph(seed, 8, 8, 8, d_out_features=1, d_bn_epsilon=1e-5)
        scores = net.discriminator(tf.constant(images), tf.constant(one_hot_maps(age_group, 64)))
        with tf1.Session(graph=graph, config=FAST_SESSION) as session:
            session.run(tf1.global_variables_initializer())
            return {"images": images, "age_group": age_group, "scores": session.run(scores),
                    "checkpoint": _saver_save(session, tf1.global_variables(),
                                              f"{directory}/d_variant.model-1")}


def apply_adam(variables: list, gradients: list, slots: dict, step: int) -> list:
    """TF's own Adam kernel, the op tf.train.AdamOptimizer runs, on each resource variable
    at optimizer step `step` (1 for the first): ResourceApplyAdam with the bias-correction
    powers beta^step as the optimizer keeps them (float32)."""
    return [tf.raw_ops.ResourceApplyAdam(
        var=var.handle, m=slots[var.op.name][0].handle, v=slots[var.op.name][1].handle,
        beta1_power=np.float32(ADAM_B1) ** step, beta2_power=np.float32(ADAM_B2) ** step,
        lr=np.float32(ADAM_LR), beta1=np.float32(ADAM_B1), beta2=np.float32(ADAM_B2),
        epsilon=np.float32(ADAM_EPS), grad=grad) for var, grad in zip(variables, gradients)]


def adam_slots(variables: list) -> dict:
    """name -> (m, v), zero-initialised and named as TF1's Adam slots."""
    return {v.op.name: (tf1.Variable(tf.zeros(v.shape), name=f"{v.op.name}/Adam"),
                        tf1.Variable(tf.zeros(v.shape), name=f"{v.op.name}/Adam_1")) for v in variables}


def compute_golden_step(directory: str, *, seed: int = 0, batch: int, image_size: int, alexnet_size: int,
                        g_base: int, g_res_blocks: int, d_base: int, d_out_features: int,
                        alexnet_conv: tuple[int, ...], alexnet_fc: int, alexnet_bottleneck: int,
                        num_identities: int, alexnet_age_fc: int, alexnet_init_scale: float = 0.5,
                        target_group: int = 2, false_group: int = 4) -> dict:
    """One step of the original (docs/faithfulness.md §7-§10), narrowed, from seeded weights.

    Builds the original's single graph: G on a source placeholder, D1 = D(x_t, c_t),
    D2 = D(x_t, c_f), D3 = D(G(x_s), c_t), frozen AlexNet features and age logits of x_s
    and of G's output; the D step runs it on one source batch, the G step on a fresh one.
    Per step, in order:
      D step: G's and D's BN moving averages (D's three passes in the order D1, D2, D3:
        TF leaves their order open), the D loss and its gradients, TF's Adam on D;
      G step: G's BN moving averages, the G loss and its gradients against the updated
        D, TF's Adam on G.
    The original's G step also refreshed D's statistics from D1 and D2 (and D3 again);
    nothing reads them (D always runs on batch statistics), so this reference, like the
    step under test, leaves them.

    AlexNet's random weights are scaled by `alexnet_init_scale` per layer, so that its age
    logits stay in a range where the softmax is not saturated (as a trained head's).
    The BN statistics are warmed by two update rounds on other data first; the Adam
    slots start at zero (the run's first step). One target group and one false group
    per batch (docs/faithfulness.md §10). Writes TF1 checkpoints (original variable
    names) under `directory`:
      initial.model-1    G and D (with the zero-debias shadows) before the step
      alexnet.model-1    the frozen AlexNet trunk with its age head (alexnet/age_fc*)
      after.model-1      G and D after the step
      d_grad.model-1, g_grad.model-1, adam_v.model-1
                         G and D after the step with each trainable variable replaced by
                         its gradient (D's in the D step, G's in the G step) or by its
                         second Adam moment v after the step
    Returns those prefixes, the batch as the step takes it (source_d, source_g,
    source_g_alexnet, real, target_group, false_group) and the weighted losses
    (d_loss, adv_loss, fea_loss, age_loss, g_loss).
    """
    rng = np.random.RandomState(seed)
    pixels = lambda: rng.uniform(0, 255, (batch, 150, 150, 3)).astype(np.float32)  # noqa: E731
    target = np.full(batch, target_group, np.int32)
    false = np.full(batch, false_group, np.int32)
    half = image_size // 2
    graph = tf.Graph()
    out: dict = {}
    with graph.as_default():
        tf1.set_random_seed(seed)
        source_pixels = tf1.placeholder(tf.float32, [batch, 150, 150, 3])
        real_pixels = tf1.placeholder(tf.float32, [batch, 150, 150, 3])
        resize = lambda v, s: tf1.image.resize_bilinear(v, [s, s], align_corners=False)  # noqa: E731
        # the step's inputs, computed from pixels as the original's data code did
        # (docs/faithfulness.md §8)
        scaled = dict(source=resize(source_pixels, image_size) - MEAN,
                      source_alexnet=resize(source_pixels, alexnet_size) - MEAN,
                      real=resize(real_pixels, image_size) / 127.5 - 1.0)
        source = tf1.placeholder(tf.float32, [batch, image_size, image_size, 3])
        source_alexnet = tf1.placeholder(tf.float32, [batch, alexnet_size, alexnet_size, 3])
        real = tf1.placeholder(tf.float32, [batch, image_size, image_size, 3])
        label = tf1.placeholder(tf.int32, [batch])
        cond_g = tf1.placeholder(tf.float32, [batch, image_size, image_size, 5])
        cond_true = tf1.placeholder(tf.float32, [batch, half, half, 5])
        cond_false = tf1.placeholder(tf.float32, [batch, half, half, 5])

        net = OriginalGraph(seed, alexnet_fc, alexnet_bottleneck, num_identities,
                            d_out_features=d_out_features, g_base=g_base, g_res_blocks=g_res_blocks,
                            d_base=d_base, alexnet_conv=alexnet_conv, alexnet_age_fc=alexnet_age_fc,
                            alexnet_init_scale=alexnet_init_scale)
        g_updates, d1_updates, d2_updates, d3_updates = [], [], [], []
        generated = net.generator(source, cond_g, "train", updates=g_updates)
        d1 = net.discriminator(real, cond_true, updates=d1_updates)
        d2 = net.discriminator(real, cond_false, reuse=True, updates=d2_updates)
        d3 = net.discriminator(generated, cond_true, reuse=True, updates=d3_updates)
        alex_source = net.alexnet(source_alexnet)
        alex_generated = net.alexnet(resize((generated + 1.0) * 127.5, alexnet_size) - MEAN, reuse=True)

        # docs/faithfulness.md §7
        losses = dict(
            d_loss=W_GAN * 0.5 * (tf.reduce_mean(tf.square(d1 - 1.0)) + 0.5 * (
                tf.reduce_mean(tf.square(d2)) + tf.reduce_mean(tf.square(d3)))),
            adv_loss=W_GAN * 0.5 * tf.reduce_mean(tf.square(d3 - 1.0)),
            fea_loss=W_FEA * tf.reduce_mean(tf.reduce_sum(
                tf.square(alex_generated["conv5"] - alex_source["conv5"]), axis=[1, 2, 3])),
            age_loss=W_AGE * tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
                logits=alex_generated["age_logits"], labels=label)))
        losses["g_loss"] = losses["adv_loss"] + losses["fea_loss"] + losses["age_loss"]

        gan_vars = [v for v in tf1.global_variables() if not v.name.startswith("alexnet/")]
        alexnet_vars = [v for v in tf1.global_variables() if v.name.startswith("alexnet/")]
        trainable = {net_name: [v for v in tf1.trainable_variables() if v.name.startswith(net_name + "/")]
                     for net_name in ("generator", "discriminator")}
        slots = adam_slots(trainable["generator"] + trainable["discriminator"])
        gradients, feeds, apply = {}, {}, {}
        for net_name, loss in (("discriminator", losses["d_loss"]), ("generator", losses["g_loss"])):
            variables = trainable[net_name]
            gradients[net_name] = tf.gradients(loss, variables)
            # the applied gradients are fed back: exactly the values reported
            feeds[net_name] = [tf1.placeholder(tf.float32, v.shape) for v in variables]
            apply[net_name] = apply_adam(variables, feeds[net_name], slots, step=1)

        def feed(source_batch, real_batch, groups, false_groups, alexnet_batch=None):
            f = {source: source_batch, real: real_batch, label: groups,
                 cond_g: one_hot_maps(groups, image_size), cond_true: one_hot_maps(groups, half),
                 cond_false: one_hot_maps(false_groups, half)}
            if alexnet_batch is not None:
                f[source_alexnet] = alexnet_batch
            return f

        with tf1.Session(graph=graph, config=FAST_SESSION) as session:
            session.run(tf1.global_variables_initializer())
            batches = {}
            for name in ("warm_1", "warm_2", "d_step", "g_step"):
                batches[name] = session.run(scaled, {source_pixels: pixels(), real_pixels: pixels()})
            groups = rng.randint(0, 5, batch).astype(np.int32)
            for name in ("warm_1", "warm_2"):  # non-trivial moving statistics (mixed groups)
                b = batches[name]
                session.run(g_updates + d1_updates, feed(b["source"], b["real"], groups, (groups + 1) % 5))
            out["initial"] = _saver_save(session, gan_vars, f"{directory}/initial.model-1")
            out["alexnet"] = _saver_save(session, alexnet_vars, f"{directory}/alexnet.model-1")

            # ---- D step
            b = batches["d_step"]
            d_feed = feed(b["source"], b["real"], target, false)
            for updates in (g_updates, d1_updates, d2_updates, d3_updates):
                session.run(updates, d_feed)
            d_loss, d_grads = session.run((losses["d_loss"], gradients["discriminator"]), d_feed)
            session.run(apply["discriminator"], dict(zip(feeds["discriminator"], d_grads)))

            # ---- G step: a fresh source batch, against the updated D
            g = batches["g_step"]
            g_feed = feed(g["source"], b["real"], target, false, alexnet_batch=g["source_alexnet"])
            session.run(g_updates, g_feed)
            g_losses, g_grads = session.run(
                ({k: losses[k] for k in ("adv_loss", "fea_loss", "age_loss", "g_loss")},
                 gradients["generator"]), g_feed)
            session.run(apply["generator"], dict(zip(feeds["generator"], g_grads)))

            out["after"] = _saver_save(session, gan_vars, f"{directory}/after.model-1")
            after = session.run({v.op.name: v for v in gan_vars})
            slot_values = session.run(slots)
        names = {net_name: [v.op.name for v in trainable[net_name]] for net_name in trainable}
        views = {"d_grad": dict(zip(names["discriminator"], d_grads)), "g_grad": dict(zip(names["generator"], g_grads)),
                 "adam_v": {k: v for k, (_, v) in slot_values.items()}}
    for name, replaced in views.items():
        out[name] = write_tf1_checkpoint(f"{directory}/{name}.model-1", {**after, **replaced})
    out["losses"] = {"d_loss": d_loss, **g_losses}
    out["batch"] = dict(source_d=b["source"], source_g=g["source"], source_g_alexnet=g["source_alexnet"],
                        real=b["real"], target_group=target, false_group=false)
    return out
