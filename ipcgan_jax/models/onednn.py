"""Convolutions on a CPU by oneDNN, the library behind PyTorch's CPU convolutions.

XLA's CPU convolutions ran 1.1-5.5x below PyTorch's per layer of the faithful step
(benchmarks/README.md, "Per-layer profile"). `conv_onednn` runs a conv's forward pass,
data gradient and weight gradient as oneDNN primitives, each an XLA FFI custom call inside
a `custom_vjp`, so the compiled step calls them like any other op, on XLA's own buffers.
oneDNN's C API and XLA's FFI call frame are bound with ctypes; the library is the
`onednn-cpu-gomp` wheel's (requirements.txt), so nothing is compiled. The same function as
`lax.conv_general_dilated`, up to float summation order (tests/test_onednn.py).

Activations stay NHWC and kernels HWIO in JAX; oneDNN picks its own kernel layout and the
weights are reordered into it on every call (kernels are small next to activations); the
weight gradient reads its activations in oneDNN's blocked layout. Calls are serialised by
one lock: each already uses every core through OpenMP.

Under data parallelism over several devices XLA gathers a custom call's operands onto each
device (it cannot split an opaque call), so 'onednn' is for one CPU device; the GPU runs
XLA's conv (models.layers.conv_function).
"""
from __future__ import annotations

import ctypes
import functools
import os
import sys
import threading
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ipcgan_jax.models.conv_args import check_nhwc_without_dilation

LIBRARY_ENV = "IPCGAN_ONEDNN_LIBRARY"
INSTALL_HINT = "pip install onednn-cpu-gomp==2023.2.0 (in requirements.txt)"

# oneDNN v3 C API constants (oneapi/dnnl/dnnl_types.h, dnnl_common_types.h; stable across
# v3.x, checked against the 2023.2 library by tests/test_onednn.py's value tests).
_F32, _CPU, _STREAM_DEFAULT, _SCRATCHPAD_USER = 3, 1, 1, 1
_TAG_ANY, _TAG_NHWC, _TAG_HWIO, _TAG_GROUPED_HWIO = 1, 22, 28, 39  # grouped: goihw stored as decab
_FORWARD_TRAINING, _CONVOLUTION_DIRECT = 64, 1
_QUERY_SRC, _QUERY_WEIGHTS, _QUERY_DIFF_WEIGHTS, _QUERY_DIFF_DST, _QUERY_SCRATCHPAD = 129, 131, 132, 134, 136
_ARG_SRC, _ARG_DST, _ARG_WEIGHTS, _ARG_SCRATCHPAD = 1, 17, 33, 80
_ARG_DIFF_SRC, _ARG_DIFF_DST, _ARG_DIFF_WEIGHTS = 129, 145, 161


class _ExecArg(ctypes.Structure):
    _fields_ = [("arg", ctypes.c_int), ("memory", ctypes.c_void_p)]


def library_path() -> str:
    """Where libdnnl is: $IPCGAN_ONEDNN_LIBRARY, else the wheel's copy under sys.prefix/lib."""
    return os.environ.get(LIBRARY_ENV) or os.path.join(sys.prefix, "lib", "libdnnl.so.3")


def is_available() -> bool:
    return os.path.exists(library_path())


