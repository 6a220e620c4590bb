# cython: language_level=3
"""The compiled Ingress matcher: a host table and one path trie per host.

All trie nodes live in one open-addressing hash table (linear probing) owned
by the Router, keyed by (parent node id, path element bytes): a node *is* the
slot it hashes to, so following an edge reads one 32-byte slot, and a request
touches about one cache line per path element. Slots 0 and 1 are virtual
roots whose children are the exact hosts and the wildcard host suffixes; each
such host node is the root of that host's path trie. Slot 2 is the path root
for rules with no host.

A path trie node sits at the end of a ``/``-separated element sequence:

    host "foo.com"            rules: Prefix /       -> A
      [prefix: A]                    Prefix /api    -> B
       ├─ "api" [prefix: B]          Exact  /api/v1 -> C
       │   └─ "v1" [exact: C]        Exact  /       -> D
       └─ "" [exact: D]

Exact "/" is the empty element under the root; Prefix "/" is the root itself.
Matching walks the request path one element at a time, remembering the deepest
Prefix rule passed; when the path ends on a node, its Exact rule (then its
Prefix rule) wins. Depth is the element count, so "longest wins" falls out of
the walk and "Exact beats Prefix on a tie" is the order of two checks.

Invariants: every node other than the three roots holds a rule or has a child
(``prune`` restores this after a removal); a host node exists if and only if
that host has at least one rule, which is what host selection relies on. A
node id is only valid until the table is rebuilt, which happens only at the
start of ``add`` (``reserve``), never during a lookup.
"""

from cpython.bytearray cimport PyByteArray_AS_STRING, PyByteArray_Check, PyByteArray_GET_SIZE
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_Check, PyBytes_GET_SIZE
from cpython.list cimport PyList_GET_ITEM
from cpython.mem cimport PyMem_Calloc, PyMem_Free, PyMem_Malloc, PyMem_Realloc
from cpython.unicode cimport PyUnicode_Check
from libc.stdint cimport int32_t, uint32_t, uint64_t
from libc.string cimport memchr, memcpy, memset

from fastroute.errors import InvalidRuleError as _InvalidRuleError
from fastroute.errors import RouteConflictError as _RouteConflictError
from fastroute.errors import RouteNotFoundError as _RouteNotFoundError
from fastroute.routes import Explanation as _Explanation
from fastroute.routes import Route as _Route


cdef extern from "Python.h":
    const char* PyUnicode_AsUTF8AndSize(object, Py_ssize_t*) except NULL


PATH_TYPES = ("Exact", "Prefix", "ImplementationSpecific")

_tuple_new = tuple.__new__

# Fixed node ids and limits.
cdef enum:
    EXACT_HOSTS = 0      # children: exact host names ("foo.com")
    WILDCARD_HOSTS = 1   # children: wildcard suffixes ("bar.com" for "*.bar.com")
    ANY_HOST = 2         # path root of the rules with no host
    ROOTS = 3
    NO_RULE = -1
    INLINE_SEGMENT = 8   # elements up to this many bytes are stored in the node itself
    MAX_HOST = 253       # longest DNS name (RFC 1035), without a trailing dot
    MAX_LABEL = 63
    KIND_EXACT = 0
    KIND_PREFIX = 1      # Prefix and ImplementationSpecific
    MIN_SLOTS = 64
    PREFETCH_DEPTH = 12  # path elements whose slots are located up front
    PREFETCH_MIN_SLOTS = 1 << 15  # 1 MiB of slots: smaller tables stay in cache

cdef extern from *:
    """
    #define FR_NO_NODE 0xFFFFFFFFu
    #define FR_EMPTY 0xFFFFFFFFu
    #define FR_TOMBSTONE 0xFFFFFFFEu
    #define FR_ROOT 0xFFFFFFFDu
    """
    const uint32_t NO_NODE "FR_NO_NODE"       # "no such node", as a return value
    const uint32_t EMPTY "FR_EMPTY"           # parent of a slot never used since the last rebuild
    const uint32_t TOMBSTONE "FR_TOMBSTONE"   # parent of a slot whose node was removed
    const uint32_t ROOT "FR_ROOT"             # parent of the three roots: never a child


ctypedef union Segment:
    char* heap                 # owned copy, zero-padded to whole words, when longer than 8
    char chars[INLINE_SEGMENT] # zero-padded


ctypedef struct Node:          # one table slot, 32 bytes: two per cache line
    uint32_t hash              # low half of the node's key: its home slot, and a cheap first check
    uint32_t parent            # parent node id; EMPTY, TOMBSTONE or ROOT otherwise
    Segment seg                # the path element (or host name) on the edge into this node
    uint32_t seglen            # its length in bytes; 0 for an empty element ("/a//b", "/a/")
    uint32_t children          # live child nodes
    int32_t exact              # rule slot of the Exact rule ending here, or NO_RULE
    int32_t prefix             # rule slot of the Prefix rule ending here, or NO_RULE


cdef inline const char* seg_bytes(Node* nd) noexcept nogil:
    if nd.seglen <= INLINE_SEGMENT:
        return nd.seg.chars
    return nd.seg.heap


# Precedence, in the two places a walk decides it. Passing through a node, its
# Prefix rule is the longest match so far; when the request path ends on it,
# its Exact rule beats its Prefix rule (equal length), and both beat shorter ones.
cdef inline int32_t passing(Node* nd, int32_t best) noexcept nogil:
    return nd.prefix if nd.prefix != NO_RULE else best


cdef inline int32_t ending_on(Node* nd, int32_t best) noexcept nogil:
    if nd.exact != NO_RULE:
        return nd.exact
    return nd.prefix if nd.prefix != NO_RULE else best


