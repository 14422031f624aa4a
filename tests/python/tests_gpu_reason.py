"""Why the GPU tier cannot run here ("" where a GPU is usable); shared by the test modules."""

from knetcnn._core import core

GPU_REASON = core.device_unavailable_reason(0)
