# cython: language_level=3
"""The proxy's compiled HTTP/1.1 codec: request and response heads, chunked framing.

A proxy mostly passes bytes along. Parsing a head here records where each field is in
the received bytes (no per-field objects); the head sent on is then written in one
allocation: the request line, every end-to-end field as it came (name case kept), and
the fields the proxy sets. Bodies are never re-encoded: ``ChunkedScanner`` follows
chunked framing over the raw bytes so they can be passed through unchanged, and says
where the message ends; only a trailer section is held back and passed on filtered.

The grammar is RFC 9112's, strictly, because a proxy that reads framing differently
from its upstream is how requests get smuggled: no obs-fold, no space before a field's
colon, field values of visible characters (trailer fields too), a single valid
Content-Length (or identical repeats), ``Transfer-Encoding: chunked`` and nothing else,
never with a Content-Length. What a client could use to make the upstream believe
something about it (``_`` names, identity fields, a malformed Host, an upgrade past
routing) is refused or dropped: see ``_parse_fields``, ``_kind`` and ``_host_problem``.
Chunk framing needs CRLF exactly. Head lines may end in a bare LF, as nginx and h11
accept; heads are rewritten with CRLF, so that cannot reach an upstream.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from libc.string cimport memchr, memcmp, memcpy

from fastroute.errors import BadGatewayError, BadRequestError, HeadersTooLargeError

__all__ = ["ChunkedError", "ChunkedScanner", "RequestHead", "ResponseHead", "parse_request", "parse_response"]


class ChunkedError(ValueError):
    """Chunked framing that does not follow RFC 9112 §7.1."""


# ---------------------------------------------------------------- character classes

cdef unsigned char TCHAR[256]   # token characters: method, field names ("_" also has UNDERSCORE)
cdef unsigned char HOSTCHAR[256]  # Host reg-name characters: letters, digits, "-", ".", "_"
cdef unsigned char VCHAR[256]   # field value characters: HTAB, SP, visible, obs-text
cdef unsigned char TARGET[256]  # request-target characters: visible ASCII
cdef unsigned char LOWER[256]
cdef enum:
    UNDERSCORE = 2  # the TCHAR bit of "_", so a field name's loop notices it for free
cdef signed char HEX[256]


cdef void _init_tables() noexcept:
    cdef int c
    for c in range(256):
        TARGET[c] = 0x21 <= c <= 0x7E
        VCHAR[c] = c == 9 or 0x20 <= c <= 0x7E or c >= 0x80
        TCHAR[c] = (48 <= c <= 57) or (65 <= c <= 90) or (97 <= c <= 122)
        LOWER[c] = c + 32 if 65 <= c <= 90 else c
        HEX[c] = -1
        if 48 <= c <= 57:
            HEX[c] = c - 48
        elif 97 <= c <= 102:
            HEX[c] = c - 87
        elif 65 <= c <= 70:
            HEX[c] = c - 55
        HOSTCHAR[c] = TCHAR[c]
    for c in b"!#$%&'*+-.^_`|~":
        TCHAR[c] = 1
    TCHAR[b'_'] = 1 | UNDERSCORE
    for c in b"-._":
        HOSTCHAR[c] = 1


_init_tables()


# ---------------------------------------------------------------- header fields

cdef enum Kind:
    K_OTHER = 0            # end-to-end: passed on as it came
    K_HOST
    K_CONTENT_LENGTH
    K_TRANSFER_ENCODING
    K_CONNECTION
    K_UPGRADE
    K_EXPECT
    K_XFF
    K_XF_PROTO
    K_XF_HOST
    K_XF_PORT
    K_X_REAL_IP
    K_HOP                  # other hop-by-hop fields, and the ones Connection lists
    K_IDENTITY             # who the client is or what it asked for, as a proxy in front
                           # would say it: passed on from trusted peers only
    K_UNDERSCORE           # a name with "_": never passed upstream (see _parse_fields)


ctypedef struct Field:
    Py_ssize_t name
    Py_ssize_t name_len
    Py_ssize_t value
    Py_ssize_t value_len
    int kind


cdef bint _is(const unsigned char* p, Py_ssize_t n, const char* lower) noexcept:
    """Whether p[:n] is ``lower`` (a lower-case literal of length n), ignoring case."""
    cdef Py_ssize_t i
    for i in range(n):
        if LOWER[p[i]] != <unsigned char>lower[i]:
            return False
    return True


cdef int _kind(const unsigned char* p, Py_ssize_t n) noexcept:
    """The kind of the field named p[:n] (any case).

    K_IDENTITY: ``Forwarded`` (RFC 7239's X-Forwarded-*), ``X-Original-URL`` and
    ``X-Rewrite-URL`` (some frameworks route on them instead of the request target, past
    the Ingress's path rules) and ``ssl-client-*`` (ingress-nginx's verified client
    certificate, which backends believe): a client must not be able to send them itself.
    """
    if n == 4 and _is(p, n, b"host"):
        return K_HOST
    if n == 14:
        if _is(p, n, b"content-length"):
            return K_CONTENT_LENGTH
        if _is(p, n, b"x-original-url"):
            return K_IDENTITY
        if _is(p, n, b"http2-settings"):
            return K_HOP  # RFC 9113 §3.2.1 (RFC 7540): h2c's, connection-specific
    if n == 17:
        if _is(p, n, b"transfer-encoding"):
            return K_TRANSFER_ENCODING
        if _is(p, n, b"x-forwarded-proto"):
            return K_XF_PROTO
        if _is(p, n, b"ssl-client-verify"):
            return K_IDENTITY
    elif n == 10:
        if _is(p, n, b"connection"):
            return K_CONNECTION
        if _is(p, n, b"keep-alive"):
            return K_HOP
    elif n == 7:
        if _is(p, n, b"upgrade"):
            return K_UPGRADE
        if _is(p, n, b"trailer"):
            return K_HOP
    elif n == 6:
        if _is(p, n, b"expect"):
            return K_EXPECT
    elif n == 15:
        if _is(p, n, b"x-forwarded-for"):
            return K_XFF
        if _is(p, n, b"ssl-client-cert"):
            return K_IDENTITY
    elif n == 16:
        if _is(p, n, b"x-forwarded-host"):
            return K_XF_HOST
        if _is(p, n, b"x-forwarded-port"):
            return K_XF_PORT
        if _is(p, n, b"proxy-connection"):
            return K_HOP
    elif n == 9:
        if _is(p, n, b"x-real-ip"):
            return K_X_REAL_IP
        if _is(p, n, b"forwarded"):
            return K_IDENTITY  # RFC 7239
    elif n == 2:
        if _is(p, n, b"te"):
            return K_HOP
    elif n == 18:
        if _is(p, n, b"proxy-authenticate"):
            return K_HOP
    elif n == 19:
        if _is(p, n, b"proxy-authorization"):
            return K_HOP
    elif n == 13:
        if _is(p, n, b"x-rewrite-url"):
            return K_IDENTITY
    elif n == 21:
        if _is(p, n, b"ssl-client-subject-dn"):
            return K_IDENTITY
    elif n == 20:
        if _is(p, n, b"ssl-client-issuer-dn"):
            return K_IDENTITY
    return K_OTHER


cdef enum:
    MAX_TOKENS = 16  # names a Connection header may list


cdef class _Head:
    """The fields of one head, as offsets into the bytes it was parsed from."""

    cdef bytes raw
    cdef Field* fields
    cdef int nfields
    cdef readonly Py_ssize_t size
    cdef readonly int version  # 10 or 11
    cdef readonly long long content_length  # -1: none
    cdef readonly bint chunked
    cdef readonly bint keep_alive
    cdef Py_ssize_t host_field  # index, -1: none
    cdef Py_ssize_t upgrade_field
    cdef bint upgrade_other  # an Upgrade field asks for something besides websocket
    cdef Py_ssize_t expect_field
    cdef bint connection_upgrade
    cdef Py_ssize_t token_at[MAX_TOKENS]
    cdef Py_ssize_t token_len[MAX_TOKENS]
    cdef int ntokens
    cdef int transfer_encodings
    cdef bint te_is_chunked
    cdef bint close_token
    cdef bint keep_alive_token
    cdef const char* error
    cdef Py_ssize_t error_at

    def __cinit__(self) -> None:
        self.fields = NULL
        self.content_length = -1
        self.host_field = -1
        self.upgrade_field = -1
        self.expect_field = -1

    def __dealloc__(self) -> None:
        PyMem_Free(self.fields)

    cdef int _fail(self, const char* why, Py_ssize_t at) noexcept:
        self.error = why
        self.error_at = at
        return -1

    cdef int _parse_fields(self, const unsigned char* p, Py_ssize_t pos, Py_ssize_t end) noexcept:
        """Parse field lines from p[pos:end] (end: just past the blank line's LF)."""
        cdef Py_ssize_t line_end, content_end, i, name_end, v0, v1, room
        cdef const unsigned char* lf
        cdef Field* f
        cdef int kind
        cdef unsigned char seen  # the TCHAR bits of the name's characters, or-ed
        room = (end - pos) // 3 + 1  # a field line takes at least 3 bytes ("a:\n")
        self.fields = <Field*>PyMem_Malloc(room * sizeof(Field))
        if self.fields == NULL:
            return self._fail(b"out of memory", pos)
        while True:
            lf = <const unsigned char*>memchr(p + pos, b'\n', end - pos)
            line_end = lf - p
            content_end = line_end
            if content_end > pos and p[content_end - 1] == b'\r':
                content_end -= 1
            if content_end == pos:
                return 0  # the blank line: the head ends
            if p[pos] == b' ' or p[pos] == b'\t':
                return self._fail(b"obsolete line folding in a header field", pos)
            i = pos
            seen = 0
            while i < content_end and TCHAR[p[i]]:
                seen |= TCHAR[p[i]]
                i += 1
            if i == pos or i == content_end or p[i] != b':':
                if i < content_end and (p[i] == b' ' or p[i] == b'\t'):
                    return self._fail(b"whitespace between a header field name and its colon", pos)
                return self._fail(b"invalid header field name", pos)
            name_end = i
            v0 = i + 1
            while v0 < content_end and (p[v0] == b' ' or p[v0] == b'\t'):
                v0 += 1
            v1 = content_end
            while v1 > v0 and (p[v1 - 1] == b' ' or p[v1 - 1] == b'\t'):
                v1 -= 1
            for i in range(v0, v1):
                if not VCHAR[p[i]]:
                    return self._fail(b"invalid character in a header field value", pos)
            f = &self.fields[self.nfields]
            self.nfields += 1
            f.name = pos
            f.name_len = name_end - pos
            f.value = v0
            f.value_len = v1 - v0
            # A name with "_" is dropped from requests, as nginx drops it by default
            # (underscores_in_headers off): behind a proxy that maps "-" and "_" alike
            # (CGI, PHP, WSGI's HTTP_X_FORWARDED_FOR), X_Forwarded_For would pass for the
            # X-Forwarded-For this proxy sets. No name the codec knows has one.
            kind = K_UNDERSCORE if seen & UNDERSCORE else _kind(p + pos, f.name_len)
            f.kind = kind
            if kind == K_HOST:
                if self.host_field >= 0:
                    return self._fail(b"more than one Host header", pos)
                self.host_field = self.nfields - 1
            elif kind == K_CONTENT_LENGTH:
                if self._content_length(p + v0, v1 - v0) < 0:
                    return -1
            elif kind == K_TRANSFER_ENCODING:
                self.transfer_encodings += 1
                self.te_is_chunked = v1 - v0 == 7 and _is(p + v0, 7, b"chunked")
            elif kind == K_CONNECTION:
                if self._connection_tokens(p, v0, v1) < 0:
                    return -1
            elif kind == K_UPGRADE:
                self.upgrade_field = self.nfields - 1
                if not _websocket_only(p + v0, v1 - v0):
                    self.upgrade_other = True
            elif kind == K_EXPECT:
                self.expect_field = self.nfields - 1
            pos = line_end + 1

    cdef int _content_length(self, const unsigned char* v, Py_ssize_t n) noexcept:
        cdef long long value = 0
        cdef Py_ssize_t i
        if n == 0 or n > 18:
            return self._fail(b"invalid Content-Length", 0)
        for i in range(n):
            if not (b'0' <= v[i] <= b'9'):
                return self._fail(b"invalid Content-Length", 0)
            value = value * 10 + (v[i] - 48)
        if self.content_length >= 0 and self.content_length != value:
            return self._fail(b"conflicting Content-Length headers", 0)
        self.content_length = value
        return 0

    cdef int _connection_tokens(self, const unsigned char* p, Py_ssize_t i, Py_ssize_t end) noexcept:
        cdef Py_ssize_t t0, t1
        while _next_item(p, &i, end, &t0, &t1):
            if t1 - t0 == 5 and _is(p + t0, 5, b"close"):
                self.close_token = True
            elif t1 - t0 == 10 and _is(p + t0, 10, b"keep-alive"):
                self.keep_alive_token = True
            elif t1 - t0 == 7 and _is(p + t0, 7, b"upgrade"):
                self.connection_upgrade = True
            else:
                if self.ntokens == MAX_TOKENS:
                    return self._fail(b"the Connection header lists too many fields", t0)
                self.token_at[self.ntokens] = t0
                self.token_len[self.ntokens] = t1 - t0
                self.ntokens += 1
        return 0

    cdef void _mark_listed(self, const unsigned char* p) noexcept:
        """Fields a Connection header names are hop-by-hop too (RFC 9110 §7.6.1)."""
        cdef int i, t
        cdef Field* f
        for i in range(self.nfields):
            f = &self.fields[i]
            for t in range(self.ntokens):
                if f.name_len == self.token_len[t] and _same(p + f.name, p + self.token_at[t], f.name_len):
                    # framing, Host, X-Forwarded-* and identity fields are never dropped
                    if f.kind == K_OTHER or f.kind == K_UNDERSCORE:
                        f.kind = K_HOP
                    break

    cdef bytes _slice(self, Py_ssize_t at, Py_ssize_t n):
        return PyBytes_FromStringAndSize(PyBytes_AS_STRING(self.raw) + at, n)

    cdef bytes _value(self, Py_ssize_t index):
        if index < 0:
            return None
        return self._slice(self.fields[index].value, self.fields[index].value_len)

    @property
    def headers(self) -> list:
        """Every field as (lower-case name, value), in order (a slow path: logs, tests)."""
        cdef int i
        out = []
        for i in range(self.nfields):
            out.append(
                (
                    self._slice(self.fields[i].name, self.fields[i].name_len).lower(),
                    self._slice(self.fields[i].value, self.fields[i].value_len),
                )
            )
        return out

    def header(self, name: bytes) -> bytes | None:
        """The first field named ``name`` (any case), or None."""
        cdef const unsigned char* p = <const unsigned char*>PyBytes_AS_STRING(self.raw)
        cdef const unsigned char* want = <const unsigned char*>PyBytes_AS_STRING(name)
        cdef Py_ssize_t n = PyBytes_GET_SIZE(name)
        cdef int i
        for i in range(self.nfields):
            if self.fields[i].name_len == n and _same(p + self.fields[i].name, want, n):
                return self._value(i)
        return None

    @property
    def upgrade(self) -> bytes | None:
        """``b"websocket"`` when that is asked for (``Connection: upgrade``), else None.

        An upgrade turns the connection into a tunnel that no later request on it is
        routed through, so only WebSocket (RFC 6455), which backends expect behind an
        Ingress, is asked for again upstream; ``h2c`` above all is not (its HTTP/2
        requests would reach the backend unrouted). Every Upgrade field must list
        ``websocket`` alone (any case, optional whitespace, repeats); anything else and
        the request goes on as a plain one, its Upgrade dropped as hop-by-hop.
        """
        if (
            self.connection_upgrade
            and self.upgrade_field >= 0
            and not self.upgrade_other
            and self.version == 11
        ):
            return b"websocket"
        return None


cdef bint _websocket_only(const unsigned char* v, Py_ssize_t n) noexcept:
    """Whether the list v[:n] names ``websocket`` and nothing else (RFC 9110 §7.8, §5.6.1)."""
    cdef Py_ssize_t i = 0, t0, t1
    cdef bint named = False
    while _next_item(v, &i, n, &t0, &t1):
        if t1 - t0 != 9 or not _is(v + t0, 9, b"websocket"):
            return False  # another protocol, or a version ("websocket/13"): not ours to pass
        named = True
    return named


cdef inline bint _next_item(
    const unsigned char* p, Py_ssize_t* at, Py_ssize_t end, Py_ssize_t* start, Py_ssize_t* stop
) noexcept:
    """The next element of the comma-separated list in p[at[0]:end] (RFC 9110 §5.6.1).

    Empty elements and the whitespace around an element are skipped; the element is
    p[start[0]:stop[0]], and ``at`` moves past it. False once no element is left.
    """
    cdef Py_ssize_t i = at[0], t1
    while i < end and (p[i] == b' ' or p[i] == b'\t' or p[i] == b','):
        i += 1
    if i == end:
        at[0] = i
        return False
    start[0] = i
    while i < end and p[i] != b',':
        i += 1
    t1 = i
    while p[t1 - 1] == b' ' or p[t1 - 1] == b'\t':  # p[start] is neither: the loop stops there
        t1 -= 1
    stop[0] = t1
    at[0] = i
    return True


cdef bint _same(const unsigned char* a, const unsigned char* b, Py_ssize_t n) noexcept:
    cdef Py_ssize_t i
    for i in range(n):
        if LOWER[a[i]] != LOWER[b[i]]:
            return False
    return True


cdef Py_ssize_t _head_end(const unsigned char* p, Py_ssize_t start, Py_ssize_t n) noexcept:
    """Offset just past the blank line ending the head that starts at ``start``; -1: not yet."""
    cdef const unsigned char* lf
    cdef Py_ssize_t i = start
    while i < n:
        lf = <const unsigned char*>memchr(p + i, b'\n', n - i)
        if lf == NULL:
            return -1
        i = lf - p + 1
        if i < n and p[i] == b'\n':
            return i + 1
        if i + 1 < n and p[i] == b'\r' and p[i + 1] == b'\n':
            return i + 2
        if i + 1 >= n:
            return -1
    return -1


cdef inline char* _put(char* out, const void* src, Py_ssize_t n) noexcept:
    memcpy(out, src, n)
    return out + n


cdef int _decimal(long long value, char* digits) noexcept:
    """Write ``value`` (>= 0) in decimal into ``digits`` (20 bytes); its length."""
    cdef char reverse[20]
    cdef int n = 0, i
    while True:
        reverse[n] = <char>(48 + value % 10)
        n += 1
        value //= 10
        if value == 0:
            break
    for i in range(n):
        digits[i] = reverse[n - 1 - i]
    return n


# ---------------------------------------------------------------- requests

cdef class RequestHead(_Head):
    """A parsed request head (``parse_request``)."""

    cdef readonly bytes method
    cdef readonly bytes target
    cdef readonly bint expect_continue

    @property
    def host(self) -> bytes | None:
        return self._value(self.host_field)

    def forward_head(
        self,
        bytes target,
        bytes client_ip,
        bytes scheme,
        bytes port,
        bint trusted,
        bytes host=b"",
        *,
        bint override_host=False,
        bytes vhost=b"",
        bytes extra=b"",
        frozenset drop=None,
        bint chain=True,
        bytes real_ip=b"",
        bint http10=False,
    ) -> bytes:
        """The head to send upstream: ``target`` instead of the original, HTTP/1.1.

        End-to-end fields pass as they came; ``host`` is the Host sent when the request
        has none (an HTTP/1.0 request: HTTP/1.1 requires one), or whatever it has when
        ``override_host``: for an absolute-form target, whose authority ``host`` is and
        whose Host field a server must ignore (RFC 9112 §3.2.2). Content-Length is sent
        once, in plain decimal, however the client repeated or padded it.
        ``X-Forwarded-For`` gets ``client_ip`` appended to a trusted peer's chain (or,
        without ``chain``, is ``client_ip`` alone), and replaces anyone else's;
        ``X-Forwarded-Proto``/``-Host``/``-Port`` and ``X-Real-IP`` keep a trusted peer's
        values and are set from this connection otherwise (``-Host`` from the Host
        sent); ``real_ip``, when given, is the ``X-Real-IP`` sent whoever the peer is.
        ``Forwarded``, ``X-Original-URL``, ``X-Rewrite-URL`` and ``ssl-client-*`` pass
        from a trusted peer only; fields named with ``_`` never do. ``Expect`` is
        answered by the proxy and dropped; a chunked body stays chunked; a WebSocket
        upgrade is asked for again (see ``upgrade``), no other.

        A route's plan adds to this: ``vhost`` is the Host sent instead (``-Host`` keeps
        the client's), ``extra`` is written as it is before the end of the head (whole
        ``Name: value\r\n`` lines, validated when the config was built), and fields whose
        lower-case name is in ``drop`` are not passed on (``extra`` sets them instead).
        ``http10`` writes an HTTP/1.0 request (``proxy-http-version: "1.0"``) with
        ``Connection: close`` and no upgrade; HTTP/1.0 has no chunked framing.

        Raises:
            ValueError: ``override_host`` without a ``host``; ``http10`` for a request
                with a chunked body.
        """
        cdef const char* p = PyBytes_AS_STRING(self.raw)
        cdef bint dropping = drop is not None and len(drop) > 0
        cdef Py_ssize_t size, xff_total = 0
        cdef int i, nxff = 0
        cdef Field* f
        cdef Field* ours[4]  # the last trusted proto, host, port, real-ip fields
        cdef Py_ssize_t host_len = 0
        cdef char* out
        cdef bytes upgrade = None if http10 else self.upgrade
        cdef char length[20]
        cdef int length_len = 0
        cdef const char* host_value = PyBytes_AS_STRING(host)
        cdef bint own_host = override_host or self.host_field < 0  # Host: ``host``
        cdef bint virtual = PyBytes_GET_SIZE(vhost) > 0
        cdef bytes kept = None  # which fields pass when ``drop`` names some: b"\1" or b"\0"
        cdef bytes client_real  # X-Real-IP's value when no trusted peer's is kept
        cdef const char* keep = NULL
        if override_host and PyBytes_GET_SIZE(host) == 0:
            raise ValueError("override_host needs the target's authority as host")
        if http10 and self.chunked:
            raise ValueError("an HTTP/1.0 request cannot carry a chunked body")
        ours[0] = ours[1] = ours[2] = ours[3] = NULL
        size = PyBytes_GET_SIZE(self.method) + 1 + PyBytes_GET_SIZE(target) + 11 + 2
        size += PyBytes_GET_SIZE(extra)
        if self.content_length >= 0:
            length_len = _decimal(self.content_length, length)
            size += 16 + length_len + 2
        if dropping:
            kept = _kept_fields(p, self.fields, self.nfields, drop)
            keep = PyBytes_AS_STRING(kept)
        for i in range(self.nfields):
            f = &self.fields[i]
            if keep != NULL and not keep[i]:
                continue
            if _forwarded(f.kind, trusted, own_host or virtual):
                size += f.name_len + f.value_len + 4
            elif trusted:
                if f.kind == K_XFF:
                    if chain:
                        xff_total += f.value_len + 2
                        nxff += 1
                elif K_XF_PROTO <= f.kind <= K_X_REAL_IP:
                    ours[f.kind - K_XF_PROTO] = f
        if PyBytes_GET_SIZE(real_ip) > 0:
            ours[3] = NULL
            client_real = real_ip
        else:
            client_real = client_ip
        if own_host:
            host_len = PyBytes_GET_SIZE(host)
            size += 6 + host_len + 2
        else:
            host_len = self.fields[self.host_field].value_len
            host_value = p + self.fields[self.host_field].value
        if virtual:
            size += 6 + PyBytes_GET_SIZE(vhost) + 2 - (6 + host_len + 2 if own_host else 0)
        size += 17 + xff_total + PyBytes_GET_SIZE(client_ip) + 2
        size += 19 + (ours[0].value_len if ours[0] else PyBytes_GET_SIZE(scheme)) + 2
        size += 18 + (ours[1].value_len if ours[1] else host_len) + 2
        size += 18 + (ours[2].value_len if ours[2] else PyBytes_GET_SIZE(port)) + 2
        size += 11 + (ours[3].value_len if ours[3] else PyBytes_GET_SIZE(client_real)) + 2
        if self.chunked:
            size += 28
        if upgrade is not None:
            size += 21 + 9 + PyBytes_GET_SIZE(upgrade) + 2
        if http10:
            size += 19
        result = PyBytes_FromStringAndSize(NULL, size)
        out = PyBytes_AS_STRING(result)
        out = _put(out, PyBytes_AS_STRING(self.method), PyBytes_GET_SIZE(self.method))
        out = _put(out, b" ", 1)
        out = _put(out, PyBytes_AS_STRING(target), PyBytes_GET_SIZE(target))
        if http10:
            out = _put(out, b" HTTP/1.0\r\n", 11)
        else:
            out = _put(out, b" HTTP/1.1\r\n", 11)
        if virtual:
            out = _put(out, b"Host: ", 6)
            out = _put(out, PyBytes_AS_STRING(vhost), PyBytes_GET_SIZE(vhost))
            out = _put(out, b"\r\n", 2)
        elif own_host:
            out = _put(out, b"Host: ", 6)
            out = _put(out, host_value, host_len)
            out = _put(out, b"\r\n", 2)
        for i in range(self.nfields):
            f = &self.fields[i]
            if keep != NULL and not keep[i]:
                continue
            if _forwarded(f.kind, trusted, own_host or virtual):
                out = _put(out, p + f.name, f.name_len)
                out = _put(out, b": ", 2)
                out = _put(out, p + f.value, f.value_len)
                out = _put(out, b"\r\n", 2)
        if length_len:
            out = _put(out, b"Content-Length: ", 16)
            out = _put(out, length, length_len)
            out = _put(out, b"\r\n", 2)
        out = _put(out, b"X-Forwarded-For: ", 17)
        if trusted and nxff:
            for i in range(self.nfields):
                f = &self.fields[i]
                if f.kind == K_XFF:
                    out = _put(out, p + f.value, f.value_len)
                    out = _put(out, b", ", 2)
        out = _put(out, PyBytes_AS_STRING(client_ip), PyBytes_GET_SIZE(client_ip))
        out = _put(out, b"\r\nX-Forwarded-Proto: ", 21)
        if ours[0]:
            out = _put(out, p + ours[0].value, ours[0].value_len)
        else:
            out = _put(out, PyBytes_AS_STRING(scheme), PyBytes_GET_SIZE(scheme))
        out = _put(out, b"\r\nX-Forwarded-Host: ", 20)
        if ours[1]:
            out = _put(out, p + ours[1].value, ours[1].value_len)
        elif host_len:
            out = _put(out, host_value, host_len)
        out = _put(out, b"\r\nX-Forwarded-Port: ", 20)
        if ours[2]:
            out = _put(out, p + ours[2].value, ours[2].value_len)
        else:
            out = _put(out, PyBytes_AS_STRING(port), PyBytes_GET_SIZE(port))
        out = _put(out, b"\r\nX-Real-IP: ", 13)
        if ours[3]:
            out = _put(out, p + ours[3].value, ours[3].value_len)
        else:
            out = _put(out, PyBytes_AS_STRING(client_real), PyBytes_GET_SIZE(client_real))
        out = _put(out, b"\r\n", 2)
        if self.chunked:
            out = _put(out, b"Transfer-Encoding: chunked\r\n", 28)
        if upgrade is not None:
            out = _put(out, b"Connection: upgrade\r\n", 21)
            out = _put(out, b"Upgrade: ", 9)
            out = _put(out, PyBytes_AS_STRING(upgrade), PyBytes_GET_SIZE(upgrade))
            out = _put(out, b"\r\n", 2)
        if http10:
            out = _put(out, b"Connection: close\r\n", 19)
        out = _put(out, PyBytes_AS_STRING(extra), PyBytes_GET_SIZE(extra))
        out = _put(out, b"\r\n", 2)
        return result

    def __repr__(self) -> str:
        return f"<RequestHead {self.method.decode('latin-1')} {self.target.decode('latin-1')!r}>"


cdef bytes _kept_fields(const char* p, Field* fields, int n, frozenset drop):
    """One byte per field: 1 when its name (any case) is not in ``drop`` (lower-case names).

    ``drop`` holds a few names; each field's name is compared with each in place, without
    making an object of it.
    """
    cdef list names = list(drop)
    cdef Py_ssize_t count = len(names), k, j, length
    cdef bytes name
    cdef bytearray kept = bytearray(n)
    cdef const unsigned char* field_name
    cdef const char* wanted
    cdef int i
    for i in range(n):
        kept[i] = 1
        field_name = <const unsigned char*>p + fields[i].name
        length = fields[i].name_len
        for k in range(count):
            name = <bytes>names[k]
            if PyBytes_GET_SIZE(name) != length:
                continue
            wanted = PyBytes_AS_STRING(name)
            for j in range(length):
                if LOWER[field_name[j]] != <unsigned char>wanted[j]:
                    break
            else:
                kept[i] = 0
                break
    return bytes(kept)


cdef const char* _host_problem(const unsigned char* v, Py_ssize_t n) noexcept:
    """Why v[:n] is not a Host value the proxy takes, or NULL when it is.

    ``host[:port]``: host a reg-name of letters, digits, "-", "." and "_" (no "..", a
    trailing dot allowed) or an IP-literal "[...]" of hex digits, ":" and "."; port up
    to 5 digits, at most 65535, possibly empty (RFC 3986 §3.2.3). The router matches on
    this value and the upstream gets it, so what an upstream or a log could read as a
    path, a user or a second host (``a/b``, ``a@b``, ``a b``, ``a:80@b``) is refused.

    nginx's ``ngx_http_validate_host`` (src/http/ngx_http_request.c, as rewritten in
    1.29.4, "Improved host header validation") also refuses an empty value, "..", a lone
    ".", anything after "]" but a port, and ports over 65535; it takes more than this
    does: "~", "%" and RFC 3986's sub-delims (``!$&'()*+,;=``) in names, other letters,
    "-", "_" and the same in IP literals, an empty "[]", ports of more than 5 digits
    (leading zeros). No Kubernetes Ingress host uses any of them. nginx before 1.29.4
    (what ingress-nginx ships) took anything after the first ":" (``a:80@b``).
    """
    cdef Py_ssize_t i = 0, digits = 0
    cdef long port = 0
    if n == 0:
        return b"empty"  # RFC 9112 §3.2 allows it for a target without authority; nginx: 400
    if v[0] == b'[':
        i = 1
        while i < n and (HEX[v[i]] >= 0 or v[i] == b':' or v[i] == b'.'):
            if v[i] == b'.' and v[i - 1] == b'.':
                return b"empty label ('..') in the IP literal"
            i += 1
        if i == n or v[i] != b']':
            return b"malformed IP literal"
        if i == 1:
            return b"empty IP literal"
        i += 1
    else:
        while i < n and HOSTCHAR[v[i]]:
            if v[i] == b'.' and i > 0 and v[i - 1] == b'.':
                return b"empty label ('..') in the host name"
            i += 1
        if i == 0 or (i == 1 and v[0] == b'.'):
            return b"no host name"
    if i == n:
        return NULL
    if v[i] != b':':
        return b"invalid character in the host"
    for i in range(i + 1, n):
        if not (b'0' <= v[i] <= b'9'):
            return b"invalid character in the port"
        digits += 1
        if digits > 5:
            return b"port of more than 5 digits"
        port = port * 10 + (v[i] - 48)
    if port > 65535:
        return b"port over 65535"
    return NULL


cdef inline bint _forwarded(int kind, bint trusted, bint own_host) noexcept:
    """Whether a request field of ``kind`` is sent upstream as it came."""
    if kind == K_OTHER:
        return True
    if kind == K_HOST:
        return not own_host
    if kind == K_IDENTITY:
        return trusted
    return False  # hop-by-hop, framing and X-Forwarded-* (written again), "_" names


def parse_request(bytes data, Py_ssize_t max_head) -> RequestHead | None:
    """The request head at the start of ``data``, or None while it is incomplete.

    Leading blank lines are skipped (RFC 9112 §2.2). ``size`` is where the body (or the
    next request) starts.

    Raises:
        HeadersTooLargeError: the head is (or will be) over ``max_head`` bytes.
        BadRequestError: anything malformed, named in the message; a Host that is not
            ``host[:port]`` (see ``_host_problem``), empty included.
    """
    cdef const unsigned char* p = <const unsigned char*>PyBytes_AS_STRING(data)
    cdef Py_ssize_t n = PyBytes_GET_SIZE(data)
    cdef Py_ssize_t start = 0, end, i, m0, t0, line_end
    cdef RequestHead head
    while start < n and (p[start] == b'\n' or (p[start] == b'\r' and start + 1 < n and p[start + 1] == b'\n')):
        start += 1 if p[start] == b'\n' else 2
    end = _head_end(p, start, n)
    if end < 0:
        if n > max_head:
            raise HeadersTooLargeError(f"request head over {max_head} bytes")
        return None
    if end > max_head:
        raise HeadersTooLargeError(f"request head of {end} bytes is over {max_head}")
    head = RequestHead.__new__(RequestHead)
    head.raw = data
    head.size = end
    # request-line = method SP request-target SP HTTP-version
    i = start
    while TCHAR[p[i]]:
        i += 1
    if i == start or p[i] != b' ':
        raise BadRequestError("malformed request line")
    m0 = i
    i += 1
    t0 = i
    while TARGET[p[i]]:
        i += 1
    if i == t0 or p[i] != b' ':
        raise BadRequestError("malformed request line: bad request target")
    line_end = <const unsigned char*>memchr(p + i, b'\n', end - i) - p
    if line_end - i == 10 and p[line_end - 1] == b'\r':
        line_end -= 1
    if line_end - i != 9 or memcmp(p + i + 1, b"HTTP/1.", 7) != 0:
        raise BadRequestError("malformed request line: not HTTP/1.x")
    if p[i + 8] == b'1':
        head.version = 11
    elif p[i + 8] == b'0':
        head.version = 10
    else:
        raise BadRequestError("unsupported HTTP version")
    head.method = PyBytes_FromStringAndSize(<const char*>p + start, m0 - start)
    head.target = PyBytes_FromStringAndSize(<const char*>p + t0, i - t0)
    i = <const unsigned char*>memchr(p + i, b'\n', end - i) - p + 1
    if head._parse_fields(p, i, end) < 0:
        raise BadRequestError(f"malformed request head: {head.error.decode()}")
    if head.ntokens:
        head._mark_listed(p)
    if head.transfer_encodings:
        if head.content_length >= 0:
            raise BadRequestError("both Content-Length and Transfer-Encoding: refused as smuggling")
        if head.transfer_encodings > 1 or not head.te_is_chunked or head.version == 10:
            raise BadRequestError(f"unsupported Transfer-Encoding (only chunked, once, in HTTP/1.1)")
        head.chunked = True
    if head.version == 11 and head.host_field < 0:
        raise BadRequestError("HTTP/1.1 request without a Host header")  # RFC 9112 §3.2
    head.keep_alive = not head.close_token and (head.version == 11 or head.keep_alive_token)
    cdef Field* f
    cdef const char* why
    if head.host_field >= 0:
        f = &head.fields[head.host_field]
        why = _host_problem(p + f.value, f.value_len)
        if why != NULL:
            raise BadRequestError(f"invalid Host header: {why.decode()}")
    if head.version == 11 and head.expect_field >= 0:  # HTTP/1.0 clients never wait for 100
        f = &head.fields[head.expect_field]
        head.expect_continue = f.value_len == 12 and _is(p + f.value, 12, b"100-continue")
    return head


# ---------------------------------------------------------------- responses

cdef class ResponseHead(_Head):
    """A parsed response head (``parse_response``)."""

    cdef readonly int status
    cdef readonly bytes reason
    cdef readonly bint bodyless  # HEAD, 1xx, 204, 304: no body whatever the fields say

    @property
    def until_close(self) -> bool:
        """Whether the body is delimited by the upstream closing the connection."""
        return not self.bodyless and not self.chunked and self.content_length < 0

    def complete_with(self, bytes received) -> bool:
        """Whether ``received``, what came after the head, is the whole body of an answer
        that keeps the connection open: nothing to wait for, nothing left over."""
        if not self.keep_alive or self.chunked:
            return False
        if self.bodyless:
            return PyBytes_GET_SIZE(received) == 0
        return self.content_length == PyBytes_GET_SIZE(received)

    def client_head(self, bint close, bytes extra=b"", frozenset drop=None) -> bytes:
        """The head to send the client: end-to-end fields as they came, status kept.

        A chunked body is passed on chunked (its Content-Length, if any, dropped);
        ``close`` says this is the connection's last response. A ``101 Switching
        Protocols`` keeps ``Connection`` and ``Upgrade``: the client needs them.
        A route's plan adds ``extra`` (whole ``Name: value\r\n`` lines) and leaves out
        the fields whose lower-case name is in ``drop`` (the ones ``extra`` sets).
        """
        cdef const char* p = PyBytes_AS_STRING(self.raw)
        cdef bytes kept = None
        cdef const char* keep = NULL
        if drop is not None and len(drop) > 0:
            kept = _kept_fields(p, self.fields, self.nfields, drop)
            keep = PyBytes_AS_STRING(kept)
        cdef Py_ssize_t size
        cdef int i
        cdef Field* f
        cdef char* out
        cdef bint switching = self.status == 101
        cdef char code[4]
        cdef char length[20]
        cdef int length_len = 0
        size = 9 + 3 + 1 + PyBytes_GET_SIZE(self.reason) + 2 + 2 + PyBytes_GET_SIZE(extra)
        if self.content_length >= 0 and not self.chunked:
            length_len = _decimal(self.content_length, length)
            size += 16 + length_len + 2
        for i in range(self.nfields):
            f = &self.fields[i]
            if keep != NULL and not keep[i]:
                continue
            if _passes(f.kind, self.chunked, switching):
                size += f.name_len + f.value_len + 4
        if self.chunked:
            size += 28
        if close and not switching:
            size += 19
        result = PyBytes_FromStringAndSize(NULL, size)
        out = PyBytes_AS_STRING(result)
        code[0] = 48 + self.status // 100
        code[1] = 48 + self.status // 10 % 10
        code[2] = 48 + self.status % 10
        code[3] = b' '
        out = _put(out, b"HTTP/1.1 ", 9)
        out = _put(out, code, 4)
        out = _put(out, PyBytes_AS_STRING(self.reason), PyBytes_GET_SIZE(self.reason))
        out = _put(out, b"\r\n", 2)
        for i in range(self.nfields):
            f = &self.fields[i]
            if keep != NULL and not keep[i]:
                continue
            if _passes(f.kind, self.chunked, switching):
                out = _put(out, p + f.name, f.name_len)
                out = _put(out, b": ", 2)
                out = _put(out, p + f.value, f.value_len)
                out = _put(out, b"\r\n", 2)
        if length_len:
            out = _put(out, b"Content-Length: ", 16)
            out = _put(out, length, length_len)
            out = _put(out, b"\r\n", 2)
        if self.chunked:
            out = _put(out, b"Transfer-Encoding: chunked\r\n", 28)
        if close and not switching:
            out = _put(out, b"Connection: close\r\n", 19)
        out = _put(out, PyBytes_AS_STRING(extra), PyBytes_GET_SIZE(extra))
        out = _put(out, b"\r\n", 2)
        return result

    def __repr__(self) -> str:
        return f"<ResponseHead {self.status}>"


cdef inline bint _passes(int kind, bint chunked, bint switching) noexcept:
    if kind == K_CONTENT_LENGTH:
        return False  # written once, in plain decimal, unless chunked framing overrides it
    if kind == K_TRANSFER_ENCODING or kind == K_HOP:
        return False
    if kind == K_CONNECTION or kind == K_UPGRADE:
        return switching
    return True


def parse_response(bytes data, Py_ssize_t max_head, bint head_request) -> ResponseHead | None:
    """The response head at the start of ``data``, or None while it is incomplete.

    ``head_request``: the request was HEAD, so the response has no body.

    Raises:
        BadGatewayError: the upstream sent something that is not a valid response head,
            one over ``max_head`` bytes, or framing the proxy cannot pass on.
    """
    cdef const unsigned char* p = <const unsigned char*>PyBytes_AS_STRING(data)
    cdef Py_ssize_t n = PyBytes_GET_SIZE(data)
    cdef Py_ssize_t end, i, line_end, content_end
    cdef ResponseHead head
    end = _head_end(p, 0, n)
    if end < 0:
        if n > max_head:
            raise BadGatewayError(f"upstream response head over {max_head} bytes")
        if n >= 5 and memcmp(p, b"HTTP/", 5) != 0:
            raise BadGatewayError("upstream sent something that is not an HTTP/1.x response")
        return None
    if end > max_head:
        raise BadGatewayError(f"upstream response head over {max_head} bytes")
    head = ResponseHead.__new__(ResponseHead)
    head.raw = data
    head.size = end
    line_end = <const unsigned char*>memchr(p, b'\n', end) - p
    content_end = line_end - 1 if line_end > 0 and p[line_end - 1] == b'\r' else line_end
    # status-line = HTTP-version SP 3DIGIT SP [ reason-phrase ]
    if content_end < 12 or memcmp(p, b"HTTP/1.", 7) != 0 or p[8] != b' ':
        raise BadGatewayError("upstream sent a malformed status line")
    if p[7] == b'1':
        head.version = 11
    elif p[7] == b'0':
        head.version = 10
    else:
        raise BadGatewayError("upstream sent an unsupported HTTP version")
    for i in range(9, 12):
        if not (b'0' <= p[i] <= b'9'):
            raise BadGatewayError("upstream sent a malformed status code")
    head.status = (p[9] - 48) * 100 + (p[10] - 48) * 10 + (p[11] - 48)
    if head.status < 100:
        raise BadGatewayError("upstream sent a malformed status code")
    if content_end > 12:
        if p[12] != b' ':
            raise BadGatewayError("upstream sent a malformed status line")
        for i in range(13, content_end):
            if not VCHAR[p[i]]:
                raise BadGatewayError("upstream sent a malformed reason phrase")
        head.reason = PyBytes_FromStringAndSize(<const char*>p + 13, content_end - 13)
    else:
        head.reason = b""
    if head._parse_fields(p, line_end + 1, end) < 0:
        raise BadGatewayError(f"upstream sent a malformed head: {head.error.decode()}")
    if head.ntokens:
        head._mark_listed(p)
    head.bodyless = head_request or head.status < 200 or head.status == 204 or head.status == 304
    if head.transfer_encodings:
        head.content_length = -1  # RFC 9112 §6.3: Transfer-Encoding overrides it
        if not head.bodyless:
            if head.transfer_encodings > 1 or not head.te_is_chunked:
                raise BadGatewayError("upstream sent a Transfer-Encoding other than chunked")
            head.chunked = True
    head.keep_alive = not head.close_token and (head.version == 11 or head.keep_alive_token)
    if head.transfer_encodings and head.version == 10:
        head.keep_alive = False  # RFC 9112 §6.1: faulty framing, bodyless or not; close after
    return head


# ---------------------------------------------------------------- chunked bodies

cdef enum State:
    S_SIZE_START, S_SIZE, S_SIZE_WS, S_EXT, S_SIZE_LF, S_DATA, S_DATA_CR, S_DATA_LF,
    # the trailer section: everything after the last chunk's line, up to the final CRLF
    S_TRAILER_START, S_TRAILER_NAME, S_TRAILER_VALUE, S_TRAILER_LF, S_END_LF,
    S_DONE

cdef enum:
    MAX_EXTRA = 65536  # chunk extensions and trailers, in all


cdef class ChunkedScanner:
    """Follows chunked framing (RFC 9112 §7.1) over raw bytes passed on unchanged.

    ``scan`` returns how far the body goes in the bytes given; once ``done``, the rest
    belongs to the next message. ``payload`` counts the data bytes (for body limits).
    ``relay`` also says which bytes to pass on: the same ones up to the trailer section,
    which it holds until the body ends and passes on without the fields that must not
    be taken from a trailer.
    """

    cdef int state
    cdef unsigned long long remaining
    cdef int digits
    cdef Py_ssize_t extra
    cdef readonly unsigned long long payload
    cdef readonly bint done
    cdef Py_ssize_t section  # where the trailer section began in this call's data; -1
    cdef bytearray held  # the trailer section so far (relay), None outside it

    def __cinit__(self) -> None:
        self.section = -1

    def scan(self, bytes data, Py_ssize_t start=0) -> int:
        """Where the body ends in ``data[start:]``: ``len(data)`` unless ``done``.

        Raises:
            ChunkedError: malformed framing (trailer fields included: a token, a colon
                straight after it, a value of visible characters), or extensions and
                trailers over 64 KiB.
            ValueError: ``start`` outside ``data``.
        """
        return self._run(data, start, None)

    def decode(self, bytes data, Py_ssize_t start=0) -> tuple:
        """``scan``, plus the data bytes the framing carries (for an HTTP/1.0 client)."""
        out = bytearray()
        end = self._run(data, start, out)
        return end, bytes(out)

    def relay(self, bytes data, Py_ssize_t start=0) -> tuple:
        """``scan``, plus the bytes of ``data[start:end]`` to pass on: ``(end, out)``.

        ``out`` is ``data[start:end]`` itself (``data`` when that is all of it) until the
        trailer section (what follows the last chunk's line ``0\\r\\n``, up to the final
        CRLF). That section is held (within the 64 KiB limit on extensions and trailers)
        and passed on when the body ends, without the fields ``_trailer_dropped`` names.
        A body without trailers costs what ``scan`` does: no copy, nothing held.

        Raises:
            ChunkedError: as ``scan``; nothing of a trailer section is passed on before
                all of it is seen valid.
        """
        cdef Py_ssize_t end, at, n = PyBytes_GET_SIZE(data)
        cdef bint holding = S_TRAILER_START <= self.state < S_DONE  # since an earlier call
        end = self._run(data, start, None)
        if holding:
            at = start
        elif self.section >= 0:
            at = self.section
        else:
            at = end  # no trailer section in these bytes
        if self.held is None and (at == end or (self.done and end - at == 2)):
            # nothing to hold back: no trailer section so far, or an empty one ("\r\n")
            if start == 0 and end == n:
                return end, data
            return end, data[start:end]
        if self.held is None:
            self.held = bytearray()
        self.held += data[at:end]
        if not self.done:
            return end, data[start:at]
        out = data[start:at] + _kept_trailers(bytes(self.held))
        self.held = None
        return end, out

    cdef Py_ssize_t _run(self, bytes data, Py_ssize_t i, bytearray out) except -1:
        cdef const unsigned char* p = <const unsigned char*>PyBytes_AS_STRING(data)
        cdef Py_ssize_t n = PyBytes_GET_SIZE(data)
        cdef Py_ssize_t take
        cdef unsigned char c
        cdef int state = self.state
        if i < 0 or i > n:
            raise ValueError(f"start {i} is outside data of {n} bytes")
        self.section = -1
        while i < n and state != S_DONE:
            c = p[i]
            if state == S_DATA:
                take = n - i
                if <unsigned long long>take > self.remaining:
                    take = <Py_ssize_t>self.remaining
                if out is not None:
                    out.extend(p[i:i + take])
                self.remaining -= take
                i += take
                if self.remaining == 0:
                    state = S_DATA_CR
                continue
            i += 1
            if state == S_SIZE_START or state == S_SIZE:
                if HEX[c] >= 0:
                    if self.digits == 15:
                        self.state = state
                        raise ChunkedError("chunk size too large")
                    self.remaining = self.remaining * 16 + HEX[c]
                    self.digits += 1
                    state = S_SIZE
                    continue
                if state == S_SIZE_START:
                    raise ChunkedError("chunk size expected")
                if c == b' ' or c == b'\t':
                    state = S_SIZE_WS
                elif c == b';':
                    state = S_EXT
                elif c == b'\r':
                    state = S_SIZE_LF
                else:
                    raise ChunkedError("invalid character after a chunk size")
            elif state == S_SIZE_WS:
                if c == b';':
                    state = S_EXT
                elif c == b'\r':
                    state = S_SIZE_LF
                elif c != b' ' and c != b'\t':
                    raise ChunkedError("invalid character after a chunk size")
            elif state == S_EXT:
                self.extra += 1
                if c == b'\r':
                    state = S_SIZE_LF
                elif not VCHAR[c]:
                    raise ChunkedError("invalid character in a chunk extension")
            elif state == S_SIZE_LF:
                if c != b'\n':
                    raise ChunkedError("chunk size line not ended by CRLF")
                self.digits = 0
                if self.remaining == 0:
                    state = S_TRAILER_START
                    self.section = i
                else:
                    self.payload += self.remaining
                    state = S_DATA
            elif state == S_DATA_CR:
                if c != b'\r':
                    raise ChunkedError("chunk data not followed by CRLF")
                state = S_DATA_LF
            elif state == S_DATA_LF:
                if c != b'\n':
                    raise ChunkedError("chunk data not followed by CRLF")
                state = S_SIZE_START
            # trailer fields follow a head's field rules (RFC 9112 §7.1.2, §5): a token,
            # a colon straight after it, a value of visible characters, CRLF
            elif state == S_TRAILER_START:
                if c == b'\r':
                    state = S_END_LF
                elif TCHAR[c]:
                    self.extra += 1
                    state = S_TRAILER_NAME
                else:
                    raise ChunkedError("invalid trailer field")
            elif state == S_TRAILER_NAME:
                self.extra += 1
                if c == b':':
                    state = S_TRAILER_VALUE
                elif c == b' ' or c == b'\t':
                    raise ChunkedError("whitespace between a trailer field name and its colon")
                elif not TCHAR[c]:
                    raise ChunkedError("invalid trailer field name")
            elif state == S_TRAILER_VALUE:
                self.extra += 1
                if c == b'\r':
                    state = S_TRAILER_LF
                elif not VCHAR[c]:
                    raise ChunkedError("invalid character in a trailer field")
            elif state == S_TRAILER_LF:
                if c != b'\n':
                    raise ChunkedError("trailer field not ended by CRLF")
                state = S_TRAILER_START
            elif state == S_END_LF:
                if c != b'\n':
                    raise ChunkedError("chunked body not ended by CRLF")
                state = S_DONE
            if self.extra > MAX_EXTRA:
                raise ChunkedError("chunk extensions and trailers over 64 KiB")
        self.state = state
        self.done = state == S_DONE
        return i


cdef bint _trailer_dropped(const unsigned char* name, Py_ssize_t n) noexcept:
    """Whether a trailer field named name[:n] is left out of what is passed on.

    A recipient may merge trailers into the head (RFC 9110 §6.5.2), so what a head field
    could not do must not come in a trailer: framing (Content-Length,
    Transfer-Encoding), routing (Host), hop-by-hop fields (Connection, Keep-Alive, TE,
    Trailer, Upgrade, Proxy-*, HTTP2-Settings), Expect, what the proxy sets
    (X-Forwarded-*, X-Real-IP), identity fields and names with "_". The trailer section
    is not tied to a peer, so these go whoever sent them.
    """
    if memchr(name, b'_', n) != NULL:
        return True
    if n >= 6 and _is(name, 6, b"proxy-"):
        return True
    return _kind(name, n) != K_OTHER


cdef bytes _kept_trailers(bytes section):
    """``section`` (a whole trailer section, already valid) without dropped fields."""
    cdef const unsigned char* p = <const unsigned char*>PyBytes_AS_STRING(section)
    cdef Py_ssize_t n = PyBytes_GET_SIZE(section), pos = 0, eol, colon
    out = bytearray()
    while pos < n:
        eol = <const unsigned char*>memchr(p + pos, b'\n', n - pos) - p + 1
        if eol - pos == 2:  # the final CRLF
            out += b"\r\n"
        else:
            colon = <const unsigned char*>memchr(p + pos, b':', eol - pos) - p
            if not _trailer_dropped(p + pos, colon - pos):
                out += section[pos:eol]
        pos = eol
    return bytes(out)
