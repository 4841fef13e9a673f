/* The io_uring ring the uring engine drives: submissions in, a batch of completions out.
 *
 * One Ring holds the submission/completion queues and a provided buffer ring
 * (IORING_REGISTER_PBUF_RING) that multishot receives pick their buffers from, so an
 * idle connection holds no read buffer.  Python prepares submissions (accept, recv,
 * send, poll, cancel), which cost no system call, then calls wait(): one
 * io_uring_submit_and_wait per loop turn, returning every completion as a list of
 * (kind, cid, res, offset, more) tuples, where user_data is cid << 3 | kind.
 * Receive buffers handed out in a batch go back to the buffer ring at the start of
 * the next wait(), so they stay valid while Python delivers the batch; the buffer
 * area is exported through the buffer protocol (memoryview(ring)) and freed only when
 * the last view of it is gone.
 *
 * Datagrams: a multishot recvmsg picks provided buffers too; each holds the kernel's
 * io_uring_recvmsg_out header, the sender's address and the payload, and comes back
 * as (RECVMSG, cid, length, payload offset, address), length being the datagram's
 * whole size (MSG_TRUNC), so one larger than the buffer is seen as oversized, never
 * delivered cut short; the end of the request comes as (RECVMSG, cid, res, -1, None).
 * sendto() prepares a sendmsg from a slot of a fixed pool (its msghdr, address and a
 * reference to the bytes live there until the completion); completions free their
 * slot here (before a quiet wait sleeps, too), and only failures come back, as
 * (SENDMSG, 0, -errno, -1, address).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <limits.h>
#include <liburing.h>
#include <arpa/inet.h>
#include <net/if.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#define KIND_BITS 3
#define KIND_MASK 7
#define KIND_CANCEL 7 /* completions of cancel requests are dropped here, never returned */
#define KIND_QUIET_SEND 5 /* a send nobody waits for: its completion alone is no reason to wake */
#define KIND_RECVMSG 6
#define KIND_SENDMSG 0 /* completions handled here: a failure alone is returned */
#define BGID 0
#define SEND_SLOTS 4096 /* datagrams in flight at once; past it sendto() refuses (dropped) */
/* What precedes a datagram's payload in its receive buffer: the header and the address. */
#define RECVMSG_OVERHEAD (sizeof(struct io_uring_recvmsg_out) + sizeof(struct sockaddr_in6))

typedef struct {
    struct msghdr msg;
    struct iovec iov;
    struct sockaddr_in6 addr;  /* large enough for either family */
    PyObject *data;            /* the bytes sent, referenced until the completion; NULL: free */
    int next_free;
} SendSlot;

typedef struct {
    PyObject_HEAD
    struct io_uring ring;
    int ring_open;
    int disabled;              /* created with IORING_SETUP_R_DISABLED: enable() on the loop thread */
    int fd_registered;         /* the ring's descriptor is registered with the enabling thread */
    unsigned setup_flags;
    struct io_uring_buf_ring *br;
    size_t br_size;
    int br_registered;
    char *bufs;
    unsigned nbufs;
    unsigned bufsize;
    unsigned short *used;      /* buffer ids handed out in the last batch */
    unsigned nused;
    Py_ssize_t exports;
    struct msghdr recv_msg;    /* what every multishot recvmsg asks for: the address, no control data */
    SendSlot *slots;           /* SEND_SLOTS of them, made by the first sendto() */
    int free_slot;             /* head of the free list, -1: none */
    unsigned long long send_bytes; /* bytes of the datagrams in flight */
    unsigned long long stuck_bytes; /* of which still in flight when the last wait() returned */
} Ring;

static int ring_check(Ring *self) {
    if (!self->ring_open) {
        PyErr_SetString(PyExc_ValueError, "ring is closed");
        return -1;
    }
    return 0;
}

static PyObject *set_errno(int err) {
    errno = err;
    return PyErr_SetFromErrno(PyExc_OSError);
}

/* An OSError whose filename names the step that failed, so a caller can say what is missing. */
static void set_step_errno(int err, const char *step) {
    errno = err;
    PyErr_SetFromErrnoWithFilename(PyExc_OSError, step);
}

static void ring_release(Ring *self) {
    if (self->br_registered) {
        io_uring_unregister_buf_ring(&self->ring, BGID);
        self->br_registered = 0;
    }
    if (self->ring_open) {
        io_uring_queue_exit(&self->ring);
        self->ring_open = 0;
    }
    if (self->br != NULL) {
        munmap(self->br, self->br_size);
        self->br = NULL;
    }
    if (self->slots != NULL) {
        /* The ring is gone, and with it every request that pointed into a slot. */
        for (int i = 0; i < SEND_SLOTS; i++)
            Py_CLEAR(self->slots[i].data);
        PyMem_Free(self->slots);
        self->slots = NULL;
        self->send_bytes = self->stuck_bytes = 0;
    }
}

