"""Python client of switchyardd, the Switchyard on-device ML daemon.

    import numpy as np, switchyard
    client = switchyard.Client.unix("/run/switchyard/switchyard.sock")
    model = client.load("models/mp_face_detection_short_range.tflite")
    frame = np.zeros(model.inputs[0].shape, model.inputs[0].dtype)
    boxes, scores = model.run([frame], priority=switchyard.Priority.REALTIME, deadline=0.033)

Layout: `client` (connection, models, runs, errors), `shm` (memfd regions registered
over the side socket with SCM_RIGHTS, carved into numpy arrays). The gRPC stubs are
generated from the repository's proto/ when the package is built.
"""

from .client import (
    Client,
    Error,
    Model,
    Priority,
    RunResult,
    Session,
    TensorSpec,
    default_socket,
)
from .shm import ShmArray, ShmPool

__all__ = [
    "Client",
    "Error",
    "Model",
    "Priority",
    "RunResult",
    "Session",
    "ShmArray",
    "ShmPool",
    "TensorSpec",
    "default_socket",
]
