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
from tensorflow.python.training import moving_averages

tf1 = tf.compat.v1

MEAN = np.array([104.0, 117.0, 124.0], np.float32)
W_GAN, W_FEA, W_AGE = 75.0, 0.5e-4, 30.0
BN_EPS, BN_DECAY = 1e-3, 0.9


def _normal(stddev: float, mean: float = 0.0, seed: int = 0):
    return tf1.random_normal_initializer(mean=mean, stddev=stddev, seed=seed)


class OriginalGraph:
    """Builds G, D and AlexNet (+age head) as the official code did, into the current graph.

    Weights are random (seeded), BN gamma/beta and biases non-trivial, so that every
    mapped variable matters. `updates` collects the moving-average update ops of the
    train-mode BNs (the original's `_extra_train_ops`).
    """

    def __init__(self, seed: int, alexnet_fc: int, alexnet_bottleneck: int,
                 num_identities: int, d_out_features: int = 512, d_bn_epsilon: float = BN_EPS):
        self.seed = seed
        self.alexnet_fc = alexnet_fc
        self.alexnet_bottleneck = alexnet_bottleneck
        self.num_identities = num_identities
        self.d_out_features = d_out_features
        self.d_bn_epsilon = d_bn_epsilon
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

    def batch_norm(self, name, x, mode, collect_updates=True, epsilon=BN_EPS):
        """The official batch_norm(): moments over N,H,W in 'train', moving stats otherwise."""
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
                if collect_updates:
                    self.updates.append(moving_averages.assign_moving_average(moving_mean, mean, BN_DECAY))
                    self.updates.append(moving_averages.assign_moving_average(
                        moving_variance, variance, BN_DECAY))
            else:
                mean, variance = moving_mean, moving_variance
            return tf.nn.batch_normalization(x, mean, variance, beta, gamma, epsilon)

    # ------------------------------------------------------------------ networks
    def generator(self, image, condition, mode="train", reuse=False):
        first = not reuse
        with tf1.variable_scope("generator", reuse=reuse):
            x = tf.concat([image, condition], axis=3)
            x = tf.nn.relu(self.batch_norm("bn1", self.conv2d(x, 32, 7, 1, "conv1"), mode, first))
            x = tf.nn.relu(self.batch_norm("bn2", self.conv2d(x, 64, 3, 2, "conv2"), mode, first))
            x = tf.nn.relu(self.batch_norm("bn3", self.conv2d(x, 128, 3, 2, "conv3"), mode, first))
            for i in range(6):
                with tf1.variable_scope(f"unit_{i}"):
                    orig = x
                    # the quirk: residual() is called without mode, so 'train' always
                    with tf1.variable_scope("sub1"):
                        x = tf.nn.relu(self.batch_norm("bn1", self.conv2d(x, 128, 3, 1, "conv1"),
                                                       "train", first))
                    with tf1.variable_scope("sub2"):
                        x = self.batch_norm("bn2", self.conv2d(x, 128, 3, 1, "conv2"), "train", first)
                    x = x + orig
            x = tf.nn.relu(self.batch_norm("bn4", self.deconv2d(x, 64, "deconv1"), mode, first))
            x = tf.nn.relu(self.batch_norm("bn5", self.deconv2d(x, 32, "deconv2"), mode, first))
            return tf.nn.tanh(self.conv2d(x, 3, 7, 1, "conv4"))

    def discriminator(self, image, condition, reuse=False):
        lrelu = lambda v: tf.maximum(v, 0.2 * v)  # noqa: E731
        eps = self.d_bn_epsilon
        with tf1.variable_scope("discriminator", reuse=reuse):
            first = not reuse
            x = lrelu(self.conv2d(image, 64, 4, 2, "dis"))
            x = tf.concat([x, condition], axis=3)
            x = lrelu(self.batch_norm("dis_bn0", self.conv2d(x, 128, 4, 2, "dis_1"), "train", first, eps))
            x = lrelu(self.batch_norm("dis_bn1", self.conv2d(x, 256, 4, 2, "dis_2"), "train", first, eps))
            x = lrelu(self.batch_norm("dis_bn2", self.conv2d(x, 512, 4, 1, "dis_3"), "train", first, eps))
            return self.conv2d(x, self.d_out_features, 4, 1, "dis_4")

    def _alex_conv(self, x, k, out, stride, name, padding="SAME", groups=1):
        """The Caffe->TF AlexNet port's conv: grouped by tf.split + concat, then ReLU."""
        fan_in = k * k * int(x.shape[-1]) // groups
        with tf1.variable_scope(name):
            w = tf1.get_variable("weights", [k, k, int(x.shape[-1]) // groups, out],
                                 initializer=_normal(np.sqrt(2.0 / fan_in), seed=self._next_seed()))
            b = tf1.get_variable("biases", [out], initializer=_normal(0.5, seed=self._next_seed()))
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
            w = tf1.get_variable("weights", [fan_in, out],
                                 initializer=_normal(np.sqrt(2.0 / fan_in), seed=self._next_seed()))
            b = tf1.get_variable("biases", [out], initializer=_normal(0.5, seed=self._next_seed()))
            y = tf.compat.v1.nn.xw_plus_b(x, w, b)
            return tf.nn.relu(y) if relu else y

    def alexnet(self, x, reuse=False):
        """face_age_alexnet(if_age=True): trunk, identity head and age head in 'alexnet/'."""
        pool = lambda v: tf.nn.max_pool2d(v, [1, 3, 3, 1], [1, 2, 2, 1], "VALID")  # noqa: E731
        lrn = lambda v: tf.nn.local_response_normalization(  # noqa: E731
            v, depth_radius=2, alpha=2e-5, beta=0.75, bias=1.0)
        a = {}
        with tf1.variable_scope("alexnet", reuse=reuse):
            a["conv1"] = self._alex_conv(x, 11, 96, 4, "conv1", padding="VALID")
            h = lrn(pool(a["conv1"]))
            a["conv2"] = self._alex_conv(h, 5, 256, 1, "conv2", groups=2)
            h = lrn(pool(a["conv2"]))
            a["conv3"] = self._alex_conv(h, 3, 384, 1, "conv3")
            a["conv4"] = self._alex_conv(a["conv3"], 3, 384, 1, "conv4", groups=2)
            a["conv5"] = self._alex_conv(a["conv4"], 3, 256, 1, "conv5", groups=2)
            a["pool5"] = pool(a["conv5"])
            flat = tf.reshape(a["pool5"], [-1, 6 * 6 * 256])
            a["fc6"] = self._fc(flat, self.alexnet_fc, "fc6")
            a["fc7"] = self._fc(a["fc6"], self.alexnet_fc, "fc7")
            a["new_1"] = self._fc(a["fc7"], self.alexnet_bottleneck, "new_1")
            a["identity_logits"] = self._fc(a["new_1"], self.num_identities, "new_2", relu=False)
            age = self._fc(flat, self.alexnet_fc, "age_fc6")
            age = self._fc(age, self.alexnet_fc, "age_fc7")
            a["age_logits"] = self._fc(age, 5, "age_fc8", relu=False)
        return a


def one_hot_maps(age_group: np.ndarray, size: int) -> np.ndarray:
    maps = np.zeros((len(age_group), size, size, 5), np.float32)
    maps[np.arange(len(age_group)), :, :, age_group] = 1.0
    return maps


def write_tf1_checkpoint(prefix: str, arrays: dict[str, np.ndarray]) -> str:
    """A name-based TF1 checkpoint holding `arrays` under their names (tf.compat.v1 Saver)."""
    graph = tf.Graph()
    with graph.as_default():
        variables = {name: tf1.Variable(value, name=f"v{i}")
                     for i, (name, value) in enumerate(arrays.items())}
        saver = tf1.train.Saver(var_list=variables)
        with tf1.Session(graph=graph) as session:
            session.run(tf1.global_variables_initializer())
            return saver.save(session, prefix)


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

        # SPEC §5, as the original's train_age_lsgan_transfer
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

        with tf1.Session(graph=graph) as session:
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
        with tf1.Session(graph=graph) as session:
            session.run(tf1.global_variables_initializer())
            return {"images": images, "age_group": age_group, "scores": session.run(scores),
                    "checkpoint": _saver_save(session, tf1.global_variables(),
                                              f"{directory}/d_variant.model-1")}
