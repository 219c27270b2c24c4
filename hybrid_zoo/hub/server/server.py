"""The local Hub server: a threading HTTP server around :class:`HubHandler` and a :class:`Store`."""

from __future__ import annotations

import logging
import secrets
import socket
import sys
import threading
import time
from collections import deque
from http.server import ThreadingHTTPServer
from pathlib import Path

from .handler import HubHandler
from .store import Store

logger = logging.getLogger(__name__)


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True  # a restarted server can take the same port at once
    # socketserver's default backlog of 5 drops the connections of a burst of clients beyond it, which then
    # wait for TCP's one-second SYN retry; the kernel caps this at net.core.somaxconn
    request_queue_size = 1024

    def __init__(self, address, hub: HubServer):
        self.hub = hub
        self._connections: set[socket.socket] = set()
        self._conn_lock = threading.Lock()
        super().__init__(address, HubHandler)

    def process_request(self, request, client_address):
        with self._conn_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request):
        with self._conn_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request, client_address) -> None:
        """What escaped a handler goes to the log (socketserver would print a traceback on stderr)."""
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, TimeoutError)):  # the client went away mid-reply: its business
            logger.debug('connection from %s ended: %s', client_address[0], exc)
        else:
            logger.exception('request from %s failed', client_address[0])

    def drop_connections(self) -> None:
        """Cut open keep-alive connections, so a stopped server really stops answering."""
        with self._conn_lock:
            for conn in list(self._connections):
                try:
                    conn.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


class HubServer:
    """A Hub-protocol server on ``host:port`` that stores everything under ``data_dir``.

    Args:
        data_dir: Folder for the content-addressed store; repos survive a restart on the same folder.
        host: Interface to bind; keep the default loopback unless you mean to share it.
        port: TCP port; 0 picks a free one (see :attr:`url`).
        tokens: ``{token: user}`` or ``{token: (user, role)}`` with role ``'write'`` (default) or ``'read'``.
        orgs: ``{org: [member, ...]}``; members may write to the org's namespace.
        timeout: Seconds a connection may sit idle or stall mid-request before the server drops it.
        ticket_ttl: Seconds an LFS upload URL stays valid (the batch reply's ``expires_in``).

    Raises:
        ValueError: ``port`` is not an integer from 0 to 65535.
        DataDirError: ``data_dir`` is not a writable folder, or another server uses it.
        OSError: The address cannot be bound (the port is in use, say).

    Example:
        >>> with HubServer(tmp_dir, tokens={'hf_alice': 'alice'}) as hub:  # doctest: +SKIP
        ...     os.environ['HF_ENDPOINT'] = hub.url  # before huggingface_hub is imported
    """

    def __init__(
        self,
        data_dir: str | Path,
        *,
        host: str = '127.0.0.1',
        port: int = 0,
        tokens: dict[str, str | tuple[str, str]] | None = None,
        orgs: dict[str, list[str]] | None = None,
        timeout: float = 60.0,
        ticket_ttl: float = 3600.0,
    ):
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise ValueError(f'port: expected an integer from 0 (any free port) to 65535, got {port!r}')
        self.store = Store(data_dir)
        self.timeout, self.ticket_ttl = timeout, ticket_ttl
        self.tokens: dict[str, tuple[str, str]] = {
            t: (u, 'write') if isinstance(u, str) else (u[0], u[1]) for t, u in (tokens or {}).items()
        }
        self.orgs = {org: list(members) for org, members in (orgs or {}).items()}
        self._tickets: dict[str, tuple[tuple[str, str, str, int], float]] = {}  # ticket -> (target, expiry)
        self._lock = threading.Lock()
        # (method, path) of recent requests, for tests and debugging; bounded for long-running servers
        self.requests: deque[tuple[str, str]] = deque(maxlen=100_000)
        try:
            self._httpd = _HTTPServer((host, port), self)
        except BaseException:
            self.store.close()
            raise
        self._thread: threading.Thread | None = None
        self._serving = False

    @property
    def address(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f'{host}:{port}'

    @property
    def url(self) -> str:
        """The endpoint to put in ``HF_ENDPOINT``."""
        return f'http://{self.address}'

    def count_request(self, method: str, path: str) -> None:
        with self._lock:
            self.requests.append((method, path))

    def issue_upload_ticket(self, repo_type: str, repo_id: str, oid: str, size: int) -> str:
        """A secret upload URL, like the Hub's pre-signed storage URLs (the PUT carries no token).

        It expires after ``ticket_ttl`` seconds, and when its repo is deleted; it is never logged.
        """
        ticket = secrets.token_urlsafe(24)
        now = time.monotonic()
        with self._lock:
            for old in [t for t, (_, expiry) in self._tickets.items() if expiry <= now]:
                del self._tickets[old]
            self._tickets[ticket] = ((repo_type, repo_id, oid, size), now + self.ticket_ttl)
        return ticket

    def upload_target(self, ticket: str) -> tuple[str, str, str, int] | None:
        """``(repo_type, repo_id, oid, size)`` of a valid ticket; None if unknown or expired."""
        with self._lock:
            target, expiry = self._tickets.get(ticket, (None, 0.0))
            return target if expiry > time.monotonic() else None

    def close_upload_ticket(self, ticket: str) -> None:
        with self._lock:
            self._tickets.pop(ticket, None)

    def drop_upload_tickets(self, repo_type: str, repo_id: str) -> None:
        """Invalidate the upload URLs of a repo (it is being deleted)."""
        with self._lock:
            for ticket in [t for t, (target, _) in self._tickets.items() if target[:2] == (repo_type, repo_id)]:
                del self._tickets[ticket]

    def start(self) -> HubServer:
        """Serve from a daemon thread; returns at once, ready for requests."""
        self._serving = True
        # a short poll keeps stop() quick (shutdown waits for the loop to notice)
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,), name='hub-server', daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Serve from the calling thread until :meth:`stop` or KeyboardInterrupt."""
        self._serving = True
        self._httpd.serve_forever()

    def stop(self) -> None:
        """Stop accepting, cut open connections, release the port and the data folder."""
        if self._serving:  # shutdown() waits for a serve_forever loop, so only ask a running one
            self._httpd.shutdown()
            self._serving = False
        self._httpd.drop_connections()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.store.close()

    def __enter__(self) -> HubServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