cdef extern from *:
    """
    /* Node keys and byte tricks, in C. A node's key chains its parent's key
       with its element's bytes. fr_hash hashes known bytes; fr_scan finds the
       end of a request path element (the next '/') and hashes it in the same
       pass, 8 bytes a step; both give the same key for the same element by
       construction. */
    #include <stdint.h>
    #include <string.h>
    #if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    #define FR_LITTLE_ENDIAN 1
    #else
    #define FR_LITTLE_ENDIAN 0
    #endif

    /* The node table, once it reaches 2 MiB, is 2 MiB aligned and marked for
       transparent huge pages: lookups jump across it at random, and with
       4 KiB pages every step would also miss the TLB.
       tracemalloc is told about them, so memory figures stay whole. */
    #include <stdlib.h>
    #if defined(__linux__)
    #include <sys/mman.h>
    #endif
    #define FR_HUGE ((size_t)2 << 20)
    static size_t fr_table_bytes(size_t size) {
        return size < FR_HUGE ? size : (size + FR_HUGE - 1) & ~(FR_HUGE - 1);
    }
    static void *fr_table_alloc(size_t size) {
    #if defined(__linux__)
        void *p;
        if (size >= FR_HUGE) {
            size = fr_table_bytes(size);
            if (posix_memalign(&p, FR_HUGE, size) != 0) return NULL;
    #if defined(MADV_HUGEPAGE)
            madvise(p, size, MADV_HUGEPAGE);
    #endif
            PyTraceMalloc_Track(0, (uintptr_t)p, size);
            return p;
        }
    #endif
        return PyMem_Malloc(size);
    }
    static void fr_table_free(void *p, size_t size) {
        if (p == NULL) return;
    #if defined(__linux__)
        if (size >= FR_HUGE) {
            PyTraceMalloc_Untrack(0, (uintptr_t)p);
            free(p);
            return;
        }
    #endif
        PyMem_Free(p);
    }

    /* 64x64 -> 128-bit multiply, folded: one step mixes every input bit into
       every output bit (the "mum" of wyhash). */
    static inline uint64_t fr_mum(uint64_t a, uint64_t b) {
    #ifdef __SIZEOF_INT128__
        __uint128_t r = (__uint128_t)a * b;
        return (uint64_t)r ^ (uint64_t)(r >> 64);
    #else
        uint64_t ha = a >> 32, la = (uint32_t)a, hb = b >> 32, lb = (uint32_t)b;
        uint64_t rh = ha * hb, rm0 = ha * lb, rm1 = hb * la, rl = la * lb, t = rl + (rm0 << 32), c = t < rl;
        uint64_t lo = t + (rm1 << 32);
        c += lo < t;
        return lo ^ (rh + (rm0 >> 32) + (rm1 >> 32) + c);
    #endif
    }

    #define FR_K0 0xA0761D6478BD642FULL
    #define FR_K1 0xE7037ED1A0B428DBULL
    #define FR_K2 0x8EBC6AF09C88C6E3ULL

    /* An element's hash: its full 8-byte words chained through fr_mum, then
       the zero-padded rest (0 when there is none) mixed with the length. An
       element of up to 7 bytes costs one multiply. */
    /* A node's key is a hash of its whole path from a root: the parent's key
       chained with the element's bytes. Keys depend on content only, never on
       where nodes sit in the table, so every level of a request path can be
       located before any of it is read. A root's key spreads its id over all
       64 bits (an id XORed into a word as it is would collide with the word). */
    static inline uint64_t fr_root_key(uint32_t root) { return ((uint64_t)root + 1) * FR_K0; }
    static inline uint64_t fr_absorb(uint64_t h, uint64_t w) { return fr_mum(h ^ w, FR_K1); }
    static inline uint64_t fr_finish(uint64_t h, uint64_t rest, size_t n) {
        return fr_mum(h ^ rest, (uint64_t)n ^ FR_K2);
    }

    /* The key of the child along s[:n] of a node whose key is seed; *first
       gets the first word, zero-padded (for elements of up to 8 bytes: the
       whole element). */
    static inline uint64_t fr_hash(uint64_t seed, const char *s, size_t n, uint64_t *first) {
        uint64_t h = seed, w, rest = 0;
        size_t i, j;
        for (i = 0; i + 8 <= n; i += 8) {
            memcpy(&w, s + i, 8);
            if (i == 0) *first = w;
            h = fr_absorb(h, w);
        }
        for (j = 0; i + j < n; j++) rest |= (uint64_t)(unsigned char)s[i + j] << (8 * j);
        if (i == 0) *first = rest;
        return fr_finish(h, rest, n);
    }

    /* Length of the element at s (up to the next '/' or avail bytes); *hash
       and *first as fr_hash would give them for it. back: how many bytes of
       the same buffer precede s (they may be read, never changed). */
    static inline size_t fr_scan(uint64_t seed, const char *s, size_t avail, size_t back,
                                 uint64_t *hash, uint64_t *first) {
    #if FR_LITTLE_ENDIAN
        uint64_t h = seed, w, x, z;
        size_t len = 0, k = 0;
        while (avail - len >= 8) {
            memcpy(&w, s + len, 8);
            x = w ^ 0x2F2F2F2F2F2F2F2FULL;                       /* '/' bytes become 0 */
            z = (x - 0x0101010101010101ULL) & ~x & 0x8080808080808080ULL;
            if (z) {                                               /* lowest set: first '/' */
                k = (size_t)__builtin_ctzll(z) >> 3;
                w = k ? w & (~0ULL >> (64 - 8 * k)) : 0;
                if (len == 0) *first = w;
                *hash = fr_finish(h, w, len + k);
                return len + k;
            }
            if (len == 0) *first = w;
            h = fr_absorb(h, w);
            len += 8;
        }
        if (avail - len > 0 && back + len >= 8) {
            /* under 8 bytes left, but the buffer has 8 before its end: load the
               word that ends there and shift the left-over bytes down */
            size_t left = avail - len;
            memcpy(&w, s + avail - 8, 8);
            w >>= 8 * (8 - left);
            x = w ^ 0x2F2F2F2F2F2F2F2FULL;
            z = (x - 0x0101010101010101ULL) & ~x & 0x8080808080808080ULL;
            z &= ~0ULL >> (64 - 8 * left);                          /* only real bytes */
            k = z ? (size_t)__builtin_ctzll(z) >> 3 : left;
            w = k ? w & (~0ULL >> (64 - 8 * k)) : 0;
        } else {
            w = 0;
            while (len + k < avail && s[len + k] != '/') {
                w |= (uint64_t)(unsigned char)s[len + k] << (8 * k);
                k++;
            }
        }
        if (len == 0) *first = w;
        *hash = fr_finish(h, w, len + k);
        return len + k;
    #else
        (void)back;
        const char *slash = memchr(s, '/', avail);
        size_t len = slash ? (size_t)(slash - s) : avail;
        *hash = fr_hash(seed, s, len, first);
        return len;
    #endif
    }

    /* Copy the name in a Host header to out: lower case, without ":port" and
       the trailing dot of a fully qualified name, followed by 8 zero bytes.
       Returns its length; 0 when there is no name to look up (empty, an IP
       address, or longer than any DNS name). out holds FR_HOST_BUFFER bytes. */
    #define FR_MAX_NAME 254                 /* 253 and a trailing dot */
    #define FR_HOST_BUFFER (FR_MAX_NAME + 16)
    static inline size_t fr_host(const char *h, size_t n, char *out) {
        size_t i = 0;
        unsigned char c;
        if (n == 0 || h[0] == '[') return 0;
    #if FR_LITTLE_ENDIAN
        while (n - i >= 8) {
            uint64_t w, x, colon, ascii, upper;
            if (i + 8 > FR_MAX_NAME + 8) return 0;
            memcpy(&w, h + i, 8);
            x = w ^ 0x3A3A3A3A3A3A3A3AULL;                          /* ':' bytes become 0 */
            colon = (x - 0x0101010101010101ULL) & ~x & 0x8080808080808080ULL;
            ascii = w & 0x7F7F7F7F7F7F7F7FULL;                      /* no carries between bytes */
            upper = (ascii + 0x3F3F3F3F3F3F3F3FULL)                 /* high bit: >= 'A' */
                  & ~(ascii + 0x2525252525252525ULL)                /* and not > 'Z' */
                  & ~w & 0x8080808080808080ULL;                     /* and ASCII */
            w |= upper >> 2;                                        /* 0x80 >> 2 = 0x20 */
            memcpy(out + i, &w, 8);
            if (colon) {
                i += (size_t)__builtin_ctzll(colon) >> 3;
                goto done;
            }
            i += 8;
        }
    #endif
        while (i < n && h[i] != ':') {
            if (i >= FR_MAX_NAME) return 0;
            c = (unsigned char)h[i];
            out[i++] = (char)(c >= 'A' && c <= 'Z' ? c + 32 : c);
        }
    done:
        if (i > FR_MAX_NAME) return 0;
        if (i > 0 && out[i - 1] == '.') i--;
        if (i > 0 && out[i - 1] >= '0' && out[i - 1] <= '9') {
            /* a name whose top label is numeric is an IPv4 address, not a name */
            size_t j;
            for (j = 0; j < i && ((out[j] >= '0' && out[j] <= '9') || out[j] == '.'); j++) {}
            if (j == i) return 0;
        }
        memset(out + i, 0, 8);
        return i;
    }

    /* fr_hash for bytes followed by at least 8 zero bytes (a normalized host). */
    static inline uint64_t fr_hash_padded(uint64_t seed, const char *s, size_t n, uint64_t *first) {
    #if FR_LITTLE_ENDIAN
        uint64_t h = seed, w;
        size_t i;
        memcpy(first, s, 8);
        for (i = 0; i + 8 <= n; i += 8) {
            memcpy(&w, s + i, 8);
            h = fr_absorb(h, w);
        }
        memcpy(&w, s + i, 8);                                       /* the rest, zero-padded */
        return fr_finish(h, w, n);
    #else
        return fr_hash(seed, s, n, first);
    #endif
    }

    /* Do the stored element bytes equal s[:n]? Short elements are stored
       zero-padded in 8 bytes, so on little-endian machines one compare of
       words does it. */
    static inline int fr_same(const char *stored, const char *s, size_t n, uint64_t first) {
    #if FR_LITTLE_ENDIAN
        uint64_t a, b;
        size_t i, tail;
        if (n <= 8) {
            memcpy(&a, stored, 8);
            return a == first;
        }
        /* longer elements are stored zero-padded to whole words */
        for (i = 0; i + 8 <= n; i += 8) {
            memcpy(&a, stored + i, 8);
            memcpy(&b, s + i, 8);
            if (a != b) return 0;
        }
        tail = n - i;
        if (tail == 0) return 1;
        memcpy(&a, stored + i, 8);
        memcpy(&b, s + n - 8, 8);           /* the word ending at the element's end */
        return a == b >> (8 * (8 - tail));
    #else
        (void)first;
        return n == 0 || memcmp(stored, s, n) == 0;
    #endif
    }

    #if defined(FR_NO_PREFETCH) || !defined(__GNUC__)
    #define fr_prefetch(p) ((void)(p))
    #else
    #define fr_prefetch(p) __builtin_prefetch(p)
    #endif

    /* The bytes of a compact ASCII str, without a call; NULL for other strings. */
    static inline const char *fr_ascii(PyObject *o, Py_ssize_t *n) {
        if (!PyUnicode_IS_COMPACT_ASCII(o)) return NULL;
        *n = PyUnicode_GET_LENGTH(o);
        return (const char *)PyUnicode_DATA(o);
    }
    """
    uint64_t fr_root_key(uint32_t root) nogil
    uint64_t fr_hash(uint64_t seed, const char* s, size_t n, uint64_t* first) nogil
    size_t fr_scan(uint64_t seed, const char* s, size_t avail, size_t back, uint64_t* hash, uint64_t* first) nogil
    bint fr_same(const char* stored, const char* s, size_t n, uint64_t first) nogil
    const char* fr_ascii(object o, Py_ssize_t* n)
    void* fr_table_alloc(size_t size)
    void fr_table_free(void* p, size_t size)
    enum: FR_HOST_BUFFER
    size_t fr_host(const char* h, size_t n, char* out) nogil
    uint64_t fr_hash_padded(uint64_t seed, const char* s, size_t n, uint64_t* first) nogil
    void fr_prefetch(const void* p) nogil


