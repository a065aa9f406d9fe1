# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# cython: embedsignature=True, initializedcheck=False
"""The Cython engine of seqshm: mappings, the header check, and the copy and write paths.

Only what must be fast or must touch shared memory lives here. The public ``Reader`` and
``Writer`` (seqshm/_reader.py, seqshm/_writer.py) subclass the engines below and own files,
lifecycle, waiting and errors; an inherited method costs what the engine's does.
"""

cimport cython
cimport numpy as cnp
from cpython.buffer cimport PyBUF_WRITABLE, PyBuffer_FillInfo
from cpython.exc cimport PyErr_CheckSignals
from cpython.pythread cimport (NOWAIT_LOCK, WAIT_LOCK, PyThread_acquire_lock,
                               PyThread_allocate_lock, PyThread_free_lock,
                               PyThread_release_lock, PyThread_type_lock)
from cpython.ref cimport Py_INCREF
from libc.errno cimport EACCES, EAGAIN, errno
from libc.stdint cimport UINT64_MAX, uint8_t, uint32_t, uint64_t
from libc.string cimport memcpy, memmove, memset, strncpy
from posix.mman cimport MAP_FAILED, MAP_SHARED, PROT_READ, PROT_WRITE, mmap, munmap
from posix.unistd cimport close as c_close, getpid

cdef extern from "<sys/mman.h>" nogil:
    int madvise(void *addr, size_t length, int advice)
    enum:
        MADV_DONTFORK

from seqshm._protocol cimport *

import math
import numbers
import os
import stat

import numpy as np

from seqshm._dtype import ElementType, Field, to_dtype
from seqshm._errors import ClosedError, FileTruncated, FormatError, VersionError
from seqshm._types import Snapshot as _Snapshot

cnp.import_array()

cdef extern from "numpy/arrayobject.h":
    # Declared here with raw pointers: it steals a reference to descr, which the callers
    # take explicitly (Cython's numpy.pxd does not declare it).
    object PyArray_NewFromDescr(void *subtype, void *descr, int nd, cnp.npy_intp *dims,
                                cnp.npy_intp *strides, void *data, int flags, void *obj)
    bint PyArray_EquivTypes(void *a, void *b)

# What snapshot(out=) needs of ``out``.
cdef enum:
    OUT_FLAGS = cnp.NPY_ARRAY_C_CONTIGUOUS | cnp.NPY_ARRAY_WRITEABLE | cnp.NPY_ARRAY_ALIGNED

# Copies at least this large run with the GIL released: releasing and taking it back costs
# ~0.1 us, a few percent of a 256 KiB copy and far more than a small one.
cdef size_t GIL_RELEASE_BYTES = 256 * 1024

# A blocked read waits in slices of at most this long with the GIL released, looking at
# signals (Ctrl-C), close() and a truncated file in between: the 100 ms the lifecycle rules
# allow, with room to spare.
cdef uint64_t WAIT_SLICE_NS = 10 * 1000 * 1000
# How often a blocked read asks whether the writer it waits on is still alive (system calls).
cdef uint64_t STALL_LOOK_NS = 100 * 1000 * 1000
# What a copy made with the GIL released returns when the reader moved to a replacement
# channel meanwhile (its copy is of the old one).
cdef enum:
    _MOVED = -2

ABI_VERSION = SEQSHM_ABI_VERSION
MAGIC = SEQSHM_MAGIC
HEADER_SIZE = sizeof(seqshm_header)
SLOTS_OFFSET = SEQSHM_SLOTS_OFFSET
ALIGN = SEQSHM_ALIGN
MAX_SLOTS = SEQSHM_MAX_SLOTS
MAX_DIMS = SEQSHM_MAX_DIMS
MAX_FIELDS = SEQSHM_MAX_FIELDS
FIELD_NAME_MAX = SEQSHM_FIELD_NAME_LEN - 1
STATE_OPEN = SEQSHM_STATE_OPEN
STATE_CLOSED = SEQSHM_STATE_CLOSED
STATE_REPLACED = SEQSHM_STATE_REPLACED
IOC_INFO = SEQSHM_IOC_INFO
WAKE_F_FENCE = SEQSHM_WAKE_F_FENCE
WAITERS_MAGIC = SEQSHM_WAITERS_MAGIC
WAKE_HEAL_AFTER = SEQSHM_WAKE_HEAL_AFTER
INFO_ACK = SEQSHM_INFO_ACK


@cython.final
cdef class _Lease:
    """Keeps a mapping alive for one apply() call's view, and exports nothing itself."""
    cdef Mapping mapping


@cython.final
cdef class Mapping:
    """A shared mapping of a file, guarded against the file shrinking under it (guard.h);
    unmapped when its last user (reader, writer, view) is gone."""

    cdef void *addr
    cdef size_t length
    cdef bint writable
    cdef seqshm_guard *guard

    def __cinit__(self, int fd, size_t length, bint writable=False, uint32_t nr_slots=0):
        cdef int prot = PROT_READ | (PROT_WRITE if writable else 0)
        cdef void *p = mmap(NULL, length, prot, MAP_SHARED, fd, 0)
        self.addr = NULL
        if p == MAP_FAILED:
            raise OSError(errno, os.strerror(errno))
        if writable and madvise(p, length, MADV_DONTFORK) != 0:
            # A forked child must not inherit the writer's mapping: it would hold the file
            # (and so the writer's lock) open after the writer closed it.
            munmap(p, length)
            raise OSError(errno, os.strerror(errno))
        self.guard = seqshm_guard_add(p, length, nr_slots, writable)
        if self.guard == NULL:
            munmap(p, length)
            raise OSError(errno, f"cannot guard the mapping: {os.strerror(errno)}")
        self.addr = p
        self.length = length
        self.writable = writable

    def __dealloc__(self):
        if self.addr != NULL:
            seqshm_guard_remove(self.guard)
            munmap(self.addr, self.length)

    def _forget(self):
        """In a forked child that did not inherit this mapping (MADV_DONTFORK): stop
        guarding the range and never unmap it, since the child's own memory may be there."""
        if self.addr != NULL:
            seqshm_guard_remove(self.guard)
            self.addr = NULL

    @property
    def damaged(self):
        """True once the file shrank under this mapping (its pages now read as mid-write)."""
        return bool(seqshm_guard_damaged(self.guard))

    def __getbuffer__(self, Py_buffer *buf, int flags):
        if (flags & PyBUF_WRITABLE) and not self.writable:
            raise BufferError("seqshm mapping is read-only")
        PyBuffer_FillInfo(buf, self, self.addr, self.length, not self.writable, flags)

    def __len__(self):
        return self.length


cdef Mapping _map_fd(int fd, size_t length, bint writable, str path, uint32_t nr_slots):
    try:
        return Mapping(fd, length, writable, nr_slots)
    except OSError as e:
        raise OSError(e.errno, f"cannot map {length} bytes: {e.strerror}", path) from None


cdef cnp.ndarray _array_at(object base, cnp.dtype descr, int ndim, cnp.npy_intp *dims,
                           const void *data, bint writable):
    """An ndarray over mapped memory that keeps ``base`` (the mapping) alive."""
    Py_INCREF(descr)  # PyArray_NewFromDescr steals it
    cdef cnp.ndarray arr = PyArray_NewFromDescr(
        <void *>np.ndarray, <void *>descr, ndim, dims, NULL, <void *>data,
        cnp.NPY_ARRAY_C_CONTIGUOUS | (cnp.NPY_ARRAY_WRITEABLE if writable else 0), NULL)
    cnp.set_array_base(arr, base)
    return arr


cdef int _raise_header(int rc, const char *why, str path) except -1:
    msg = why.decode("utf-8", "replace")
    if rc == SEQSHM_EVERSION:
        raise VersionError(msg, path)
    raise FormatError(msg, path)


cdef object _element(const seqshm_header *h):
    fields = tuple(
        Field(h.fields[i].name.decode("ascii"), h.fields[i].offset, h.fields[i].count,
              chr(h.fields[i].kind), h.fields[i].size,
              bool(h.fields[i].flags & SEQSHM_FIELD_F_ARRAY))
        for i in range(h.nr_fields))
    return ElementType(h.itemsize, bool(h.flags & SEQSHM_F_RECORD), fields)


cdef dict _header_dict(const seqshm_header *h):
    return {
        "magic": h.magic,
        "abi_version": h.abi_version,
        "header_size": h.header_size,
        "region_size": h.region_size,
        "payload_offset": h.payload_offset,
        "payload_size": h.payload_size,
        "slot_stride": h.slot_stride,
        "nr_slots": h.nr_slots,
        "flags": h.flags,
        "clock_id": h.clock_id,
        "writer_pid": h.writer_pid,
        "writer_start": h.writer_start,
        "waiters_dev": h.waiters_dev,
        "waiters_ino": h.waiters_ino,
        "wake_flags": h.wake_flags,
        "writer_pidns": h.writer_pidns,
        "name": h.name.decode("ascii"),
        "itemsize": h.itemsize,
        "nr_fields": h.nr_fields,
        "ndim": h.ndim,
        "shape": tuple(h.shape[i] for i in range(h.ndim)),
        "fields": _element(h).fields,
    }


cdef int _load_header(bytes data, uint64_t file_size, str path, seqshm_header *h) except -1:
    cdef char why[256]
    if <size_t>len(data) < sizeof(seqshm_header):
        raise FormatError(
            f"truncated: {len(data)} bytes, a seqshm header has {sizeof(seqshm_header)}", path)
    memcpy(h, <const char *>data, sizeof(seqshm_header))
    rc = seqshm_header_check(h, file_size, why, sizeof(why))
    if rc != SEQSHM_OK:
        _raise_header(rc, why, path)
    return 0


# The static fields of a header, by name, in the order the dict Reader.header was had them.
cdef tuple _HEADER_KEYS = (
    "magic", "abi_version", "header_size", "region_size", "payload_offset", "payload_size",
    "slot_stride", "nr_slots", "flags", "clock_id", "writer_pid", "writer_start",
    "waiters_dev", "waiters_ino", "wake_flags", "writer_pidns", "name", "itemsize",
    "nr_fields", "ndim", "shape", "fields")


cdef Header _new_header(const seqshm_header *h):
    cdef Header out = Header.__new__(Header)
    memcpy(&out.h, h, sizeof(seqshm_header))
    return out


