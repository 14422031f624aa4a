"""Execution options of the cuDNN backend, and its algorithm cache.

Process-wide defaults are set with ``set_options``; ``options`` is a context manager that
overrides them for the current thread until its block ends::

    knetcnn.set_options(algo="benchmark", workspace_limit=512 * 2**20)
    with knetcnn.options(algo="deterministic"):
        y = knetcnn.conv4(w, x)

Blocks nest, other threads keep the defaults, and a block's override follows later changes of
the defaults for the fields it does not set. The override is per OS thread: asyncio tasks on one
thread share it. (Two names, not one that does both, so that a ``with`` block never changes what
other threads see, not even for an instant.)

Options (anything not given keeps its value):

``algo``
    How a convolution algorithm is chosen. ``"heuristic"`` (default): cuDNN's ranking
    (``cudnnGet*Algorithm_v7``), the first that succeeds and fits the workspace limit.
    ``"benchmark"``: time the algorithms once per configuration (``cudnnFind*AlgorithmEx``) and
    keep the fastest; while a graph capture is visible, or memory is short, cuDNN's ranking is
    used provisionally and benchmarked later. ``"deterministic"``: only algorithms cuDNN marks
    deterministic, and max pooling with a deterministic backward, so repeated runs give
    bit-identical results.
``workspace_limit``
    Largest cuDNN workspace in bytes (an int >= 0), or ``None`` for the default
    ``min(256 MiB, free memory / 8)``, measured once per device.
``allow_tf32``
    Let float32 convolutions use TF32 tensor cores (faster on Ampere and later, ~10 mantissa
    bits). Default ``False``: float32 results stay close to the CPU backend's.

Every choice is cached under a key covering the whole problem (device, direction, dtypes, all
shapes, strides and pointer alignments, keywords, and these options); ``cache_info()`` reports
the counters, ``clear_cache()`` forgets the choices and frees the workspaces,
``save_cache``/``load_cache`` keep benchmark results across processes (tied to the cuDNN version
and the devices' names).
"""

from __future__ import annotations

import operator
import os
import threading
import warnings
from typing import Any

import numpy as np

from ._core import core

ALGORITHMS = ("heuristic", "benchmark", "deterministic")
_UNSET: Any = object()
_lock = threading.Lock()  # makes "read the defaults, write the defaults" atomic among callers


def _validate(algo, workspace_limit, allow_tf32, where: str) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    if algo is not _UNSET:
        if not isinstance(algo, str):
            raise TypeError(f"{where}: algo={algo!r}: algo must be a str, one of {ALGORITHMS}, "
                            f"not {type(algo).__name__}")
        if algo not in ALGORITHMS:
            raise ValueError(f"{where}: algo={algo!r}: algo must be one of {ALGORITHMS}")
        fields["algo"] = algo
    if workspace_limit is not _UNSET:
        if workspace_limit is not None:
            if isinstance(workspace_limit, bool) or not hasattr(type(workspace_limit), "__index__"):
                raise TypeError(f"{where}: workspace_limit={workspace_limit!r}: workspace_limit must be "
                                f"an int (bytes) or None, not {type(workspace_limit).__name__}")
            workspace_limit = operator.index(workspace_limit)
            if not 0 <= workspace_limit < 2**63:
                raise ValueError(f"{where}: workspace_limit={workspace_limit!r}: workspace_limit must be "
                                 "a number of bytes >= 0, or None for the default")
        fields["workspace_limit"] = workspace_limit
    if allow_tf32 is not _UNSET:
        if not isinstance(allow_tf32, (bool, np.bool_)):
            raise TypeError(f"{where}: allow_tf32={allow_tf32!r}: allow_tf32 must be True or False, "
                            f"not {type(allow_tf32).__name__}")
        fields["allow_tf32"] = bool(allow_tf32)
    return fields


def _set_defaults(values: dict[str, Any]) -> None:
    core.set_default_options(values["algo"], values["workspace_limit"], values["allow_tf32"])