class _Runtime:
    """The loaded library, one CPU engine and one stream."""

    def __init__(self) -> None:
        path = library_path()
        if not os.path.exists(path):
            raise RuntimeError(f"conv_impl 'onednn' needs the oneDNN library, not found at {path}: "
                               f"{INSTALL_HINT}, or set {LIBRARY_ENV}")
        # OpenMP threads that spin after each call take the cores XLA's own threads need
        # (spinning ran the batch-8 step 5-6% slower: benchmarks/README.md).
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        lib = ctypes.CDLL(path)
        p = ctypes.c_void_p
        lib.dnnl_primitive_desc_query_md.restype = p
        lib.dnnl_primitive_desc_query_md.argtypes = [p, ctypes.c_int, ctypes.c_int]
        lib.dnnl_memory_desc_get_size.restype = ctypes.c_size_t
        lib.dnnl_memory_desc_get_size.argtypes = [p]
        lib.dnnl_memory_desc_equal.argtypes = [p, p]
        lib.dnnl_memory_create.argtypes = [p, p, p, p]
        lib.dnnl_memory_destroy.argtypes = [p]
        lib.dnnl_primitive_execute.argtypes = [p, p, ctypes.c_int, p]
        lib.dnnl_stream_wait.argtypes = [p]
        self.lib = lib
        self.engine, self.stream = p(), p()
        self.check(lib.dnnl_engine_create(ctypes.byref(self.engine), _CPU, 0), "engine_create")
        self.check(lib.dnnl_stream_create(ctypes.byref(self.stream), self.engine, _STREAM_DEFAULT),
                   "stream_create")
        # Each primitive's scratch memory is passed in by the caller: the library's own is
        # shared per thread, and XLA calls in from any of its threads (intermittent failures).
        self.attr = ctypes.c_void_p()
        self.check(lib.dnnl_primitive_attr_create(ctypes.byref(self.attr)), "primitive_attr_create")
        self.check(lib.dnnl_primitive_attr_set_scratchpad_mode(self.attr, _SCRATCHPAD_USER), "set_scratchpad_mode")

    @staticmethod
    def check(status: int, what: str) -> None:
        if status != 0:
            raise RuntimeError(f"oneDNN {what} failed with status {status}")

    def memory_desc(self, dims: Sequence[int], tag: int) -> ctypes.c_void_p:
        md = ctypes.c_void_p()
        self.check(self.lib.dnnl_memory_desc_create_with_tag(
            ctypes.byref(md), len(dims), (ctypes.c_int64 * len(dims))(*dims), _F32, tag), "memory_desc_create")
        return md

    def query_md(self, primitive_desc: ctypes.c_void_p, what: int) -> ctypes.c_void_p:
        return ctypes.c_void_p(self.lib.dnnl_primitive_desc_query_md(primitive_desc, what, 0))

    def size_of(self, md: ctypes.c_void_p) -> int:
        return self.lib.dnnl_memory_desc_get_size(md) // 4

    def primitive(self, primitive_desc: ctypes.c_void_p) -> tuple[ctypes.c_void_p, ctypes.c_void_p, int]:
        """(primitive, its scratchpad's memory descriptor, the scratchpad's size in floats)."""
        prim = ctypes.c_void_p()
        self.check(self.lib.dnnl_primitive_create(ctypes.byref(prim), primitive_desc), "primitive_create")
        scratchpad = self.query_md(primitive_desc, _QUERY_SCRATCHPAD)
        return prim, scratchpad, self.size_of(scratchpad)

    def reorder(self, src_md: ctypes.c_void_p, dst_md: ctypes.c_void_p) -> ctypes.c_void_p:
        pd = ctypes.c_void_p()
        self.check(self.lib.dnnl_reorder_primitive_desc_create(
            ctypes.byref(pd), src_md, self.engine, dst_md, self.engine, self.attr), "reorder_primitive_desc_create")
        return self.primitive(pd)

    def execute(self, primitive: tuple, args: Sequence[tuple[int, ctypes.c_void_p, int]]) -> None:
        """Runs `primitive` (from `primitive`) on (argument kind, memory descriptor, data address) triples."""
        prim, scratchpad_md, scratchpad_size = primitive
        scratchpad = np.empty(scratchpad_size, np.float32)
        args = [*args, (_ARG_SCRATCHPAD, scratchpad_md, scratchpad.ctypes.data)] if scratchpad_size else args
        memories = []
        try:
            for _, md, address in args:
                mem = ctypes.c_void_p()
                self.check(self.lib.dnnl_memory_create(ctypes.byref(mem), md, self.engine,
                                                       ctypes.c_void_p(address)), "memory_create")
                memories.append(mem)
            exec_args = (_ExecArg * len(args))(*[_ExecArg(a, m) for (a, _, _), m in zip(args, memories)])
            self.check(self.lib.dnnl_primitive_execute(prim, self.stream, len(args), exec_args), "execute")
            self.check(self.lib.dnnl_stream_wait(self.stream), "stream_wait")
        finally:
            for mem in memories:
                self.lib.dnnl_memory_destroy(mem)


_LOCK = threading.Lock()  # serialises oneDNN calls (each uses every core) and the caches below
_RUNTIME: list[_Runtime] = []


def _runtime() -> _Runtime:
    with _LOCK:
        if not _RUNTIME:
            _RUNTIME.append(_Runtime())
        return _RUNTIME[0]


