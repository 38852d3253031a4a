"""Connection, models and runs over gRPC, with numpy arrays for tensors."""

import enum
import os
from dataclasses import dataclass, field

import grpc
import numpy as np

from ._proto import switchyard_pb2 as pb
from ._proto import switchyard_pb2_grpc as pb_grpc
from .shm import ShmArray, ShmPool

DEFAULT_SOCKET = "/run/switchyard/switchyard.sock"
MAX_MESSAGE = 256 << 20
CHUNK = 1 << 20

# Wire data type codes (proto DataType) and numpy dtypes.
_DTYPES = {
    pb.DATA_TYPE_FLOAT32: np.dtype("float32"),
    pb.DATA_TYPE_FLOAT16: np.dtype("float16"),
    pb.DATA_TYPE_INT32: np.dtype("int32"),
    pb.DATA_TYPE_UINT8: np.dtype("uint8"),
    pb.DATA_TYPE_INT64: np.dtype("int64"),
    pb.DATA_TYPE_BOOL: np.dtype("bool"),
    pb.DATA_TYPE_INT16: np.dtype("int16"),
    pb.DATA_TYPE_INT8: np.dtype("int8"),
    pb.DATA_TYPE_FLOAT64: np.dtype("float64"),
    pb.DATA_TYPE_UINT64: np.dtype("uint64"),
    pb.DATA_TYPE_UINT32: np.dtype("uint32"),
    pb.DATA_TYPE_UINT16: np.dtype("uint16"),
}
_CODES = {v: k for k, v in _DTYPES.items()}


def default_socket() -> str:
    """SWITCHYARD_SOCKET, else the daemon's default path."""
    return os.environ.get("SWITCHYARD_SOCKET", DEFAULT_SOCKET)


class Error(Exception):
    """The daemon refused or failed a request. `code` is the gRPC status name
    (e.g. "INVALID_ARGUMENT", "NOT_FOUND", "DEADLINE_EXCEEDED")."""

    def __init__(self, code: str, message: str):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


