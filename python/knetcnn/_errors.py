"""Exceptions raised by knetcnn.

User mistakes are plain ``ValueError`` / ``TypeError`` raised before cuDNN is called. A failing
cuDNN call raises :class:`CudnnError` (or a subclass chosen by its status, so that existing
``except MemoryError`` / ``except NotImplementedError`` code keeps working); a failing CUDA runtime
call raises :class:`CudaError`; work that needs a GPU where none is usable raises
:class:`DeviceUnavailableError`, whose message says why and what to do.
"""

from __future__ import annotations


class CudnnError(RuntimeError):
    """A cuDNN call failed.

    ``status`` is cuDNN's status name (``"CUDNN_STATUS_BAD_PARAM"``): compare names, not numbers,
    since cuDNN 9 renumbered them. ``code`` is the number, ``function`` the cuDNN function.
    """

    def __init__(self, message: str, code: int = 0, status: str = "", function: str = ""):
        super().__init__(message)
        self.code = code
        self.status = status
        self.function = function


class CudnnMemoryError(CudnnError, MemoryError):
    """cuDNN could not allocate memory (CUDNN_STATUS_ALLOC_FAILED; in cuDNN 9
    CUDNN_STATUS_INTERNAL_ERROR_HOST_ALLOCATION_FAILED / _DEVICE_ALLOCATION_FAILED)."""


class CudnnNotSupportedError(CudnnError, NotImplementedError):
    """cuDNN does not support this configuration (CUDNN_STATUS_NOT_SUPPORTED*)."""


class CudnnBadParamError(CudnnError, ValueError):
    """cuDNN rejected a parameter (CUDNN_STATUS_BAD_PARAM*)."""


class CudaError(RuntimeError):
    """A CUDA runtime call failed; ``code_name`` is the runtime's name (``cudaErrorMemoryAllocation``)."""

    def __init__(self, message: str, code: int = 0, code_name: str = ""):
        super().__init__(message)
        self.code = code
        self.code_name = code_name


class CudaMemoryError(CudaError, MemoryError):
    """The CUDA runtime could not allocate device memory."""


class DeviceUnavailableError(RuntimeError):
    """A call needs a GPU and none is usable; the message says why and how to fix it."""


def _cudnn_class(status: str) -> type[CudnnError]:
    # cuDNN 8's ALLOC_FAILED is cuDNN 9's INTERNAL_ERROR_{HOST,DEVICE}_ALLOCATION_FAILED: its
    # cudnnGetErrorString never says ALLOC_FAILED, so match both spellings.
    if status.startswith("CUDNN_STATUS_ALLOC_FAILED") or status.endswith("_ALLOCATION_FAILED"):
        return CudnnMemoryError
    if status.startswith("CUDNN_STATUS_NOT_SUPPORTED"):
        return CudnnNotSupportedError
    if status.startswith("CUDNN_STATUS_BAD_PARAM"):
        return CudnnBadParamError
    return CudnnError


# Factories the C++ exception translator calls (csrc/bindings/bind_errors.cpp).
def cudnn_error(message: str, code: int, status: str, function: str) -> CudnnError:
    return _cudnn_class(status)(message, code, status, function)


def cuda_error(message: str, code: int, code_name: str) -> CudaError:
    cls = CudaMemoryError if code_name == "cudaErrorMemoryAllocation" else CudaError
    return cls(message, code, code_name)


def device_unavailable(message: str) -> DeviceUnavailableError:
    return DeviceUnavailableError(message)