static int try_setup(Ring *self, unsigned entries, unsigned flags) {
    struct io_uring_params params;
    memset(&params, 0, sizeof(params));
    params.flags = flags | IORING_SETUP_CQSIZE;
    params.cq_entries = entries * 4; /* multishot receives post many completions per submission */
    return io_uring_queue_init_params(entries, &self->ring, &params);
}

static int Ring_init(Ring *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"entries", "nbufs", "bufsize", NULL};
    unsigned entries = 1024, nbufs = 256, bufsize = 65536;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|III", kwlist, &entries, &nbufs, &bufsize))
        return -1;
    if (self->ring_open || self->bufs != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Ring is already initialised");
        return -1;
    }
    if (nbufs == 0 || nbufs > 32768 || (nbufs & (nbufs - 1)) != 0 || bufsize == 0) {
        PyErr_SetString(PyExc_ValueError, "nbufs must be a power of two up to 32768, bufsize positive");
        return -1;
    }
    /* Deferred task running on a single issuer is the cheapest completion path for
     * sockets; the ring starts disabled so the loop thread, not this one, becomes
     * its issuer.  Older kernels refuse those flags: fall back step by step. */
    unsigned tries[] = {
        IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN | IORING_SETUP_R_DISABLED,
        IORING_SETUP_COOP_TASKRUN,
        0,
    };
    int ret = -EINVAL;
    for (size_t i = 0; i < sizeof(tries) / sizeof(tries[0]); i++) {
        ret = try_setup(self, entries, tries[i]);
        if (ret != -EINVAL) {
            self->setup_flags = tries[i];
            break;
        }
    }
    if (ret < 0) {
        set_step_errno(-ret, "io_uring_setup");
        return -1;
    }
    self->ring_open = 1;
    self->disabled = (self->setup_flags & IORING_SETUP_R_DISABLED) != 0;

    self->br_size = nbufs * sizeof(struct io_uring_buf);
    void *br = mmap(NULL, self->br_size, PROT_READ | PROT_WRITE, MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
    if (br == MAP_FAILED) {
        PyErr_SetFromErrno(PyExc_OSError);
        ring_release(self);
        return -1;
    }
    self->br = br;
    struct io_uring_buf_reg reg;
    memset(&reg, 0, sizeof(reg));
    reg.ring_addr = (unsigned long)br;
    reg.ring_entries = nbufs;
    reg.bgid = BGID;
    ret = io_uring_register_buf_ring(&self->ring, &reg, 0);
    if (ret < 0) {
        ring_release(self);
        set_step_errno(-ret, "IORING_REGISTER_PBUF_RING");
        return -1;
    }
    self->br_registered = 1;
    /* The buffer area is reserved, not touched: only pages a receive writes become resident. */
    self->bufs = mmap(NULL, (size_t)nbufs * bufsize, PROT_READ | PROT_WRITE, MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
    self->used = PyMem_Malloc(nbufs * sizeof(unsigned short));
    if (self->bufs == MAP_FAILED || self->used == NULL) {
        if (self->bufs == MAP_FAILED)
            self->bufs = NULL;
        ring_release(self);
        PyErr_NoMemory();
        return -1;
    }
    self->nbufs = nbufs;
    self->bufsize = bufsize;
    self->recv_msg.msg_namelen = sizeof(struct sockaddr_in6);
    self->free_slot = -1;
    io_uring_buf_ring_init(self->br);
    int mask = io_uring_buf_ring_mask(nbufs);
    for (unsigned i = 0; i < nbufs; i++)
        io_uring_buf_ring_add(self->br, self->bufs + (size_t)i * bufsize, bufsize, (unsigned short)i, mask, (int)i);
    io_uring_buf_ring_advance(self->br, (int)nbufs);
    return 0;
}

static void Ring_dealloc(Ring *self) {
    ring_release(self);
    if (self->bufs != NULL)
        munmap(self->bufs, (size_t)self->nbufs * self->bufsize);
    PyMem_Free(self->used);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static struct io_uring_sqe *get_sqe(Ring *self) {
    struct io_uring_sqe *sqe = io_uring_get_sqe(&self->ring);
    if (sqe == NULL) {
        /* The submission queue is full: hand what is queued to the kernel and retry. */
        int ret = io_uring_submit(&self->ring);
        if (ret < 0 && ret != -EBUSY && ret != -EAGAIN) {
            set_errno(-ret);
            return NULL;
        }
        sqe = io_uring_get_sqe(&self->ring);
        if (sqe == NULL)
            set_errno(EBUSY);
    }
    return sqe;
}

static PyObject *Ring_enable(Ring *self, PyObject *unused) {
    if (ring_check(self) < 0)
        return NULL;
    if (self->disabled) {
        /* liburing 2.3 declares io_uring_enable_rings but does not export it. */
        if (syscall(__NR_io_uring_register, self->ring.ring_fd, IORING_REGISTER_ENABLE_RINGS, NULL, 0) < 0)
            return PyErr_SetFromErrno(PyExc_OSError);
        self->disabled = 0;
    }
    /* Registering the ring's descriptor with this thread spares every io_uring_enter a
     * descriptor lookup; a kernel without it (before 5.18) just does the lookup. */
    if (!self->fd_registered && io_uring_register_ring_fd(&self->ring) == 1)
        self->fd_registered = 1;
    Py_RETURN_NONE;
}

/* The (fd, user data) arguments of a request and a free SQE for it; NULL with an exception set. */
static struct io_uring_sqe *fd_request(Ring *self, PyObject *args, int *fd, unsigned long long *ud) {
    if (!PyArg_ParseTuple(args, "iK", fd, ud) || ring_check(self) < 0)
        return NULL;
    return get_sqe(self);
}

static PyObject *Ring_accept(Ring *self, PyObject *args) {
    int fd;
    unsigned long long ud;
    struct io_uring_sqe *sqe = fd_request(self, args, &fd, &ud);
    if (sqe == NULL)
        return NULL;
    io_uring_prep_multishot_accept(sqe, fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    io_uring_sqe_set_data64(sqe, ud);
    Py_RETURN_NONE;
}

static PyObject *Ring_recv(Ring *self, PyObject *args) {
    int fd;
    unsigned long long ud;
    struct io_uring_sqe *sqe = fd_request(self, args, &fd, &ud);
    if (sqe == NULL)
        return NULL;
    io_uring_prep_recv_multishot(sqe, fd, NULL, 0, 0);
    sqe->flags |= IOSQE_BUFFER_SELECT;
    sqe->buf_group = BGID;
    io_uring_sqe_set_data64(sqe, ud);
    Py_RETURN_NONE;
}

static PyObject *Ring_send(Ring *self, PyObject *args) {
    int fd;
    unsigned long long ud;
    PyObject *data;
    if (!PyArg_ParseTuple(args, "iKS", &fd, &ud, &data) || ring_check(self) < 0)
        return NULL;
    struct io_uring_sqe *sqe = get_sqe(self);
    if (sqe == NULL)
        return NULL;
    /* The caller keeps ``data`` alive until the completion; MSG_WAITALL makes the
     * kernel send it whole (retrying on a full socket) unless the connection fails.
     * The length is capped at 1 GiB (a send takes 32 bits): the caller sends the rest
     * after the short completion, as after any short send. */
    size_t length = (size_t)PyBytes_GET_SIZE(data);
    io_uring_prep_send(sqe, fd, PyBytes_AS_STRING(data), length > (1u << 30) ? (1u << 30) : length,
                       MSG_WAITALL | MSG_NOSIGNAL);
    io_uring_sqe_set_data64(sqe, ud);
    Py_RETURN_NONE;
}

static PyObject *Ring_poll(Ring *self, PyObject *args) {
    int fd;
    unsigned long long ud;
    struct io_uring_sqe *sqe = fd_request(self, args, &fd, &ud);
    if (sqe == NULL)
        return NULL;
    io_uring_prep_poll_multishot(sqe, fd, POLLIN);
    io_uring_sqe_set_data64(sqe, ud);
    Py_RETURN_NONE;
}

static PyObject *Ring_cancel(Ring *self, PyObject *args) {
    unsigned long long ud;
    if (!PyArg_ParseTuple(args, "K", &ud) || ring_check(self) < 0)
        return NULL;
    struct io_uring_sqe *sqe = get_sqe(self);
    if (sqe == NULL)
        return NULL;
    io_uring_prep_cancel64(sqe, ud, 0);
    sqe->flags |= IOSQE_CQE_SKIP_SUCCESS;
    io_uring_sqe_set_data64(sqe, KIND_CANCEL);
    Py_RETURN_NONE;
}

/* -- datagrams ------------------------------------------------------------------------ */

static PyObject *Ring_recvmsg(Ring *self, PyObject *args) {
    if (self->bufsize <= RECVMSG_OVERHEAD) {
        PyErr_SetString(PyExc_ValueError, "the receive buffers are too small for datagrams");
        return NULL;
    }
    int fd;
    unsigned long long ud;
    struct io_uring_sqe *sqe = fd_request(self, args, &fd, &ud);
    if (sqe == NULL)
        return NULL;
    /* MSG_TRUNC: the result tells a datagram's whole size, not what fitted. */
    io_uring_prep_recvmsg_multishot(sqe, fd, &self->recv_msg, MSG_TRUNC);
    sqe->flags |= IOSQE_BUFFER_SELECT;
    sqe->buf_group = BGID;
    io_uring_sqe_set_data64(sqe, ud);
    Py_RETURN_NONE;
}

/* The Python address of a sender: (host, port) or (host, port, flowinfo, scope_id), as socket.recvfrom gives. */
static PyObject *make_addr(const struct sockaddr *sa, socklen_t len) {
    char host[INET6_ADDRSTRLEN];
    if (sa->sa_family == AF_INET && len >= sizeof(struct sockaddr_in)) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        if (inet_ntop(AF_INET, &in->sin_addr, host, sizeof(host)) == NULL)
            return PyErr_SetFromErrno(PyExc_OSError);
        PyObject *name = PyUnicode_FromString(host);
        if (name == NULL)
            return NULL;
        PyObject *port = PyLong_FromLong(ntohs(in->sin_port));
        if (port == NULL) {
            Py_DECREF(name);
            return NULL;
        }
        PyObject *addr = PyTuple_Pack(2, name, port);
        Py_DECREF(name);
        Py_DECREF(port);
        return addr;
    }
    if (sa->sa_family == AF_INET6 && len >= sizeof(struct sockaddr_in6)) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
        if (in6->sin6_scope_id != 0) {
            /* A scoped (link-local) address reads "fe80::1%eth0", as socket.recvfrom gives it. */
            char scoped[NI_MAXHOST];
            if (getnameinfo(sa, sizeof(*in6), scoped, sizeof(scoped), NULL, 0, NI_NUMERICHOST) != 0)
                return Py_BuildValue("(siII)", "", 0, 0u, 0u);
            return Py_BuildValue("(siII)", scoped, (int)ntohs(in6->sin6_port), (unsigned)ntohl(in6->sin6_flowinfo),
                                 (unsigned)in6->sin6_scope_id);
        }
        if (inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof(host)) == NULL)
            return PyErr_SetFromErrno(PyExc_OSError);
        return Py_BuildValue("(siII)", host, (int)ntohs(in6->sin6_port), (unsigned)ntohl(in6->sin6_flowinfo),
                             (unsigned)in6->sin6_scope_id);
    }
    return Py_BuildValue("(si)", "", 0); /* no address (not INET): nothing can answer it */
}

