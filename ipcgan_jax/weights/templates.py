"""Variables templates: the names and shapes (no values) of each network's variables,
faithful sizes by default, that the weight readers fill and check against."""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from ipcgan_jax.constants import ALEXNET_AGE_HEAD_LAYERS
from ipcgan_jax.models import AlexNet, Discriminator, Generator

Variables = dict[str, Any]


def shape_template(module: Any, *args: Any, **kwargs: Any) -> Variables:
    """`module.init(key, *args, **kwargs)` as shapes only."""
    # eval_shape allocates nothing (the faithful AlexNet has 100M+ params)
    return dict(jax.eval_shape(lambda: module.init(jax.random.key(0), *args, **kwargs)))


def generator_variables_template(generator: Generator | None = None,
                                 image_size: int = 128) -> Variables:
    """Shapes of the generator's variables (params, batch_stats), faithful by default."""
    generator = generator or Generator()
    return shape_template(generator, jnp.zeros((1, image_size, image_size, 3)),
                          jnp.zeros((1,), jnp.int32), train=False)


def discriminator_variables_template(discriminator: Discriminator | None = None,
                                     image_size: int = 128) -> Variables:
    """Shapes of the discriminator's variables (params, batch_stats), faithful by default."""
    discriminator = discriminator or Discriminator()
    return shape_template(discriminator, jnp.zeros((1, image_size, image_size, 3)),
                          jnp.zeros((1,), jnp.int32), train=False)


def alexnet_variables_template(alexnet: AlexNet | None = None, image_size: int = 227) -> Variables:
    """Shapes of the AlexNet trunk and identity head params (conv1..5, fc6, fc7, new_1, new_2)."""
    alexnet = alexnet or AlexNet()
    return shape_template(alexnet, jnp.zeros((1, image_size, image_size, 3)),
                          outputs=("identity_logits",))


def age_classifier_variables_template(alexnet: AlexNet | None = None,
                                      image_size: int = 227) -> Variables:
    """Shapes of the age head params (age_fc6..age_fc8) that sits on the AlexNet trunk."""
    alexnet = alexnet or AlexNet()
    full = shape_template(alexnet, jnp.zeros((1, image_size, image_size, 3)), outputs=("age_logits",))
    return {"params": {name: full["params"][name] for name in ALEXNET_AGE_HEAD_LAYERS}}