cdef inline int view_text(object o, const char** p, Py_ssize_t* n, bint none_ok) except -1:
    """Point ``p``/``n`` at the UTF-8 bytes of a str, bytes or bytearray, without copying."""
    if PyBytes_Check(o):
        p[0] = PyBytes_AS_STRING(o)
        n[0] = PyBytes_GET_SIZE(o)
    elif PyUnicode_Check(o):
        # ASCII strings (the common case) are their own UTF-8
        p[0] = fr_ascii(o, n)
        if p[0] == NULL:
            p[0] = PyUnicode_AsUTF8AndSize(o, n)
    elif PyByteArray_Check(o):
        p[0] = PyByteArray_AS_STRING(o)
        n[0] = PyByteArray_GET_SIZE(o)
    elif o is None and none_ok:
        p[0] = b""
        n[0] = 0
    else:
        raise TypeError(f"expected str or bytes, got {type(o).__name__}")
    return 0


def _display(object o):
    """A request host or path as text, for explanations."""
    if o is None:
        return ""
    if isinstance(o, str):
        return o
    return bytes(o).decode("utf-8", "replace")


# ---------------------------------------------------------------- rule validation
#
# Validation runs once per add(), so it is written as byte loops rather than
# regular expressions: adding 100,000 rules must stay well under a second.

# Character classes for the validation loops: ordinary characters cost one
# table look-up, and only the few that matter reach the checks.
cdef enum:
    HOST_LETTER = 0      # a-z, A-Z, '-'
    HOST_DIGIT = 1
    HOST_DOT = 2
    HOST_OTHER = 3       # everything else: rejected, with a reason for each kind
    PATH_PLAIN = 0
    PATH_SLASH = 1
    PATH_PERCENT = 2
    PATH_BAD = 3         # control characters, space, '?', '#'

cdef unsigned char HOST_CLASS[256]
cdef unsigned char PATH_CLASS[256]