/* Fill ``out`` from a Python address for ``family``: 0 done, -1 error raised, 1 the host is
 * not a numeric address of that family (the caller resolves it and tries again). */
static int parse_addr(PyObject *addr, int family, struct sockaddr_in6 *out, socklen_t *len) {
    Py_ssize_t size = PyTuple_Check(addr) ? PyTuple_GET_SIZE(addr) : -1;
    if (size < 2 || size > (family == AF_INET6 ? 4 : 2)) {
        PyErr_Format(PyExc_TypeError, "%s address must be a tuple (host, port%s)",
                     family == AF_INET6 ? "AF_INET6" : "AF_INET", family == AF_INET6 ? "[, flowinfo[, scope_id]]" : "");
        return -1;
    }
    PyObject *host_obj = PyTuple_GET_ITEM(addr, 0);
    if (!PyUnicode_Check(host_obj)) {
        PyErr_SetString(PyExc_TypeError, "the host must be a str");
        return -1;
    }
    const char *host = PyUnicode_AsUTF8(host_obj);
    if (host == NULL)
        return -1;
    long port = PyLong_AsLong(PyTuple_GET_ITEM(addr, 1));
    if (port == -1 && PyErr_Occurred())
        return -1;
    if (port < 0 || port > 65535) {
        PyErr_SetString(PyExc_OverflowError, "sendto(): port must be 0-65535.");
        return -1;
    }
    memset(out, 0, sizeof(*out));
    if (family == AF_INET) {
        struct sockaddr_in *in = (struct sockaddr_in *)out;
        if (inet_pton(AF_INET, host, &in->sin_addr) != 1)
            return 1;
        in->sin_family = AF_INET;
        in->sin_port = htons((unsigned short)port);
        *len = sizeof(*in);
        return 0;
    }
    unsigned long flowinfo = 0, scope_id = 0;
    if (size > 2) {
        flowinfo = PyLong_AsUnsignedLong(PyTuple_GET_ITEM(addr, 2));
        if (flowinfo == (unsigned long)-1 && PyErr_Occurred())
            return -1;
        if (flowinfo > 0xfffff) {
            PyErr_SetString(PyExc_OverflowError, "sendto(): flowinfo must be 0-1048575.");
            return -1;
        }
    }
    if (size > 3) {
        scope_id = PyLong_AsUnsignedLong(PyTuple_GET_ITEM(addr, 3));
        if (scope_id == (unsigned long)-1 && PyErr_Occurred())
            return -1;
        if (scope_id > 0xffffffffUL) {
            PyErr_SetString(PyExc_OverflowError, "sendto(): scope_id out of range.");
            return -1;
        }
    }
    const char *percent = strchr(host, '%');
    if (percent != NULL) {
        /* "fe80::1%eth0": the zone names the scope unless the tuple gives one. */
        char bare[INET6_ADDRSTRLEN];
        size_t n = (size_t)(percent - host);
        if (n >= sizeof(bare))
            return 1;
        memcpy(bare, host, n);
        bare[n] = '\0';
        if (inet_pton(AF_INET6, bare, &out->sin6_addr) != 1)
            return 1;
        if (scope_id == 0) {
            scope_id = if_nametoindex(percent + 1);
            if (scope_id == 0) {
                char *end;
                scope_id = strtoul(percent + 1, &end, 10);
                if (*end != '\0' || scope_id > 0xffffffffUL)
                    return 1;
            }
        }
    } else if (inet_pton(AF_INET6, host, &out->sin6_addr) != 1) {
        return 1;
    }
    out->sin6_family = AF_INET6;
    out->sin6_port = htons((unsigned short)port);
    out->sin6_flowinfo = htonl((uint32_t)flowinfo);
    out->sin6_scope_id = (uint32_t)scope_id;
    *len = sizeof(*out);
    return 0;
}

