"""Documents over 0MQ: bluesky's proxy, and consumers (monitor, processor) in other processes.

The session publishes every document to the proxy's input (:func:`publisher`, bluesky's
``Publisher``); ``talbot-lau monitor`` and ``talbot-lau processor`` subscribe to its output
(:func:`start_dispatcher`) in a thread of their own, so nothing they do can slow the
RunEngine.  ``talbot-lau processor --publish`` sends the derived runs back into the proxy,
where a monitor tells them from raw runs by their start document (:func:`by_origin`).

The network is closed by default: the proxy binds loopback unless told otherwise, and
documents cross the sockets as msgpack (numpy arrays and scalars via msgpack-numpy, never
its pickle path for object arrays), never pickle.  bluesky's ``Publisher`` and
``RemoteDispatcher`` default to pickle, so build them here only (:func:`publisher`,
:func:`start_dispatcher`).  A message that does not decode to a document is logged and
dropped; the dispatcher keeps running.  msgpack turns tuples into lists.
"""

from __future__ import annotations

import asyncio
import logging
import threading

import event_model
import msgpack
import msgpack_numpy
import numpy as np
from bluesky.callbacks.zmq import Proxy, Publisher, RemoteDispatcher
from bluesky.run_engine import DocumentNames

log = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
DEFAULT_IN = (LOOPBACK, 5577)
DEFAULT_OUT = (LOOPBACK, 5578)


def parse_address(text: str) -> tuple[str, int]:
    """'host:port' or 'port' -> (host, port); loopback by default."""
    host, _, port = text.rpartition(":")
    try:
        return (host or LOOPBACK, int(port))
    except ValueError:
        raise ValueError(f"{text!r}: give an address as HOST:PORT or PORT") from None


def _encode(obj):
    """msgpack ``default``: numpy arrays and scalars through msgpack-numpy; an object array
    as a list (msgpack-numpy would pickle it)."""
    if isinstance(obj, np.ndarray) and obj.dtype.hasobject:
        return obj.tolist()
    encoded = msgpack_numpy.encode(obj)
    if encoded is obj:
        raise TypeError(f"cannot send a {type(obj).__name__} in a document: {obj!r}")
    return encoded


def _decode(obj: dict):
    """msgpack ``object_hook``: msgpack-numpy's arrays and scalars, refusing any dtype that
    holds Python objects (msgpack-numpy unpickles those)."""
    if b"nd" not in obj:
        return obj
    if obj.get(b"kind") == b"O":
        raise ValueError("object arrays are refused")
    descr = obj.get(b"type")
    if isinstance(descr, (bytes, str)) and np.dtype(descr).hasobject:
        raise ValueError("object dtypes are refused")
    value = msgpack_numpy.decode(obj)
    if isinstance(value, (np.ndarray, np.generic)):
        if value.dtype.hasobject:
            raise ValueError("object dtypes are refused")
        return value.copy()  # writable, and not a view of the message buffer
    return value


def serialize(doc: dict) -> bytes:
    """A document as msgpack bytes (the ``serializer`` of every Publisher here)."""
    return msgpack.packb(doc, default=_encode, use_bin_type=True)


def deserialize(data: bytes) -> dict:
    """The document in msgpack ``data``; ValueError for anything else (no pickle path)."""
    try:
        doc = msgpack.unpackb(data, object_hook=_decode, raw=False)
    except Exception as err:  # msgpack's own errors, or _decode's refusals
        raise ValueError(f"not a msgpack document: {err}") from err
    if not isinstance(doc, dict):
        raise ValueError(f"not a document: a {type(doc).__name__}")
    return doc


def publisher(address: tuple[str, int] | str) -> Publisher:
    """bluesky's ``Publisher`` to a proxy's input, sending msgpack."""
    return Publisher(address, serializer=serialize)


def make_proxy(in_port: int = DEFAULT_IN[1], out_port: int = DEFAULT_OUT[1], *,
               host: str = LOOPBACK) -> Proxy:
    """bluesky's proxy bound to ``host`` (loopback unless told otherwise); not started."""
    return Proxy((host, in_port), (host, out_port))


def run_proxy(in_port: int = DEFAULT_IN[1], out_port: int = DEFAULT_OUT[1], *,
              host: str = LOOPBACK) -> None:
    """Forward documents from publishers (in_port) to subscribers (out_port); blocks."""
    make_proxy(in_port, out_port, host=host).start()


class SafeDispatcher(RemoteDispatcher):
    """bluesky's ``RemoteDispatcher`` with msgpack, which logs and drops a message that is
    not ``b"prefix name msgpack-document"`` of a known document name (bluesky's own loop
    ends on an unknown name and prints undecodable messages)."""

    def __init__(self, address, *, loop=None):
        super().__init__(address, loop=loop, deserializer=deserialize)

    async def _poll(self):
        while True:
            message = await self._socket.recv()
            try:
                prefix, name, payload = message.split(b" ", 2)
                if self._prefix and prefix != self._prefix:
                    continue
                kind = DocumentNames[name.decode()]
                doc = self._deserializer(payload)
            except Exception as err:
                log.warning("0MQ: dropped a message of %d bytes that is not a document (%s)",
                            len(message), err)
                continue
            self.loop.call_soon(self.process, kind, doc)


def start_dispatcher(address: tuple[str, int], callbacks):
    """Subscribe ``callbacks`` to the proxy's output in a daemon thread; returns a
    function that stops it."""
    ready = threading.Event()
    holder = {}

    def run():
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        dispatcher = SafeDispatcher(address, loop=loop)
        for callback in callbacks:
            dispatcher.subscribe(callback)
        holder["dispatcher"] = dispatcher
        ready.set()
        try:
            dispatcher.start()
        except asyncio.CancelledError:  # stopped
            pass

    thread = threading.Thread(target=run, name="0mq-dispatcher", daemon=True)
    thread.start()
    ready.wait(10)
    dispatcher = holder["dispatcher"]

    def stop(timeout: float = 10.0) -> None:
        """Cancel the dispatcher's poll; its own ``finally`` then closes the socket and the
        loop once the loop has stopped (bluesky's ``stop`` called inside the running loop
        would try to close it there and print a RuntimeError)."""
        def cancel():
            if dispatcher._task is not None:
                dispatcher._task.cancel()

        if not dispatcher.closed:
            try:
                dispatcher.loop.call_soon_threadsafe(cancel)
            except RuntimeError:  # the loop is already closed
                pass
        thread.join(timeout)

    return stop


def by_origin(raw, derived) -> event_model.RunRouter:
    """Every document of a derived run (its start names a ``parent_uid``) to ``derived``,
    of any other run to ``raw``."""
    return event_model.RunRouter([lambda name, start: ([derived if "parent_uid" in start else raw], [])])
