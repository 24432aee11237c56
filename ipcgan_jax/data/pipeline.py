"""The tf.data input backend (the default): batches of a plan (`ipcgan_jax.data.plan`).

tf.data runs the plan of each step (`tf.numpy_function`), fetches the images by index
(stored datasets hand over the encoded files and TF decodes them, outside the GIL),
applies the docs/faithfulness.md §8 scalings with TF1's legacy bilinear resize
(`tf.compat.v1.image.resize_bilinear`, align_corners=False, no antialias) and prefetches.
`numpy_pipeline` is the same without TensorFlow; `batches` chooses between the two.
"""
from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import tensorflow as tf

from ipcgan_jax.data.plan import BatchPlan, check_steps
from ipcgan_jax.data.sources import FaceSource, decode_images


def _images_at(source: FaceSource, indices: tf.Tensor, flips: tf.Tensor | None) -> tf.Tensor:
    """uint8 (k, H, W, 3) images of `source` at `indices`, mirrored where `flips`."""
    if source.fetch_encoded is not None:
        encoded = tf.numpy_function(source.fetch_encoded, [indices], tf.string, stateful=False)
        encoded.set_shape(indices.shape)
        images = decode_images(encoded)
    else:
        images = tf.numpy_function(source.images, [indices], tf.uint8, stateful=False)
    images.set_shape([indices.shape[0], None, None, 3])
    if flips is None:
        return images
    return tf.where(flips[:, None, None, None], tf.reverse(images, axis=[2]), images)


def _resize(images: tf.Tensor, size: int) -> tf.Tensor:
    # TF1 legacy bilinear (align_corners=False, no half-pixel centres, no antialias).
    return tf.compat.v1.image.resize_bilinear(images, (size, size), align_corners=False)


def _to_pixels(resized: tf.Tensor) -> tf.Tensor:
    return tf.cast(tf.clip_by_value(tf.round(resized), 0.0, 255.0), tf.uint8)


class TfDataBatches:
    """The batches of `plan` made by tf.data: `batch_at(step)` or an iterator of steps."""

    def __init__(self, plan: BatchPlan):
        self.plan = plan

    def _tensors_at(self, step: tf.Tensor) -> dict[str, tf.Tensor]:
        plan = self.plan
        specs = plan.label_specs()

        def arrays(step_value: np.ndarray) -> list[np.ndarray]:
            indices, flips, labels = plan.arrays_at(int(step_value))
            return [indices, flips, *(labels[name] for name in specs)]

        indices, flips, *labels = tf.numpy_function(
            arrays, [step], [tf.int64, tf.bool, *(tf.as_dtype(dtype) for dtype, _ in specs.values())],
            stateful=False)
        indices.set_shape([plan.num_images()])
        flips.set_shape([plan.num_images()])
        for label, (_, shape) in zip(labels, specs.values()):
            label.set_shape(shape)
        images = _images_at(plan.source, indices, flips if plan.flip else None)
        return {**plan.image_fields(images, _resize, _to_pixels), **dict(zip(specs, labels))}

    def batch_at(self, step: int) -> dict[str, np.ndarray]:
        """The batch the iterator yields at `step`, computed on its own."""
        return {name: value.numpy()
                for name, value in self._tensors_at(tf.constant(step, tf.int64)).items()}

    def batches(self, num_steps: int, start_step: int = 0, prefetch: int = 2
                ) -> Iterator[dict[str, np.ndarray]]:
        """Batches of steps start_step .. num_steps - 1, as numpy dicts."""
        check_steps(start_step, num_steps)
        dataset = tf.data.Dataset.range(start_step, num_steps).map(
            self._tensors_at, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        # Without the autotuner, AUTOTUNE maps run at the default parallelism (one call per
        # core). With it, dropping an iterator after a run of minutes stalled 30-50 s (the
        # iterator's destructor waits on the autotuner's thread), between every two runs
        # of the demo; the training speed was the same either way.
        options = tf.data.Options()
        options.autotune.enabled = False
        return dataset.prefetch(prefetch).with_options(options).as_numpy_iterator()

