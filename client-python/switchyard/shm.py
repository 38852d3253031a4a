"""Shared-memory tensors: a sealed memfd registered with the daemon over the side
socket (docs/shm-protocol.md), carved into numpy arrays.

The region lives as long as the side connection: closing the pool (or exiting)
releases it in the daemon.
"""

import fcntl
import mmap
import os
import socket
import struct

import numpy as np

MAGIC = b"SYSHM\x01\x00\x00"
REPLY = struct.Struct("<BQQI")
ALIGN = 64
MAX_MESSAGE = 4096


def side_socket_path(grpc_socket: str) -> str:
    """The side socket next to the gRPC socket: the same path with extension .shm."""
    head, tail = os.path.split(grpc_socket)
    stem = tail.rsplit(".", 1)[0] if "." in tail.lstrip(".") else tail
    return os.path.join(head, stem + ".shm")


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("the daemon closed the side socket")
        buf += chunk
    return buf


class ShmArray(np.ndarray):
    """A numpy array whose bytes live in a pool; `ref` names them in a request."""

    def __array_finalize__(self, obj):
        # Views and results of arithmetic are not the pool's slice: they travel inline.
        self.region = None
        self.offset = None
        self.length = None

    @property
    def ref(self):
        return (self.region, self.offset, self.length)


class ShmPool:
    """One registered memfd region of `size` bytes, handing out 64-byte-aligned arrays.

    Allocation is a bump pointer: `reset()` reuses the whole pool (for example once per
    frame), `close()` releases it in the daemon.
    """

    def __init__(self, grpc_socket: str, size: int):
        from .client import Error  # noqa: avoid an import cycle

        if size <= 0:
            raise ValueError("a pool needs at least one byte")
        fd = os.memfd_create("switchyard-tensors", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        try:
            os.ftruncate(fd, size)
            # The daemon refuses regions that could shrink under its mapping.
            fcntl.fcntl(fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_SEAL)
            self._map = mmap.mmap(fd, size)
            self._side = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self._side.connect(side_socket_path(grpc_socket))
            socket.send_fds(self._side, [MAGIC], [fd])
            status, region, _size, msg_len = REPLY.unpack(_recv_exact(self._side, REPLY.size))
            message = _recv_exact(self._side, min(msg_len, MAX_MESSAGE)).decode(errors="replace")
        finally:
            os.close(fd)
        if status != 0:
            self._side.close()
            raise Error("INVALID_ARGUMENT", f"the daemon refused the region: {message}")
        self.region = region
        self.size = size
        self._next = 0

    def empty(self, shape, dtype) -> ShmArray:
        """An uninitialised array in the pool (e.g. a run's output destination)."""
        dtype = np.dtype(dtype)
        count = int(np.prod(shape, dtype=np.int64)) if len(shape) else 1
        length = count * dtype.itemsize
        offset = self._next
        end = offset + max(length, 1)
        if end > self.size:
            raise MemoryError(f"the pool of {self.size} bytes has no room for {length} more")
        self._next = -(-end // ALIGN) * ALIGN
        a = np.frombuffer(self._map, dtype=dtype, count=count, offset=offset).reshape(shape)
        a = a.view(ShmArray)
        a.region, a.offset, a.length = self.region, offset, length
        return a

    def array(self, values) -> ShmArray:
        """A copy of `values` in the pool, ready to be a run's input."""
        values = np.ascontiguousarray(values)
        a = self.empty(values.shape, values.dtype)
        a[...] = values
        return a

    def reset(self):
        """Forgets every array handed out; their memory is reused by the next ones."""
        self._next = 0

    def close(self):
        self._side.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