class _Conv:
    """The three primitives of one conv shape (and the weight reorders they need)."""

    def __init__(self, rt: _Runtime, key: tuple) -> None:
        (n, h, w, c), (kh, kw, _, o), strides, pads, groups = key
        _, out_h, out_w, _ = _output_shape(key)
        self.rt = rt
        self.src = rt.memory_desc((n, c, h, w), _TAG_NHWC)
        self.dst = rt.memory_desc((n, o, out_h, out_w), _TAG_NHWC)
        if groups == 1:
            weight_dims, user_tag = (o, c, kh, kw), _TAG_HWIO
        else:
            weight_dims, user_tag = (groups, o // groups, c // groups, kh, kw), _TAG_GROUPED_HWIO
        self.user_weights = rt.memory_desc(weight_dims, user_tag)
        any_weights = rt.memory_desc(weight_dims, _TAG_ANY)
        dims = lambda values: (ctypes.c_int64 * 2)(*values)  # noqa: E731
        geometry = (dims(strides), dims((0, 0)), dims((pads[0][0], pads[1][0])), dims((pads[0][1], pads[1][1])))
        lib, check = rt.lib, rt.check
        self.fwd_pd, self.bwd_data_pd, self.bwd_weights_pd = (ctypes.c_void_p() for _ in range(3))
        check(lib.dnnl_convolution_forward_primitive_desc_create(
            ctypes.byref(self.fwd_pd), rt.engine, _FORWARD_TRAINING, _CONVOLUTION_DIRECT,
            self.src, any_weights, None, self.dst, *geometry, rt.attr), "convolution forward")
        check(lib.dnnl_convolution_backward_data_primitive_desc_create(
            ctypes.byref(self.bwd_data_pd), rt.engine, _CONVOLUTION_DIRECT,
            self.src, any_weights, self.dst, *geometry, self.fwd_pd, rt.attr), "convolution backward data")
        check(lib.dnnl_convolution_backward_weights_primitive_desc_create(
            ctypes.byref(self.bwd_weights_pd), rt.engine, _CONVOLUTION_DIRECT,
            rt.memory_desc((n, c, h, w), _TAG_ANY), any_weights, None, rt.memory_desc((n, o, out_h, out_w), _TAG_ANY),
            *geometry, self.fwd_pd, rt.attr), "convolution backward weights")
        self.fwd, self.bwd_data, self.bwd_weights = (
            rt.primitive(pd) for pd in (self.fwd_pd, self.bwd_data_pd, self.bwd_weights_pd))
        # Each primitive's kernel layout, and the reorder to or from the user's HWIO kernel.
        self.fwd_weights = self._layout(self.fwd_pd, _QUERY_WEIGHTS, to_user=False)
        self.bwd_data_weights = self._layout(self.bwd_data_pd, _QUERY_WEIGHTS, to_user=False)
        self.diff_weights = self._layout(self.bwd_weights_pd, _QUERY_DIFF_WEIGHTS, to_user=True)
        # The weight gradient reads its activations in oneDNN's blocked layout: 1.0-3.0x faster
        # than from NHWC for every conv of the step, reorders included.
        self.weight_gradient_src = self._activation_layout(self.src, _QUERY_SRC)
        self.weight_gradient_diff_dst = self._activation_layout(self.dst, _QUERY_DIFF_DST)

    def _activation_layout(self, user_md: ctypes.c_void_p, what: int) -> tuple:
        md = self.rt.query_md(self.bwd_weights_pd, what)
        if self.rt.lib.dnnl_memory_desc_equal(md, user_md):
            return user_md, md, None
        return user_md, md, self.rt.reorder(user_md, md)

    def _activation_in(self, layout: tuple, address: int) -> tuple[int, np.ndarray | None]:
        user_md, md, reorder = layout
        if reorder is None:
            return address, None
        out = np.empty(self.rt.size_of(md), np.float32)
        self.rt.execute(reorder, [(_ARG_SRC, user_md, address), (_ARG_DST, md, out.ctypes.data)])
        return out.ctypes.data, out

    def _layout(self, pd: ctypes.c_void_p, what: int, to_user: bool) -> tuple:
        md = self.rt.query_md(pd, what)
        if self.rt.lib.dnnl_memory_desc_equal(md, self.user_weights):
            return md, None
        return md, (self.rt.reorder(md, self.user_weights) if to_user else self.rt.reorder(self.user_weights, md))

    def _weights_in(self, layout: tuple, kernel: int) -> tuple[int, np.ndarray | None]:
        """The kernel at address `kernel` (HWIO) in `layout`: its address, and the buffer to keep alive."""
        md, reorder = layout
        if reorder is None:
            return kernel, None
        out = np.empty(self.rt.size_of(md), np.float32)
        self.rt.execute(reorder, [(_ARG_SRC, self.user_weights, kernel), (_ARG_DST, md, out.ctypes.data)])
        return out.ctypes.data, out

    def forward(self, x: int, kernel: int, y: int) -> None:
        weights, _keep = self._weights_in(self.fwd_weights, kernel)
        self.rt.execute(self.fwd, [(_ARG_SRC, self.src, x), (_ARG_WEIGHTS, self.fwd_weights[0], weights),
                                   (_ARG_DST, self.dst, y)])

    def data_gradient(self, dy: int, kernel: int, dx: int) -> None:
        weights, _keep = self._weights_in(self.bwd_data_weights, kernel)
        self.rt.execute(self.bwd_data, [(_ARG_DIFF_DST, self.dst, dy),
                                        (_ARG_WEIGHTS, self.bwd_data_weights[0], weights),
                                        (_ARG_DIFF_SRC, self.src, dx)])

    def weight_gradient(self, x: int, dy: int, dw: int) -> None:
        md, reorder = self.diff_weights
        own = None if reorder is None else np.empty(self.rt.size_of(md), np.float32)
        x, _keep_x = self._activation_in(self.weight_gradient_src, x)
        dy, _keep_dy = self._activation_in(self.weight_gradient_diff_dst, dy)
        self.rt.execute(self.bwd_weights, [(_ARG_SRC, self.weight_gradient_src[1], x),
                                           (_ARG_DIFF_DST, self.weight_gradient_diff_dst[1], dy),
                                           (_ARG_DIFF_WEIGHTS, md, dw if own is None else own.ctypes.data)])
        if own is not None:
            self.rt.execute(reorder, [(_ARG_SRC, md, own.ctypes.data), (_ARG_DST, self.user_weights, dw)])


_CONVS: dict[tuple, _Conv] = {}


def _conv(key: tuple) -> _Conv:
    """The primitives of conv `key` (built once per shape; call with _LOCK held)."""
    if key not in _CONVS:
        _CONVS[key] = _Conv(_RUNTIME[0], key)
    return _CONVS[key]


# ----------------------------------------------------------------------------- XLA FFI
# The three passes are XLA FFI targets whose handler is a ctypes function: XLA calls it
# with its own buffers' addresses, which go to oneDNN as they are (no copies, unlike
# `jax.pure_callback`, which cost 3-12 ms per call on these activations). Struct layouts:
# jaxlib/include/xla/ffi/api/c_api.h.
_FFI_API_VERSION = (0, 1)
_FFI_EXTENSION_METADATA, _FFI_ATTR_ARRAY, _FFI_ERROR_INTERNAL = 1, 1, 13


class _FfiExtension(ctypes.Structure):
    _fields_ = [("struct_size", ctypes.c_size_t), ("type", ctypes.c_int), ("next", ctypes.c_void_p)]


class _FfiApiVersion(ctypes.Structure):
    _fields_ = [("struct_size", ctypes.c_size_t), ("extension_start", ctypes.c_void_p),
                ("major_version", ctypes.c_int), ("minor_version", ctypes.c_int)]


class _FfiMetadata(ctypes.Structure):
    _fields_ = [("struct_size", ctypes.c_size_t), ("api_version", _FfiApiVersion), ("traits", ctypes.c_uint32),
                ("state_type_id", ctypes.c_int64)]


class _FfiMetadataExtension(ctypes.Structure):
    _fields_ = [("extension_base", _FfiExtension), ("metadata", ctypes.POINTER(_FfiMetadata))]


class _FfiBuffer(ctypes.Structure):
    _fields_ = [("struct_size", ctypes.c_size_t), ("extension_start", ctypes.c_void_p), ("dtype", ctypes.c_int),
                ("data", ctypes.c_void_p), ("rank", ctypes.c_int64), ("dims", ctypes.POINTER(ctypes.c_int64))]


class _FfiList(ctypes.Structure):  # XLA_FFI_Args and XLA_FFI_Rets
    _fields_ = [("struct_size", ctypes.c_size_t), ("extension_start", ctypes.c_void_p), ("size", ctypes.c_int64),
                ("types", ctypes.c_void_p), ("items", ctypes.POINTER(ctypes.POINTER(_FfiBuffer)))]


class _FfiArray(ctypes.Structure):
    _fields_ = [("dtype", ctypes.c_int), ("size", ctypes.c_size_t), ("data", ctypes.POINTER(ctypes.c_int64))]


class _FfiAttrs(ctypes.Structure):
    _fields_ = [("struct_size", ctypes.c_size_t), ("extension_start", ctypes.c_void_p), ("size", ctypes.c_int64),
                ("types", ctypes.POINTER(ctypes.c_int)), ("names", ctypes.c_void_p),
                ("attrs", ctypes.POINTER(ctypes.POINTER(_FfiArray)))]


class _FfiCallFrame(ctypes.Structure):
    _fields_ = [("struct_size", ctypes.c_size_t), ("extension_start", ctypes.POINTER(_FfiExtension)),
                ("api", ctypes.c_void_p), ("ctx", ctypes.c_void_p), ("stage", ctypes.c_int),
                ("args", _FfiList), ("rets", _FfiList), ("attrs", _FfiAttrs), ("future", ctypes.c_void_p)]


class _FfiErrorCreateArgs(ctypes.Structure):
    _fields_ = [("struct_size", ctypes.c_size_t), ("extension_start", ctypes.c_void_p),
                ("message", ctypes.c_char_p), ("errc", ctypes.c_int)]


_FfiErrorCreate = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.POINTER(_FfiErrorCreateArgs))