static int make_slots(Ring *self) {
    self->slots = PyMem_Calloc(SEND_SLOTS, sizeof(SendSlot));
    if (self->slots == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    for (int i = 0; i < SEND_SLOTS; i++)
        self->slots[i].next_free = i + 1 < SEND_SLOTS ? i + 1 : -1;
    self->free_slot = 0;
    return 0;
}

static void release_slot(Ring *self, int i) {
    SendSlot *slot = &self->slots[i];
    self->send_bytes -= slot->iov.iov_len;
    Py_CLEAR(slot->data);
    slot->next_free = self->free_slot;
    self->free_slot = i;
}

/* sendto(fd, family, addr, data, limit) -> bool: queue one datagram; False when it must be
 * dropped (``limit`` bytes are stuck in flight, or every slot is taken). */
static PyObject *Ring_sendto(Ring *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 5) {
        PyErr_SetString(PyExc_TypeError, "sendto() takes fd, family, addr, data and limit");
        return NULL;
    }
    if (ring_check(self) < 0)
        return NULL;
    long fd = PyLong_AsLong(args[0]);
    if (fd == -1 && PyErr_Occurred())
        return NULL;
    long family = PyLong_AsLong(args[1]);
    if (family == -1 && PyErr_Occurred())
        return NULL;
    unsigned long long limit = PyLong_AsUnsignedLongLong(args[4]);
    if (limit == (unsigned long long)-1 && PyErr_Occurred())
        return NULL;
    if (fd < 0 || fd > INT_MAX) {
        PyErr_SetString(PyExc_ValueError, "bad file descriptor");
        return NULL;
    }
    if (family != AF_INET && family != AF_INET6) {
        PyErr_SetString(PyExc_ValueError, "datagrams go over AF_INET or AF_INET6 only");
        return NULL;
    }
    if (self->slots == NULL && make_slots(self) < 0)
        return NULL;
    if (self->free_slot < 0 || (self->stuck_bytes && self->send_bytes >= limit))
        Py_RETURN_FALSE;
    SendSlot *slot = &self->slots[self->free_slot];
    socklen_t addrlen = 0;
    int parsed = parse_addr(args[2], (int)family, &slot->addr, &addrlen);
    if (parsed < 0)
        return NULL;
    if (parsed > 0) {
        PyErr_SetString(PyExc_ValueError, "not a numeric address");
        return NULL;
    }
    PyObject *data = args[3];
    if (PyBytes_CheckExact(data)) {
        Py_INCREF(data);
    } else {
        /* A view may point into a receive buffer the ring reuses: the kernel gets a copy. */
        Py_buffer view;
        if (PyObject_GetBuffer(data, &view, PyBUF_SIMPLE) < 0)
            return NULL;
        data = PyBytes_FromStringAndSize(view.buf, view.len);
        PyBuffer_Release(&view);
        if (data == NULL)
            return NULL;
    }
    struct io_uring_sqe *sqe = get_sqe(self);
    if (sqe == NULL) {
        Py_DECREF(data);
        return NULL;
    }
    int i = self->free_slot;
    self->free_slot = slot->next_free;
    slot->data = data;
    slot->iov.iov_base = PyBytes_AS_STRING(data);
    slot->iov.iov_len = (size_t)PyBytes_GET_SIZE(data);
    memset(&slot->msg, 0, sizeof(slot->msg));
    slot->msg.msg_name = &slot->addr;
    slot->msg.msg_namelen = addrlen;
    slot->msg.msg_iov = &slot->iov;
    slot->msg.msg_iovlen = 1;
    self->send_bytes += slot->iov.iov_len;
    io_uring_prep_sendmsg(sqe, (int)fd, &slot->msg, MSG_NOSIGNAL);
    io_uring_sqe_set_data64(sqe, (unsigned long long)(i + 1) << KIND_BITS | KIND_SENDMSG);
    Py_RETURN_TRUE;
}

