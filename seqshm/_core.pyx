# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# cython: embedsignature=True, initializedcheck=False
"""Cython layer of seqshm: shared mappings, the reader's hot path and the writer, over the C core."""

cimport cython
cimport numpy as cnp
from cpython.buffer cimport PyBUF_WRITABLE, PyBuffer_FillInfo
from cpython.ref cimport Py_INCREF
from cpython.exc cimport PyErr_CheckSignals
from libc.errno cimport EINTR, errno
from libc.stdint cimport uint8_t, uint32_t, uint64_t
from libc.string cimport memcpy, memmove, memset, strncpy
from posix.mman cimport MAP_FAILED, MAP_SHARED, PROT_READ, PROT_WRITE, mmap, munmap
from posix.time cimport nanosleep, timespec

cdef extern from "<sys/ioctl.h>" nogil:
    int ioctl(int fd, unsigned long request, ...)

cdef extern from "<poll.h>" nogil:
    struct pollfd:
        int fd
        short events
        short revents
    int poll(pollfd *fds, unsigned long nfds, int timeout)
    enum:
        POLLIN

from seqshm._protocol cimport *

import math
import os
import stat

import numpy as np

from seqshm._dtype import ElementType, Field, to_dtype
from seqshm._errors import FormatError, ReadTimeout, VersionError
from seqshm._types import History, ReaderStats, Snapshot

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

ABI_VERSION = SEQSHM_ABI_VERSION
MAGIC = SEQSHM_MAGIC
HEADER_SIZE = sizeof(seqshm_header)
SLOTS_OFFSET = SEQSHM_SLOTS_OFFSET
ALIGN = SEQSHM_ALIGN
MAX_SLOTS = SEQSHM_MAX_SLOTS
MAX_DIMS = SEQSHM_MAX_DIMS


@cython.final
cdef class Mapping:
    """A shared mapping of a file; unmapped when its last user (reader, writer, view) is gone."""

    cdef void *addr
    cdef size_t length
    cdef bint writable

    def __cinit__(self, int fd, size_t length, bint writable=False):
        cdef int prot = PROT_READ | (PROT_WRITE if writable else 0)
        cdef void *p = mmap(NULL, length, prot, MAP_SHARED, fd, 0)
        self.addr = NULL
        if p == MAP_FAILED:
            raise OSError(errno, os.strerror(errno))
        self.addr = p
        self.length = length
        self.writable = writable

    def __dealloc__(self):
        if self.addr != NULL:
            munmap(self.addr, self.length)

    def __getbuffer__(self, Py_buffer *buf, int flags):
        if (flags & PyBUF_WRITABLE) and not self.writable:
            raise BufferError("seqshm mapping is read-only")
        PyBuffer_FillInfo(buf, self, self.addr, self.length, not self.writable, flags)

    def __len__(self):
        return self.length


cdef Mapping _map_fd(int fd, size_t length, bint writable, str path):
    try:
        return Mapping(fd, length, writable)
    except OSError as e:
        raise OSError(e.errno, f"cannot map {length} bytes: {e.strerror}", path) from None


cdef cnp.ndarray _array_at(Mapping m, cnp.dtype descr, int ndim, cnp.npy_intp *dims,
                           const void *data, bint writable):
    """An ndarray over mapped memory that keeps the mapping alive."""
    Py_INCREF(descr)  # PyArray_NewFromDescr steals it
    cdef cnp.ndarray arr = PyArray_NewFromDescr(
        <void *>np.ndarray, <void *>descr, ndim, dims, NULL, <void *>data,
        cnp.NPY_ARRAY_C_CONTIGUOUS | (cnp.NPY_ARRAY_WRITEABLE if writable else 0), NULL)
    cnp.set_array_base(arr, m)
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
        "name": h.name.decode("ascii"),
        "itemsize": h.itemsize,
        "nr_fields": h.nr_fields,
        "ndim": h.ndim,
        "shape": tuple(h.shape[i] for i in range(h.ndim)),
        "fields": _element(h).fields,
    }


