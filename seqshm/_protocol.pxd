# Cython declarations of the C protocol (module/protocol/seqshm_protocol.h, shared with the
# kernel, and src/protocol.h, userspace's open check, waits and writer) and the layout they include.
from libc.stdint cimport uint8_t, uint32_t, int32_t, uint64_t, int64_t

cdef extern from "linux/seqshm.h" nogil:
    enum:
        SEQSHM_ABI_VERSION
        SEQSHM_ALIGN
        SEQSHM_CACHELINE
        SEQSHM_NAME_LEN
        SEQSHM_FIELD_NAME_LEN
        SEQSHM_MAX_DIMS
        SEQSHM_MAX_FIELDS
        SEQSHM_MAX_SLOTS
        SEQSHM_F_RECORD
        SEQSHM_FIELD_F_ARRAY
        SEQSHM_STATE_OPEN
        SEQSHM_STATE_CLOSED
        SEQSHM_STATE_REPLACED
        SEQSHM_WAKE_F_FENCE
        SEQSHM_WAKE_HEAL_AFTER
    unsigned long long SEQSHM_MAGIC
    unsigned long long SEQSHM_WAITERS_MAGIC
    unsigned long long SEQSHM_SLOTS_OFFSET

    struct seqshm_field:
        char name[32]
        uint32_t offset
        uint32_t count
        uint8_t kind
        uint8_t size
        uint8_t flags

    struct seqshm_slot:
        uint32_t seq
        uint64_t write_seq
        uint64_t timestamp_ns

    struct seqshm_header:
        uint64_t magic
        uint32_t abi_version
        uint32_t header_size
        uint64_t region_size
        uint64_t payload_offset
        uint64_t payload_size
        uint64_t slot_stride
        uint32_t nr_slots
        uint32_t flags
        int32_t clock_id
        uint32_t writer_pid
        char name[64]
        uint32_t itemsize
        uint32_t nr_fields
        uint32_t ndim
        uint64_t shape[8]
        uint64_t writer_start
        uint64_t waiters_dev
        uint64_t waiters_ino
        uint32_t wake_flags
        uint32_t writer_pidns
        seqshm_field fields[32]
        uint64_t head
        uint32_t state

    struct seqshm_waiters:
        uint64_t magic
        uint64_t channel_dev
        uint64_t channel_ino
        uint32_t count

    # Device interface of the kernel module
    enum:
        SEQSHM_INFO_ACK
    unsigned long SEQSHM_IOC_INFO

    struct seqshm_ioc_info:
        uint32_t size
        uint32_t flags
        uint64_t head
        uint64_t seen

cdef extern from "wake.h" nogil:
    struct seqshm_waker:
        uint32_t *count
        int fd
        int fence
        uint64_t wakes
        uint64_t resets

    enum:
        SEQSHM_WAKE_ENOBARRIER

    void seqshm_waker_init(seqshm_waker *wk, seqshm_header *h, int fence)
    void seqshm_waker_attach(seqshm_waker *wk, seqshm_waiters *w, int fd)
    void seqshm_wake_all(seqshm_header *h)
    int seqshm_wake_lock(int fd, int lock)
    int seqshm_wake_wait(const seqshm_header *h, uint32_t *count, int fence, uint64_t target,
                         uint64_t timeout_ns, const uint32_t *cancel)
    void seqshm_wake_cancel(uint32_t *cancel)