class _FfiApi(ctypes.Structure):
    _fields_ = [("struct_size", ctypes.c_size_t), ("extension_start", ctypes.c_void_p),
                ("api_version", _FfiApiVersion), ("internal_api", ctypes.c_void_p),
                ("error_create", _FfiErrorCreate)]


_FfiHandler = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.POINTER(_FfiCallFrame))
_PASSES = ("forward", "data_gradient", "weight_gradient")


def _shape(buffer: _FfiBuffer) -> tuple[int, ...]:
    return tuple(buffer.dims[i] for i in range(buffer.rank))


def _handle(pass_name: str, frame_pointer: Any) -> int | None:
    frame = frame_pointer.contents
    if frame.extension_start:  # XLA asks which FFI version the handler was written against
        extension = frame.extension_start.contents
        if extension.type == _FFI_EXTENSION_METADATA:
            metadata = ctypes.cast(frame.extension_start, ctypes.POINTER(_FfiMetadataExtension)).contents.metadata
            metadata.contents.api_version.major_version, metadata.contents.api_version.minor_version = _FFI_API_VERSION
            metadata.contents.traits = 0
            return None
    key = None
    try:
        a, b = (frame.args.items[i].contents for i in range(2))
        out = frame.rets.items[0].contents
        geometry = frame.attrs.attrs[0].contents
        sh, sw, pad_top, pad_bottom, pad_left, pad_right, groups = (geometry.data[i] for i in range(7))
        x_shape, kernel_shape = {"forward": (_shape(a), _shape(b)), "data_gradient": (_shape(out), _shape(b)),
                                 "weight_gradient": (_shape(a), _shape(out))}[pass_name]
        key = (x_shape, kernel_shape, (sh, sw), ((pad_top, pad_bottom), (pad_left, pad_right)), groups)
        _runtime()
        with _LOCK:
            getattr(_conv(key), pass_name)(a.data, b.data, out.data)
        return None
    except Exception as error:  # reported to XLA, which raises it in the caller
        api = ctypes.cast(frame.api, ctypes.POINTER(_FfiApi)).contents
        args = _FfiErrorCreateArgs(ctypes.sizeof(_FfiErrorCreateArgs), None,
                                   f"oneDNN conv {pass_name} {key}: {error!r}".encode(), _FFI_ERROR_INTERNAL)
        return api.error_create(ctypes.byref(args))