static PyObject *Ring_cancel_fd(Ring *self, PyObject *args) {
    int fd;
    if (!PyArg_ParseTuple(args, "i", &fd) || ring_check(self) < 0)
        return NULL;
    struct io_uring_sqe *sqe = get_sqe(self);
    if (sqe == NULL)
        return NULL;
    io_uring_prep_cancel_fd(sqe, fd, IORING_ASYNC_CANCEL_ALL);
    sqe->flags |= IOSQE_CQE_SKIP_SUCCESS;
    io_uring_sqe_set_data64(sqe, KIND_CANCEL);
    Py_RETURN_NONE;
}

/* The tuple (kind, cid, res, offset, extra), built by hand: Py_BuildValue parses its format each time.
 * Steals the reference to ``extra``. */
static PyObject *completion(unsigned kind, unsigned long long cid, long res, long long offset, PyObject *extra) {
    PyObject *item = PyTuple_New(5);
    if (item == NULL) {
        Py_DECREF(extra);
        return NULL;
    }
    PyTuple_SET_ITEM(item, 0, PyLong_FromLong((long)kind));
    PyTuple_SET_ITEM(item, 1, PyLong_FromUnsignedLongLong(cid));
    PyTuple_SET_ITEM(item, 2, PyLong_FromLong(res));
    PyTuple_SET_ITEM(item, 3, PyLong_FromLongLong(offset));
    PyTuple_SET_ITEM(item, 4, extra);
    for (int i = 0; i < 4; i++) {
        if (PyTuple_GET_ITEM(item, i) == NULL) {
            Py_DECREF(item);
            return NULL;
        }
    }
    return item;
}

