"""ipcgan_jax: IPCGAN face aging (Wang et al., CVPR 2018) in JAX/Flax."""
__version__ = "0.1.0"