cdef void init_classes() noexcept:
    cdef int c
    for c in range(256):
        if b'a' <= c <= b'z' or b'A' <= c <= b'Z' or c == b'-':
            HOST_CLASS[c] = HOST_LETTER
        elif b'0' <= c <= b'9':
            HOST_CLASS[c] = HOST_DIGIT
        elif c == b'.':
            HOST_CLASS[c] = HOST_DOT
        else:
            HOST_CLASS[c] = HOST_OTHER
        if c < 0x20 or c == 0x7F or c == b' ' or c == b'?' or c == b'#':
            PATH_CLASS[c] = PATH_BAD
        elif c == b'/':
            PATH_CLASS[c] = PATH_SLASH
        elif c == b'%':
            PATH_CLASS[c] = PATH_PERCENT
        else:
            PATH_CLASS[c] = PATH_PLAIN


init_classes()


cdef str label_problem(const unsigned char* h, Py_ssize_t start, Py_ssize_t end):
    """Why the label h[start:end] is not a DNS label, or None."""
    if end == start:
        return "empty label (two dots in a row, or a leading or trailing dot)"
    if end - start > MAX_LABEL:
        return f"label longer than {MAX_LABEL} characters"
    if h[start] == b'-' or h[end - 1] == b'-':
        return "a label may not start or end with '-'"
    return None


cdef str host_problem(const unsigned char* h, Py_ssize_t n, bint wildcard):
    """Why a rule host (without ``*.`` and trailing dot) is not a DNS name, or None.

    Upper case is accepted here: the caller folds it.
    """
    cdef Py_ssize_t i, label_start = 0
    cdef unsigned char c, cls
    cdef bint all_numeric = True
    cdef str problem
    if n == 0:
        return "a wildcard needs a domain after '*.'" if wildcard else "empty host"
    if n > MAX_HOST:
        return f"longer than {MAX_HOST} characters"
    for i in range(n):
        c = h[i]
        cls = HOST_CLASS[c]
        if cls == HOST_LETTER:
            all_numeric = False
        elif cls == HOST_DOT:
            problem = label_problem(h, label_start, i)
            if problem is not None:
                return problem
            label_start = i + 1
        elif cls == HOST_OTHER:
            if c == b'*':
                return "'*' is only allowed as the whole first label, as in '*.example.com'"
            if c == b':':
                return "ports and IPv6 addresses are not allowed in a rule host"
            if c >= 0x80:
                return "non-ASCII host"
            if c < 0x20 or c == 0x7F:
                return "control character in host"
            return f"character {chr(c)!r} is not allowed in a DNS name"
    problem = label_problem(h, label_start, n)
    if problem is not None:
        return problem
    if all_numeric and not wildcard:
        return "an IP address is not allowed as an Ingress host"
    return None


cdef str path_problem(const unsigned char* p, Py_ssize_t n, bint strict, Py_ssize_t* slashes):
    """Why a rule path is invalid, or None; counts its '/' into ``slashes``.

    ``strict``: the Kubernetes API's extra rules for Exact and Prefix paths
    (pkg/apis/networking/validation).
    """
    cdef Py_ssize_t i, count = 0
    cdef unsigned char c, cls
    if n == 0 or p[0] != b'/':
        return "the path must be absolute (start with '/')"
    for i in range(n):
        c = p[i]
        cls = PATH_CLASS[c]
        if cls == PATH_PLAIN:
            continue
        if cls == PATH_SLASH:
            count += 1
            if strict and i + 1 < n and (p[i + 1] == b'/' or p[i + 1] == b'.'):
                if p[i + 1] == b'/':
                    return "must not contain '//'"
                if i + 2 < n and p[i + 2] == b'/':
                    return "must not contain '/./'"
                if i + 3 < n and p[i + 2] == b'.' and p[i + 3] == b'/':
                    return "must not contain '/../'"
                if i + 2 == n:
                    return "must not end with '/.'"
                if i + 3 == n and p[i + 2] == b'.':
                    return "must not end with '/..'"
        elif cls == PATH_PERCENT:
            if strict and i + 2 < n and p[i + 1] == b'2' and (p[i + 2] == b'f' or p[i + 2] == b'F'):
                return "must not contain '%2f' (an encoded '/')"
        elif c == b' ':
            return "space in path (percent-encode it as %20)"
        elif c == b'?' or c == b'#':
            return f"{chr(c)!r} in path: a rule path has no query or fragment"
        else:
            return "control character in path"
    slashes[0] = count
    return None


cdef int path_kind(object host, object path, object path_type) except -1:
    if path_type == "Exact":
        return KIND_EXACT
    if path_type == "Prefix" or path_type == "ImplementationSpecific":
        return KIND_PREFIX
    raise _InvalidRuleError(
        host, path, path_type,
        f"unknown path type {path_type!r}; expected one of {', '.join(PATH_TYPES)}",
    )


# A validated rule: where its host hangs and its normalized path. The pointers
# borrow the UTF-8 buffers of the strings validate_rule() was given (or returned),
# which the caller keeps alive while it uses the key.
ctypedef struct RuleKey:
    uint32_t host_parent       # EXACT_HOSTS, WILDCARD_HOSTS, or ANY_HOST (no host node)
    const char* host_key       # the exact host, or the wildcard's suffix
    Py_ssize_t host_len
    const char* path           # for Prefix without its trailing '/' ("/" -> "")
    Py_ssize_t path_len
    Py_ssize_t elements        # path elements, plus one for the host
    int kind


cdef bint needs_folding(const char* h, Py_ssize_t n) noexcept:
    cdef Py_ssize_t i
    if n > 1 and h[n - 1] == b'.':
        return True
    for i in range(n):
        if b'A' <= h[i] <= b'Z':
            return True
    return False


cdef const char* rule_text(
    object host, object path, object path_type, str text, str what, Py_ssize_t* n
) except NULL:
    """The UTF-8 bytes of a rule's host or path; a str with none (a lone surrogate, which
    a YAML or JSON escape can make) is a malformed rule, not an encoding error."""
    try:
        return PyUnicode_AsUTF8AndSize(text, n)
    except UnicodeEncodeError:
        raise _InvalidRuleError(
            host, path, path_type, f"{what} is not valid Unicode text: it has a lone surrogate"
        ) from None