static int append(PyObject *batch, PyObject *item) {
    if (item == NULL)
        return -1;
    int ret = PyList_Append(batch, item);
    Py_DECREF(item);
    return ret;
}

/* A recvmsg completion's items: the datagram it carries, then its end if it ended. */
static int recvmsg_done(Ring *self, struct io_uring_cqe *cqe, PyObject *batch) {
    unsigned long long cid = cqe->user_data >> KIND_BITS;
    if ((cqe->flags & IORING_CQE_F_BUFFER) && cqe->res > 0) {
        unsigned short bid = (unsigned short)(cqe->flags >> IORING_CQE_BUFFER_SHIFT);
        char *buf = self->bufs + (size_t)bid * self->bufsize;
        struct io_uring_recvmsg_out *out = io_uring_recvmsg_validate(buf, cqe->res, &self->recv_msg);
        if (out != NULL && out->namelen <= self->recv_msg.msg_namelen) {
            char *payload = io_uring_recvmsg_payload(out, &self->recv_msg);
            long room = (long)(self->bufsize - (payload - buf));
            long length = (long)out->payloadlen;
            if ((out->flags & MSG_TRUNC) && length <= room)
                length = room + 1; /* cut short however the kernel counted: oversized */
            PyObject *addr = make_addr(io_uring_recvmsg_name(out), out->namelen);
            if (addr == NULL)
                return -1;
            if (append(batch, completion(KIND_RECVMSG, cid, length, payload - self->bufs, addr)) < 0)
                return -1;
        }
    }
    if (!(cqe->flags & IORING_CQE_F_MORE)) {
        Py_INCREF(Py_None);
        if (append(batch, completion(KIND_RECVMSG, cid, cqe->res > 0 ? 0 : cqe->res, -1, Py_None)) < 0)
            return -1;
    }
    return 0;
}

/* A sendmsg completion: its slot is freed; a failure is returned with the address it went to. */
static int sendmsg_done(Ring *self, struct io_uring_cqe *cqe, PyObject *batch) {
    unsigned long long id = cqe->user_data >> KIND_BITS;
    if (self->slots == NULL || id == 0 || id > SEND_SLOTS || self->slots[id - 1].data == NULL)
        return 0; /* not one of ours (cannot happen): nothing to free */
    int i = (int)(id - 1);
    if (cqe->res >= 0) {
        release_slot(self, i);
        return 0;
    }
    SendSlot *slot = &self->slots[i];
    PyObject *addr = make_addr((struct sockaddr *)&slot->addr, slot->msg.msg_namelen);
    release_slot(self, i);
    if (addr == NULL)
        return -1;
    return append(batch, completion(KIND_SENDMSG, 0, cqe->res, -1, addr));
}

static void recycle(Ring *self) {
    if (!self->nused)
        return;
    int mask = io_uring_buf_ring_mask(self->nbufs);
    for (unsigned i = 0; i < self->nused; i++) {
        unsigned short bid = self->used[i];
        io_uring_buf_ring_add(self->br, self->bufs + (size_t)bid * self->bufsize, self->bufsize, bid, mask, (int)i);
    }
    io_uring_buf_ring_advance(self->br, (int)self->nused);
    self->nused = 0;
}

/* Completions ready, and how many of them are events (neither quiet sends, nor datagrams
 * sent, nor cancels; a datagram the kernel refused is one). */
static unsigned ready_events(Ring *self, unsigned *ready) {
    unsigned head, events = 0, seen = 0;
    struct io_uring_cqe *cqe;
    io_uring_for_each_cqe(&self->ring, head, cqe) {
        seen++;
        unsigned kind = (unsigned)(cqe->user_data & KIND_MASK);
        if (kind != KIND_QUIET_SEND && kind != KIND_CANCEL && (kind != KIND_SENDMSG || cqe->res < 0))
            events++;
    }
    *ready = seen;
    return events;
}

/* Consume the datagrams sent and the cancels at the head of the completion queue, freeing
 * their slots, so that a loop about to sleep holds no slot whose send is over. */