cdef extern from "seqshm_protocol.h" nogil:
    enum:
        SEQSHM_OK
        SEQSHM_ETIMEDOUT
        SEQSHM_EMAGIC
        SEQSHM_EVERSION
        SEQSHM_EFORMAT
        SEQSHM_EINVAL
        SEQSHM_E2BIG
        SEQSHM_EDAMAGED
    unsigned long long SEQSHM_WRITE_LIMIT

    struct seqshm_geometry:
        const unsigned char *base
        uint64_t payload_offset
        uint64_t payload_size
        uint64_t slot_stride
        uint32_t slot_mask

    struct seqshm_meta:
        uint64_t write_seq
        uint64_t timestamp_ns
        uint32_t slot

    struct seqshm_layout_req:
        const char *name
        uint32_t nr_slots
        uint32_t ndim
        const unsigned long long *shape
        uint32_t itemsize
        uint32_t flags
        uint32_t nr_fields
        const seqshm_field *fields
        uint32_t writer_pid
        uint64_t writer_start
        uint64_t region_align
        uint64_t max_region

    const seqshm_header *seqshm_hdr(const seqshm_geometry *g)
    const seqshm_slot *seqshm_slot_ctl(const seqshm_geometry *g, uint32_t slot)
    const unsigned char *seqshm_slot_payload(const seqshm_geometry *g, uint32_t slot)
    uint64_t seqshm_head(const seqshm_geometry *g)
    uint64_t seqshm_pick_write(const seqshm_geometry *g, uint64_t newest)
    int seqshm_write_fits_slot(const seqshm_geometry *g, uint32_t slot, uint64_t w)
    uint32_t seqshm_state(const seqshm_geometry *g)
    uint32_t seqshm_read_begin(const seqshm_geometry *g, uint32_t slot)
    int seqshm_read_retry(const seqshm_geometry *g, uint32_t slot, uint32_t seq)
    void seqshm_read_meta(const seqshm_geometry *g, uint32_t slot, seqshm_meta *meta)
    int seqshm_try_read_slot(const seqshm_geometry *g, uint32_t slot, void *dst,
                             seqshm_meta *meta)
    int seqshm_header_check(const seqshm_header *h, uint64_t region_size_limit,
                            char *why, size_t whylen)
    void seqshm_geometry_init(seqshm_geometry *g, const void *base, const seqshm_header *h)
    int seqshm_layout_init(seqshm_header *h, const seqshm_layout_req *req, char *why,
                           size_t whylen)
    void seqshm_header_publish(seqshm_header *h)
    void seqshm_write_close(seqshm_header *h, uint32_t state)

    enum seqshm_follow:
        SEQSHM_FOLLOW_WAIT
        SEQSHM_FOLLOW_GOT
        SEQSHM_FOLLOW_LAPPED
        SEQSHM_FOLLOW_BEHIND
        SEQSHM_FOLLOW_DAMAGED
    seqshm_follow seqshm_follow_once(const seqshm_geometry *g, unsigned long long *next,
                                     unsigned long long *lost, void *dst, seqshm_meta *meta)

cdef extern from "protocol.h" nogil:
    struct seqshm_reader:
        seqshm_geometry g
        uint64_t newest
        uint64_t snapshots
        uint64_t retries
        uint32_t last_seq
        uint32_t last_slot

    struct seqshm_backoff:
        unsigned int spins
        uint64_t sleep_ns

    struct seqshm_writer:
        seqshm_geometry g
        uint64_t head
        uint32_t slot
        int in_write
        seqshm_waker wake

    uint32_t seqshm_reader_slot(const seqshm_reader *r)
    void seqshm_reader_done(seqshm_reader *r, const seqshm_meta *meta)
    int seqshm_read_once(seqshm_reader *r, void *dst, seqshm_meta *meta)
    int seqshm_read_until(seqshm_reader *r, int64_t fixed, void *dst, seqshm_meta *meta,
                          uint64_t deadline, seqshm_backoff *b)
    int seqshm_wait_even_until(seqshm_reader *r, uint32_t *slot, uint32_t *seq, int newest,
                               uint64_t deadline, seqshm_backoff *b)
    uint64_t seqshm_deadline(uint64_t now, uint64_t ns)
    void *seqshm_write_begin(seqshm_writer *w)
    void seqshm_write_end(seqshm_writer *w, uint64_t timestamp_ns)
    uint64_t seqshm_monotonic_ns()
    int seqshm_refuse_holes(const seqshm_header *h, int is_file, uint64_t size,
                            uint64_t allocated, char *why, size_t whylen)

cdef extern from "guard.h" nogil:
    struct seqshm_guard:
        int damaged
    seqshm_guard *seqshm_guard_add(void *start, size_t len, uint32_t nr_slots, int writable)
    void seqshm_guard_remove(seqshm_guard *g)
    int seqshm_guard_damaged(const seqshm_guard *g)
