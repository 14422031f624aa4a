"""Parsing ``__cuda_array_interface__`` (versions 0 to 3) into an ArrayView.

The dictionary is validated in full before anything is trusted: required keys (shape, typestr,
data, version), the typestr (little-endian float16/32/64; bfloat16, see below), the pointer
(below 2**64 and aligned to the element), byte strides (None means C-contiguous; each must be a
multiple of the item size and non-negative), no mask, and in version 3 the producer's stream.
Nothing here dereferences the pointer or calls CUDA.

bfloat16 has no typestr of its own. PyTorch >= 2.5 exports it as ``"<f2"``, the same as
float16, and ml_dtypes-style producers as ``"<V2"`` or ``"|V2"`` (2 raw bytes). A typestr can
therefore only be read as bfloat16 when the object says so itself (its ``dtype`` names
bfloat16); ``"<f2"`` from an object whose dtype says bfloat16 is bfloat16, and ``"<V2"`` /
``"|V2"`` from one that does not is refused. The entry point prefers DLPack, which names
bfloat16 exactly, whenever it is offered.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Mapping

from . import streams
from .array_view import ArrayView, c_contiguous_strides, canonical_strides
from .dtypes import ITEMSIZE, native_byteorder_char, refuse_dtype

SUPPORTED_VERSIONS = (0, 1, 2, 3)
_FLOAT_TYPESTRS = {"f2": "float16", "f4": "float32", "f8": "float64"}
_KIND_NAMES = {"i": "int", "u": "uint", "f": "float", "c": "complex", "b": "bool", "V": "void",
               "m": "timedelta", "M": "datetime", "O": "object", "S": "bytes", "U": "str"}


def declared_dtype_name(obj) -> str:
    """The object's own ``dtype``, as text (``"torch.bfloat16"``, ``"bfloat16"``), or ''."""
    try:
        dtype = getattr(obj, "dtype", None)
    except Exception:  # a property that refuses: no declaration to go by
        return ""
    return "" if dtype is None else str(getattr(dtype, "name", dtype))


def _says_bfloat16(declared: str) -> bool:
    return declared.removeprefix("torch.") == "bfloat16"


def parse_typestr(typestr, function: str, argument: str, declared: str = "") -> str:
    """The dtype name for a CAI typestr, or a TypeError/ValueError saying why not."""
    if not isinstance(typestr, str):
        raise TypeError(f"{function}: {argument} has __cuda_array_interface__ typestr={typestr!r}: "
                        "typestr must be a str such as '<f4'")
    if len(typestr) < 3 or typestr[0] not in "<>|=" or not typestr[2:].isdigit():
        raise ValueError(f"{function}: {argument} has __cuda_array_interface__ typestr={typestr!r}: "
                         "not a NumPy array-interface typestr (byte order, kind, size, e.g. '<f4')")
    order, kind, size = typestr[0], typestr[1], int(typestr[2:])
    if order == "=":
        order = native_byteorder_char()
    if size > 1 and order == ">":
        raise ValueError(f"{function}: {argument} has __cuda_array_interface__ typestr={typestr!r}: "
                         "big-endian data is not supported (CUDA devices are little-endian)")
    if kind == "V" and size == 2:  # raw bytes have no byte order: NumPy spells them '|V2'
        if _says_bfloat16(declared):
            return "bfloat16"
        raise TypeError(
            f"{function}: {argument} has __cuda_array_interface__ typestr={typestr!r} (2 raw bytes) and "
            f"dtype {declared or 'unknown'}: it cannot be told to be bfloat16; pass it through DLPack "
            "(an object with __dlpack__), which names bfloat16 exactly"
        )
    if size > 1 and order == "|":
        raise ValueError(f"{function}: {argument} has __cuda_array_interface__ typestr={typestr!r}: "
                         "a multi-byte type needs a byte order ('<'), not '|'")
    if kind == "f" and size == 2 and _says_bfloat16(declared):
        return "bfloat16"  # PyTorch's spelling of bfloat16
    name = _FLOAT_TYPESTRS.get(f"{kind}{size}")
    if name is None:
        raise refuse_dtype(function, argument, f"{_KIND_NAMES.get(kind, kind)}{size * 8} (typestr {typestr!r})")
    return name


def check_pointer(ptr: int, itemsize: int, dtype: str, where: str) -> None:
    """A device address must fit 64 bits and be aligned to its element: a misaligned load is a
    sticky CUDA error that ends every later CUDA call in the process."""
    if not 0 <= ptr < 2**64:
        raise ValueError(f"{where} data pointer {ptr}: a pointer must be >= 0 and < 2**64")
    if ptr % itemsize:
        raise ValueError(f"{where} data pointer {ptr:#x}, which is not a multiple of the {itemsize}-byte {dtype} "
                         "element (misaligned): make an aligned (contiguous) copy first")