static void reap_sent(Ring *self) {
    unsigned head, done = 0;
    struct io_uring_cqe *cqe;
    io_uring_for_each_cqe(&self->ring, head, cqe) {
        unsigned long long ud = cqe->user_data;
        unsigned kind = (unsigned)(ud & KIND_MASK);
        if (kind == KIND_SENDMSG && cqe->res >= 0) {
            unsigned long long id = ud >> KIND_BITS;
            if (self->slots != NULL && id >= 1 && id <= SEND_SLOTS && self->slots[id - 1].data != NULL)
                release_slot(self, (int)(id - 1));
        } else if (kind != KIND_CANCEL) {
            break;
        }
        done++;
    }
    io_uring_cq_advance(&self->ring, done);
}

static PyObject *Ring_wait(Ring *self, PyObject *args) {
    PyObject *timeout_obj = Py_None;
    int quiet = 0;
    if (!PyArg_ParseTuple(args, "|Op", &timeout_obj, &quiet) || ring_check(self) < 0)
        return NULL;
    recycle(self);
    struct __kernel_timespec ts, *tsp = NULL;
    unsigned wait_nr = 1;
    if (timeout_obj != Py_None) {
        double timeout = PyFloat_AsDouble(timeout_obj);
        if (timeout == -1.0 && PyErr_Occurred())
            return NULL;
        if (!(timeout < 1e9)) /* NaN, infinite or absurd: no limit */
            timeout_obj = Py_None;
        else if (timeout <= 0) {
            wait_nr = 0;
        } else {
            ts.tv_sec = (long long)timeout;
            ts.tv_nsec = (long long)((timeout - (double)ts.tv_sec) * 1e9);
            tsp = &ts;
        }
    }
    struct io_uring_cqe *cqe = NULL;
    int ret;
    if (quiet && wait_nr && !io_uring_cq_ready(&self->ring)) {
        /* Quiet sends usually complete during the submission itself: submit without
           waiting, and if only such completions are ready, wait for one event more than
           them (a quiet send that cannot complete, to a peer that does not read, must not
           be waited for). */
        ret = io_uring_submit_and_get_events(&self->ring);
        unsigned ready = 0;
        if (ret >= 0 && ready_events(self, &ready) == 0) {
            reap_sent(self);
            wait_nr = io_uring_cq_ready(&self->ring) + 1;
        } else {
            wait_nr = 0;
        }
    }
    if (wait_nr == 0 || io_uring_cq_ready(&self->ring) >= wait_nr) {
        ret = io_uring_submit(&self->ring); /* completions are waiting: do not block */
    } else {
        Py_BEGIN_ALLOW_THREADS
        if (tsp != NULL)
            ret = io_uring_submit_and_wait_timeout(&self->ring, &cqe, wait_nr, tsp, NULL);
        else if (wait_nr)
            ret = io_uring_submit_and_wait(&self->ring, wait_nr);
        else
            ret = io_uring_submit_and_get_events(&self->ring);
        Py_END_ALLOW_THREADS
    }
    if (ret < 0 && ret != -ETIME && ret != -EINTR && ret != -EBUSY && ret != -EAGAIN)
        return set_errno(-ret);
    PyObject *batch = PyList_New(0);
    if (batch == NULL)
        return NULL;
    unsigned head, seen = 0;
    io_uring_for_each_cqe(&self->ring, head, cqe) {
        seen++;
        unsigned long long ud = cqe->user_data;
        unsigned kind = (unsigned)(ud & KIND_MASK);
        if (kind == KIND_CANCEL)
            continue; /* a cancel that found nothing left to cancel */
        if (kind == KIND_SENDMSG) {
            if (sendmsg_done(self, cqe, batch) < 0)
                goto failed;
            continue;
        }
        long long offset = -1;
        if (cqe->flags & IORING_CQE_F_BUFFER) {
            unsigned short bid = (unsigned short)(cqe->flags >> IORING_CQE_BUFFER_SHIFT);
            if (bid >= self->nbufs || self->nused >= self->nbufs)
                continue; /* not a buffer of ours (cannot happen): nothing to read or give back */
            self->used[self->nused++] = bid;
            offset = (long long)bid * self->bufsize;
        }
        if (kind == KIND_RECVMSG) {
            if (recvmsg_done(self, cqe, batch) < 0)
                goto failed;
            continue;
        }
        PyObject *more = (cqe->flags & IORING_CQE_F_MORE) ? Py_True : Py_False;
        Py_INCREF(more);
        if (append(batch, completion(kind, ud >> KIND_BITS, (long)cqe->res, offset, more)) < 0)
            goto failed;
    }
    self->stuck_bytes = self->send_bytes;
    io_uring_cq_advance(&self->ring, seen);
    return batch;
failed:
    /* The completions before this one are lost with the batch; the rest wait for the next call. */
    Py_DECREF(batch);
    io_uring_cq_advance(&self->ring, seen);
    return NULL;
}

static PyObject *Ring_close(Ring *self, PyObject *unused) {
    ring_release(self);
    Py_RETURN_NONE;
}

static PyObject *Ring_features(Ring *self, PyObject *unused) {
    if (ring_check(self) < 0)
        return NULL;
    return Py_BuildValue("{sIsIsO}", "features", self->ring.features, "setup_flags", self->setup_flags,
                         "defer_taskrun", (self->setup_flags & IORING_SETUP_DEFER_TASKRUN) ? Py_True : Py_False);
}