@cython.final
@cython.auto_pickle(False)
cdef class Header:
    """A channel's header as the engine checked (:func:`check_header`) or built
    (:func:`build_header`) it: a private copy of its static fields, never re-read from shared
    memory. Only the engine makes one, so whoever holds one holds a checked header, and the
    engines attach it without checking it again.

    Its fields are typed read-only attributes (``h.nr_slots``); ``h["nr_slots"]``,
    ``get()``, ``keys()``, ``values()`` and ``items()`` read them by name as the dict that
    ``Reader.header`` used to be, and a Header equals such a dict of the same fields. Two
    Headers are equal when every static field is (head and the state word are not in it)."""

    cdef seqshm_header h

    def __init__(self):
        raise TypeError("a Header is made by seqshm._core.check_header() or build_header()")

    @property
    def magic(self):
        return self.h.magic

    @property
    def abi_version(self):
        return self.h.abi_version

    @property
    def header_size(self):
        return self.h.header_size

    @property
    def region_size(self):
        return self.h.region_size

    @property
    def payload_offset(self):
        return self.h.payload_offset

    @property
    def payload_size(self):
        return self.h.payload_size

    @property
    def slot_stride(self):
        return self.h.slot_stride

    @property
    def nr_slots(self):
        return self.h.nr_slots

    @property
    def flags(self):
        return self.h.flags

    @property
    def clock_id(self):
        return self.h.clock_id

    @property
    def writer_pid(self):
        return self.h.writer_pid

    @property
    def writer_start(self):
        return self.h.writer_start

    @property
    def waiters_dev(self):
        return self.h.waiters_dev

    @property
    def waiters_ino(self):
        return self.h.waiters_ino

    @property
    def wake_flags(self):
        return self.h.wake_flags

    @property
    def writer_pidns(self):
        return self.h.writer_pidns

    @property
    def name(self):
        return self.h.name.decode("ascii")

    @property
    def itemsize(self):
        return self.h.itemsize

    @property
    def nr_fields(self):
        return self.h.nr_fields

    @property
    def ndim(self):
        return self.h.ndim

    @property
    def shape(self):
        return tuple(self.h.shape[i] for i in range(self.h.ndim))

    @property
    def fields(self):
        return _element(&self.h).fields

    @property
    def element(self):
        """The ElementType the field table describes."""
        return _element(&self.h)

    def to_bytes(self):
        """The header as the region holds it (head and state as built: 0)."""
        return (<char *>&self.h)[:sizeof(seqshm_header)]

    def with_waiters(self, uint64_t dev, uint64_t ino):
        """A copy naming the sidecar (st_dev, st_ino) ``dev``, ``ino``: what create() learns
        only once the sidecar exists."""
        cdef Header out = _new_header(&self.h)
        out.h.waiters_dev = dev
        out.h.waiters_ino = ino
        return out

    def _values(self):
        return (self.h.magic, self.h.abi_version, self.h.header_size, self.h.region_size,
                self.h.payload_offset, self.h.payload_size, self.h.slot_stride,
                self.h.nr_slots, self.h.flags, self.h.clock_id, self.h.writer_pid,
                self.h.writer_start, self.h.waiters_dev, self.h.waiters_ino,
                self.h.wake_flags, self.h.writer_pidns, self.name, self.h.itemsize,
                self.h.nr_fields, self.h.ndim, self.shape, self.fields)

    def __eq__(self, other):
        if isinstance(other, Header):
            return self._values() == (<Header>other)._values()
        if isinstance(other, dict):
            return _header_dict(&self.h) == other
        return NotImplemented

    def __getitem__(self, key):
        if key in _HEADER_KEYS:
            return getattr(self, key)
        raise KeyError(key)

    def get(self, key, default=None):
        return getattr(self, key) if key in _HEADER_KEYS else default

    def keys(self):
        return _HEADER_KEYS

    def values(self):
        return self._values()

    def items(self):
        return tuple(zip(_HEADER_KEYS, self._values()))

    def __iter__(self):
        return iter(_HEADER_KEYS)

    def __len__(self):
        return len(_HEADER_KEYS)

    def __contains__(self, key):
        return key in _HEADER_KEYS

    def __repr__(self):
        return f"Header({_header_dict(&self.h)!r})"

    def __reduce__(self):
        # pickled as the dict Reader.header was: only the engine makes a Header
        return dict, (_header_dict(&self.h),)


# The largest region a userspace writer builds (1 TiB): past what any tmpfs holds, so a size
# this large is a mistake in the shape, reported as such rather than as ENOSPC.
cdef uint64_t MAX_REGION = (<uint64_t>1) << 40


def check_header(bytes data not None, uint64_t file_size=0, str path=None):
    """Validate raw header bytes the way a reader does: the checked Header.

    Raises FormatError or VersionError naming ``path``.
    """
    cdef seqshm_header h
    _load_header(data, file_size, path, &h)
    return _new_header(&h)


def refuse_holes(st, Header header not None, str path=None):
    """Refuse the channel file whose fstat is ``st`` (the open file's, taken once at open)
    and whose checked header is ``header``, if it has holes: seqshm_refuse_holes()
    (src/protocol.c) is the rule and says why, the one copy, which libseqshm's readers call
    too. Call it before anything reads the payload.

    Raises FormatError naming ``path``.
    """
    cdef char why[256]
    # the stat is Python's, not the C library's: the extension calling fstat itself would
    # need glibc 2.33's fstat64 symbol, past the wheel's manylinux_2_17 policy
    rc = seqshm_refuse_holes(&header.h, stat.S_ISREG(st.st_mode), st.st_size,
                             st.st_blocks * 512, why, sizeof(why))
    if rc != SEQSHM_OK:
        _raise_header(rc, why, path)


def build_header(str name not None, uint32_t nr_slots, tuple shape not None, element,
                 uint32_t writer_pid=0, uint64_t writer_start=0, *, uint64_t waiters_dev=0,
                 uint64_t waiters_ino=0, uint32_t wake_flags=0, uint32_t writer_pidns=0):
    """The Header (magic still 0) of a region for ``element`` and ``shape``: ``to_bytes()``
    is what its file starts with, ``region_size`` its size.
    ``waiters_dev``/``waiters_ino`` name the sidecar of sleeping readers (0: none),
    ``wake_flags`` is SEQSHM_WAKE_*, ``writer_pidns`` the inode of the writer's pid namespace.

    Raises ValueError when the layout cannot be built.
    """
    cdef seqshm_header h
    cdef seqshm_field fields[SEQSHM_MAX_FIELDS]
    cdef unsigned long long dims[SEQSHM_MAX_DIMS]
    cdef seqshm_layout_req req
    cdef char why[256]
    cdef bytes name_b = name.encode("ascii")
    cdef bytes fname
    # _dtype.element_type() and create()'s _shape() refuse these first, with the user's words;
    # these stay because they bound the C arrays below, whoever the caller
    if len(shape) > SEQSHM_MAX_DIMS:
        raise ValueError(f"shape {shape} has more than {SEQSHM_MAX_DIMS} dimensions")
    if len(element.fields) > SEQSHM_MAX_FIELDS:
        raise ValueError(f"{len(element.fields)} fields, at most {SEQSHM_MAX_FIELDS}")
    memset(fields, 0, sizeof(fields))
    for i, n in enumerate(shape):
        dims[i] = n
    for i, f in enumerate(element.fields):
        fname = f.name.encode("ascii")
        if len(fname) >= SEQSHM_FIELD_NAME_LEN:
            raise ValueError(f"field name {f.name!r} is longer than {SEQSHM_FIELD_NAME_LEN - 1}")
        strncpy(fields[i].name, fname, SEQSHM_FIELD_NAME_LEN - 1)
        fields[i].offset = f.offset
        fields[i].count = f.count
        fields[i].kind = <uint8_t>ord(f.kind)
        fields[i].size = f.size
        fields[i].flags = SEQSHM_FIELD_F_ARRAY if f.array else 0
    req.name = name_b
    req.nr_slots = nr_slots
    req.ndim = <uint32_t>len(shape)
    req.shape = dims
    req.itemsize = element.itemsize
    req.flags = SEQSHM_F_RECORD if element.record else 0
    req.nr_fields = <uint32_t>len(element.fields)
    req.fields = fields
    req.writer_pid = writer_pid
    req.writer_start = writer_start
    req.region_align = SEQSHM_ALIGN
    req.max_region = MAX_REGION
    rc = seqshm_layout_init(&h, &req, why, sizeof(why))
    if rc != SEQSHM_OK:
        raise ValueError(why.decode("utf-8", "replace"))
    h.waiters_dev = waiters_dev
    h.waiters_ino = waiters_ino
    h.wake_flags = wake_flags
    h.writer_pidns = writer_pidns
    return _new_header(&h)


def mark_state(int fd, uint32_t state, str path=None):
    """Store ``state`` (STATE_CLOSED, STATE_REPLACED) into the region open as ``fd`` (read-write),
    if it is a seqshm region: how a new creator ends the channel it replaces. Returns whether
    it did."""
    cdef seqshm_header *h
    cdef Mapping m
    if os.fstat(fd).st_size < <int>sizeof(seqshm_header):
        return False
    try:
        m = Mapping(fd, SEQSHM_ALIGN, True, 0)
    except OSError:
        return False
    h = <seqshm_header *>m.addr
    if seqshm_load_relaxed_magic(h) != SEQSHM_MAGIC:
        return False
    seqshm_write_close(h, state)
    seqshm_wake_all(h)  # its sleeping readers see the end now, not at their next check
    return True


cdef inline uint64_t seqshm_load_relaxed_magic(const seqshm_header *h) noexcept nogil:
    return (<volatile uint64_t *>&h.magic)[0]