_HANDLERS = {name: _FfiHandler(functools.partial(_handle, name)) for name in _PASSES}


def _target(pass_name: str) -> str:
    return f"ipcgan_jax_onednn_conv_{pass_name}"


@functools.cache
def _register_targets() -> None:
    for name, handler in _HANDLERS.items():
        jax.ffi.register_ffi_target(_target(name), jax.ffi.pycapsule(handler), platform="cpu")


def _ffi(pass_name: str, key: tuple, out_shape: tuple, a: jax.Array, b: jax.Array) -> jax.Array:
    _register_targets()
    _, _, strides, pads, groups = key
    geometry = np.asarray([*strides, *pads[0], *pads[1], groups], np.int64)
    return jax.ffi.ffi_call(_target(pass_name), jax.ShapeDtypeStruct(out_shape, jnp.float32),
                            vmap_method="sequential")(a, b, geometry=geometry)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _onednn_conv(x: jax.Array, kernel: jax.Array, key: tuple) -> jax.Array:
    return _ffi("forward", key, _output_shape(key), x, kernel)


def _output_shape(key: tuple) -> tuple:
    (n, h, w, _), (kh, kw, _, o), strides, pads, _ = key
    return (n, (h + sum(pads[0]) - kh) // strides[0] + 1, (w + sum(pads[1]) - kw) // strides[1] + 1, o)


def _onednn_conv_fwd(x: jax.Array, kernel: jax.Array, key: tuple):
    return _onednn_conv(x, kernel, key), (x, kernel)


def _onednn_conv_bwd(key: tuple, residuals: tuple, dy: jax.Array):
    x, kernel = residuals
    dy = dy.astype(jnp.float32)
    return (_ffi("data_gradient", key, key[0], dy, kernel), _ffi("weight_gradient", key, key[1], x, dy))


_onednn_conv.defvjp(_onednn_conv_fwd, _onednn_conv_bwd)


def conv_onednn(lhs: jax.Array, rhs: jax.Array, window_strides: Sequence[int],
                padding: str | Sequence[tuple[int, int]], lhs_dilation: Sequence[int] | None = None,
                rhs_dilation: Sequence[int] | None = None, dimension_numbers: Any = None,
                feature_group_count: int = 1, precision: Any = None,
                preferred_element_type: Any = None) -> jax.Array:
    """`lax.conv_general_dilated` (NHWC, HWIO, float32, no dilation) run by oneDNN.

    A drop-in for `flax.linen.Conv(conv_general_dilated=...)`; differentiable (data and
    weight gradients by oneDNN too). Other dtypes run XLA's conv (oneDNN is bound for
    float32 only). `precision` and `preferred_element_type` are accepted for the
    signature's sake: the result is float32 at full precision either way.
    """
    check_nhwc_without_dilation("conv_onednn", lhs, rhs, dimension_numbers, lhs_dilation, rhs_dilation)
    if lhs.dtype != jnp.float32 or rhs.dtype != jnp.float32:
        return jax.lax.conv_general_dilated(lhs, rhs, window_strides, padding, dimension_numbers=dimension_numbers,
                                            feature_group_count=feature_group_count, precision=precision,
                                            preferred_element_type=preferred_element_type)
    key = _key(lhs.shape, rhs.shape, window_strides, padding, feature_group_count)
    return _onednn_conv(lhs, rhs, key)


def _key(lhs_shape: Sequence[int], rhs_shape: Sequence[int], window_strides: Sequence[int],
         padding: str | Sequence[tuple[int, int]], feature_group_count: int) -> tuple:
    channels, (kh, kw, group_channels, out_features) = lhs_shape[3], rhs_shape
    if channels != group_channels * feature_group_count or out_features % feature_group_count:
        raise ValueError(f"conv_onednn: input has {channels} channels, kernel {tuple(rhs_shape)} with "
                         f"{feature_group_count} groups")
    pads = (jax.lax.padtype_to_pads(tuple(lhs_shape[1:3]), (kh, kw), tuple(window_strides), padding)
            if isinstance(padding, str) else padding)
    return (tuple(int(d) for d in lhs_shape), tuple(int(d) for d in rhs_shape),
            tuple(int(s) for s in window_strides), tuple((int(lo), int(hi)) for lo, hi in pads),
            int(feature_group_count))