static int Ring_getbuffer(Ring *self, Py_buffer *view, int flags) {
    if (self->bufs == NULL) {
        PyErr_SetString(PyExc_BufferError, "ring has no buffers");
        return -1;
    }
    int ret = PyBuffer_FillInfo(view, (PyObject *)self, self->bufs, (Py_ssize_t)self->nbufs * self->bufsize, 0, flags);
    if (ret == 0)
        self->exports++;
    return ret;
}

static void Ring_releasebuffer(Ring *self, Py_buffer *view) { self->exports--; }

static PyBufferProcs Ring_as_buffer = {
    (getbufferproc)Ring_getbuffer,
    (releasebufferproc)Ring_releasebuffer,
};

static PyMethodDef Ring_methods[] = {
    {"enable", (PyCFunction)Ring_enable, METH_NOARGS, "Make the calling thread the ring's submitter (call it there)."},
    {"accept", (PyCFunction)Ring_accept, METH_VARARGS, "Queue a multishot accept on a listening socket."},
    {"recv", (PyCFunction)Ring_recv, METH_VARARGS, "Queue a multishot receive into provided buffers."},
    {"send", (PyCFunction)Ring_send, METH_VARARGS, "Queue a send of a bytes object, kept alive by the caller."},
    {"poll", (PyCFunction)Ring_poll, METH_VARARGS, "Queue a multishot readability poll."},
    {"cancel", (PyCFunction)Ring_cancel, METH_VARARGS, "Queue the cancellation of the request with this user_data."},
    {"recvmsg", (PyCFunction)Ring_recvmsg, METH_VARARGS, "Queue a multishot datagram receive into provided buffers."},
    {"sendto", (PyCFunction)(void (*)(void))Ring_sendto, METH_FASTCALL,
     "Queue one datagram to an address; False if it must be dropped (bound reached)."},
    {"cancel_fd", (PyCFunction)Ring_cancel_fd, METH_VARARGS, "Queue the cancellation of every request on a descriptor."},
    {"wait", (PyCFunction)Ring_wait, METH_VARARGS, "Submit, wait for an event (quiet sends' completions aside) or the timeout, return the batch."},
    {"close", (PyCFunction)Ring_close, METH_NOARGS, "Release the ring (the buffers go with the last view)."},
    {"features", (PyCFunction)Ring_features, METH_NOARGS, "The kernel's feature bits and the setup flags used."},
    {NULL, NULL, 0, NULL},
};

static PyObject *Ring_get_bufsize(Ring *self, void *closure) { return PyLong_FromUnsignedLong(self->bufsize); }

static PyObject *Ring_get_sending(Ring *self, void *closure) { return PyLong_FromUnsignedLongLong(self->send_bytes); }

static PyGetSetDef Ring_getset[] = {
    {"bufsize", (getter)Ring_get_bufsize, NULL, "Size of each provided receive buffer.", NULL},
    {"sending", (getter)Ring_get_sending, NULL, "Bytes of datagrams queued by sendto() and not completed yet.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject RingType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "railcar.engine._uring.Ring",
    .tp_basicsize = sizeof(Ring),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "An io_uring with a provided buffer ring for multishot receives.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Ring_init,
    .tp_dealloc = (destructor)Ring_dealloc,
    .tp_methods = Ring_methods,
    .tp_getset = Ring_getset,
    .tp_as_buffer = &Ring_as_buffer,
};

static struct PyModuleDef uring_module = {
    PyModuleDef_HEAD_INIT, "_uring", "io_uring submissions and completions for the uring engine.", -1, NULL,
};

PyMODINIT_FUNC PyInit__uring(void) {
    if (PyType_Ready(&RingType) < 0)
        return NULL;
    PyObject *module = PyModule_Create(&uring_module);
    if (module == NULL)
        return NULL;
    Py_INCREF(&RingType);
    if (PyModule_AddObject(module, "Ring", (PyObject *)&RingType) < 0 ||
        PyModule_AddIntConstant(module, "ACCEPT", 1) < 0 || PyModule_AddIntConstant(module, "RECV", 2) < 0 ||
        PyModule_AddIntConstant(module, "SEND", 3) < 0 || PyModule_AddIntConstant(module, "POLL", 4) < 0 ||
        PyModule_AddIntConstant(module, "QUIET_SEND", KIND_QUIET_SEND) < 0 ||
        PyModule_AddIntConstant(module, "RECVMSG", KIND_RECVMSG) < 0 ||
        PyModule_AddIntConstant(module, "SENDMSG", KIND_SENDMSG) < 0 ||
        PyModule_AddIntConstant(module, "SEND_SLOTS", SEND_SLOTS) < 0 ||
        PyModule_AddIntConstant(module, "RECVMSG_OVERHEAD", (long)RECVMSG_OVERHEAD) < 0 ||
        PyModule_AddIntConstant(module, "KIND_BITS", KIND_BITS) < 0) {
        Py_DECREF(&RingType);
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