def check_header(bytes data not None, uint64_t file_size=0, str path=None):
    """Validate raw header bytes the way a reader does; returns the header's fields as a dict.

    Raises FormatError or VersionError naming ``path``.
    """
    cdef seqshm_header h
    cdef char why[256]
    if <size_t>len(data) < sizeof(h):
        raise FormatError(f"truncated: {len(data)} bytes, a seqshm header has {sizeof(h)}", path)
    memcpy(&h, <const char *>data, sizeof(h))
    rc = seqshm_header_check(&h, file_size, why, sizeof(why))
    if rc != SEQSHM_OK:
        _raise_header(rc, why, path)
    return _header_dict(&h)


def build_header(str name not None, uint32_t nr_slots, tuple shape not None, element,
                 uint32_t writer_pid=0):
    """The header bytes (magic still 0) of a region for ``element`` and ``shape``, and its size.

    Raises ValueError when the layout cannot be built.
    """
    cdef seqshm_header h
    cdef seqshm_field fields[SEQSHM_MAX_FIELDS]
    cdef uint64_t dims[SEQSHM_MAX_DIMS]
    cdef char why[256]
    cdef bytes name_b = name.encode("ascii")
    cdef bytes fname
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
    rc = seqshm_layout_init(&h, name_b, nr_slots, <uint32_t>len(shape), dims, element.itemsize,
                            SEQSHM_F_RECORD if element.record else 0,
                            <uint32_t>len(element.fields), fields, writer_pid, why, sizeof(why))
    if rc != SEQSHM_OK:
        raise ValueError(why.decode("utf-8", "replace"))
    return (<char *>&h)[:sizeof(h)], h.region_size


def abi_layout():
    """Offsets and sizes of the shared structs as the C compiler laid them out."""
    cdef seqshm_header h
    cdef seqshm_slot s
    cdef seqshm_field f
    cdef size_t hb = <size_t>&h, sb = <size_t>&s, fb = <size_t>&f
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
            "fields": <size_t>&h.fields - hb,
            "head": <size_t>&h.head - hb,
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
    }


def monotonic_ns():
    """CLOCK_MONOTONIC in ns, the clock of every timestamp seqshm writes."""
    return seqshm_monotonic_ns()