def abi_layout():
    """Offsets and sizes of the shared structs as the C compiler laid them out."""
    cdef seqshm_header h
    cdef seqshm_slot s
    cdef seqshm_field f
    cdef seqshm_ioc_info info
    cdef seqshm_waiters w
    cdef size_t hb = <size_t>&h, sb = <size_t>&s, fb = <size_t>&f, ib = <size_t>&info
    cdef size_t wb = <size_t>&w
    return {
        "header": {
            "size": sizeof(h),
            "magic": <size_t>&h.magic - hb,
            "abi_version": <size_t>&h.abi_version - hb,
            "header_size": <size_t>&h.header_size - hb,
            "region_size": <size_t>&h.region_size - hb,
            "payload_offset": <size_t>&h.payload_offset - hb,
            "payload_size": <size_t>&h.payload_size - hb,
            "slot_stride": <size_t>&h.slot_stride - hb,
            "nr_slots": <size_t>&h.nr_slots - hb,
            "flags": <size_t>&h.flags - hb,
            "clock_id": <size_t>&h.clock_id - hb,
            "writer_pid": <size_t>&h.writer_pid - hb,
            "name": <size_t>&h.name - hb,
            "itemsize": <size_t>&h.itemsize - hb,
            "nr_fields": <size_t>&h.nr_fields - hb,
            "ndim": <size_t>&h.ndim - hb,
            "shape": <size_t>&h.shape - hb,
            "writer_start": <size_t>&h.writer_start - hb,
            "waiters_dev": <size_t>&h.waiters_dev - hb,
            "waiters_ino": <size_t>&h.waiters_ino - hb,
            "wake_flags": <size_t>&h.wake_flags - hb,
            "writer_pidns": <size_t>&h.writer_pidns - hb,
            "fields": <size_t>&h.fields - hb,
            "head": <size_t>&h.head - hb,
            "state": <size_t>&h.state - hb,
        },
        "slot": {
            "size": sizeof(s),
            "seq": <size_t>&s.seq - sb,
            "write_seq": <size_t>&s.write_seq - sb,
            "timestamp_ns": <size_t>&s.timestamp_ns - sb,
        },
        "field": {
            "size": sizeof(f),
            "name": <size_t>&f.name - fb,
            "offset": <size_t>&f.offset - fb,
            "count": <size_t>&f.count - fb,
            "kind": <size_t>&f.kind - fb,
            "size_": <size_t>&f.size - fb,
            "flags": <size_t>&f.flags - fb,
        },
        "waiters": {
            "size": sizeof(w),
            "magic": <size_t>&w.magic - wb,
            "channel_dev": <size_t>&w.channel_dev - wb,
            "channel_ino": <size_t>&w.channel_ino - wb,
            "count": <size_t>&w.count - wb,
        },
        "ioc_info": {
            "size": sizeof(info),
            "head": <size_t>&info.head - ib,
            "seen": <size_t>&info.seen - ib,
        },
    }


@cython.final
cdef class OwnedFd:
    """A file descriptor that is closed exactly once: by ``close()``, by the object that takes
    it over (``WaitersFile``), or when this object goes. Made by :func:`take_fd`.

    Why: Python code cannot hold a bare descriptor safely. A signal handler's exception
    (Ctrl-C) can be raised between any two bytecodes, so ``fd = os.open(...)`` can lose the
    number before it is stored (a leak), and ``os.close(fd)`` in an ``except`` can close a
    number that another object also closes (a double close, which closes whatever file the
    number names by then). Only C code runs no signal handler between two steps."""

    cdef int _fd

    def __cinit__(self):
        self._fd = -1

    def __dealloc__(self):
        if self._fd >= 0:
            c_close(self._fd)

    @property
    def fd(self):
        """The descriptor (-1 once closed or taken over)."""
        return self._fd

    def close(self):
        """Close the descriptor, if this object still owns one (a second call does nothing)."""
        cdef int fd = self._fd
        self._fd = -1
        if fd >= 0:
            c_close(fd)

    cdef int _take(self) noexcept:
        cdef int fd = self._fd
        self._fd = -1
        return fd


def take_fd(fn, *args, **kwargs):
    """``fn(*args, **kwargs)``, a C function returning a new descriptor (``os.open``,
    ``os.dup``), as an :class:`OwnedFd`: no Python code, hence no signal handler, runs between
    the call's return and the object owning the descriptor."""
    cdef int fd = fn(*args, **kwargs)
    cdef OwnedFd owned = OwnedFd.__new__(OwnedFd)
    owned._fd = fd
    return owned


@cython.final
cdef class WaitersFile:
    """The sidecar of a channel's sleeping readers (struct seqshm_waiters, one page), mapped
    read-write, in the writer and in each reader alike. Takes ``fd`` over (closed when the
    object goes; on failure the caller keeps it): an int, or an :class:`OwnedFd`, which then
    hands it over with no instant at which both or neither own it (an interrupt-safe
    transfer). A reader's fd carries its read lock on the sidecar while it is counted.
    Guarded like a channel mapping: a rogue reader that truncates the file spoils only the
    wake-ups (the pages then read as zero)."""

    cdef void *addr
    cdef seqshm_guard *guard
    cdef int fd
    cdef int pid            # the process that mapped it: a forked child opens its own
    cdef int sleepers       # a reader's calls asleep now (changed with the GIL held)

    def __cinit__(self, fd):
        cdef int n = (<OwnedFd>fd)._fd if isinstance(fd, OwnedFd) else fd
        cdef void *p = mmap(NULL, SEQSHM_ALIGN, PROT_READ | PROT_WRITE, MAP_SHARED, n, 0)
        self.addr = NULL
        self.fd = -1
        if p == MAP_FAILED:
            raise OSError(errno, os.strerror(errno))
        self.guard = seqshm_guard_add(p, SEQSHM_ALIGN, 0, 1)
        if self.guard == NULL:
            munmap(p, SEQSHM_ALIGN)
            raise OSError(errno, f"cannot guard the mapping: {os.strerror(errno)}")
        self.addr = p
        self.fd = (<OwnedFd>fd)._take() if isinstance(fd, OwnedFd) else n
        self.pid = getpid()

    def __dealloc__(self):
        if self.addr != NULL:
            seqshm_guard_remove(self.guard)
            munmap(self.addr, SEQSHM_ALIGN)
        if self.fd >= 0:
            c_close(self.fd)

    @property
    def count(self):
        """Readers counted as asleep now (advisory: see linux/seqshm.h)."""
        return _load_waiters_count(<seqshm_waiters *>self.addr)


cdef inline uint32_t _load_waiters_count(seqshm_waiters *w) noexcept nogil:
    return (<volatile uint32_t *>&w.count)[0]


# Sleeps handed to wait_async()'s sleeper threads and not over yet, and the process they
# belong to (a forked child starts with none). Changed only with the GIL held, by C code.
cdef size_t _sleeper_slots = 0
cdef int _sleeper_slots_pid = 0


@cython.final
cdef class SleeperSlot:
    """One futex sleep handed to a sleeper thread (see seqshm/_wait.py, wait_async()):
    counted by :func:`sleeper_slots` from :func:`take_sleeper_slot` until ``release()``, which
    counts once however often and from whichever thread it is called (the sleep ended, or
    was cancelled before it began), and at the latest when the object goes. ``cancel()``
    calls the sleep off: a thread asleep in it wakes at once, one not yet asleep does not
    sleep. Counting and releasing are C code: no signal handler runs between a step and its
    record."""

    cdef uint32_t cancel_word      # the private futex word the sleep watches (wake.h)
    cdef bint held
    cdef int pid

    cdef uint32_t *word(self):
        return &self.cancel_word

    def release(self, *ignored):
        """Give the slot back (once; later calls do nothing). Takes and ignores arguments, to
        serve as a future's done callback."""
        self._release()

    cdef void _release(self) noexcept:
        global _sleeper_slots
        if self.held:
            self.held = False
            if self.pid == _sleeper_slots_pid:  # not a slot a forked child inherited
                _sleeper_slots -= 1

    def cancel(self):
        """Call the sleep off (it returns as woken; see seqshm_wake_wait())."""
        seqshm_wake_cancel(&self.cancel_word)

    def abandon(self):
        """``cancel()`` and ``release()`` in one step (no signal handler runs between them),
        for a waiter that stops waiting: the thread, if it is still in the sleep, leaves it
        at once."""
        seqshm_wake_cancel(&self.cancel_word)
        self._release()

    @property
    def cancelled(self):
        return (<volatile uint32_t *>&self.cancel_word)[0] != 0

    def __dealloc__(self):
        self._release()


def take_sleeper_slot(size_t limit):
    """A :class:`SleeperSlot` if fewer than ``limit`` are held in this process, else None."""
    global _sleeper_slots, _sleeper_slots_pid
    cdef SleeperSlot slot
    cdef int pid = getpid()
    if pid != _sleeper_slots_pid:  # a forked child: its parent's sleeps are not its own
        _sleeper_slots_pid = pid
        _sleeper_slots = 0
    if _sleeper_slots >= limit:
        return None
    slot = SleeperSlot.__new__(SleeperSlot)
    slot.pid = pid
    slot.held = True
    _sleeper_slots += 1
    return slot


def sleeper_slots():
    """Sleeper slots held now in this process (what tests look at after cancelling waits)."""
    return _sleeper_slots if getpid() == _sleeper_slots_pid else 0


def monotonic_ns():
    """CLOCK_MONOTONIC in ns, the clock of every timestamp seqshm writes."""
    return seqshm_monotonic_ns()


def timeout_ns(timeout, str what="timeout"):
    """``timeout`` seconds (an int or a float, NumPy's too) as ns for the engine: None or inf
    is no limit (2**64 - 1), and so is anything past 2**63 ns (292 years); negative or NaN is
    a ValueError; anything else (a str, bytes, a bool) a TypeError."""
    if timeout is None:
        return UINT64_MAX
    if isinstance(timeout, bool) or not isinstance(timeout, numbers.Real):
        raise TypeError(f"{what} must be a number of seconds or None, not {timeout!r}")
    if isinstance(timeout, numbers.Integral):
        if timeout < 0:
            raise ValueError(f"{what} must be a number of seconds >= 0 or None, not {timeout!r}")
        return UINT64_MAX if int(timeout) >= 2**63 // 10**9 else <uint64_t>(int(timeout) * 10**9)
    t = float(timeout)
    if not t >= 0:
        raise ValueError(f"{what} must be a number of seconds >= 0 or None, not {timeout!r}")
    if t * 1e9 >= 2.0 ** 63:
        return UINT64_MAX
    return <uint64_t>(t * 1e9)


