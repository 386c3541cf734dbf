"""Documents over 0MQ: bluesky's proxy, and consumers (monitor, processor) in other processes.

The session publishes every document to the proxy's input (``bluesky.callbacks.zmq.
Publisher``); ``talbot-lau monitor`` and ``talbot-lau processor`` subscribe to its output
(``RemoteDispatcher``) in a thread of their own, so nothing they do can slow the
RunEngine.  ``talbot-lau processor --publish`` sends the derived runs back into the proxy,
where a monitor tells them from raw runs by their start document (:func:`by_origin`).
Addresses default to loopback.
"""

from __future__ import annotations

import asyncio
import threading

import event_model
from bluesky.callbacks.zmq import Proxy, RemoteDispatcher

DEFAULT_IN = ("127.0.0.1", 5577)
DEFAULT_OUT = ("127.0.0.1", 5578)


def parse_address(text: str) -> tuple[str, int]:
    """'host:port' or 'port' -> (host, port); loopback by default."""
    host, _, port = text.rpartition(":")
    try:
        return (host or "127.0.0.1", int(port))
    except ValueError:
        raise ValueError(f"{text!r}: give an address as HOST:PORT or PORT") from None


def run_proxy(in_port: int = DEFAULT_IN[1], out_port: int = DEFAULT_OUT[1]) -> None:
    """Forward documents from publishers (in_port) to subscribers (out_port); blocks."""
    Proxy(in_port, out_port).start()


def start_dispatcher(address: tuple[str, int], callbacks):
    """Subscribe ``callbacks`` to the proxy's output in a daemon thread; returns a
    function that stops it."""
    ready = threading.Event()
    holder = {}

    def run():
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        dispatcher = RemoteDispatcher(address, loop=loop)
        for callback in callbacks:
            dispatcher.subscribe(callback)
        holder["dispatcher"] = dispatcher
        ready.set()
        dispatcher.start()

    threading.Thread(target=run, name="0mq-dispatcher", daemon=True).start()
    ready.wait(10)
    dispatcher = holder["dispatcher"]
    return lambda: dispatcher.loop.call_soon_threadsafe(dispatcher.stop)


def by_origin(raw, derived) -> event_model.RunRouter:
    """Every document of a derived run (its start names a ``parent_uid``) to ``derived``,
    of any other run to ``raw``."""
    return event_model.RunRouter([lambda name, start: ([derived if "parent_uid" in start else raw], [])])