def _int_tuple(value, function: str, argument: str, key: str) -> tuple[int, ...]:
    if not isinstance(value, (tuple, list)):
        raise TypeError(f"{function}: {argument} has __cuda_array_interface__ {key}={value!r}: "
                        f"{key} must be a tuple of ints")
    out = []
    for v in value:
        if isinstance(v, bool):
            raise TypeError(f"{function}: {argument} has __cuda_array_interface__ {key}={value!r}: "
                            f"{key} must hold ints, not bools")
        try:
            out.append(operator.index(v))
        except TypeError:
            raise TypeError(f"{function}: {argument} has __cuda_array_interface__ {key}={value!r}: "
                            f"{key} must hold ints, not {type(v).__name__}") from None
    return tuple(out)


def parse_cai(cai, function: str, argument: str, declared: str = "") -> ArrayView:
    """A view of the array a ``__cuda_array_interface__`` dict describes.

    ``device`` is left at -1 (the interface has no device entry; the caller fills it in) and the
    producer's stream, if any, is in ``producer_stream``: the consumer must order its work after it.
    """
    where = f"{function}: {argument} has __cuda_array_interface__"
    if not isinstance(cai, Mapping):
        raise TypeError(f"{where} of type {type(cai).__name__}: it must be a dict")
    missing = [k for k in ("shape", "typestr", "data", "version") if k not in cai]
    if missing:
        raise ValueError(f"{where} without the required entr{'ies' if len(missing) > 1 else 'y'} "
                         f"{', '.join(repr(k) for k in missing)}: its producer does not follow the interface")

    version = cai["version"]
    if isinstance(version, bool) or not isinstance(version, int):
        raise TypeError(f"{where} version={version!r}: version must be an int")
    if version not in SUPPORTED_VERSIONS:
        raise ValueError(f"{where} version={version}: knetcnn understands versions 0 to 3; pass the array "
                         "through DLPack (__dlpack__) instead")

    shape = _int_tuple(cai["shape"], function, argument, "shape")
    if any(s < 0 for s in shape):
        raise ValueError(f"{where} shape={shape}: extents must be >= 0")
    dtype = parse_typestr(cai["typestr"], function, argument, declared)
    itemsize = ITEMSIZE[dtype]

    descr = cai.get("descr")
    if descr is not None and isinstance(descr, (list, tuple)) and len(descr) > 1:
        raise TypeError(f"{where} a structured descr={descr!r}: only plain floating-point arrays are supported")

    data = cai["data"]
    if not isinstance(data, (tuple, list)) or len(data) != 2:
        raise TypeError(f"{where} data={data!r}: data must be a 2-tuple (pointer, read-only flag)")
    ptr, readonly = data
    if isinstance(ptr, bool) or not isinstance(ptr, int):
        raise TypeError(f"{where} data={data!r}: the pointer must be an int")
    if not isinstance(readonly, bool):
        raise TypeError(f"{where} data={data!r}: the read-only flag must be a bool")
    size = math.prod(shape)
    check_pointer(ptr, itemsize, dtype, where)
    if ptr == 0 and size:
        raise ValueError(f"{where} a null data pointer for {size} elements: only zero-size arrays may use 0")

    strides_value = cai.get("strides")
    if strides_value is None:  # C-contiguous (made explicit in version 2; the only reading before)
        strides = c_contiguous_strides(shape)
    else:
        byte_strides = _int_tuple(strides_value, function, argument, "strides")
        if len(byte_strides) != len(shape):
            raise ValueError(f"{where} strides={byte_strides} for shape={shape}: one stride per axis is needed")
        for axis, (extent, stride) in enumerate(zip(shape, byte_strides)):
            if stride % itemsize:
                raise ValueError(f"{where} strides={byte_strides} (bytes): stride {stride} of axis {axis} is not a "
                                 f"multiple of the {itemsize}-byte {dtype} element; make a contiguous copy")
            if stride < 0 and extent > 1:
                raise ValueError(f"{where} strides={byte_strides}: negative strides (reversed views) are not "
                                 "supported; make a contiguous copy first")
        strides = canonical_strides(shape, tuple(s // itemsize for s in byte_strides))

    mask = cai.get("mask")
    if mask is not None:
        raise ValueError(f"{where} a mask: masked arrays are not supported; fill or drop the masked elements "
                         "and pass a plain array")

    producer_stream = None
    if version >= 3:  # earlier versions made no statement about synchronization
        producer_stream = streams.from_protocol(cai.get("stream"), function, argument, "__cuda_array_interface__")

    return ArrayView(ptr=ptr, shape=shape, strides=strides, dtype=dtype, device=-1, readonly=readonly,
                     producer_stream=producer_stream, source="cuda_array_interface")