def set_options(algo: str = _UNSET, workspace_limit: int | None = _UNSET, allow_tf32: bool = _UNSET) -> dict[str, Any]:
    """Change the process-wide defaults (fields not given keep their values); returns the previous
    defaults as a dict, so ``set_options(**previous)`` puts them back."""
    fields = _validate(algo, workspace_limit, allow_tf32, "knetcnn.set_options")
    with _lock:
        previous = dict(core.get_default_options())
        if fields:
            _set_defaults({**previous, **fields})
    return previous


def get_options() -> dict[str, Any]:
    """The options in effect on this thread: the defaults with this thread's overrides applied."""
    return dict(core.effective_options())


class options:
    """Override the execution options for this thread within a ``with`` block (see the module
    docstring); ``knetcnn.set_options`` changes the process-wide defaults.

    Inside the block, the attributes ``algo``, ``workspace_limit`` and ``allow_tf32`` read the
    options in effect on this thread. Creating one without entering it changes nothing, and
    warns when it is dropped: a bare ``knetcnn.options(...)`` call is almost surely meant to be
    ``set_options``.
    """

    def __init__(self, algo: str = _UNSET, workspace_limit: int | None = _UNSET, allow_tf32: bool = _UNSET):
        self._fields = _validate(algo, workspace_limit, allow_tf32, "knetcnn.options")
        self._previous_thread: dict[str, Any] | None = None
        self._entered = False

    def __enter__(self) -> "options":
        if self._previous_thread is not None:
            raise RuntimeError("knetcnn.options: this object is already in use as a context manager")
        self._entered = True
        self._previous_thread = core.get_thread_options()
        core.set_thread_options({**self._previous_thread, **self._fields})
        return self

    def __exit__(self, *exc_info) -> None:
        core.set_thread_options(self._previous_thread or {})
        self._previous_thread = None

    def __del__(self) -> None:
        if not getattr(self, "_entered", True) and getattr(self, "_fields", None):  # (a failed __init__ sets neither)
            warnings.warn(
                f"{self._describe_fields()} was never used in a `with` block, so it changed nothing; "
                "use knetcnn.set_options(...) to change the process-wide defaults",
                RuntimeWarning,
                stacklevel=2,
            )

    def _describe_fields(self) -> str:
        return "knetcnn.options(" + ", ".join(f"{k}={v!r}" for k, v in self._fields.items()) + ")"

    @property
    def algo(self) -> str:
        return core.effective_options()["algo"]

    @property
    def workspace_limit(self) -> int | None:
        return core.effective_options()["workspace_limit"]

    @property
    def allow_tf32(self) -> bool:
        return core.effective_options()["allow_tf32"]

    def __repr__(self) -> str:
        e = core.effective_options()
        return f"knetcnn.options(algo={e['algo']!r}, workspace_limit={e['workspace_limit']!r}, allow_tf32={e['allow_tf32']!r})"


def cache_info() -> dict[str, int]:
    """The algorithm cache's counters: hits, misses, evictions, size, capacity; plus the workspace
    memory held (``workspace_buffers``: knetcnn's memory pools holding memory and, on devices
    without pools, idle cached buffers; ``workspace_bytes``: their bytes) and the cuDNN handles
    created."""
    return dict(core.algo_cache_info())


def clear_cache() -> None:
    """Forget every algorithm choice, reset the counters, and release the cuDNN workspace memory
    knetcnn holds (returned to the device once the work that used it is done; nothing waits).
    Refused while a graph capture is visible on the device. CUDA graphs captured earlier own the
    workspaces they use (graph memory nodes), so they stay valid."""
    core.algo_cache_clear()


def save_cache(path: str | os.PathLike) -> int:
    """Write the algorithm choices to a text file (replaced atomically); returns how many."""
    return int(core.algo_cache_save(os.fspath(path)))


def load_cache(path: str | os.PathLike) -> dict[str, Any]:
    """Read choices written by :func:`save_cache`. Entries written with another cuDNN version, or
    for a device ordinal that now names another GPU, are skipped. Returns
    ``{"loaded": n, "skipped": m, "reason": "..."}``. A file that is not a knetcnn cache raises
    ``ValueError`` naming the line."""
    return dict(core.algo_cache_load(os.fspath(path)))