cpdef uint64_t timestamp_arg(value, str path=None) except? 0:
    """A write's ``timestamp_ns`` argument: an int of ns (NumPy's too) from 0 to 2**64 - 1;
    else a TypeError or ValueError naming ``path``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{path}: timestamp_ns must be an int of ns, not {value!r}")
    if not 0 <= value < 2**64:
        raise ValueError(f"{path}: timestamp_ns {value} is not from 0 to 2**64 - 1")
    return <uint64_t>int(value)


def records_mismatch(have, want, bint layout=False):
    """Why data of dtype ``have`` cannot move, field by field and by name, to or from a
    channel whose element is ``want`` (None when it can), where either is a record type.

    The one rule of write() and snapshot(out=)/read(out=): records move only between the
    channel's own fields, the same names in the same order with the same types. NumPy's own
    assignment between record types goes by position whatever the names (x into y), and a
    single value fills every field of a record: both would store something other than what
    the caller meant, without an error. ``layout``: the field offsets, the record's size and
    the byte order must be the channel's too (snapshot(out=) copies bytes); write() converts
    those (NumPy's casting='equiv': no value and no field can change)."""
    if want.names is None:
        if have.names is None:
            return None
        return (f"holds records (fields {', '.join(have.names)}), the channel holds {want} "
                "values")
    names = ", ".join(want.names)
    if have.names is None:
        return (f"has dtype {have}, not records: the channel's records have the fields "
                f"{names}")
    if have.names != want.names:
        if sorted(have.names) == sorted(want.names):
            return (f"has the channel's fields in another order ({', '.join(have.names)}; "
                    f"the channel's: {names}), which would be stored by position")
        return f"has the fields {', '.join(have.names)}, the channel's are {names}"
    for n in want.names:
        h, w = have.fields[n][0], want.fields[n][0]
        if h.shape != w.shape:
            return f"has field {n!r} of shape {h.shape}, the channel's is {w.shape}"
        if h.base.newbyteorder("=") != w.base.newbyteorder("="):
            return f"has field {n!r} of type {h.base}, the channel's is {w.base}"
    if not layout:
        if np.can_cast(have, want, "equiv"):
            return None
        return f"has dtype {have}, which does not convert field by field to the channel's {want}"
    if PyArray_EquivTypes(<void *>have, <void *>want):
        return None
    return (f"lays the channel's fields out otherwise (byte order, offsets or size: {have}, "
            f"the channel's {want})")


cdef class _Channel:
    """What readers and writers share: the mapping, the validated header copy, the array type."""

    cdef seqshm_header hdr      # private copy, validated; never re-read from shared memory
    cdef Header _header         # the same, as the object ``header`` returns
    cdef Mapping _map
    cdef cnp.dtype _descr
    cdef object _raw_descr      # opaque items of the record's size, or None for scalars
    cdef int _ndim
    cdef cnp.npy_intp _dims[SEQSHM_MAX_DIMS]
    cdef bint _nogil
    cdef OwnedFd _file          # the channel's file: closed once, by C code
    cdef readonly str path
    cdef readonly tuple shape

    def __cinit__(self, *args, **kwargs):
        self._file = OwnedFd.__new__(OwnedFd)

    @property
    def _fd(self):
        """The channel's file descriptor, owned by this object (-1: none). Set it only to a
        descriptor nothing else will close; it is closed by ``_close_fd()`` or when the
        object goes."""
        return self._file._fd

    @_fd.setter
    def _fd(self, int fd):
        self._file._fd = fd

    def _close_fd(self):
        """Close the channel's file descriptor, once: the number is forgotten and closed in
        one C step, so neither an interrupt nor a second call can leak it or close it twice
        (a second close would close whatever file the number names by then)."""
        self._file.close()

    cdef int _setup(self, str path, Header header, Mapping m) except -1:
        cdef seqshm_header *h = &header.h
        try:
            descr = to_dtype(_element(h))
        except (TypeError, ValueError) as e:
            raise FormatError(f"element type NumPy cannot represent: {e}", path) from None
        self.path = path
        memcpy(&self.hdr, h, sizeof(seqshm_header))
        self._header = header
        self._map = m
        self._descr = descr
        self._raw_descr = np.dtype((np.void, h.itemsize)) if h.flags & SEQSHM_F_RECORD else None
        self._ndim = h.ndim
        for i in range(h.ndim):
            self._dims[i] = <cnp.npy_intp>h.shape[i]
        self.shape = tuple(h.shape[i] for i in range(h.ndim))
        self._nogil = h.payload_size >= GIL_RELEASE_BYTES
        return 0

    @property
    def dtype(self):
        """The NumPy dtype of one element."""
        return self._descr

    @property
    def name(self):
        """The channel's name from its header."""
        return self.hdr.name.decode("ascii")

    @property
    def nr_slots(self):
        """Number of slots: 1 for a plain seqlock, N for a ring of N copies."""
        return self.hdr.nr_slots

    @property
    def payload_size(self):
        """Bytes of one snapshot."""
        return self.hdr.payload_size

    @property
    def header(self):
        """The header's static fields (a Header), as validated when the channel was opened."""
        return self._header

    @property
    def closed(self):
        """True once ``close()`` was called on this object."""
        return self._map is None

    @property
    def head(self):
        """Number of writes published so far (read now, so it may move at once)."""
        self._check_open()
        return seqshm_head(self._geometry())

    @property
    def _mapping_damaged(self):
        """True once the file shrank under this object's mapping."""
        return self._map is not None and self._map.damaged

    @property
    def _state_word(self):
        """The header's state word now: STATE_OPEN, STATE_CLOSED or STATE_REPLACED (any other
        value, which no writer stores, is a FormatError)."""
        self._check_open()
        word = seqshm_state(self._geometry())
        if word > SEQSHM_STATE_REPLACED:
            raise FormatError(
                f"the region is damaged: its state word is {word}, which no seqshm writer "
                "stores; something other than its writer wrote into the file: have its "
                "writer create the channel again", self.path)
        return word

    cdef seqshm_geometry *_geometry(self):
        return NULL

    cdef int _check_open(self) except -1:
        if self._map is None:
            raise ClosedError("channel is closed", self.path)
        return 0

    cdef int _raise_truncated(self) except -1:
        raise FileTruncated(
            "the file shrank under this process's mapping (truncated by another process?); "
            "its data is gone: close this object and reopen the channel", self.path)

    @cython.final
    cdef inline bint _same_shape(self, cnp.ndarray a) noexcept:
        cdef cnp.npy_intp *d = cnp.PyArray_DIMS(a)
        cdef int i
        if cnp.PyArray_NDIM(a) != self._ndim:
            return False
        for i in range(self._ndim):
            if d[i] != self._dims[i]:
                return False
        return True

    @cython.final
    cdef inline bint _fits(self, cnp.ndarray a, int need) noexcept:
        """The common case inline: the channel's own descriptor object, shape, ``need`` flags."""
        return (<void *>cnp.PyArray_DESCR(a) == <void *>self._descr
                and (cnp.PyArray_FLAGS(a) & need) == need and self._same_shape(a))

    cdef int _check_out(self, cnp.ndarray out) except -1:
        """Say why ``out`` does not fit (equivalent dtypes of another object do fit)."""
        if (<void *>cnp.PyArray_DESCR(out) != <void *>self._descr
                and not PyArray_EquivTypes(<void *>cnp.PyArray_DESCR(out), <void *>self._descr)):
            why = records_mismatch((<object>out).dtype, self._descr, True)
            if why is not None:  # records: say which field differs (see records_mismatch())
                raise TypeError(f"{self.path}: out {why}; give an out of the channel's dtype "
                                "(.dtype), and copy fields by name from it")
            raise TypeError(f"{self.path}: out has dtype {(<object>out).dtype}, the channel holds {self._descr}")
        if not self._same_shape(out):
            raise ValueError(f"{self.path}: out has shape {(<object>out).shape}, the channel holds {self.shape}")
        if (cnp.PyArray_FLAGS(out) & OUT_FLAGS) != OUT_FLAGS:
            raise ValueError(f"{self.path}: out must be C-contiguous, aligned and writeable")
        return 0

    cdef cnp.ndarray _new_array(self, int lead=0):
        """A new array of the channel's dtype and shape (with a leading axis of ``lead``)."""
        cdef cnp.ndarray raw, arr
        cdef cnp.npy_intp dims[SEQSHM_MAX_DIMS + 1]
        cdef int nd = self._ndim, i
        cdef cnp.npy_intp *d = self._dims
        if lead:
            dims[0] = lead
            for i in range(self._ndim):
                dims[i + 1] = self._dims[i]
            d = dims
            nd += 1
        if self._raw_descr is None:
            Py_INCREF(self._descr)  # PyArray_NewFromDescr steals it
            return PyArray_NewFromDescr(<void *>np.ndarray, <void *>self._descr, nd, d, NULL,
                                        NULL, 0, NULL)
        # NumPy allocates a record array at a cost that grows with its fields (~35 ns each);
        # allocating opaque items of the same size and viewing them as records does not.
        Py_INCREF(self._raw_descr)
        raw = PyArray_NewFromDescr(<void *>np.ndarray, <void *>self._raw_descr, nd, d, NULL,
                                   NULL, 0, NULL)
        Py_INCREF(self._descr)
        arr = PyArray_NewFromDescr(<void *>np.ndarray, <void *>self._descr, nd, d, NULL,
                                   cnp.PyArray_DATA(raw),
                                   cnp.NPY_ARRAY_C_CONTIGUOUS | cnp.NPY_ARRAY_WRITEABLE, NULL)
        cnp.set_array_base(arr, raw)
        return arr


cdef class ReaderEngine(_Channel):
    """The reader's engine: a read-only mapping and the seqlock copy paths. Use
    :class:`seqshm.Reader`, which subclasses it."""

    cdef seqshm_reader r
    cdef seqshm_meta meta           # of the last consistent read, for ``seq``/``timestamp_ns``
    cdef uint64_t _timeout_ns
    cdef uint64_t _timeouts
    cdef bint _follow               # look at the state word on every snapshot (tail -F mode)
    cdef WaitersFile _waiters       # the sidecar of sleeping readers, or None: poll
    cdef bint _wake_fence           # the writer fences every write: no membarrier() here

    def _attach(self, str path not None, Header header not None, Mapping m not None):
        """Start reading the region mapped as ``m`` whose header is ``header`` (checked when
        it was made: only check_header() makes one): from a fresh open or, when following,
        from the channel that replaced ours."""
        if m.length < header.h.region_size:
            raise FormatError(f"mapped {m.length} bytes of a {header.h.region_size}-byte region",
                              path)
        self._setup(path, header, m)
        memset(&self.r, 0, sizeof(self.r))
        memset(&self.meta, 0, sizeof(self.meta))
        seqshm_geometry_init(&self.r.g, m.addr, &header.h)
        self._waiters = None  # the new channel's sidecar is attached by _set_waiters()

    def _detach(self):
        """Forget the mapping and close the file (``_fd``), in one C step (an interrupt lands
        before or after it): calls in other threads finish on the copy they hold; views keep
        their memory mapped until they are gone."""
        if self._waiters is not None and self._waiters.sleepers and self._map is not None:
            # Our own threads asleep in the futex: wake them to raise ClosedError now (the
            # channel's other sleepers wake too, find nothing new and sleep again; a wake
            # needs no write access to the mapping).
            seqshm_wake_all(<seqshm_header *>self._map.addr)
        self._map = None
        self._waiters = None
        memset(&self.r.g, 0, sizeof(self.r.g))
        self._file.close()

    cdef seqshm_geometry *_geometry(self):
        return &self.r.g

    @property
    def seq(self):
        """Write number of the last consistent read (0: nothing read yet)."""
        return self.meta.write_seq

    @property
    def timestamp_ns(self):
        """Writer's CLOCK_MONOTONIC time, in ns, of the last consistent read."""
        return self.meta.timestamp_ns

    @property
    def _counters(self):
        """(snapshots, retries, timeouts) of this reader."""
        return self.r.snapshots, self.r.retries, self._timeouts

    def _set_timeout_ns(self, uint64_t ns):
        self._timeout_ns = ns

    def _set_follow(self, bint follow):
        self._follow = follow

    def _set_waiters(self, WaitersFile waiters, bint fence):
        """Sleep through ``waiters``, the channel's sidecar (None: poll instead); ``fence``:
        the header's SEQSHM_WAKE_F_FENCE."""
        self._waiters = waiters
        self._wake_fence = fence

    @property
    def _has_waiters(self):
        return self._waiters is not None

    def _futex_sleep(self, uint64_t target, double seconds, SleeperSlot slot=None):
        """Sleep in the kernel, the GIL released, until head passes ``target``, the channel
        ends, a signal, ``slot.cancel()`` (from another thread) or ``seconds``. 0: look again
        (woken, called off, or no need to sleep); 2: the
        same, after sleeping the whole ``seconds``; 3: woken, and head is past ``target``
        now; 1: cannot sleep just now (the writer is
        resetting the count), poll once; -1: no usable sidecar (dropped: a forked child, a
        truncated sidecar, membarrier() refused), poll.

        A reader's calls asleep at once (threads) share its one read lock on the sidecar,
        taken by the first and dropped by the last: OFD locks belong to the open file, not to
        a thread.
        """
        cdef WaitersFile wf = self._waiters
        cdef Mapping keep = self._map  # holds the header mapping while the GIL is released
        cdef const seqshm_header *h
        cdef uint32_t *count
        cdef uint64_t ns
        cdef int fence = self._wake_fence
        cdef int rc
        cdef const uint32_t *cancel = NULL
        if wf is None or keep is None:
            return -1
        if slot is not None:
            if slot.cancelled:
                return 0  # called off before this thread got to it: not even counted
            cancel = slot.word()
        if wf.pid != getpid() or seqshm_guard_damaged(wf.guard):
            self._waiters = None
            return -1
        if wf.sleepers == 0:
            rc = seqshm_wake_lock(wf.fd, 1)
            if rc == -EAGAIN or rc == -EACCES:
                return 1
            if rc != 0:
                self._waiters = None
                return -1
        wf.sleepers += 1
        h = <const seqshm_header *>keep.addr
        count = &(<seqshm_waiters *>wf.addr).count
        ns = <uint64_t>(seconds * 1e9) if seconds > 0 else 0
        with nogil:
            rc = seqshm_wake_wait(h, count, fence, target, ns, cancel)
        wf.sleepers -= 1
        if wf.sleepers == 0:
            seqshm_wake_lock(wf.fd, 0)
        if rc == SEQSHM_WAKE_ENOBARRIER:
            if self._waiters is wf:
                self._waiters = None
            return -1
        PyErr_CheckSignals()  # Ctrl-C ends the futex sleep (EINTR): raise it now
        if rc == SEQSHM_ETIMEDOUT:
            return 2
        # Woken by a write (the common case): say so, and the wait returns without another
        # round of its Python loop (what that round's first look would find). Acquire:
        # pairs with the writer's store-release of head, as the wait's own look does.
        if self.r.g.base != NULL and seqshm_head(&self.r.g) > target:
            return 3
        return 0

    def _mark_read(self, uint64_t write_seq, uint64_t timestamp_ns):
        """Count ``write_seq`` as read (history() returned it): seq, timestamp_ns and wait()
        then start from it."""
        if write_seq > self.r.newest:
            self.r.newest = write_seq
        if write_seq >= self.meta.write_seq:
            self.meta.write_seq = write_seq
            self.meta.timestamp_ns = timestamp_ns

    def _timed_out(self, uint32_t slot, uint32_t seq, bint moved=False, uint64_t writes=0):
        """Raise the error for a read that found no consistent copy of ``slot`` (last seen
        ``seq``) within the timeout; ``moved``: the writer made progress meanwhile (head or
        the slot's seq changed), ``writes`` it completed. Overridden by Reader, which can say
        why."""
        raise TimeoutError(f"{self.path}: no consistent snapshot of slot {slot}")

    def _stalled(self, uint32_t slot, uint32_t seq):
        """Called about every 0.1 s while a read is blocked (last ``seq`` seen in ``slot``):
        Reader raises when the writer died mid-write, instead of waiting for the timeout."""

    def _replaced(self):
        """Called by a following reader's snapshot when the state word says REPLACED; Reader
        switches to the new channel here."""

    @cython.final
    cdef int _read_into(self, void *dst, seqshm_meta *m) except -1:
        """A consistent copy of the newest payload into ``dst``, its metadata into ``m``."""
        cdef seqshm_reader local
        cdef Mapping keep
        cdef uint64_t newest = self.r.newest
        cdef void *entry
        cdef int rc
        if self._follow and seqshm_state(&self.r.g) != SEQSHM_STATE_OPEN:
            self._replaced()
            self._check_open()
            newest = self.r.newest
        entry = <void *>self._map
        if not self._nogil:
            # The GIL is held: nothing else touches self.r during the attempt.
            rc = seqshm_read_once(&self.r, dst, m)
        else:
            # Other threads may use this reader while the GIL is released (close() it, or
            # move it to a replacement): work on a copy of its state, holding the mapping
            # that copy points into, and merge it back.
            keep = self._map
            local = self.r
            with nogil:
                rc = seqshm_read_once(&local, dst, m)
            self._merge(&local, rc == 0, rc != 0)
        if rc != 0:
            if rc == SEQSHM_EDAMAGED and <void *>self._map == entry:
                self._raise_damaged(m.slot, m.write_seq, newest)
            self._read_slow(-1, dst, m)
        if m.write_seq < newest and <void *>self._map == entry:  # not moved to a replacement
            self._raise_went_back(m.write_seq, newest)
        return 0

    cdef int _raise_damaged(self, uint32_t slot, uint64_t w, uint64_t newest) except -1:
        """Raise the error for a consistent copy of write ``w`` from ``slot`` that no writer
        following the protocol leaves there (SEQSHM_EDAMAGED, SEQSHM_FOLLOW_*), or for a head
        past SEQSHM_WRITE_LIMIT; ``newest``: the newest write this reader had returned. The
        slot that write came from holding an older one now is "went back" (FileTruncated:
        the file changed under the mapping); anything else is a damaged region."""
        cdef uint64_t head
        if self._map is not None and seqshm_guard_damaged(self._map.guard):
            self._raise_truncated()
        self._check_open()
        if w < newest and slot == (<uint32_t>newest & self.r.g.slot_mask):
            self._raise_went_back(w, newest)
        head = seqshm_head(&self.r.g)
        if head >= SEQSHM_WRITE_LIMIT:
            what = f"head is {head}, past the 2**63 - 1 writes a channel can have"
        else:
            what = (f"slot {slot} of {self.hdr.nr_slots} holds write {w}, which no seqshm "
                    f"writer leaves there (head says {head})")
        raise FormatError(
            f"the region is damaged: {what}; something other than its writer wrote into the "
            "file (or another channel was copied over it): have its writer create the "
            "channel again", self.path)

    cdef int _raise_went_back(self, uint64_t got, uint64_t newest) except -1:
        # A consistent copy older than one already returned is impossible while the file is
        # what was mapped: it was truncated and grown again, or rewritten, under the mapping.
        raise FileTruncated(
            f"its writes went back from {newest} to {got}: the file was truncated or "
            "rewritten under this process's mapping; close this object and reopen the "
            "channel", self.path)

    @cython.final
    cdef void _merge(self, seqshm_reader *local, uint64_t snapshots, uint64_t retries) noexcept:
        if self.r.g.base != local.g.base:
            return  # closed or switched to another channel meanwhile
        self.r.snapshots += snapshots
        self.r.retries += retries
        if local.newest > self.r.newest:
            self.r.newest = local.newest
        self.r.last_seq = local.last_seq
        self.r.last_slot = local.last_slot

    cdef int _read_slow(self, int64_t fixed, void *dst, seqshm_meta *m,
                        uint32_t *slot=NULL, uint32_t *seq=NULL,
                        uint64_t deadline=0) except -1:
        """Keep trying, with the GIL released, in slices of WAIT_SLICE_NS; between slices look
        at signals, close(), a truncated file, a replacement (when following) and the timeout
        (CLOCK_MONOTONIC ``deadline`` in ns; 0: the reader's timeout from now). With ``dst``
        NULL, only wait until the newest slot is not mid-write (for begin()): its slot and
        seq then go to ``slot`` and ``seq``. A copy no writer leaves (SEQSHM_EDAMAGED) raises
        FormatError."""
        cdef Mapping keep
        cdef seqshm_reader local
        cdef seqshm_backoff b
        cdef uint64_t until, snaps, retries, look, head0
        cdef uint32_t slot0, seq0
        cdef bint moved = False
        cdef int rc
        memset(&b, 0, sizeof(b))
        if deadline == 0:
            deadline = seqshm_deadline(seqshm_monotonic_ns(), self._timeout_ns)
        look = seqshm_deadline(seqshm_monotonic_ns(), STALL_LOOK_NS)
        # The evidence for why no copy came, should none come: a writer that completes writes
        # meanwhile (head or the slot's seq moves) overwrites the slot during every copy; one
        # whose slot keeps the same odd seq throughout is stuck in that write (stopped, or
        # dead). Judged from what this read saw, not from the last seq alone: a busy writer of
        # a large slot is mid-write at almost every look.
        self._check_open()
        head0 = seqshm_head(&self.r.g)
        slot0 = (<uint32_t>fixed if fixed >= 0 else slot[0] if dst == NULL
                 else seqshm_reader_slot(&self.r)) & self.r.g.slot_mask
        seq0 = seqshm_read_begin(&self.r.g, slot0)
        while True:
            keep = self._map  # holds the mapping while the GIL is released
            if keep is None:
                self._check_open()
            if seqshm_guard_damaged(keep.guard):
                self._raise_truncated()
            local = self.r
            snaps = local.snapshots
            retries = local.retries
            until = seqshm_deadline(seqshm_monotonic_ns(), WAIT_SLICE_NS)
            if until > deadline:
                until = deadline
            with nogil:
                if dst != NULL:
                    rc = seqshm_read_until(&local, fixed, dst, m, until, &b)
                else:
                    rc = seqshm_wait_even_until(&local, slot, seq, 1, until, &b)
            self._merge(&local, local.snapshots - snaps, local.retries - retries)
            if rc == SEQSHM_OK and self.r.g.base == local.g.base:
                return 0
            if rc == SEQSHM_EDAMAGED and self.r.g.base == local.g.base:
                self._raise_damaged(m.slot, m.write_seq, local.newest)
            if rc == SEQSHM_OK or rc == SEQSHM_EDAMAGED:
                continue  # closed or switched while we copied: look again
            if local.last_slot != slot0 or local.last_seq != seq0:
                moved = True
            PyErr_CheckSignals()
            if fixed < 0 and self._follow and self.r.g.base != NULL and \
                    seqshm_state(&self.r.g) != SEQSHM_STATE_OPEN:
                self._replaced()  # a writer that died mid-write was replaced: move on
            if seqshm_monotonic_ns() >= look:
                # A writer that died mid-write never finishes: say so now rather than at the
                # timeout (which may be no limit at all).
                look = seqshm_deadline(seqshm_monotonic_ns(), STALL_LOOK_NS)
                self._check_open()
                try:
                    self._stalled(local.last_slot, local.last_seq)
                except TimeoutError:
                    self._timeouts += 1  # it gave up early: a timeout all the same
                    raise
            if seqshm_monotonic_ns() >= deadline:
                self._timeouts += 1
                if seqshm_guard_damaged(keep.guard):
                    self._raise_truncated()
                self._check_open()
                self._timed_out(local.last_slot, local.last_seq,
                                moved or seqshm_head(&self.r.g) != head0,
                                seqshm_head(&self.r.g) - head0)
                raise AssertionError("_timed_out() must raise")

    def snapshot(self, cnp.ndarray out=None):
        """A consistent copy of the newest payload: a new array, or ``out`` filled in place.

        Shape and dtype are the channel's (``shape``, ``dtype``); ``out`` must have them and be
        C-contiguous, aligned and writeable. The copy's write number and time are then in
        ``seq`` and ``timestamp_ns``. Raises ReadTimeout when no consistent copy comes within
        ``timeout``, FileTruncated if the file shrank, ClosedError after ``close()``.
        """
        cdef seqshm_meta m
        out = self._out_array(out)
        self._read_into(cnp.PyArray_DATA(out), &m)
        self.meta = m
        return out

    def read(self, cnp.ndarray out=None):
        """Snapshot(data, seq, timestamp_ns): a consistent copy with its provenance, all three
        from the same copy (even with other threads reading through this reader)."""
        cdef seqshm_meta m
        out = self._out_array(out)
        self._read_into(cnp.PyArray_DATA(out), &m)
        self.meta = m
        # tuple.__new__ skips the NamedTuple's Python-level __new__ (~100 ns of a ~200 ns call)
        return tuple.__new__(_Snapshot, (out, m.write_seq, m.timestamp_ns))

    @cython.final
    cdef inline cnp.ndarray _out_array(self, cnp.ndarray out):
        """What a copy goes into: ``out`` once checked, or a new array; ClosedError if closed."""
        if self.r.g.base == NULL:
            self._check_open()
        if out is None:
            return self._new_array()
        if not self._fits(out, OUT_FLAGS):
            self._check_out(out)
        return out

    cdef cnp.ndarray _slot_array(self, uint32_t slot, object base=None):
        """A new read-only array over ``slot`` (new each time: a caller that changes its shape
        or dtype changes nobody else's), keeping ``base`` or the mapping alive."""
        return _array_at(self._map if base is None else base, self._descr, self._ndim,
                         self._dims, seqshm_slot_payload(&self.r.g, slot), False)

    def view(self, token=None):
        """A read-only zero-copy array over the newest slot, or the slot a ``begin()`` token
        names; the channel's shape and dtype.

        What is read through it may be torn: check with ``validate(token)`` afterwards, or use
        ``apply()``. The view keeps the mapping alive after ``close()``.
        """
        cdef uint32_t slot
        self._check_open()
        if token is None:
            slot = seqshm_reader_slot(&self.r)
        else:
            slot = <uint32_t>(<uint64_t>token >> 32) & self.r.g.slot_mask
        return self._slot_array(slot)

    def _leased_view(self, uint64_t token):
        """(view, lease) for apply(): a new read-only array over the slot ``token`` names whose
        base is a new lease holding the mapping. Nobody else holds either, so their reference
        counts tell whether the function kept a part of the view, or its base (the lease
        exports no memory of its own)."""
        self._check_open()
        lease = _Lease()
        lease.mapping = self._map
        return self._slot_array(<uint32_t>(token >> 32) & self.r.g.slot_mask, lease), lease

    def begin(self):
        """Start reading through a view: waits (up to ``timeout``) until the newest slot is not
        mid-write and returns a token (int) for ``view(token)`` and ``validate(token)``."""
        cdef uint32_t slot, seq
        self._check_open()
        slot = seqshm_reader_slot(&self.r)
        seq = seqshm_read_begin(&self.r.g, slot)
        if seq & 1:
            self._read_slow(-1, NULL, NULL, &slot, &seq)
        return (<uint64_t>slot << 32) | seq

    def validate(self, uint64_t token):
        """True if nothing read through the view since ``begin()`` can be torn.

        On True, ``seq`` and ``timestamp_ns`` describe what was read. Raises FileTruncated if
        the file shrank meanwhile.
        """
        cdef seqshm_meta m
        cdef uint32_t slot = <uint32_t>(token >> 32) & self.r.g.slot_mask
        cdef uint32_t seq = <uint32_t>token
        self._check_open()
        seqshm_read_meta(&self.r.g, slot, &m)
        if (seq & 1) or seqshm_read_retry(&self.r.g, slot, seq):
            self.r.retries += 1
            if seqshm_guard_damaged(self._map.guard):
                self._raise_truncated()
            return False
        if not seqshm_write_fits_slot(&self.r.g, slot, m.write_seq):
            self._raise_damaged(slot, m.write_seq, 0)
        self.meta = m
        seqshm_reader_done(&self.r, &m)
        return True

    def slot_seqs(self):
        """Each slot's sequence count now, slot 0 first (odd: that slot is mid-write), read
        through the guarded mapping without the seqlock: for showing a channel (``seqshm
        info``), not for reading data. Raises FileTruncated if the file shrank under the
        mapping (the guard's stand-in pages would show every slot odd), ClosedError once
        closed."""
        cdef uint32_t i
        self._check_open()
        seqs = [seqshm_read_begin(&self.r.g, i) for i in range(self.hdr.nr_slots)]
        if seqshm_guard_damaged(self._map.guard):
            self._raise_truncated()
        return seqs

    def _follow_next(self, unsigned long long nxt, uint64_t lapped=0):
        """One step of a follower that wants write ``nxt``: (got, nxt, lost, lapped). ``got``
        is None if write ``nxt`` (as moved on) is not complete yet, else (data, write_seq,
        timestamp_ns) with write_seq == the returned ``nxt``; ``lost`` writes were skipped
        on the way (the ring no longer held them, or a writer was overwriting one). The steps
        are the shared protocol's seqshm_follow_once(); none waits for a writer (a slot it is
        in holds nothing this follower still wants), and each one that finds no write to
        take moves ``nxt`` on.

        ``lapped``: 0, or the CLOCK_MONOTONIC ns by which this follower must take a write
        while every write it wants is lapped (kept by the caller across calls, returned
        updated, 0 after a sample): a writer that overwrites every write during its copy, or
        a region whose head moves on with its slots mid-write, raises ReadTimeout once the
        reader's timeout has passed since the first write lost that way, as snapshot() does.
        A copy no writer leaves raises FormatError (FileTruncated if it went back)."""
        cdef seqshm_meta m
        cdef cnp.ndarray out
        cdef unsigned long long lost = 0
        cdef uint64_t now
        cdef uint32_t slot
        cdef int rc
        self._check_open()
        out = self._new_array()
        memset(&m, 0, sizeof(m))
        while True:
            rc = self._follow_once(&nxt, &lost, cnp.PyArray_DATA(out), &m)
            if rc == _MOVED:
                # moved to a replacement while copying: the caller starts over on it
                return None, nxt, lost, 0
            if rc == SEQSHM_FOLLOW_WAIT:
                return None, nxt, lost, lapped
            if rc == SEQSHM_FOLLOW_GOT:
                self.r.snapshots += 1
                return (out, m.write_seq, m.timestamp_ns), nxt, lost, 0
            if rc == SEQSHM_FOLLOW_BEHIND or rc == SEQSHM_FOLLOW_DAMAGED:
                # older than head says (went back, if older than what this reader returned),
                # of another slot, or a head past 2**63
                self._raise_damaged(m.slot, m.write_seq, self.r.newest)
            # SEQSHM_FOLLOW_LAPPED: nxt moved on, so with head still this ends within
            # nr_slots + 1 steps; a head that keeps moving with nothing to take ends at the
            # timeout, and signals are looked at on the way
            self.r.retries += 1
            now = seqshm_monotonic_ns()
            if lapped == 0:
                lapped = seqshm_deadline(now, self._timeout_ns)
            elif now >= lapped:
                self._timeouts += 1
                slot = <uint32_t>(nxt - 1) & self.r.g.slot_mask  # the slot it lost a write in
                self._timed_out(slot, seqshm_read_begin(&self.r.g, slot))
            PyErr_CheckSignals()

    @cython.final
    cdef int _try_slot(self, uint32_t slot, void *dst, seqshm_meta *m) except -3:
        """seqshm_try_read_slot() of ``slot`` into ``dst``. A large copy runs with the GIL
        released (other threads run meanwhile, as during snapshot()), on a copy of the
        geometry, holding the mapping it points into; _MOVED if this reader moved to a
        replacement channel meanwhile, ClosedError if it was closed."""
        cdef seqshm_geometry g
        cdef Mapping keep
        cdef int rc
        if not self._nogil:
            return seqshm_try_read_slot(&self.r.g, slot, dst, m)
        keep = self._map
        g = self.r.g
        with nogil:
            rc = seqshm_try_read_slot(&g, slot, dst, m)
        if self.r.g.base != g.base:
            self._check_open()
            return _MOVED
        return rc

    @cython.final
    cdef int _follow_once(self, unsigned long long *nxt, unsigned long long *lost, void *dst,
                          seqshm_meta *m) except -3:
        """seqshm_follow_once(), a large copy with the GIL released as in _try_slot()."""
        cdef seqshm_geometry g
        cdef Mapping keep
        cdef int rc
        if not self._nogil:
            return seqshm_follow_once(&self.r.g, nxt, lost, dst, m)
        keep = self._map
        g = self.r.g
        with nogil:
            rc = seqshm_follow_once(&g, nxt, lost, dst, m)
        if self.r.g.base != g.base:
            self._check_open()
            return _MOVED
        return rc

    def _read_slots(self):
        """(data, seq, timestamp_ns, error): a consistent copy of every slot, as arrays with a
        leading axis of nr_slots, oldest write first as the ring stood when the copy began (a
        writer that laps the reader meanwhile can leave them out of order); a slot with no
        consistent copy within the timeout has seq 0,
        and ``error`` is the ReadTimeout of the last such slot (None if there was none).
        The whole ring shares one timeout: once it has passed (or the writer is found dead in
        a slot), each slot left gets one attempt. A slot holding a write no writer leaves there
        (another slot's, or one head never published) raises FormatError."""
        cdef seqshm_meta m
        cdef uint32_t i, p, start, n = self.hdr.nr_slots
        cdef cnp.ndarray data
        cdef char *base
        cdef size_t stride = self.hdr.payload_size
        cdef uint64_t deadline, head
        cdef bint hopeless = False
        cdef int rc
        self._check_open()
        data = self._new_array(n)
        base = <char *>cnp.PyArray_DATA(data)
        seqs = np.zeros(n, np.uint64)
        stamps = np.zeros(n, np.uint64)
        error = None
        deadline = seqshm_deadline(seqshm_monotonic_ns(), self._timeout_ns)
        # Oldest first: write k is in slot k & mask, so from the slot after head's on, the
        # copies come out in write order (unless the writer laps us meanwhile) and history()
        # need not copy the whole ring a second time to sort it.
        start = <uint32_t>(seqshm_head(&self.r.g) + 1) & self.r.g.slot_mask
        for p in range(n):
            i = (start + p) & self.r.g.slot_mask
            if self.r.g.base == NULL:
                self._check_open()  # closed by another thread while a slot timed out
            rc = self._try_slot(i, base + p * stride, &m)
            if rc == _MOVED:  # to a replacement channel, while a slot was copied: start again
                return self._read_slots()
            if rc == 0:
                if m.write_seq and not seqshm_write_fits_slot(&self.r.g, i, m.write_seq):
                    self._raise_damaged(i, m.write_seq, 0)
                self.r.snapshots += 1
            elif hopeless:
                PyErr_CheckSignals()
                continue  # the error of the slot that timed out stands for this one too
            else:
                try:
                    self._read_slow(i, base + p * stride, &m, NULL, NULL, deadline)
                except TimeoutError as e:
                    # No consistent copy of this slot within the timeout (a writer that died
                    # in it, or laps it during every copy): the ring lost it.
                    error = e
                    hopeless = True
                    continue
            seqs[p] = m.write_seq
            stamps[p] = m.timestamp_ns
            # a ring of large slots takes long to copy whole: Ctrl-C and other signals'
            # handlers run between slots, not after the last (a no-op when none is pending)
            PyErr_CheckSignals()
        # A writer begins write k + 1 only after it published head = k, and head only grows:
        # a copy of a write past head (loaded after every copy) + 1 was never published.
        head = seqshm_head(&self.r.g)
        p = <uint32_t>np.argmax(seqs)
        if int(seqs[p]) > int(head) + 1:
            self._raise_damaged((start + p) & self.r.g.slot_mask, int(seqs[p]), 0)
        return data, seqs, stamps, error

    def __repr__(self):
        state = "closed" if self._map is None else f"{self.hdr.nr_slots} slot(s)"
        return (f"<seqshm.Reader {self.path!r} name={self.name!r} dtype={self._descr} "
                f"shape={self.shape} {state}>")


cdef class WriterEngine(_Channel):
    """The writer's engine: a read-write mapping and the seqlock write path. Use
    :class:`seqshm.Writer` (made by :func:`seqshm.create`), which subclasses it."""

    cdef seqshm_writer w
    cdef PyThread_type_lock _lock   # serializes writes that run with the GIL released
    cdef bint _foreign              # set in a forked child: this process is not the writer
    cdef object _foreign_why
    cdef WaitersFile _waiters       # the sidecar of sleeping readers, or None
    cdef object _exact_fields       # (integer fields, their dtype as objects), False if
                                    # there are none, None before the first look
    cdef object _equiv_seen         # a dtype object seen equivalent to the channel's,
    cdef object _equiv_names        # and its names then

    def __cinit__(self, *args, **kwargs):
        self._lock = PyThread_allocate_lock()
        if self._lock == NULL:
            raise MemoryError()

    def __dealloc__(self):
        if self._lock != NULL:
            PyThread_free_lock(self._lock)

    def _attach(self, int fd, str path not None, Header header not None):
        """Map ``fd``: a region file of ``header.region_size`` bytes that holds ``header``
        (built by build_header(), so checked; written by the caller, not read back here) but
        for its magic, locked by the caller. Publishes the magic."""
        cdef Header published = _new_header(&header.h)
        cdef seqshm_header *h = &published.h
        h.magic = SEQSHM_MAGIC  # what readers see once it is published below
        m = _map_fd(fd, h.region_size, True, path, h.nr_slots)
        self._setup(path, published, m)
        seqshm_geometry_init(&self.w.g, m.addr, h)
        seqshm_waker_init(&self.w.wake, <seqshm_header *>m.addr,
                          h.wake_flags & SEQSHM_WAKE_F_FENCE)
        self.w.head = (<seqshm_header *>m.addr).head
        seqshm_header_publish(<seqshm_header *>m.addr)

    def _set_waiters(self, WaitersFile waiters):
        """Wake the readers that count themselves in ``waiters`` (the sidecar the header
        names) after each write; None: nobody."""
        self._enter()
        try:
            self._waiters = waiters
            seqshm_waker_attach(&self.w.wake,
                                NULL if waiters is None else <seqshm_waiters *>waiters.addr,
                                -1 if waiters is None else waiters.fd)
        finally:
            self._leave()

    cdef seqshm_geometry *_geometry(self):
        return &self.w.g

    @property
    def seq(self):
        """Write number of the last published write (0 before the first)."""
        return self.w.head

    @property
    def head(self):
        """Number of writes published so far."""
        self._check_open()
        if self._foreign:
            self._raise_foreign()
        return self.w.head

    cdef int _enter(self) except -1:
        """Become the one thread writing: the GIL serializes small writes; writes that release
        it also take the writer's lock. Checks the writer is usable."""
        if self._map is None:
            self._check_open()
        if self._foreign:
            self._raise_foreign()
        if self._nogil and not PyThread_acquire_lock(self._lock, NOWAIT_LOCK):
            with nogil:
                PyThread_acquire_lock(self._lock, WAIT_LOCK)
            if self._map is None:  # closed while we waited
                PyThread_release_lock(self._lock)
                self._check_open()
        return 0

    cdef inline void _leave(self) noexcept:
        if self._nogil:
            PyThread_release_lock(self._lock)

    def _raise_foreign(self):
        raise self._foreign_why

    def _forget_in_child(self, exc):
        """In a forked child: refuse every later call with ``exc`` (one writer per channel).
        The child has no copy of the writer's mapping (MADV_DONTFORK): forget it unmapped."""
        self._foreign = True
        self._foreign_why = exc
        if self._map is not None:
            self._map._forget()
        memset(&self.w.g, 0, sizeof(self.w.g))

    cdef int _publish(self, const void *src, uint64_t ts) except -1:
        """One write of payload_size bytes from ``src``; the caller has _enter()ed."""
        cdef void *dst
        cdef size_t n = self.w.g.payload_size
        if self._nogil:
            with nogil:
                dst = seqshm_write_begin(&self.w)
                memmove(dst, src, n)
                seqshm_write_end(&self.w, ts)
        else:
            dst = seqshm_write_begin(&self.w)
            memmove(dst, src, n)
            seqshm_write_end(&self.w, ts)
        if seqshm_guard_damaged(self._map.guard):
            self._raise_truncated()
        return 0

    cdef cnp.ndarray _as_payload(self, data):
        if type(data) is np.ndarray and self._fits(<cnp.ndarray>data, cnp.NPY_ARRAY_C_CONTIGUOUS):
            return <cnp.ndarray>data
        cdef object have = None   # data's dtype, if it has one (an array, a NumPy scalar)
        if cnp.PyArray_Check(data):
            have = <object>cnp.PyArray_DESCR(<cnp.ndarray>data)
        elif isinstance(data, np.generic):
            have = data.dtype
        if have is not None and self._records_differ(have):
            # records convert by name or not at all (records_mismatch()); np.asarray would
            # store them by position
            why = records_mismatch(have, self._descr)
            if why is not None:
                raise TypeError(
                    f"{self.path}: data {why}; write records of the channel's dtype (.dtype), "
                    "or the channel's fields picked by name: data[list(w.dtype.names)]")
        kind = self._descr.kind
        if (kind in "f" and isinstance(data, np.ndarray) and data.dtype.kind == "c"
                and data.shape == self.shape):
            self._check_exact(data, data.real)  # before the cast, which only warns
        try:
            if kind in "iu":  # NaN or inf into an integer: refused below, not only warned of
                with np.errstate(invalid="ignore"):
                    src = np.asarray(data, dtype=self._descr, order="C")
            else:
                src = np.asarray(data, dtype=self._descr, order="C")  # keeps 0-d
        except (TypeError, ValueError, OverflowError) as e:
            raise type(e)(f"{self.path}: data is not convertible to the channel's dtype "
                          f"{self._descr}: {e}") from None
        if not self._same_shape(src):
            raise ValueError(
                f"{self.path}: data has shape {(<object>src).shape}, the channel holds {self.shape}")
        if kind in "iu":
            self._check_exact(data, src)
        elif have is None and self._raw_descr is not None and self._exact_fields is not False:
            self._check_exact_fields(data, src)
        return src

    cdef inline bint _records_differ(self, cnp.dtype have):
        """Whether records_mismatch() must look at data of dtype ``have``: either side is a
        record type and ``have`` is not equivalent to the channel's. C checks, and the last
        equivalent dtype object is remembered (NumPy's equivalence test of two record types
        costs ~200 ns): the slow path of data of an equal dtype, or of values, pays next to
        nothing more."""
        if not (cnp.PyDataType_HASFIELDS(have) or self._raw_descr is not None):
            return False
        # the same object with the same names tuple (a record type's names can be set anew)
        if have is self._equiv_seen and have.names is self._equiv_names:
            return False
        if PyArray_EquivTypes(<void *>have, <void *>self._descr):
            self._equiv_seen, self._equiv_names = have, have.names
            return False
        return True

    def _check_exact_fields(self, data, converted):
        """_check_exact() for records given as Python values (tuples, by position: they have
        no names): refuse an integer field whose value the cast changed (1.5 stored as 1;
        out of range and NaN already raise). The slow path only."""
        if self._exact_fields is None:
            d = self._descr
            names = [n for n in d.names if d.fields[n][0].base.kind in "iu"]
            # the same values, each field kept as the Python objects given
            self._exact_fields = (names and (
                names, np.dtype([(n, object, d.fields[n][0].shape) for n in d.names]))) or False
        if self._exact_fields is False:
            return
        names, wide = self._exact_fields
        try:
            orig = np.asarray(data, dtype=wide)
        except (TypeError, ValueError):
            return
        for n in names:
            self._refuse_changed(orig[n], converted[n],
                                 f"field {n!r} of the channel's dtype {self._descr}")

    def _check_exact(self, data, converted):
        """Refuse a write whose values the cast to the channel's dtype changed: np.asarray
        wraps an array's values out of an integer's range (300 -> 44), makes some integer of
        NaN, truncates fractions and drops imaginary parts, all without an error, where
        Python ints out of range raise. The slow path only (data of another dtype)."""
        try:
            orig = data if isinstance(data, np.ndarray) else np.asarray(data)
        except (TypeError, ValueError, OverflowError):
            return
        if orig.dtype == converted.dtype or orig.dtype.kind not in "biufc":
            return
        self._refuse_changed(orig, converted, f"the channel's dtype {self._descr}")

    def _refuse_changed(self, orig, converted, what):
        """Raise the ValueError of a write whose values (``orig``, an array of numbers or of
        Python objects) the cast to ``what`` changed (``converted``), if any did."""
        with np.errstate(all="ignore"):
            changed = np.asarray(orig != converted, dtype=bool)
        if changed.any():
            i = np.flatnonzero(changed)[0]
            raise ValueError(
                f"{self.path}: data holds values {what} cannot hold: "
                f"{np.asarray(orig.flat[i]).item()!r} would be stored as "
                f"{converted.flat[i].item()!r}; convert them first (np.clip, np.round, "
                ".astype) if that is what you want")

    def write(self, data, timestamp_ns=None):
        """Publish ``data`` (the channel's shape; converted like ``np.asarray``) as one write.

        Returns its write number. ``timestamp_ns`` (int, ns) defaults to CLOCK_MONOTONIC now.
        Safe from several threads: writes are serialized. Raises ClosedError after close(),
        WriterBusy in a forked child, FileTruncated if the file shrank under the writer,
        ValueError for values an integer channel cannot hold exactly (out of range, NaN,
        fractions) or complex ones with an imaginary part on a real channel (np.asarray
        would wrap, truncate or drop them without an error).
        """
        cdef cnp.ndarray src = self._as_payload(data)
        cdef uint64_t ts = (seqshm_monotonic_ns() if timestamp_ns is None
                            else timestamp_arg(timestamp_ns, self.path))
        self._enter()
        try:
            self._publish(cnp.PyArray_DATA(src), ts)
            return self.w.head
        finally:
            self._leave()

    def _copy_newest(self):
        """A private array holding the last published payload (for an in-place write)."""
        cdef cnp.ndarray out = self._new_array()
        cdef void *dst
        cdef const void *src
        self._enter()
        try:
            dst = cnp.PyArray_DATA(out)
            src = seqshm_slot_payload(&self.w.g, <uint32_t>self.w.head & self.w.g.slot_mask)
            if self._nogil:  # as write(): _enter() took the writer's lock, close() waits on it
                with nogil:
                    memcpy(dst, src, self.w.g.payload_size)
            else:
                memcpy(dst, src, self.w.g.payload_size)
            # a page the file lost reads as zeros once the guard repaired it: not the last
            # payload, whatever the caller would make of it
            if seqshm_guard_damaged(self._map.guard):
                self._raise_truncated()
        finally:
            self._leave()
        return out

    def _close_engine(self, uint32_t state):
        """Store ``state`` (STATE_CLOSED) once no write is in flight, drop the mapping, and
        close the file (``_fd``), which ends the writer's hold on the channel. One C step as
        seen from Python: an interrupt (Ctrl-C) lands before it (the writer is still usable)
        or after it (closed, nothing left open), never in between."""
        if self._map is None or self._foreign:
            self._map = None
            self._close_fd()
            return
        self._enter()
        try:
            if self._map is not None:
                seqshm_write_close(<seqshm_header *>self.w.g.base, state)
                seqshm_wake_all(<seqshm_header *>self.w.g.base)  # after the state: see wake.h
                seqshm_waker_attach(&self.w.wake, NULL, -1)
                self._waiters = None
                self._map = None
                memset(&self.w.g, 0, sizeof(self.w.g))
        finally:
            self._leave()
        self._close_fd()

    def __repr__(self):
        state = "closed" if self._map is None else f"{self.w.head} writes"
        return (f"<seqshm.Writer {self.path!r} name={self.name!r} dtype={self._descr} "
                f"shape={self.shape} {state}>")


# Test and benchmark hooks: module functions, kept out of the shipped classes; the tests and
# benchmarks reach them through seqshm/_hooks.py.

def _bench_noop(obj):
    """Benchmark baseline: the cost of calling into the extension."""
    return None


def _bench_copy_unlocked(ReaderEngine r not None, cnp.ndarray out=None):
    """Benchmark baseline: snapshot()'s work copying the same bytes with no seqlock. The
    result may be torn; only benchmarks and the torn-read tests use it."""
    cdef void *dst
    cdef const void *src
    cdef size_t n
    out = r._out_array(out)
    dst = cnp.PyArray_DATA(out)
    src = seqshm_slot_payload(&r.r.g, seqshm_reader_slot(&r.r))
    n = r.r.g.payload_size
    if r._nogil:
        with nogil:
            memcpy(dst, src, n)
    else:
        memcpy(dst, src, n)
    return out


cdef void _pattern_writes(seqshm_writer *w, uint64_t count, uint64_t words) noexcept nogil:
    cdef uint64_t i, j, k
    cdef uint64_t *dst
    for i in range(count):
        k = w.head + 1
        dst = <uint64_t *>seqshm_write_begin(w)
        for j in range(words):
            dst[j] = k
        seqshm_write_end(w, seqshm_monotonic_ns())


def _bench_write_pattern(WriterEngine w not None, uint64_t count):
    """Test and benchmark source: ``count`` writes as fast as C goes, each filling every 64-bit
    word of the payload with its own write number. Returns the last write number."""
    cdef uint64_t words
    w._check_open()
    words = w.w.g.payload_size // 8
    if words == 0:
        raise ValueError(f"{w.path}: the payload is smaller than one 64-bit word")
    w._enter()
    try:
        if w._nogil:  # as write(): the GIL is released only where the writer's lock is held
            with nogil:
                _pattern_writes(&w.w, count, words)
        else:
            _pattern_writes(&w.w, count, words)
        if seqshm_guard_damaged(w._map.guard):
            w._raise_truncated()
    finally:
        w._leave()
    return w.w.head


def _bench_wake_stats(WriterEngine w not None):
    """Test hook: (FUTEX_WAKE calls after writes, stale counts reset) of this writer."""
    return w.w.wake.wakes, w.w.wake.resets


def _bench_wake_enable(WriterEngine w not None, bint on):
    """Benchmark hook: stop (or resume) looking at the sidecar's count after each write, as a
    writer with no sidecar does (the baseline of the writer's cost per write)."""
    w._enter()
    try:
        wf = w._waiters
        if on and wf is not None:
            seqshm_waker_attach(&w.w.wake, <seqshm_waiters *>(<WaitersFile>wf).addr,
                                (<WaitersFile>wf).fd)
        else:
            seqshm_waker_attach(&w.w.wake, NULL, -1)
    finally:
        w._leave()


def _bench_stall_mid_write(WriterEngine w not None, uint64_t words):
    """Test hook: begin the next write, fill its first ``words`` 64-bit words with its write
    number, and return without ending it: the slot stays odd, as when a writer process is
    killed or stopped inside write(). The Writer is unusable afterwards."""
    cdef uint64_t *dst
    cdef uint64_t j, k
    w._enter()
    try:
        k = w.w.head + 1
        dst = <uint64_t *>seqshm_write_begin(&w.w)
        for j in range(min(words, w.w.g.payload_size // 8)):
            dst[j] = k
    finally:
        w._leave()
    w._foreign = True  # the slot stays odd: every later call refuses
    w._foreign_why = RuntimeError(f"{w.path}: stalled in the middle of a write on purpose")


@cython.final
cdef class _CachedReader:
    cdef ReaderEngine reader
    cdef uint64_t fresh_until       # CLOCK_MONOTONIC ns: look at the path again after this
    cdef object timeout             # the timeout argument it was opened with


@cython.final
cdef class ReaderCache:
    """The engine of ``seqshm.snapshot(path)``: readers kept open by path, so a repeated
    one-shot costs a dict lookup, a clock read and a load of the state word more than a kept
    reader's ``snapshot()``. An entry is trusted for ``max_age_s``; after that, or when its
    state word says the channel ended, ``miss(path, timeout)`` (Python: seqshm/_api.py) looks
    at the path again, replaces the entry and takes the snapshot."""

    cdef dict _entries
    cdef object _miss
    cdef uint64_t _max_age_ns
    cdef readonly size_t capacity

    def __cinit__(self, miss, double max_age_s, size_t capacity):
        self._entries = {}
        self._miss = miss
        self._max_age_ns = <uint64_t>(max_age_s * 1e9)
        self.capacity = capacity

    def snapshot(self, path, *, timeout=1.0):
        """One consistent copy of the channel at ``path`` (see seqshm.snapshot)."""
        cdef _CachedReader e = self._entries.get(path)
        cdef ReaderEngine r
        cdef seqshm_meta m
        cdef cnp.ndarray out
        if (e is not None and seqshm_monotonic_ns() < e.fresh_until
                and (timeout is e.timeout
                     # of one type: an equal value of a type open() refuses is not the same
                     # argument (Decimal('0.01') == Fraction(1, 100))
                     or (type(timeout) is type(e.timeout) and timeout == e.timeout))):
            r = e.reader
            # a mapping the file shrank under is done with: the miss opens the file anew
            if (r.r.g.base != NULL and seqshm_state(&r.r.g) == SEQSHM_STATE_OPEN
                    and not seqshm_guard_damaged(r._map.guard)):
                out = r._out_array(None)
                r._read_into(cnp.PyArray_DATA(out), &m)
                r.meta = m
                return out
        return self._miss(path, timeout)

    def get(self, path):
        """The cached reader of ``path`` and whether it is still fresh, or (None, False)."""
        cdef _CachedReader e = self._entries.get(path)
        if e is None:
            return None, False
        return e.reader, seqshm_monotonic_ns() < e.fresh_until

    def put(self, path, ReaderEngine reader not None, timeout):
        """Keep ``reader`` for ``path``, fresh for max_age_s. Beyond ``capacity`` entries the
        least recently put one is dropped (its reader closes once no thread holds it: closing
        it here could fail a call in progress in another thread)."""
        cdef _CachedReader e = _CachedReader()
        e.reader = reader
        e.timeout = timeout
        e.fresh_until = seqshm_deadline(seqshm_monotonic_ns(), self._max_age_ns)
        self._entries.pop(path, None)
        self._entries[path] = e
        while len(self._entries) > self.capacity:
            del self._entries[next(iter(self._entries))]

    def clear(self):
        """Forget every reader (they close when no one else holds them)."""
        self._entries.clear()

    def __len__(self):
        return len(self._entries)