def _call(fn, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    except grpc.RpcError as e:
        raise Error(e.code().name, e.details() or "") from None


class Priority(enum.IntEnum):
    """The arbiter's priority classes."""

    REALTIME = pb.PRIORITY_REALTIME
    INTERACTIVE = pb.PRIORITY_INTERACTIVE
    BACKGROUND = pb.PRIORITY_BACKGROUND


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: np.dtype
    shape: tuple
    # -1 marks a dimension the model accepts at any size; empty when all are fixed.
    signature: tuple = ()

    @classmethod
    def _from_wire(cls, t):
        return cls(t.name, _DTYPES[t.dtype], tuple(t.shape), tuple(t.shape_signature))


@dataclass
class RunResult:
    outputs: list
    queue_us: int
    run_us: int
    request_id: int
    # Output i's actual byte length when it was written into shared memory.
    shm_lengths: list = field(default_factory=list)

    def __iter__(self):
        return iter(self.outputs)

    def __getitem__(self, i):
        return self.outputs[i]

    def __len__(self):
        return len(self.outputs)


def _tensor(a) -> "pb.Tensor":
    if isinstance(a, ShmArray) and a.region is not None:
        region, offset, length = a.ref
        return pb.Tensor(
            dtype=_code(a.dtype),
            shape=list(a.shape),
            shm=pb.ShmRef(region=region, offset=offset, length=length),
        )
    a = np.asarray(a)
    if a.dtype.byteorder == ">":
        a = a.astype(a.dtype.newbyteorder("<"))
    a = np.ascontiguousarray(a)
    return pb.Tensor(dtype=_code(a.dtype), shape=list(a.shape), inline=a.tobytes())


def _code(dtype) -> int:
    d = np.dtype(dtype).newbyteorder("=")
    try:
        return _CODES[d]
    except KeyError:
        raise ValueError(f"the daemon does not take {d} tensors") from None


class Model:
    """A model loaded in the daemon for this tenant (`Client.load`)."""

    def __init__(self, client: "Client", info):
        self._client = client
        self.id = info.id
        self.name = info.name
        self.sha256 = info.sha256
        self.bytes = info.bytes
        self.inputs = [TensorSpec._from_wire(t) for t in info.inputs]
        self.outputs = [TensorSpec._from_wire(t) for t in info.outputs]
        # A stateful model (a streaming detector) keeps state between runs: open a
        # Session to stream; a run without one starts from a fresh state.
        self.stateful = info.stateful
        self.plan_bytes = info.plan_bytes

    def __repr__(self):
        return f"Model({self.name!r}, id={self.id})"

    def run(self, inputs, *, outputs=None, priority=None, deadline=None, resize=False,
            request_id=None) -> RunResult:
        """Runs the model once.

        inputs: one array per model input (numpy arrays are sent inline, ShmArray from a
            ShmPool by reference).
        outputs: None for inline outputs, or one ShmArray per model output for the daemon
            to write into (they are also returned).
        priority: a Priority; deadline: seconds from now, refused with DEADLINE_EXCEEDED
            when the daemon cannot meet it; resize: let the daemon resize the model's
            inputs to these shapes (otherwise a differing shape is INVALID_ARGUMENT);
            request_id: your id for this request, carried by the daemon's tracing spans.
        """
        return self._client._run(self.id, inputs, outputs, priority, deadline, resize, request_id)

    def open_session(self) -> "Session":
        """Opens a session: the state of one stream, which no other session or tenant
        ever sees. The daemon closes it on `close()`, when the model is unloaded, or when
        this process exits."""
        resp = _call(self._client._stub.OpenSession,
                     pb.OpenSessionRequest(model_id=self.id), metadata=self._client._metadata)
        return Session(self, resp.session.id)

    def unload(self):
        """Drops this tenant's handle (and closes its sessions on the model)."""
        self._client._unload(self.id)


class Session:
    """A session on a model (`Model.open_session`): runs on it continue one stream, one
    at a time in the order sent. Usable as a context manager (closes on exit)."""

    def __init__(self, model: Model, session_id: int):
        self.model = model
        self.id = session_id

    def __repr__(self):
        return f"Session({self.id}, model={self.model.id})"

    def run(self, inputs, *, outputs=None, priority=None, deadline=None, resize=False,
            request_id=None) -> RunResult:
        """Runs the model once on this session's stream (arguments as `Model.run`)."""
        return self.model._client._run(self.model.id, inputs, outputs, priority, deadline,
                                        resize, request_id, session_id=self.id)

    def reset(self):
        """Starts the stream afresh."""
        _call(self.model._client._stub.ResetSession,
              pb.ResetSessionRequest(session_id=self.id), metadata=self.model._client._metadata)

    def close(self):
        _call(self.model._client._stub.CloseSession,
              pb.CloseSessionRequest(session_id=self.id), metadata=self.model._client._metadata)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class Client:
    """A connection to switchyardd: `Client.unix(path)` or `Client.tcp(addr, token)`.

    Channels use gRPC's default options; on the Unix socket the daemon identifies the
    tenant by this process's uid, on TCP by the bearer token.
    """

    def __init__(self, channel, socket_path=None, token=None):
        self._channel = channel
        self._stub = pb_grpc.SwitchyardStub(channel)
        self._socket = socket_path
        self._metadata = (("authorization", f"Bearer {token}"),) if token else ()

    @classmethod
    def unix(cls, path=None) -> "Client":
        path = path or default_socket()
        return cls(grpc.insecure_channel(f"unix:{path}", options=_limits()), socket_path=path)

    @classmethod
    def tcp(cls, address: str, token: str) -> "Client":
        return cls(grpc.insecure_channel(address, options=_limits()), token=token)

    def close(self):
        self._channel.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def load(self, path, name=None) -> Model:
        """Loads a .tflite file (named after it unless `name`)."""
        with open(path, "rb") as f:
            data = f.read()
        if name is None:
            name = os.path.splitext(os.path.basename(path))[0]
        return self.load_bytes(data, name)

    def load_bytes(self, data: bytes, name: str = "") -> Model:
        if len(data) <= CHUNK:
            req = pb.LoadModelRequest(name=name, model=data)
            resp = _call(self._stub.LoadModel, req, metadata=self._metadata)
        else:
            chunks = (
                pb.LoadModelChunk(name=name if i == 0 else "", data=data[i:i + CHUNK])
                for i in range(0, len(data), CHUNK)
            )
            resp = _call(self._stub.LoadModelStream, chunks, metadata=self._metadata)
        return Model(self, resp.model)

    def models(self) -> list:
        resp = _call(self._stub.ListModels, pb.ListModelsRequest(), metadata=self._metadata)
        return [Model(self, m) for m in resp.models]

    def status(self):
        """The daemon's status message (uptime, models, in flight, this tenant's counters)."""
        return _call(self._stub.Status, pb.StatusRequest(), metadata=self._metadata)

    def shm_pool(self, size: int) -> ShmPool:
        """A shared-memory pool of `size` bytes (Unix socket only)."""
        if self._socket is None:
            raise Error("FAILED_PRECONDITION", "shared memory needs the Unix socket")
        return ShmPool(self._socket, size)

    def _unload(self, model_id):
        _call(self._stub.UnloadModel, pb.UnloadModelRequest(id=model_id),
              metadata=self._metadata)

    def _run(self, model_id, inputs, outputs, priority, deadline, resize, request_id,
             session_id=0):
        req = pb.RunRequest(
            model_id=model_id,
            inputs=[_tensor(a) for a in inputs],
            allow_resize=bool(resize),
            client_request_id=request_id or "",
            session_id=session_id,
        )
        if priority is not None:
            req.priority = int(priority)
        if deadline is not None:
            req.deadline_ms = max(1, int(round(deadline * 1000)))
        if outputs is not None:
            for o in outputs:
                if not isinstance(o, ShmArray) or o.region is None:
                    raise ValueError("outputs must be arrays from a ShmPool")
                region, offset, length = o.ref
                req.output_shm.append(pb.ShmRef(region=region, offset=offset, length=length))
        resp = _call(self._stub.Run, req, metadata=self._metadata)
        result, lengths = [], []
        for i, t in enumerate(resp.outputs):
            dtype = _DTYPES[t.dtype]
            if t.WhichOneof("data") == "inline":
                result.append(np.frombuffer(t.inline, dtype=dtype).reshape(tuple(t.shape)))
            else:
                lengths.append(t.shm.length)
                result.append(outputs[i])
        return RunResult(result, resp.timing.queue_us, resp.timing.run_us, resp.request_id,
                         lengths)


def _limits():
    return [
        ("grpc.max_send_message_length", MAX_MESSAGE),
        ("grpc.max_receive_message_length", MAX_MESSAGE),
    ]
