"""One network loop for hundreds of MQTT links and the agents behind them, on one thread.

A board runs one agent in its own interpreter, with a paho network thread and a housekeeping thread.
Hundreds of those in one simulator process would measure thread switching and GIL hand-offs rather
than tinyfleet: here every link's socket sits in one epoll selector (paho's external-loop callbacks
keep it current), and each agent gets `pump()` and `beat()` calls in turn - the same code paths as in
`Agent.run()`, without the threads.
"""

from __future__ import annotations

import queue
import selectors
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

import paho.mqtt.client as paho

from tinyfleet.agent.mqtt import MqttLink
from tinyfleet.agent.service import Agent

MISC_S = 1.0  # paho's loop_misc (keepalive pings, reconnects) once a second, as its own thread does
RECONNECT_S = 2.0


class Loop:
    def __init__(self, heartbeat: float) -> None:
        self.heartbeat = heartbeat
        self.selector = selectors.DefaultSelector()
        self.links: list[MqttLink] = []
        self.agents: list[Agent] = []
        self._tasks: queue.Queue[tuple[Callable[..., Any], tuple[Any, ...], Future[Any]]] = queue.Queue()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self.selector.register(self._wake_r, selectors.EVENT_READ, None)
        self._stop = threading.Event()
        self._next_beat = 0.0
        # Clients with packets queued, and those of them waiting for room in their socket. Most writes go
        # out at once (below), so the selector is asked to watch for writability only when a socket is full:
        # two epoll_ctl calls per message would be the simulator measuring itself.
        self._unsent: set[paho.Client] = set()
        self._blocked: set[paho.Client] = set()
        self.thread = threading.Thread(target=self._run, name="simloop", daemon=True)
        self.thread.start()

    # -- used from other threads --------------------------------------------------------------

    def call(self, fn: Callable[..., Any], *args: Any, timeout: float = 120.0) -> Any:
        """Run `fn(*args)` on the loop's thread and return its result."""
        future: Future[Any] = Future()
        self._tasks.put((fn, args, future))
        self._wake_w.send(b"x")
        return future.result(timeout)

    def close(self) -> None:
        self._stop.set()
        self._wake_w.send(b"x")
        self.thread.join(timeout=10)
        self.selector.close()
        self._wake_r.close()
        self._wake_w.close()

    # -- on the loop's thread -----------------------------------------------------------------

    def attach(self, link: MqttLink) -> None:
        """Before link.start(own_thread=False): route the link's socket through this loop."""
        client = link.client
        client.on_socket_open = lambda c, u, sock: self.selector.register(sock, selectors.EVENT_READ, c)
        client.on_socket_close = lambda c, u, sock: self._forget(sock)
        client.on_socket_register_write = lambda c, u, sock: self._unsent.add(c)
        client.on_socket_unregister_write = lambda c, u, sock: self._sent(c, sock)
        self.links.append(link)

    def detach_all(self) -> None:
        self.links.clear()
        self.agents.clear()

    def _forget(self, sock: Any) -> None:
        try:
            self.selector.unregister(sock)
        except (KeyError, ValueError):
            pass

    def _sent(self, client: paho.Client, sock: Any) -> None:
        self._unsent.discard(client)
        if client in self._blocked:
            self._blocked.discard(client)
            self._watch(sock, client, write=False)

    def _flush(self) -> None:
        """Write what every client queued; watch for writability only where the socket was full."""
        for client in list(self._unsent):
            client.loop_write()
            sock = client.socket()
            if client.want_write() and sock is not None and client not in self._blocked:
                self._blocked.add(client)
                self._watch(sock, client, write=True)
            elif not client.want_write():
                self._unsent.discard(client)

    def _watch(self, sock: Any, client: paho.Client, *, write: bool) -> None:
        events = selectors.EVENT_READ | (selectors.EVENT_WRITE if write else 0)
        try:
            self.selector.modify(sock, events, client)
        except KeyError:
            self.selector.register(sock, events, client)
        except (ValueError, OSError):
            pass  # closed meanwhile

    def _run(self) -> None:
        next_misc = time.monotonic() + MISC_S
        while not self._stop.is_set():
            for key, events in self.selector.select(timeout=0.05):
                if key.data is None:
                    try:
                        while self._wake_r.recv(4096):
                            pass
                    except BlockingIOError:
                        pass
                    continue
                client = key.data
                if events & selectors.EVENT_READ:
                    client.loop_read()
                if events & selectors.EVENT_WRITE or client in self._unsent:
                    client.loop_write()  # what a read made it send (an echo, an ack) goes now
            self._run_tasks()
            now = time.time()
            for agent in self.agents:
                agent.pump(now)
                if agent.link.client in self._unsent:
                    # A board's own network thread sends its report at once; waiting for the next select()
                    # would hold it until every other agent of this process has reconciled.
                    agent.link.client.loop_write()
            if now >= self._next_beat and self.agents:
                self._next_beat = now + self.heartbeat
                for agent in self.agents:
                    agent.beat()
            if time.monotonic() >= next_misc:
                next_misc = time.monotonic() + MISC_S
                self._misc()
            self._flush()  # tasks, beats and pings queue packets too

    def _run_tasks(self) -> None:
        while True:
            try:
                fn, args, future = self._tasks.get_nowait()
            except queue.Empty:
                return
            try:
                future.set_result(fn(*args))
            except Exception as exc:  # noqa: BLE001 - handed to the caller
                future.set_exception(exc)

    def _misc(self) -> None:
        for link in self.links:
            client = link.client
            client.loop_misc()
            if not link.connected and not link._stopping and client.socket() is None:
                last = getattr(link, "_last_reconnect", 0.0)
                if time.monotonic() - last >= RECONNECT_S:
                    link._last_reconnect = time.monotonic()  # type: ignore[attr-defined]
                    try:
                        client.reconnect()
                    except OSError:
                        pass
