"""Request bodies of the local Hub server: read on demand, bounded, Content-Length or chunked.

A route reads its body only after the caller is authenticated and authorised, and each route caps what it
reads (:class:`BodyError` 413 beyond the cap, before any byte is read when a Content-Length says so). What a
route leaves unread is either drained (a small known remainder) or the connection is closed, so the next
request on a keep-alive connection is never parsed out of the middle of a body.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import BinaryIO

_CHUNK_SIZE_LINE = re.compile(rb'^([0-9A-Fa-f]{1,16})[ \t]*(?:;[^\r\n]*)?\r?\n$')
_MAX_CHUNK_LINE = 1024
_MAX_TRAILERS = 64


class BodyError(Exception):
    """A body the server will not read (too large, or malformed framing); ``status`` is the HTTP reply."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


def _mib(n: int) -> str:
    return f'{n / (1 << 20):g} MiB' if n >= 1 << 20 else f'{n} bytes'


class RequestBody:
    """The body of one request, read once from ``rfile`` as its headers describe it.

    Args:
        rfile: The connection's buffered reader, positioned at the body.
        headers: The request headers (``Content-Length``, ``Transfer-Encoding``).
        send_continue: Called before the first read when the client sent ``Expect: 100-continue``: the
            client sends the body only once the server asks for it, so a refused request costs no upload.
    """

    def __init__(self, rfile: BinaryIO, headers, send_continue: Callable[[], None] | None = None):
        self._rfile = rfile
        self._send_continue = send_continue
        self.framing_error: BodyError | None = None
        self.chunked = False
        self.length: int | None = 0  # declared length; None when chunked
        self.consumed = 0
        self._left = 0  # bytes left in the body (Content-Length) or in the current chunk (chunked)
        self._in_chunk = False
        self._eof = True
        self._broken = False  # framing broke mid-body: the rest of the connection cannot be parsed
        self._cap: tuple[int, str] | None = None  # the reading route's limit, checked against each chunk's size
        te, cl = headers.get('Transfer-Encoding'), headers.get('Content-Length')
        if te is not None:
            if te.strip().lower() != 'chunked':
                self.framing_error = BodyError(400, f'Unsupported Transfer-Encoding {te!r}: expected chunked')
            elif cl is not None:  # both at once is how requests get smuggled past proxies
                self.framing_error = BodyError(400, 'Expected Content-Length or Transfer-Encoding: chunked, got both')
            else:
                self.chunked, self.length, self._eof = True, None, False
        elif cl is not None:
            if not re.fullmatch(r'[0-9]{1,18}', cl.strip()):
                self.framing_error = BodyError(400, f'Invalid Content-Length {cl!r}: expected a non-negative integer')
            else:
                self.length = self._left = int(cl)
                self._eof = self.length == 0
        if self.framing_error is not None:
            self._broken = True

    @property
    def done(self) -> bool:
        """The whole body has been read: the connection is ready for the next request."""
        return self._eof

    def drainable(self, limit: int) -> bool:
        """What is left can be read and dropped cheaply: a known remainder of at most ``limit`` bytes that the
        client is sending (with ``Expect: 100-continue`` it sends nothing until asked)."""
        if self._eof:
            return True
        return not (self._broken or self.chunked or self._send_continue is not None) and self._left <= limit

    # ---- reading ------------------------------------------------------------------------------------
    def _start(self) -> None:
        if self.framing_error is not None:
            raise self.framing_error
        if self._send_continue is not None:
            send, self._send_continue = self._send_continue, None
            send()

    def _raw_readline(self, limit: int) -> bytes:
        line = self._rfile.readline(limit)
        if not line:
            raise ConnectionError('connection closed inside a chunked body')
        return line

    def _next_chunk(self) -> None:
        """Read the CRLF ending the previous chunk and the next chunk's size line (and trailers after the last)."""
        try:
            if self._in_chunk and self._raw_readline(3) not in (b'\r\n', b'\n'):
                raise BodyError(400, 'Malformed chunked body: expected CRLF after a chunk')
            line = self._raw_readline(_MAX_CHUNK_LINE)
            m = _CHUNK_SIZE_LINE.match(line)
            if not m:
                raise BodyError(400, f'Malformed chunked body: expected a hex chunk size line, got {line[:40]!r}')
            self._left, self._in_chunk = int(m.group(1), 16), True
            if self._cap is not None and self.consumed + self._left > self._cap[0]:
                limit, what = self._cap
                raise BodyError(413, f'{what} is limited to {_mib(limit)}; a chunk of {self._left} bytes goes past it')
            if self._left == 0:
                for _ in range(_MAX_TRAILERS):
                    if self._raw_readline(_MAX_CHUNK_LINE) in (b'\r\n', b'\n'):
                        self._eof = True
                        return
                raise BodyError(400, f'Malformed chunked body: more than {_MAX_TRAILERS} trailer lines')
        except BodyError:
            self._broken = True
            raise

    def _available(self) -> bool:
        """True when body bytes are left to read (reading the next chunk header when needed)."""
        while not self._eof and self._left == 0:
            if not self.chunked:
                self._eof = True
            else:
                self._next_chunk()
        return not self._eof

    def _took(self, data: bytes) -> bytes:
        if not data:
            raise ConnectionError(f'connection closed with {self._left} body bytes unread')
        self._left -= len(data)
        self.consumed += len(data)
        if not self.chunked and self._left == 0:
            self._eof = True
        return data

    def read(self, n: int) -> bytes:
        """Up to ``n`` bytes (at least one while any is left); ``b''`` at the end of the body."""
        self._start()
        if n <= 0 or not self._available():
            return b''
        return self._took(self._rfile.read(min(n, self._left)))

    def readline(self, limit: int) -> bytes:
        """Bytes up to and including the next ``\\n``, at most ``limit`` of them; ``b''`` at the end."""
        self._start()
        line = b''
        while len(line) < limit and not line.endswith(b'\n') and self._available():
            line += self._took(self._rfile.readline(min(limit - len(line), self._left)))
        return line

    # ---- bounded views --------------------------------------------------------------------------------
    def check_length(self, limit: int, what: str) -> None:
        """Refuse at once (413) a body whose declared length exceeds ``limit``."""
        if self.framing_error is not None:
            raise self.framing_error
        if self.length is not None and self.length > limit:
            raise BodyError(413, f'{what} is limited to {_mib(limit)}; the request declares {self.length} bytes')
        self._cap = (limit, what)

    def chunks(self, limit: int, what: str, chunk_size: int = 1 << 20) -> Iterator[bytes]:
        """The body in pieces; 413 before reading when the declared length is over ``limit``, or once more
        than ``limit`` bytes have come (at most one byte past it is read)."""
        self.check_length(limit, what)
        while True:
            data = self.read(min(chunk_size, limit + 1 - self.consumed))
            if not data:
                return
            if self.consumed > limit:
                raise BodyError(413, f'{what} is limited to {_mib(limit)}; the request sent more')
            yield data

    def read_all(self, limit: int, what: str) -> bytes:
        """The whole body, at most ``limit`` bytes (413 otherwise)."""
        return b''.join(self.chunks(limit, what))

    def lines(self, max_line: int, limit: int, what: str) -> Iterator[bytes]:
        """The body line by line (NDJSON); 413 for a line over ``max_line`` bytes or a body over ``limit``."""
        self.check_length(limit, what)
        while True:
            line = self.readline(max_line + 1)
            if not line:
                return
            if len(line) > max_line:
                raise BodyError(413, f'{what}: a line is limited to {_mib(max_line)}; the request sent a longer one')
            if self.consumed > limit:
                raise BodyError(413, f'{what} is limited to {_mib(limit)}; the request sent more')
            yield line

    def discard(self, limit: int) -> bool:
        """Read and drop at most ``limit`` bytes of what is left; True if the body is then fully read."""
        if self._broken or (self.chunked is False and self._left > limit):
            return self._eof
        start = self.consumed
        while not self._eof and self.consumed - start <= limit:
            if not self.read(min(1 << 16, limit + 1 - (self.consumed - start))):
                break
        return self._eof