cdef str validate_rule(object host, object path, object path_type, RuleKey* key):
    """Check a rule and fill ``key``, or raise InvalidRuleError naming the rule.

    Returns the normalized host, as ``Route.host`` shows it; ``key.host_key``
    points into it. Runs once per add(), so it is byte loops, not regexes:
    adding 100,000 rules must stay well under a second.
    """
    cdef const char* hp
    cdef Py_ssize_t hn, start = 0, slashes = 0
    cdef str problem, normalized
    if not isinstance(host, str):
        raise TypeError(f"host must be str, got {type(host).__name__}")
    if not isinstance(path, str):
        raise TypeError(f"path must be str, got {type(path).__name__}")
    key.kind = path_kind(host, path, path_type)

    key.path = rule_text(host, path, path_type, path, "path", &key.path_len)
    problem = path_problem(
        <const unsigned char*>key.path, key.path_len, path_type != "ImplementationSpecific",
        &slashes,
    )
    if problem is not None:
        raise _InvalidRuleError(host, path, path_type, problem)
    if key.kind == KIND_PREFIX and key.path[key.path_len - 1] == b'/':
        key.path_len -= 1   # Kubernetes: a trailing slash on a Prefix path is ignored
        slashes -= 1
    key.elements = slashes + 1

    key.host_parent = ANY_HOST
    key.host_key = NULL
    key.host_len = 0
    if not host:
        return ""
    normalized = host
    hp = rule_text(host, path, path_type, host, "host", &hn)
    if needs_folding(hp, hn):
        # lower-case it, and drop the trailing dot of a fully qualified name
        normalized = host[:len(host) - 1] if host.endswith(".") and hn > 1 else host
        normalized = normalized.lower() if normalized.isascii() else normalized
        hp = PyUnicode_AsUTF8AndSize(normalized, &hn)
    if hn >= 2 and hp[0] == b'*' and hp[1] == b'.':
        key.host_parent = WILDCARD_HOSTS
        start = 2
    elif hn == 1 and hp[0] == b'*':
        raise _InvalidRuleError(
            host, path, path_type,
            "'*' alone is not a host; use an empty host to match every host",
        )
    else:
        key.host_parent = EXACT_HOSTS
    problem = host_problem(
        <const unsigned char*>hp + start, hn - start, key.host_parent == WILDCARD_HOSTS
    )
    if problem is not None:
        if problem == "non-ASCII host":
            try:
                idna = host.encode("idna").decode("ascii")
                problem += f"; use its IDNA form {idna!r}"
            except UnicodeError:
                pass
        raise _InvalidRuleError(host, path, path_type, f"host {host!r}: {problem}")
    key.host_key = hp + start
    key.host_len = hn - start
    return normalized


# ---------------------------------------------------------------------- Router

cdef Node* new_table(uint32_t slots) except NULL:
    """A table of empty slots, with the three roots in slots 0-2."""
    cdef Node* table = <Node*>fr_table_alloc(<size_t>slots * sizeof(Node))
    cdef uint32_t i
    if table == NULL:
        raise MemoryError()
    memset(table, 0xFF, <size_t>slots * sizeof(Node))   # every parent EMPTY
    for i in range(<uint32_t>ROOTS):
        memset(&table[i], 0, sizeof(Node))
        table[i].parent = ROOT
        table[i].exact = NO_RULE
        table[i].prefix = NO_RULE
    return table