cdef bint _pid_alive(uint32_t pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except OSError:
        return True


cdef uint64_t _timeout_ns(timeout, str what) except? 0:
    t = float(timeout)
    if not (t >= 0 and math.isfinite(t)):
        raise ValueError(f"{what} must be a finite number of seconds >= 0, not {timeout!r}")
    return <uint64_t>(t * 1e9)


cdef class _Channel:
    """What readers and writers share: the mapping, the validated header copy, the array type."""

    cdef seqshm_header hdr      # private copy, validated; never re-read from shared memory
    cdef Mapping _map
    cdef cnp.dtype _descr
    cdef object _raw_descr      # opaque items of the record's size, or None for scalars
    cdef int _ndim
    cdef cnp.npy_intp _dims[SEQSHM_MAX_DIMS]
    cdef bint _nogil
    cdef list _views
    cdef readonly str path
    cdef readonly tuple shape

    cdef int _setup(self, str path, seqshm_header *h, Mapping m) except -1:
        self.path = path
        memcpy(&self.hdr, h, sizeof(seqshm_header))
        self._map = m
        try:
            self._descr = to_dtype(_element(h))
        except (TypeError, ValueError) as e:
            raise FormatError(f"element type NumPy cannot represent: {e}", path) from None
        self._raw_descr = np.dtype((np.void, h.itemsize)) if h.flags & SEQSHM_F_RECORD else None
        self._ndim = h.ndim
        for i in range(h.ndim):
            self._dims[i] = <cnp.npy_intp>h.shape[i]
        self.shape = tuple(h.shape[i] for i in range(h.ndim))
        self._nogil = h.payload_size >= GIL_RELEASE_BYTES
        self._views = [None] * h.nr_slots
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
        """The header's static fields, as validated when the channel was opened."""
        return _header_dict(&self.hdr)

    @property
    def closed(self):
        return self._map is None

    @property
    def head(self):
        """Number of writes published so far (read now, so it may move at once)."""
        self._check_open()
        return seqshm_head(self._geometry())

    cdef seqshm_geometry *_geometry(self):
        return NULL

    cdef inline int _check_open(self) except -1:
        if self._map is None:
            raise ValueError(f"{self.path}: channel is closed")
        return 0

    cdef inline bint _same_shape(self, cnp.ndarray a) noexcept:
        cdef cnp.npy_intp *d = cnp.PyArray_DIMS(a)
        cdef int i
        if cnp.PyArray_NDIM(a) != self._ndim:
            return False
        for i in range(self._ndim):
            if d[i] != self._dims[i]:
                return False
        return True

    cdef inline bint _fits(self, cnp.ndarray a, int need) noexcept:
        """The common case inline: the channel's own descriptor object, shape, ``need`` flags."""
        return (<void *>cnp.PyArray_DESCR(a) == <void *>self._descr
                and (cnp.PyArray_FLAGS(a) & need) == need and self._same_shape(a))

    cdef int _check_out(self, cnp.ndarray out) except -1:
        """Say why ``out`` does not fit (equivalent dtypes of another object do fit)."""
        if (<void *>cnp.PyArray_DESCR(out) != <void *>self._descr
                and not PyArray_EquivTypes(<void *>cnp.PyArray_DESCR(out), <void *>self._descr)):
            raise TypeError(f"{self.path}: out has dtype {(<object>out).dtype}, the channel holds {self._descr}")
        if not self._same_shape(out):
            raise ValueError(f"{self.path}: out has shape {(<object>out).shape}, the channel holds {self.shape}")
        if (cnp.PyArray_FLAGS(out) & OUT_FLAGS) != OUT_FLAGS:
            raise ValueError(f"{self.path}: out must be C-contiguous, aligned and writeable")
        return 0

    cdef cnp.ndarray _new_array(self):
        cdef cnp.ndarray raw, arr
        if self._raw_descr is None:
            Py_INCREF(self._descr)  # PyArray_NewFromDescr steals it
            return PyArray_NewFromDescr(<void *>np.ndarray, <void *>self._descr, self._ndim,
                                        self._dims, NULL, NULL, 0, NULL)
        # NumPy allocates a record array at a cost that grows with its fields (~35 ns each);
        # allocating opaque items of the same size and viewing them as records does not.
        Py_INCREF(self._raw_descr)
        raw = PyArray_NewFromDescr(<void *>np.ndarray, <void *>self._raw_descr, self._ndim,
                                   self._dims, NULL, NULL, 0, NULL)
        Py_INCREF(self._descr)
        arr = PyArray_NewFromDescr(<void *>np.ndarray, <void *>self._descr, self._ndim,
                                   self._dims, NULL, cnp.PyArray_DATA(raw),
                                   cnp.NPY_ARRAY_C_CONTIGUOUS | cnp.NPY_ARRAY_WRITEABLE, NULL)
        cnp.set_array_base(arr, raw)
        return arr

    cdef cnp.ndarray _slot_array(self, uint32_t slot, bint writable):
        cdef seqshm_geometry *g = self._geometry()
        v = self._views[slot]
        if v is None:
            v = _array_at(self._map, self._descr, self._ndim, self._dims,
                          seqshm_slot_payload(g, slot), writable)
            self._views[slot] = v
        return v


@cython.final
cdef class Reader(_Channel):
    """A read-only view of one seqshm channel. Open with :func:`seqshm.open`."""

    cdef seqshm_reader r
    cdef seqshm_meta meta
    cdef bint _device
    cdef int _fd            # kept open for a device, whose poll() wait() sleeps on; else -1

    def __init__(self, path, *, timeout=1.0):
        cdef seqshm_header h
        cdef char why[256]
        cdef Mapping first
        cdef uint64_t limit = 0
        path = os.fspath(path)
        if not isinstance(path, str):
            path = os.fsdecode(path)
        self._fd = -1
        self.r.timeout_ns = _timeout_ns(timeout, "timeout")
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)  # a FIFO must not block
        try:
            st = os.fstat(fd)
            if stat.S_ISREG(st.st_mode):
                limit = st.st_size
                if limit < sizeof(h):
                    raise FormatError(
                        f"truncated: {limit} bytes, a seqshm header alone has {sizeof(h)}", path)
            elif stat.S_ISCHR(st.st_mode):
                self._device = True
            else:
                raise FormatError("neither a regular file nor a seqshm device", path)
            # Copy the header once and check the copy: a writer cannot change what we checked.
            first = _map_fd(fd, SEQSHM_ALIGN, False, path)
            memcpy(&h, first.addr, sizeof(h))
            first = None
            rc = seqshm_header_check(&h, limit, why, sizeof(why))
            if rc != SEQSHM_OK:
                _raise_header(rc, why, path)
            m = _map_fd(fd, h.region_size, False, path)
        except BaseException:
            os.close(fd)
            raise
        if self._device:
            self._fd = fd
        else:
            os.close(fd)
        self._setup(path, &h, m)
        seqshm_geometry_init(&self.r.g, m.addr, &h)

    def __dealloc__(self):
        if self._fd >= 0:
            os.close(self._fd)

    cdef seqshm_geometry *_geometry(self):
        return &self.r.g

    @property
    def timeout(self):
        """Seconds a read waits for a consistent copy before it raises ReadTimeout."""
        return self.r.timeout_ns / 1e9

    @timeout.setter
    def timeout(self, value):
        self.r.timeout_ns = _timeout_ns(value, "timeout")

    @property
    def seq(self):
        """Write number of the last consistent read (0: nothing was ever written)."""
        return self.meta.write_seq

    @property
    def timestamp_ns(self):
        """Writer's CLOCK_MONOTONIC time, in ns, of the last consistent read."""
        return self.meta.timestamp_ns

    @property
    def stats(self):
        """ReaderStats(snapshots, retries, timeouts) of this reader."""
        return ReaderStats(self.r.snapshots, self.r.retries, self.r.timeouts)

    cdef int _raise_timeout(self) except -1:
        cdef uint32_t seq = self.r.last_seq
        t = self.r.timeout_ns / 1e9
        if seq & 1:
            what = (f"slot {self.r.last_slot} stayed mid-write for {t:g} s "
                    f"(its sequence count {seq} is odd)")
            pid = self.hdr.writer_pid
            if pid and not self._device:
                if _pid_alive(pid):
                    what += f"; writer pid {pid} is alive but not finishing (stopped?)"
                else:
                    what += f"; writer pid {pid} is gone: it died in the middle of a write"
        else:
            what = (f"the writer rewrote slot {self.r.last_slot} during every copy for {t:g} s; "
                    "a channel with more slots (nr_slots) lets readers through")
        raise ReadTimeout(f"no consistent snapshot: {what}", self.path)

    def snapshot(self, cnp.ndarray out=None):
        """A consistent copy of the newest payload: a new array, or ``out`` filled in place.

        ``out`` must have the channel's dtype and shape and be C-contiguous and writeable.
        The copy's write number and time are then in ``seq`` and ``timestamp_ns``.
        """
        cdef int rc
        cdef void *dst
        if self.r.g.base == NULL:
            self._check_open()
        if out is None:
            out = self._new_array()
        elif not self._fits(out, OUT_FLAGS):
            self._check_out(out)
        dst = cnp.PyArray_DATA(out)
        if self._nogil:
            with nogil:
                rc = seqshm_read(&self.r, dst, &self.meta)
        else:
            rc = seqshm_read(&self.r, dst, &self.meta)
        if rc != SEQSHM_OK:
            self._raise_timeout()
        return out

    def read(self, cnp.ndarray out=None):
        """Snapshot(data, seq, timestamp_ns): a consistent copy with its provenance."""
        data = self.snapshot(out)
        # tuple.__new__ skips the NamedTuple's Python-level __new__ (~100 ns of a ~200 ns call)
        return tuple.__new__(Snapshot, (data, self.meta.write_seq, self.meta.timestamp_ns))

    def _copy_unlocked(self, cnp.ndarray out=None):
        """Benchmark baseline: snapshot()'s call path copying the same bytes with no seqlock.

        The result may be torn; only benchmarks and the torn-read tests use it.
        """
        cdef void *dst
        cdef const void *src
        cdef size_t n
        if self.r.g.base == NULL:
            self._check_open()
        if out is None:
            out = self._new_array()
        elif not self._fits(out, OUT_FLAGS):
            self._check_out(out)
        dst = cnp.PyArray_DATA(out)
        src = seqshm_slot_payload(&self.r.g, seqshm_reader_slot(&self.r))
        n = self.r.g.payload_size
        if self._nogil:
            with nogil:
                memcpy(dst, src, n)
        else:
            memcpy(dst, src, n)
        return out

    def _noop(self):
        """Benchmark baseline: the cost of calling into the extension."""
        return None

    def view(self, token=None):
        """A read-only zero-copy array over the newest slot, or the slot a ``begin()`` token names.

        What is read through it may be torn: check with ``validate(token)`` afterwards, or use
        ``apply()``. The view keeps the mapping alive after ``close()``.
        """
        cdef uint32_t slot
        self._check_open()
        if token is None:
            slot = seqshm_reader_slot(&self.r)
        else:
            slot = <uint32_t>(<uint64_t>token >> 32) & self.r.g.slot_mask
        return self._slot_array(slot, False)

    def begin(self):
        """Start reading through a view: waits until the newest slot is not mid-write and
        returns a token for ``view(token)`` and ``validate(token)``."""
        cdef uint32_t slot = 0, seq = 0
        self._check_open()
        if seqshm_wait_even(&self.r, &slot, &seq, 1) != SEQSHM_OK:
            self._raise_timeout()
        return (<uint64_t>slot << 32) | seq

    def validate(self, uint64_t token):
        """True if nothing read through the view since ``begin()`` can be torn.

        On True, ``seq`` and ``timestamp_ns`` describe what was read.
        """
        cdef seqshm_meta m
        cdef uint32_t slot = <uint32_t>(token >> 32) & self.r.g.slot_mask
        cdef uint32_t seq = <uint32_t>token
        self._check_open()
        seqshm_read_meta(&self.r.g, slot, &m)
        if (seq & 1) or seqshm_read_retry(&self.r.g, slot, seq):
            self.r.retries += 1
            return False
        self.meta = m
        seqshm_reader_done(&self.r, &m)
        return True

    def apply(self, fn, *args, **kwargs):
        """``fn(view, *args, **kwargs)`` on the newest slot, retried until its result is from a
        consistent read, which it returns.

        ``fn`` must not keep or return the view (return a value or a copy) and must tolerate a
        torn input: an exception it raises on a read that turns out torn is discarded and the
        call retried; one it raises on a consistent read propagates.
        """
        cdef uint64_t deadline = 0
        self._check_open()
        while True:
            token = self.begin()
            view = self._slot_array(<uint32_t>(token >> 32), False)
            try:
                result = fn(view, *args, **kwargs)
            except Exception:
                if self.validate(token):
                    raise
            else:
                if self.validate(token):
                    if isinstance(result, np.ndarray) and np.may_share_memory(result, view):
                        raise ValueError(
                            f"{self.path}: apply()'s function returned a view of shared memory; "
                            "return a copy or a value computed from it")
                    return result
            if deadline == 0:
                deadline = seqshm_monotonic_ns() + self.r.timeout_ns
            elif seqshm_monotonic_ns() >= deadline:
                self.r.last_seq = <uint32_t>token
                self.r.last_slot = <uint32_t>(token >> 32)
                self.r.timeouts += 1
                self._raise_timeout()

    def history(self):
        """History(data, seq, timestamp_ns) of every write the slots hold, oldest first.

        With nr_slots N that is up to the last N writes; a gap in ``seq`` is a write the ring
        lost before it was read. Each entry is a consistent copy; a slot with none within the
        timeout (a writer that died in it) is left out; ReadTimeout if no slot has one.
        """
        cdef seqshm_meta m
        cdef uint32_t i, n = self.hdr.nr_slots, stuck = 0
        cdef cnp.ndarray data
        self._check_open()
        data = np.empty((n,) + self.shape, self._descr)
        seqs = np.zeros(n, np.uint64)
        stamps = np.zeros(n, np.uint64)
        for i in range(n):
            if seqshm_read_slot(&self.r, i, cnp.PyArray_GETPTR1(data, i), &m) != SEQSHM_OK:
                # No consistent copy of this slot within the timeout (a writer that died in
                # it, or laps it during every copy): leave it out, as the ring lost it.
                stuck += 1
                continue
            seqs[i] = m.write_seq
            stamps[i] = m.timestamp_ns
        if stuck == n:
            self._raise_timeout()
        order = np.argsort(seqs, kind="stable")
        order = order[seqs[order] > 0]
        return History(data[order], seqs[order], stamps[order])

    def wait(self, timeout=None):
        """Sleep until a write newer than the last one this reader read is published.

        Returns True when there is one, False when ``timeout`` seconds (None: no limit) passed.
        On a kernel device it sleeps in poll(); on a userspace channel, which has no one to wake
        it, it checks the head with a backoff from 20 us to 1 ms between looks.
        """
        cdef uint64_t target, now, deadline = 0
        cdef double remaining
        self._check_open()
        target = self.meta.write_seq
        if timeout is not None:
            deadline = seqshm_monotonic_ns() + _timeout_ns(timeout, "timeout")
        if self._device:
            return self._wait_device(target, deadline, timeout is not None)
        cdef timespec ts
        cdef long backoff_ns = 20000
        while seqshm_head(&self.r.g) <= target:
            now = seqshm_monotonic_ns()
            if timeout is not None and now >= deadline:
                return False
            ts.tv_sec = 0
            ts.tv_nsec = backoff_ns
            if timeout is not None and <uint64_t>backoff_ns > deadline - now:
                ts.tv_nsec = <long>(deadline - now)
            with nogil:
                nanosleep(&ts, NULL)
            PyErr_CheckSignals()
            backoff_ns = min(backoff_ns * 2, 1000000)
        return True

    cdef bint _wait_device(self, uint64_t target, uint64_t deadline, bint bounded) except -1:
        cdef seqshm_ioc_info info
        cdef pollfd pfd
        cdef int rc, ms
        cdef uint64_t now
        while True:
            if seqshm_head(&self.r.g) > target:
                return True
            # Mark the current head as seen by this file, so poll() sleeps until a newer one.
            memset(&info, 0, sizeof(info))
            info.size = sizeof(info)
            info.flags = SEQSHM_INFO_ACK
            if ioctl(self._fd, SEQSHM_IOC_INFO, &info) < 0:
                raise OSError(errno, f"SEQSHM_IOC_INFO: {os.strerror(errno)}", self.path)
            if info.head > target:
                return True
            ms = -1
            if bounded:
                now = seqshm_monotonic_ns()
                if now >= deadline:
                    return False
                ms = <int>min((deadline - now + 999999) // 1000000, 2**31 - 1)
            pfd.fd = self._fd
            pfd.events = POLLIN
            pfd.revents = 0
            with nogil:
                rc = poll(&pfd, 1, ms)
            if rc < 0 and errno != EINTR:
                raise OSError(errno, f"poll: {os.strerror(errno)}", self.path)
            PyErr_CheckSignals()

    async def wait_async(self, timeout=None):
        """``await reader.wait_async()``: :meth:`wait` for asyncio. On a device the event loop
        watches the file for readiness; on a userspace channel it polls the head."""
        import asyncio
        self._check_open()
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + float(timeout)
        if timeout is not None:
            _timeout_ns(timeout, "timeout")
        delay = 20e-6
        while not self.wait(0):
            remaining = None if deadline is None else deadline - loop.time()
            if remaining is not None and remaining <= 0:
                return False
            if self._device:
                ready = loop.create_future()
                loop.add_reader(self._fd, lambda: ready.done() or ready.set_result(None))
                try:
                    await asyncio.wait_for(ready, remaining)
                except asyncio.TimeoutError:
                    pass
                finally:
                    loop.remove_reader(self._fd)
            else:
                await asyncio.sleep(delay if remaining is None else min(delay, remaining))
                delay = min(delay * 2, 1e-3)
        return True

    def close(self):
        """Unmap the channel. Views still held keep their memory mapped until they are gone."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        self._map = None
        self._views = None
        memset(&self.r.g, 0, sizeof(self.r.g))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        state = "closed" if self._map is None else f"{self.hdr.nr_slots} slot(s)"
        return (f"<seqshm.Reader {self.path!r} name={self.name!r} dtype={self._descr} "
                f"shape={self.shape} {state}>")


@cython.final
cdef class _WriteBlock:
    """Context manager of Writer.writing(): the slot's array in, publish on the way out."""

    cdef Writer w
    cdef object ts

    def __enter__(self):
        return self.w.begin()

    def __exit__(self, *exc):
        self.w.end(self.ts)
        return False


@cython.final
cdef class Writer(_Channel):
    """The one writer of a userspace channel. Create with :func:`seqshm.create`."""

    cdef seqshm_writer w
    cdef object _fd
    cdef uint64_t _begin_ts

    def __init__(self, int fd, str path not None):
        """Take over ``fd``: a region file whose header is complete but for its magic, locked
        by the caller. Publishes the magic."""
        cdef seqshm_header h
        cdef char why[256]
        st = os.fstat(fd)
        data = os.pread(fd, sizeof(h), 0)
        if <size_t>len(data) != sizeof(h):
            raise FormatError("truncated header", path)
        memcpy(&h, <const char *>data, sizeof(h))
        h.magic = SEQSHM_MAGIC
        rc = seqshm_header_check(&h, st.st_size, why, sizeof(why))
        if rc != SEQSHM_OK:
            _raise_header(rc, why, path)
        m = _map_fd(fd, h.region_size, True, path)
        self._setup(path, &h, m)
        seqshm_geometry_init(&self.w.g, m.addr, &h)
        self.w.head = (<seqshm_header *>m.addr).head
        seqshm_header_publish(<seqshm_header *>m.addr)
        self._fd = fd

    cdef seqshm_geometry *_geometry(self):
        return &self.w.g

    @property
    def seq(self):
        """Write number of the last published write (0 before the first)."""
        return self.w.head

    def write(self, data, timestamp_ns=None):
        """Publish ``data`` (the channel's shape; converted like ``np.asarray``) as one write.

        Returns its write number. ``timestamp_ns`` defaults to CLOCK_MONOTONIC now.
        """
        cdef cnp.ndarray src
        cdef void *dst
        cdef const void *s
        cdef size_t n
        cdef uint64_t ts
        if self.w.g.base == NULL:
            self._check_open()
        if self.w.in_write:
            raise RuntimeError(f"{self.path}: write() inside an unfinished begin()")
        if type(data) is np.ndarray and self._fits(<cnp.ndarray>data, cnp.NPY_ARRAY_C_CONTIGUOUS):
            src = <cnp.ndarray>data
        else:
            src = np.asarray(data, dtype=self._descr, order="C")  # keeps 0-d
            if not self._same_shape(src):
                raise ValueError(
                    f"{self.path}: data has shape {(<object>src).shape}, the channel holds {self.shape}")
        ts = seqshm_monotonic_ns() if timestamp_ns is None else <uint64_t>timestamp_ns
        s = cnp.PyArray_DATA(src)
        n = self.w.g.payload_size
        if self._nogil:
            with nogil:
                dst = seqshm_write_begin(&self.w)
                memmove(dst, s, n)
                seqshm_write_end(&self.w, ts)
        else:
            dst = seqshm_write_begin(&self.w)
            memmove(dst, s, n)
            seqshm_write_end(&self.w, ts)
        return self.w.head

    def _write_pattern(self, uint64_t count):
        """Test and benchmark source: ``count`` writes as fast as C goes, each filling every
        64-bit word of the payload with its own write number. Returns the last write number."""
        cdef uint64_t i, j, k, words = self.w.g.payload_size // 8
        cdef uint64_t *dst
        self._check_open()
        if self.w.in_write:
            raise RuntimeError(f"{self.path}: _write_pattern() inside an unfinished begin()")
        if words == 0:
            raise ValueError(f"{self.path}: the payload is smaller than one 64-bit word")
        with nogil:
            for i in range(count):
                k = self.w.head + 1
                dst = <uint64_t *>seqshm_write_begin(&self.w)
                for j in range(words):
                    dst[j] = k
                seqshm_write_end(&self.w, seqshm_monotonic_ns())
        return self.w.head

    def begin(self):
        """Start an in-place write: returns the writable array of the slot being written,
        holding the last published payload. Readers see nothing of it until ``end()``."""
        cdef uint32_t newest
        cdef void *dst
        self._check_open()
        if self.w.in_write:
            raise RuntimeError(f"{self.path}: begin() inside an unfinished begin()")
        self._begin_ts = seqshm_monotonic_ns()
        newest = <uint32_t>self.w.head & self.w.g.slot_mask
        dst = seqshm_write_begin(&self.w)
        if self.w.slot != newest:
            # A ring: start from the newest copy, as a one-slot channel does.
            memcpy(dst, seqshm_slot_payload(&self.w.g, newest), self.w.g.payload_size)
        return self._slot_array(self.w.slot, True)

    def end(self, timestamp_ns=None):
        """Publish the in-place write ``begin()`` started; returns its write number."""
        self._check_open()
        if not self.w.in_write:
            raise RuntimeError(f"{self.path}: end() without begin()")
        seqshm_write_end(&self.w, self._begin_ts if timestamp_ns is None else <uint64_t>timestamp_ns)
        return self.w.head

    def writing(self, timestamp_ns=None):
        """``with writer.writing() as buf:`` fill ``buf`` in place; published when the block
        ends. If the block raises, what it wrote is published all the same (the slot cannot be
        left mid-write without stalling readers), so write complete data."""
        blk = _WriteBlock()
        blk.w = self
        blk.ts = timestamp_ns
        return blk

    def close(self, *, unlink=False):
        """Finish any write in progress, unmap, release the channel, and with ``unlink=True``
        remove its file (if it is still this channel's)."""
        if self._map is None:
            return
        if self.w.in_write:
            seqshm_write_end(&self.w, self._begin_ts)
        fd = self._fd
        if unlink:
            try:
                st = os.fstat(fd)
                cur = os.stat(self.path)
                if (cur.st_dev, cur.st_ino) == (st.st_dev, st.st_ino):
                    os.unlink(self.path)
            except FileNotFoundError:
                pass
        self._map = None
        self._views = None
        memset(&self.w.g, 0, sizeof(self.w.g))
        self._fd = None
        os.close(fd)

    def __dealloc__(self):
        if self._fd is not None:
            os.close(self._fd)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        state = "closed" if self._map is None else f"{self.w.head} writes"
        return (f"<seqshm.Writer {self.path!r} name={self.name!r} dtype={self._descr} "
                f"shape={self.shape} {state}>")