cdef class Router:
    """Ingress rules compiled into a host table and one path trie per host.

    See ``fastroute/_match.pyi`` for the documented interface.
    """

    cdef Node* nodes               # the table: nodes[id] is node id
    cdef uint32_t mask             # slots - 1 (a power of two)
    cdef uint32_t used             # slots not EMPTY: roots, nodes and tombstones
    cdef uint32_t live             # nodes, roots included
    cdef list _backends            # rule slot -> backend (None when free)
    # A rule slot's record, one list per field: appending to a list creates no object
    # the garbage collector tracks, where a tuple per rule would make a large build
    # spend most of its time in collections.
    cdef list _hosts               # rule slot -> normalized host; None when the slot is free
    cdef list _paths               # rule slot -> path as given
    cdef list _types               # rule slot -> path type as given
    cdef list _free_slots
    cdef uint64_t* order           # rule slot -> insertion sequence number, for routes()
    cdef Py_ssize_t order_capacity
    cdef uint64_t _sequence
    cdef Py_ssize_t _rule_count
    cdef object _default

    def __cinit__(self):
        self.nodes = new_table(MIN_SLOTS)
        self.mask = MIN_SLOTS - 1
        self.used = ROOTS
        self.live = ROOTS
        self._backends = []
        self._hosts = []
        self._paths = []
        self._types = []
        self._free_slots = []
        self.order = NULL
        self.order_capacity = 0
        self._sequence = 0
        self._rule_count = 0
        self._default = None

    def __dealloc__(self):
        cdef uint32_t i
        if self.nodes != NULL:
            for i in range(self.mask + 1):
                if self.nodes[i].parent < TOMBSTONE and self.nodes[i].seglen > INLINE_SEGMENT:
                    PyMem_Free(self.nodes[i].seg.heap)
            fr_table_free(self.nodes, (<size_t>self.mask + 1) * sizeof(Node))
        PyMem_Free(self.order)

    # ------------------------------------------------------------ the table

    cdef inline uint32_t child(
        self, uint32_t parent, uint64_t parent_key, const char* s, Py_ssize_t n, uint64_t* key
    ) noexcept nogil:
        """The child of ``parent`` along element ``s[:n]``, or NO_NODE; its key in ``key``."""
        cdef uint64_t first
        key[0] = fr_hash(parent_key, s, n, &first)
        return self.child_hashed(parent, s, n, key[0], first)

    cdef inline uint32_t child_hashed(
        self, uint32_t parent, const char* s, Py_ssize_t n, uint64_t h, uint64_t first
    ) noexcept nogil:
        cdef uint32_t i = <uint32_t>h & self.mask
        cdef Node* nd
        while True:
            nd = &self.nodes[i]
            if nd.parent == EMPTY:
                return NO_NODE
            if (nd.hash == <uint32_t>h and nd.parent == parent and nd.seglen == n
                    and fr_same(seg_bytes(nd), s, n, first)):
                return i
            i = (i + 1) & self.mask

    cdef inline uint32_t host_child(
        self, uint32_t parent, const char* s, Py_ssize_t n, uint64_t* key
    ) noexcept nogil:
        """``child`` of a host root, for a name in a zero-padded buffer (see fr_host)."""
        cdef uint64_t first
        key[0] = fr_hash_padded(fr_root_key(parent), s, n, &first)
        return self.child_hashed(parent, s, n, key[0], first)

    cdef int reserve(self, uint32_t extra) except -1:
        """Make room for ``extra`` new nodes, rebuilding the table if it is too full.

        Rebuilding moves nodes (their ids change), so it only happens here, at
        the start of an add, before any node id is held. Load stays at most
        5/8, tombstones counted: linear probing stays within a cache line or two.
        """
        cdef uint64_t slots = <uint64_t>self.mask + 1
        cdef uint64_t need = <uint64_t>self.live + extra
        if (<uint64_t>self.used + extra) * 8 <= slots * 5:
            return 0
        slots = MIN_SLOTS
        while slots * 5 < need * 16:   # after a rebuild, load is at most 5/16
            slots *= 2
        if slots > (<uint64_t>1 << 31):
            raise MemoryError("too many trie nodes")
        self.rebuild(<uint32_t>slots)
        return 0

    cdef int rebuild(self, uint32_t slots) except -1:
        """Move every node into a fresh table of ``slots`` slots.

        Keys depend on content only, so a node's home slot is its stored hash
        under the new mask; only the parent ids, which are slots, are renamed.
        """
        cdef Node* old = self.nodes
        cdef uint32_t old_slots = self.mask + 1
        cdef uint32_t new_mask = slots - 1
        cdef Node* new = new_table(slots)
        cdef uint32_t* new_id = <uint32_t*>PyMem_Malloc(old_slots * sizeof(uint32_t))
        cdef uint32_t i, j
        if new_id == NULL:
            fr_table_free(new, <size_t>slots * sizeof(Node))
            raise MemoryError()
        for i in range(<uint32_t>ROOTS):
            new[i] = old[i]
            new_id[i] = i
        for i in range(ROOTS, old_slots):
            if old[i].parent >= TOMBSTONE:
                continue
            j = old[i].hash & new_mask
            while new[j].parent != EMPTY:
                j = (j + 1) & new_mask
            new[j] = old[i]
            new_id[i] = j
        for j in range(ROOTS, slots):
            if new[j].parent < TOMBSTONE:
                new[j].parent = new_id[new[j].parent]
        PyMem_Free(new_id)
        self.nodes = new
        self.mask = new_mask
        self.used = self.live
        fr_table_free(old, <size_t>old_slots * sizeof(Node))
        return 0

    cdef uint32_t descend(
        self, uint32_t parent, uint64_t parent_key, const char* s, Py_ssize_t n, uint64_t* key
    ) except 0xFFFFFFFF:
        """The child of ``parent`` along ``s[:n]``, created if missing (room reserved)."""
        cdef uint64_t first
        cdef uint64_t h = fr_hash(parent_key, s, n, &first)
        cdef uint32_t i = <uint32_t>h & self.mask
        cdef uint32_t free_slot = NO_NODE
        cdef Node* nd
        cdef char* heap = NULL
        while True:
            nd = &self.nodes[i]
            if nd.parent == EMPTY:
                break
            if nd.parent == TOMBSTONE:
                if free_slot == NO_NODE:
                    free_slot = i
            elif (nd.hash == <uint32_t>h and nd.parent == parent and nd.seglen == n
                    and fr_same(seg_bytes(nd), s, n, first)):
                key[0] = h
                return i
            i = (i + 1) & self.mask
        key[0] = h
        if n > INLINE_SEGMENT:
            heap = <char*>PyMem_Malloc((n + 7) & ~7)
            if heap == NULL:
                raise MemoryError()
            memset(heap + ((n + 7) & ~7) - 8, 0, 8)
            memcpy(heap, s, n)
        if free_slot == NO_NODE:
            free_slot = i
            self.used += 1
        nd = &self.nodes[free_slot]
        memset(nd, 0, sizeof(Node))
        if heap != NULL:
            nd.seg.heap = heap
        elif n > 0:
            memcpy(nd.seg.chars, s, n)
        nd.hash = <uint32_t>h
        nd.parent = parent
        nd.seglen = <uint32_t>n
        nd.exact = NO_RULE
        nd.prefix = NO_RULE
        self.nodes[parent].children += 1
        self.live += 1
        return free_slot

    cdef void prune(self, uint32_t node) noexcept:
        """Free ``node`` and its ancestors while they hold no rule and no child."""
        cdef Node* nd
        cdef uint32_t parent, i
        while node >= ROOTS:
            nd = &self.nodes[node]
            if nd.exact != NO_RULE or nd.prefix != NO_RULE or nd.children != 0:
                return
            parent = nd.parent
            if nd.seglen > INLINE_SEGMENT:
                PyMem_Free(nd.seg.heap)
            nd.seglen = 0
            nd.parent = TOMBSTONE
            self.live -= 1
            self.nodes[parent].children -= 1
            # a tombstone right before an empty slot ends no probe: empty it, and
            # the tombstones before it
            i = node
            while self.nodes[i].parent == TOMBSTONE and self.nodes[(i + 1) & self.mask].parent == EMPTY:
                self.nodes[i].parent = EMPTY
                self.used -= 1
                i = (i - 1) & self.mask
            node = parent

    # ------------------------------------------------------------ lookup

    cdef inline int32_t match_path(
        self, uint32_t node, uint64_t key, const char* p, Py_ssize_t n
    ) noexcept nogil:
        """The winning rule slot under path root ``node`` (whose key is ``key``), or NO_RULE.

        First the keys of the request's first PREFETCH_DEPTH elements are
        computed and their slots prefetched, so the memory reads of all levels
        overlap; then the walk checks level by level, as a trie walk does.
        """
        cdef int32_t best = self.nodes[node].prefix
        cdef Py_ssize_t pos = 1, start, seglen
        cdef uint64_t h, first
        cdef uint64_t keys[PREFETCH_DEPTH]
        cdef uint64_t firsts[PREFETCH_DEPTH]
        cdef Py_ssize_t ends[PREFETCH_DEPTH]
        cdef int depth = 0, level
        if n == 0:
            p = b"/"
            n = 1
        elif p[0] != b'/':
            return NO_RULE
        if self.mask < PREFETCH_MIN_SLOTS:
            # a table this small stays in cache: the prefetch pass would only cost
            return self.walk(node, key, p, n, 1, best)
        while depth < PREFETCH_DEPTH:
            seglen = fr_scan(key, p + pos, n - pos, pos, &key, &firsts[depth])
            keys[depth] = key
            fr_prefetch(&self.nodes[<uint32_t>key & self.mask])
            pos += seglen
            ends[depth] = pos
            depth += 1
            if pos == n:
                break
            pos += 1
        start = 1
        for level in range(depth):
            node = self.child_hashed(
                node, p + start, ends[level] - start, keys[level], firsts[level]
            )
            if node == NO_NODE:
                return best
            if ends[level] == n:   # the request path ends on this node
                return ending_on(&self.nodes[node], best)
            best = passing(&self.nodes[node], best)
            start = ends[level] + 1
        # deeper than PREFETCH_DEPTH elements: go on one level at a time
        return self.walk(node, keys[depth - 1], p, n, start, best)

    cdef inline int32_t walk(
        self, uint32_t node, uint64_t key, const char* p, Py_ssize_t n, Py_ssize_t pos,
        int32_t best
    ) noexcept nogil:
        """``match_path`` one level at a time, from element ``p[pos:]`` below ``node``."""
        cdef Py_ssize_t seglen
        cdef uint64_t first
        while True:
            seglen = fr_scan(key, p + pos, n - pos, pos, &key, &first)
            node = self.child_hashed(node, p + pos, seglen, key, first)
            if node == NO_NODE:
                return best
            pos += seglen
            if pos == n:
                return ending_on(&self.nodes[node], best)
            best = passing(&self.nodes[node], best)
            pos += 1

    cdef inline uint32_t select_host(
        self, const char* name, Py_ssize_t n, uint64_t* key
    ) noexcept nogil:
        """The path root for a normalized request host: exact, wildcard, else any host."""
        cdef uint32_t root
        cdef const char* dot
        if n != 0 and self.nodes[EXACT_HOSTS].children:
            root = self.host_child(EXACT_HOSTS, name, n, key)
            if root != NO_NODE:
                return root
        if n != 0 and self.nodes[WILDCARD_HOSTS].children:
            dot = <const char*>memchr(name, b'.', n)
            # "*.foo.com" covers exactly one more, non-empty label
            if dot != NULL and dot != name and dot + 1 < name + n:
                root = self.host_child(WILDCARD_HOSTS, dot + 1, name + n - dot - 1, key)
                if root != NO_NODE:
                    return root
        key[0] = fr_root_key(ANY_HOST)
        return ANY_HOST

    def match(self, host, path):
        cdef const char* hp
        cdef const char* pp
        cdef Py_ssize_t hn, pn
        cdef char name[FR_HOST_BUFFER]
        cdef int32_t slot
        view_text(host, &hp, &hn, True)
        view_text(path, &pp, &pn, False)
        cdef uint64_t key
        cdef uint32_t root
        hn = fr_host(hp, hn, name)
        root = self.select_host(name, hn, &key)
        slot = self.match_path(root, key, pp, pn)
        if slot == NO_RULE:
            return self._default
        return <object>PyList_GET_ITEM(self._backends, slot)

    # ------------------------------------------------------------ mutation

    cdef uint32_t find_node(self, RuleKey* key, bint create) except? 0xFFFFFFFF:
        """The node a rule ends on (NO_NODE if absent); created on the way when ``create``."""
        cdef uint32_t node = ANY_HOST
        cdef uint64_t node_key = fr_root_key(ANY_HOST), first
        cdef const char* p = key.path
        cdef const char* slash
        cdef Py_ssize_t n = key.path_len, pos, end
        if create:
            self.reserve(<uint32_t>key.elements)   # node ids are stable from here on
            self.prefetch_rule(key)
        if key.host_parent != ANY_HOST:
            node_key = fr_root_key(key.host_parent)
            if create:
                node = self.descend(key.host_parent, node_key, key.host_key, key.host_len, &node_key)
            else:
                node = self.child(key.host_parent, node_key, key.host_key, key.host_len, &node_key)
        pos = 1
        while node != NO_NODE and n > 0 and pos <= n:
            slash = <const char*>memchr(p + pos, b'/', n - pos)
            end = (slash - p) if slash != NULL else n
            if create:
                node = self.descend(node, node_key, p + pos, end - pos, &node_key)
            else:
                node = self.child(node, node_key, p + pos, end - pos, &node_key)
            pos = end + 1
        return node

    cdef void prefetch_rule(self, RuleKey* key) noexcept nogil:
        """Start reading the slots of every level of a rule, so the walk's misses overlap."""
        cdef uint64_t node_key, first
        cdef const char* p = key.path
        cdef const char* slash
        cdef Py_ssize_t n = key.path_len, pos = 1, end
        if key.host_parent != ANY_HOST:
            node_key = fr_hash(fr_root_key(key.host_parent), key.host_key, key.host_len, &first)
            fr_prefetch(&self.nodes[<uint32_t>node_key & self.mask])
        else:
            node_key = fr_root_key(ANY_HOST)
        while n > 0 and pos <= n:
            slash = <const char*>memchr(p + pos, b'/', n - pos)
            end = (slash - p) if slash != NULL else n
            node_key = fr_hash(node_key, p + pos, end - pos, &first)
            fr_prefetch(&self.nodes[<uint32_t>node_key & self.mask])
            pos = end + 1

    cdef int32_t take_slot(self) except -1:
        """A free rule slot, growing the slot arrays when none is free."""
        cdef Py_ssize_t slot
        cdef uint64_t* grown
        if self._free_slots:
            return self._free_slots.pop()
        slot = len(self._hosts)
        if slot >= 0x7FFFFFFF:
            raise OverflowError("too many rules")
        if slot == self.order_capacity:
            grown = <uint64_t*>PyMem_Realloc(
                self.order, (2 * self.order_capacity + 16) * sizeof(uint64_t)
            )
            if grown == NULL:
                raise MemoryError()
            self.order = grown
            self.order_capacity = 2 * self.order_capacity + 16
        self._hosts.append(None)
        self._paths.append(None)
        self._types.append(None)
        self._backends.append(None)
        return <int32_t>slot

    def add(self, host, path, path_type, backend):
        cdef RuleKey key
        cdef str normalized = validate_rule(host, path, path_type, &key)
        cdef uint32_t node = self.find_node(&key, True)
        cdef int32_t* field = &self.nodes[node].exact if key.kind == KIND_EXACT else &self.nodes[node].prefix
        cdef int32_t slot
        if field[0] != NO_RULE:
            # the node and its ancestors already existed: nothing to undo
            raise _RouteConflictError(
                self.route(field[0]), _Route(normalized, path, path_type, backend)
            )
        slot = self.take_slot()
        # take_slot may not move nodes, but re-read the field to be independent of that
        field = &self.nodes[node].exact if key.kind == KIND_EXACT else &self.nodes[node].prefix
        field[0] = slot
        self._hosts[slot] = normalized
        self._paths[slot] = path
        self._types[slot] = path_type
        self._backends[slot] = backend
        self.order[slot] = self._sequence
        self._sequence += 1
        self._rule_count += 1

    def remove(self, host, path, path_type):
        cdef RuleKey key
        cdef str normalized = validate_rule(host, path, path_type, &key)
        cdef uint32_t node = self.find_node(&key, False)
        cdef int32_t slot = NO_RULE
        if node != NO_NODE:
            slot = self.nodes[node].exact if key.kind == KIND_EXACT else self.nodes[node].prefix
        if slot == NO_RULE:
            raise _RouteNotFoundError(normalized, path, path_type)
        if key.kind == KIND_EXACT:
            self.nodes[node].exact = NO_RULE
        else:
            self.nodes[node].prefix = NO_RULE
        self.prune(node)
        backend = self._backends[slot]
        self._backends[slot] = None
        self._hosts[slot] = None
        self._paths[slot] = None
        self._types[slot] = None
        self._free_slots.append(slot)
        self._rule_count -= 1
        return backend

    def copy(self):
        """An independent router with the same rules, default and routes() order.

        A byte copy of the table (long segments duplicated) and of the slot lists:
        far cheaper than adding every rule again, which is what lets a controller
        derive the next config from the last one by removing and adding a few rules.
        """
        cdef Router other = Router.__new__(Router)
        cdef uint32_t slots = self.mask + 1, i
        cdef size_t size = <size_t>slots * sizeof(Node)
        cdef Node* table = <Node*>fr_table_alloc(size)
        cdef Node* nd
        cdef char* heap
        cdef size_t padded
        if table == NULL:
            raise MemoryError()
        memcpy(table, self.nodes, size)
        for i in range(slots):   # clear the borrowed pointers first: if an allocation
            nd = &table[i]       # below fails, the discarded copy frees only its own
            if nd.parent < TOMBSTONE and nd.seglen > INLINE_SEGMENT:
                nd.seg.heap = NULL
        fr_table_free(other.nodes, (<size_t>other.mask + 1) * sizeof(Node))
        other.nodes = table
        other.mask = self.mask
        for i in range(slots):
            nd = &table[i]
            if nd.parent < TOMBSTONE and nd.seglen > INLINE_SEGMENT:
                padded = (nd.seglen + 7) & ~7
                heap = <char*>PyMem_Malloc(padded)
                if heap == NULL:
                    raise MemoryError()
                memcpy(heap, self.nodes[i].seg.heap, padded)
                nd.seg.heap = heap
        other.used = self.used
        other.live = self.live
        if self.order_capacity:
            other.order = <uint64_t*>PyMem_Malloc(self.order_capacity * sizeof(uint64_t))
            if other.order == NULL:
                raise MemoryError()
            memcpy(other.order, self.order, self.order_capacity * sizeof(uint64_t))
            other.order_capacity = self.order_capacity
        other._backends = list(self._backends)
        other._hosts = list(self._hosts)
        other._paths = list(self._paths)
        other._types = list(self._types)
        other._free_slots = list(self._free_slots)
        other._sequence = self._sequence
        other._rule_count = self._rule_count
        other._default = self._default
        return other

    def __copy__(self):
        return self.copy()

    cdef object route(self, int32_t slot):
        return _tuple_new(
            _Route, (self._hosts[slot], self._paths[slot], self._types[slot], self._backends[slot])
        )

    def set_default(self, backend):
        self._default = backend

    @property
    def default(self):
        return self._default

    def routes(self):
        cdef Py_ssize_t s
        live = [(self.order[s], s) for s in range(len(self._hosts)) if self._hosts[s] is not None]
        live.sort()
        for _, s in live:
            yield self.route(s)

    def __len__(self):
        return self._rule_count

    def __repr__(self):
        return (
            f"<Router rules={self._rule_count} exact_hosts={self.nodes[EXACT_HOSTS].children}"
            f" wildcard_hosts={self.nodes[WILDCARD_HOSTS].children} nodes={self.live - ROOTS}"
            f" slots={self.mask + 1} default={self._default!r}>"
        )

    # ------------------------------------------------------------ explain

    cdef list candidates(self, uint32_t node, uint64_t key, const char* p, Py_ssize_t n):
        """Every rule under path root ``node`` that matches, best first."""
        cdef list found = []   # (depth, exact?, slot), shallowest first
        cdef Py_ssize_t pos = 1, end, depth = 0
        cdef const char* slash
        cdef Node* nd
        if n == 0:
            p = b"/"
            n = 1
        if p[0] != b'/':
            return []
        if self.nodes[node].prefix != NO_RULE:
            found.append((0, False, self.nodes[node].prefix))
        while True:
            slash = <const char*>memchr(p + pos, b'/', n - pos)
            end = (slash - p) if slash != NULL else n
            node = self.child(node, key, p + pos, end - pos, &key)
            if node == NO_NODE:
                break
            depth += 1
            nd = &self.nodes[node]
            if nd.prefix != NO_RULE:
                found.append((depth, False, nd.prefix))
            if end == n:
                if nd.exact != NO_RULE:
                    found.append((depth, True, nd.exact))
                break
            pos = end + 1
        found.sort(reverse=True)
        return [self.route(slot) for _, _, slot in found]

    def explain(self, host, path):
        cdef const char* hp
        cdef const char* pp
        cdef Py_ssize_t hn, pn
        cdef char name[FR_HOST_BUFFER]
        cdef uint32_t root, wildcard_root = NO_NODE
        cdef uint64_t key, wildcard_key = 0
        cdef const char* dot
        view_text(host, &hp, &hn, True)
        view_text(path, &pp, &pn, False)
        hn = fr_host(hp, hn, name)
        host_text = name[:hn].decode("utf-8", "replace")
        root = self.select_host(name, hn, &key)
        if hn:
            dot = <const char*>memchr(name, b'.', hn)
            if dot != NULL and dot != name and dot + 1 < name + hn:
                wildcard_root = self.host_child(
                    WILDCARD_HOSTS, dot + 1, name + hn - dot - 1, &wildcard_key
                )
        if root == ANY_HOST:
            scope, rule_host = "any", ""
        elif root == wildcard_root:
            scope, rule_host = "wildcard", "*." + name[dot - name + 1:hn].decode("ascii")
        else:
            scope, rule_host = "exact", host_text

        found = self.candidates(root, key, pp, pn)
        skipped = []
        if scope == "exact" and wildcard_root != NO_NODE:
            skipped += self.candidates(wildcard_root, wildcard_key, pp, pn)
        if scope != "any":
            skipped += self.candidates(ANY_HOST, fr_root_key(ANY_HOST), pp, pn)

        backend = self.match(host, path)
        winner = found[0] if found else None
        where = "rules for any host" if scope == "any" else f"{scope} host {rule_host!r}"
        if winner is not None:
            if len(found) == 1:
                reason = f"the only rule of {where} that matches"
            elif _depth(found[1]) == _depth(winner):
                reason = f"Exact beats {found[1].path_type} on an equal length"
            else:
                reason = (
                    f"longest match: {winner.path!r} is longer than "
                    f"{found[1].path!r} ({found[1].path_type})"
                )
        else:
            reason = f"no rule of {where} matches the path"
            if skipped:
                reason += (
                    "; rules of less specific hosts are not consulted once a host is"
                    " selected (as in ingress-nginx)"
                )
            reason += (
                "; the default backend: the catch-all for requests no rule matches"
                if self._default is not None
                else "; no default backend"
            )
        return _Explanation(
            host=host_text,
            path=_display(path),
            scope=scope,
            rule_host=rule_host,
            candidates=tuple(found),
            not_consulted=tuple(skipped),
            winner=winner,
            backend=backend,
            reason=reason,
        )


def _depth(route):
    """How many path elements a rule covers, as precedence counts them."""
    p = route.path
    if route.path_type != "Exact" and p.endswith("/"):
        p = p[:len(p) - 1]
    return p.count("/")
