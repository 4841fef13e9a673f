/* The hot commands of a pipelined batch run in C: railcar.kv's Python commands, for their plain case.
 *
 * ``run(batch, start, db, out, resp3, flush_at)`` runs the requests of ``batch`` (a list of
 * requests, each a list of bytes) from index ``start`` against ``db`` (a kv.store.Database)
 * while each is one of GET key, SET key value, INCR key, LPUSH/RPUSH key element..., or
 * LPOP/RPOP key in its plain case, appending each reply to ``out`` (a bytearray); it returns
 * the index of the first request it did not run.  The caller runs that one through the Python
 * commands and calls again for the rest.  The caller calls it only where the Python server
 * calls the ``HOT`` table (outside MULTI, authenticated, no append-only file, no maxmemory).
 *
 * Anything that is not the plain case is left to Python, untouched: another command or
 * arity, options, a key of another type (the WRONGTYPE and other error replies), a key with
 * an expiry time (lazy expiry), a write while some client WATCHes a key, a list created
 * while some client is blocked on a list key (the wake-up), INCR at the top of the range.
 * What runs here changes the store exactly as the Python commands do: the same values (the
 * request's own bytes objects; a counter as an int; lists as collections.deque), the same
 * ``used`` bytes estimate and ``dirty`` change count, written back to the Store before
 * returning, also when an error (MemoryError) is raised part way through.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <limits.h>
#include <string.h>

/* Handed over by kv/executor.py with configure(): the store's list type and size estimates. */
static PyObject *DequeType = NULL;
static PyObject *DequeAppend = NULL;      /* deque.append, called unbound */
static PyObject *DequeAppendLeft = NULL;
static PyObject *DequePop = NULL;
static PyObject *DequePopLeft = NULL;
static long long KeyOverhead = 0;
static long long ElementOverhead = 0;
static long long IntSize = 0;

static PyObject *str_data = NULL;
static PyObject *str_expires = NULL;
static PyObject *str_store = NULL;
static PyObject *str_used = NULL;
static PyObject *str_dirty = NULL;
static PyObject *str_watchers = NULL;
static PyObject *str_blocked_on = NULL;

enum { DONE = 1, FALLBACK = 0, FAILED = -1 };
enum { CMD_NONE, CMD_GET, CMD_SET, CMD_INCR, CMD_LPUSH, CMD_RPUSH, CMD_LPOP, CMD_RPOP };

typedef struct {
    PyObject *data;     /* db.data: key -> value */
    PyObject *expires;  /* db.expires: key -> ms */
    PyObject *out;      /* the reply bytearray */
    long long used;     /* store.used, changed here and written back at the end */
    long long dirty;    /* store.dirty, likewise */
    int writes;         /* no client WATCHes a key and store.used/dirty are readable: writes may run */
    int lists_may_appear;  /* no client is blocked on a list key: a new list wakes no one */
    int ran_python;     /* an allocation may have run finalizers: what was read above may be stale */
    int resp3;
} Run;

/* ``name`` (any case) as one of the commands run here, else CMD_NONE. */
static int
command_of(PyObject *name)
{
    Py_ssize_t n = PyBytes_GET_SIZE(name);
    const unsigned char *s = (const unsigned char *)PyBytes_AS_STRING(name);
    /* b | 0x20 equals a lower-case letter only for that letter in either case. */
#define IS(i, c) ((s[i] | 0x20) == (c))
    switch (n) {
    case 3:
        if (IS(1, 'e') && IS(2, 't')) {
            if (IS(0, 'g'))
                return CMD_GET;
            if (IS(0, 's'))
                return CMD_SET;
        }
        return CMD_NONE;
    case 4:
        if (IS(0, 'i') && IS(1, 'n') && IS(2, 'c') && IS(3, 'r'))
            return CMD_INCR;
        if (IS(1, 'p') && IS(2, 'o') && IS(3, 'p')) {
            if (IS(0, 'l'))
                return CMD_LPOP;
            if (IS(0, 'r'))
                return CMD_RPOP;
        }
        return CMD_NONE;
    case 5:
        if (IS(1, 'p') && IS(2, 'u') && IS(3, 's') && IS(4, 'h')) {
            if (IS(0, 'l'))
                return CMD_LPUSH;
            if (IS(0, 'r'))
                return CMD_RPUSH;
        }
        return CMD_NONE;
    default:
        return CMD_NONE;
    }
#undef IS
}

/* Decimal digits of ``value`` written at the end of ``buf`` (room for 20); returns the start. */
static char *
format_ll(long long value, char *end)
{
    unsigned long long magnitude = value < 0 ? 0ULL - (unsigned long long)value : (unsigned long long)value;
    char *p = end;
    do {
        *--p = (char)('0' + magnitude % 10);
        magnitude /= 10;
    } while (magnitude);
    if (value < 0)
        *--p = '-';
    return p;
}

/* Grow ``out`` by ``extra`` bytes; returns where they start, NULL with an exception set. */
static char *
reserve(PyObject *out, Py_ssize_t extra)
{
    Py_ssize_t size = PyByteArray_GET_SIZE(out);
    if (extra > PY_SSIZE_T_MAX - size) {
        PyErr_NoMemory();
        return NULL;
    }
    if (PyByteArray_Resize(out, size + extra) < 0)
        return NULL;
    return PyByteArray_AS_STRING(out) + size;
}

static int
append(PyObject *out, const char *bytes, Py_ssize_t n)
{
    char *to = reserve(out, n);
    if (to == NULL)
        return FAILED;
    memcpy(to, bytes, (size_t)n);
    return DONE;
}

/* A bulk string reply: $<length>\r\n<bytes>\r\n. */
static int
reply_bulk(PyObject *out, const char *bytes, Py_ssize_t n)
{
    char head[24];
    char *end = head + sizeof head;
    char *start = format_ll((long long)n, end - 2);
    end[-2] = '\r';
    end[-1] = '\n';
    *--start = '$';
    Py_ssize_t head_len = end - start;
    if (n > PY_SSIZE_T_MAX - head_len - 2) {
        PyErr_NoMemory();
        return FAILED;
    }
    char *to = reserve(out, head_len + n + 2);
    if (to == NULL)
        return FAILED;
    memcpy(to, start, (size_t)head_len);
    memcpy(to + head_len, bytes, (size_t)n);
    to[head_len + n] = '\r';
    to[head_len + n + 1] = '\n';
    return DONE;
}

/* An integer reply: :<value>\r\n. */
static int
reply_int(PyObject *out, long long value)
{
    char buf[24];
    char *end = buf + sizeof buf;
    end[-2] = '\r';
    end[-1] = '\n';
    char *start = format_ll(value, end - 2);
    *--start = ':';
    return append(out, start, end - start);
}

static int
reply_null(Run *run)
{
    return run->resp3 ? append(run->out, "_\r\n", 3) : append(run->out, "$-1\r\n", 5);
}

/* 1 if ``key`` has an expiry time (Python's lazy expiry must see it), 0 if not, -1 on error. */
static int
has_expiry(Run *run, PyObject *key)
{
    if (PyDict_GET_SIZE(run->expires) == 0)
        return 0;
    return PyDict_Contains(run->expires, key);
}

/* The value at ``key`` (borrowed), or NULL: missing (no exception) or an error (exception set). */
static PyObject *
lookup(Run *run, PyObject *key)
{
    return PyDict_GetItemWithError(run->data, key);
}

/* GET key: strings kept as bytes or as a counter; other types and keys with a TTL go to Python. */
static int
run_get(Run *run, PyObject *key)
{
    /* The expiry first: its lookup may run a stored key's __eq__, which could free a value
     * already looked up (nothing after the value's lookup runs Python code). */
    int expiring = has_expiry(run, key);
    if (expiring)
        return expiring < 0 ? FAILED : FALLBACK;
    PyObject *value = lookup(run, key);
    if (value == NULL)
        return PyErr_Occurred() ? FAILED : reply_null(run);
    if (PyBytes_CheckExact(value))
        return reply_bulk(run->out, PyBytes_AS_STRING(value), PyBytes_GET_SIZE(value));
    if (PyLong_CheckExact(value)) {
        int overflow;
        long long number = PyLong_AsLongLongAndOverflow(value, &overflow);
        if (overflow || (number == -1 && PyErr_Occurred())) {
            PyErr_Clear();
            return FALLBACK;
        }
        char digits[24];
        char *end = digits + sizeof digits;
        char *start = format_ll(number, end);
        return reply_bulk(run->out, start, end - start);
    }
    return FALLBACK;
}

/* SET key value: Database.set_string (the TTL dropped), over a missing key, a string or a counter. */
static int
run_set(Run *run, PyObject *key, PyObject *value)
{
    if (!run->writes)
        return FALLBACK;
    PyObject *old = lookup(run, key);
    long long delta;
    if (old == NULL) {
        if (PyErr_Occurred())
            return FAILED;
        delta = (long long)PyBytes_GET_SIZE(key) + KeyOverhead + PyBytes_GET_SIZE(value);
    }
    else if (PyBytes_CheckExact(old))
        delta = (long long)PyBytes_GET_SIZE(value) - PyBytes_GET_SIZE(old);
    else if (PyLong_CheckExact(old))
        delta = (long long)PyBytes_GET_SIZE(value) - IntSize;
    else
        return FALLBACK;  /* over a list, set or hash: Python sizes the old container */
    if (PyDict_SetItem(run->data, key, value) < 0)
        return FAILED;
    run->used += delta;
    run->dirty += 1;
    int expiring = has_expiry(run, key);
    if (expiring < 0 || (expiring && PyDict_DelItem(run->expires, key) < 0))
        return FAILED;
    return append(run->out, "+OK\r\n", 5);
}

/* INCR key: a live counter below the top of the range, kept as an int (the size charged stays). */
static int
run_incr(Run *run, PyObject *key)
{
    if (!run->writes)
        return FALLBACK;
    int expiring = has_expiry(run, key);  /* first, as in run_get */
    if (expiring)
        return expiring < 0 ? FAILED : FALLBACK;
    PyObject *value = lookup(run, key);
    if (value == NULL)
        return PyErr_Occurred() ? FAILED : FALLBACK;  /* a new counter: Python charges its key */
    if (!PyLong_CheckExact(value))
        return FALLBACK;  /* a string to parse, or another type */
    int overflow;
    long long number = PyLong_AsLongLongAndOverflow(value, &overflow);
    if (overflow || (number == -1 && PyErr_Occurred())) {
        PyErr_Clear();
        return FALLBACK;
    }
    if (number == LLONG_MAX)
        return FALLBACK;  /* Python answers the overflow error */
    PyObject *result = PyLong_FromLongLong(number + 1);
    if (result == NULL)
        return FAILED;
    int failed = PyDict_SetItem(run->data, key, result);
    Py_DECREF(result);
    if (failed < 0)
        return FAILED;
    run->dirty += 1;
    return reply_int(run->out, number + 1);
}

/* Push ``elements`` (bytes) onto the list ``items``: Database.grew's accounting, the new length replied. */
static int
push_elements(Run *run, PyObject *items, PyObject *const *elements, Py_ssize_t count, int left)
{
    PyObject *method = left ? DequeAppendLeft : DequeAppend;
    long long grew = 0;
    int status = DONE;
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *call[2] = {items, elements[i]};
        PyObject *none = PyObject_Vectorcall(method, call, 2, NULL);
        if (none == NULL) {
            status = FAILED;
            break;
        }
        Py_DECREF(none);
        grew += (long long)PyBytes_GET_SIZE(elements[i]) + ElementOverhead;
    }
    if (grew) {  /* also for what was pushed before a failure */
        run->used += grew;
        run->dirty += 1;
    }
    if (status == DONE) {
        Py_ssize_t length = PyObject_Size(items);
        status = length < 0 ? FAILED : reply_int(run->out, (long long)length);
    }
    return status;
}

/* LPUSH/RPUSH key element...: onto a list, or a new one while no client is blocked on a list key. */
static int
run_push(Run *run, PyObject *args, Py_ssize_t argc, int left)
{
    if (!run->writes)
        return FALLBACK;
    PyObject *key = PyList_GET_ITEM(args, 1);
    for (Py_ssize_t i = 2; i < argc; i++) {
        if (!PyBytes_CheckExact(PyList_GET_ITEM(args, i)))
            return FALLBACK;
    }
    int expiring = has_expiry(run, key);
    if (expiring)
        return expiring < 0 ? FAILED : FALLBACK;
    PyObject *items = lookup(run, key);
    if (items != NULL) {
        if (Py_TYPE(items) != (PyTypeObject *)DequeType)
            return FALLBACK;
        /* Nothing below runs Python code (no GC-tracked allocation), so the borrowed request holds. */
        Py_INCREF(items);
        int status = push_elements(run, items, ((PyListObject *)args)->ob_item + 2, argc - 2, left);
        Py_DECREF(items);
        return status;
    }
    if (PyErr_Occurred())
        return FAILED;
    if (!run->lists_may_appear)
        return FALLBACK;  /* Python notes the new list for the blocked clients */
    /* Allocating the slice or the deque may run the garbage collector, and so any finalizer:
     * hold what is used after it, look again before storing, and end the run after this
     * request, so that the next one starts from what the store has become. */
    run->ran_python = 1;
    Py_INCREF(args);
    PyObject *held = PyList_GetSlice(args, 1, argc);  /* the key and the elements */
    Py_DECREF(args);
    if (held == NULL)
        return FAILED;
    int status = FAILED;
    items = PyObject_CallNoArgs(DequeType);
    if (items == NULL)
        goto done;
    key = PyList_GET_ITEM(held, 0);
    PyObject *found = lookup(run, key);
    if (found != NULL || PyErr_Occurred()) {
        status = found != NULL ? FALLBACK : FAILED;
        goto done;
    }
    if (PyDict_SetItem(run->data, key, items) < 0)
        goto done;
    run->used += (long long)PyBytes_GET_SIZE(key) + KeyOverhead;  /* Database.set of an empty list */
    run->dirty += 1;
    status = push_elements(run, items, ((PyListObject *)held)->ob_item + 1, argc - 2, left);
done:
    Py_XDECREF(items);
    Py_DECREF(held);
    return status;
}

/* LPOP/RPOP key without a count: one element off a list, the list deleted once empty. */
static int
run_pop(Run *run, PyObject *key, int left)
{
    int expiring = has_expiry(run, key);  /* first, as in run_get */
    if (expiring)
        return expiring < 0 ? FAILED : FALLBACK;
    PyObject *items = lookup(run, key);
    if (items == NULL)
        return PyErr_Occurred() ? FAILED : reply_null(run);
    if (!run->writes || Py_TYPE(items) != (PyTypeObject *)DequeType)
        return FALLBACK;
    Py_ssize_t length = PyObject_Size(items);
    if (length < 0)
        return FAILED;
    if (length == 0)
        return FALLBACK;  /* never stored by the commands; Python's own path decides */
    Py_INCREF(items);
    PyObject *call[1] = {items};
    PyObject *item = PyObject_Vectorcall(left ? DequePopLeft : DequePop, call, 1, NULL);
    if (item == NULL) {
        Py_DECREF(items);
        return FAILED;
    }
    if (!PyBytes_CheckExact(item)) {  /* not one the commands store: put it back, Python decides */
        PyObject *back[2] = {items, item};
        PyObject *none = PyObject_Vectorcall(left ? DequeAppendLeft : DequeAppend, back, 2, NULL);
        Py_DECREF(item);
        Py_DECREF(items);
        if (none == NULL)
            return FAILED;
        Py_DECREF(none);
        return FALLBACK;
    }
    Py_DECREF(items);
    run->used -= (long long)PyBytes_GET_SIZE(item) + ElementOverhead;  /* Database.grew */
    run->dirty += 1;
    int status = DONE;
    if (length == 1) {  /* Database.delete of the emptied list */
        if (PyDict_DelItem(run->data, key) < 0)
            status = FAILED;
        else {
            run->used -= (long long)PyBytes_GET_SIZE(key) + KeyOverhead;
            run->dirty += 1;
        }
    }
    if (status == DONE)
        status = reply_bulk(run->out, PyBytes_AS_STRING(item), PyBytes_GET_SIZE(item));
    Py_DECREF(item);
    return status;
}

/* Run one request; DONE, FALLBACK (nothing changed, nothing written) or FAILED. */
static int
run_one(Run *run, PyObject *args)
{
    if (!PyList_CheckExact(args))
        return FALLBACK;
    Py_ssize_t argc = PyList_GET_SIZE(args);
    if (argc < 2)
        return FALLBACK;
    PyObject *name = PyList_GET_ITEM(args, 0);
    PyObject *key = PyList_GET_ITEM(args, 1);
    if (!PyBytes_CheckExact(name) || !PyBytes_CheckExact(key))
        return FALLBACK;
    switch (command_of(name)) {
    case CMD_GET:
        return argc == 2 ? run_get(run, key) : FALLBACK;
    case CMD_SET: {
        if (argc != 3)
            return FALLBACK;  /* options, or the arity error */
        PyObject *value = PyList_GET_ITEM(args, 2);
        return PyBytes_CheckExact(value) ? run_set(run, key, value) : FALLBACK;
    }
    case CMD_INCR:
        return argc == 2 ? run_incr(run, key) : FALLBACK;
    case CMD_LPUSH:
        return argc >= 3 ? run_push(run, args, argc, 1) : FALLBACK;
    case CMD_RPUSH:
        return argc >= 3 ? run_push(run, args, argc, 0) : FALLBACK;
    case CMD_LPOP:
        return argc == 2 ? run_pop(run, key, 1) : FALLBACK;
    case CMD_RPOP:
        return argc == 2 ? run_pop(run, key, 0) : FALLBACK;
    default:
        return FALLBACK;
    }
}

/* ``obj.name`` as a long long in *value: 1, or 0 when it is not an int that fits (no exception). */
static int
read_counter(PyObject *obj, PyObject *name, long long *value)
{
    PyObject *number = PyObject_GetAttr(obj, name);
    if (number == NULL)
        return -1;
    int fits = 0;
    if (PyLong_CheckExact(number)) {
        int overflow;
        *value = PyLong_AsLongLongAndOverflow(number, &overflow);
        fits = !overflow && !(*value == -1 && PyErr_Occurred());
        PyErr_Clear();
    }
    Py_DECREF(number);
    return fits;
}

/* True if ``obj.name`` is an empty dict; -1 on error. */
static int
empty_dict_attr(PyObject *obj, PyObject *name)
{
    PyObject *value = PyObject_GetAttr(obj, name);
    if (value == NULL)
        return -1;
    int empty = PyDict_CheckExact(value) && PyDict_GET_SIZE(value) == 0;
    Py_DECREF(value);
    return empty;
}

/* Add this run's change of a counter to the store's; -1 on error (the pending exception kept).
 * Added, not set: a finalizer run by an allocation may have changed the counter meanwhile. */
static int
write_back(PyObject *store, PyObject *name, long long before, long long after)
{
    if (before == after)
        return 0;
    PyObject *exc_type, *exc_value, *exc_tb;
    PyErr_Fetch(&exc_type, &exc_value, &exc_tb);  /* a MemoryError of a command stays the one raised */
    long long now = 0;
    int readable = read_counter(store, name, &now);
    if (readable == 0)
        PyErr_Format(PyExc_TypeError, "store.%U is no longer an int", name);
    PyObject *number = readable > 0 ? PyLong_FromLongLong(now + (after - before)) : NULL;
    int failed = number == NULL || PyObject_SetAttr(store, name, number) < 0;
    Py_XDECREF(number);
    if (exc_type != NULL) {
        if (failed)
            PyErr_Clear();
        PyErr_Restore(exc_type, exc_value, exc_tb);
        return -1;
    }
    return failed ? -1 : 0;
}

static PyObject *
run(PyObject *Py_UNUSED(module), PyObject *const *argv, Py_ssize_t nargs)
{
    if (DequeType == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "railcar.kv._exec: configure() was not called");
        return NULL;
    }
    if (nargs != 6) {
        PyErr_Format(PyExc_TypeError, "run() takes 6 arguments (%zd given)", nargs);
        return NULL;
    }
    PyObject *batch = argv[0], *db = argv[2], *out = argv[3];
    if (!PyList_CheckExact(batch) || !PyByteArray_CheckExact(out)) {
        PyErr_SetString(PyExc_TypeError, "run() takes a list of requests and a bytearray");
        return NULL;
    }
    Py_ssize_t start = PyLong_AsSsize_t(argv[1]);
    if (start == -1 && PyErr_Occurred())
        return NULL;
    int resp3 = PyObject_IsTrue(argv[4]);
    if (resp3 < 0)
        return NULL;
    Py_ssize_t flush_at = PyLong_AsSsize_t(argv[5]);
    if (flush_at == -1 && PyErr_Occurred())
        return NULL;
    if (start < 0 || start > PyList_GET_SIZE(batch)) {
        PyErr_SetString(PyExc_IndexError, "run(): start is outside the batch");
        return NULL;
    }

    Run r = {.resp3 = resp3, .out = out};
    PyObject *store = NULL;
    long long used = 0, dirty = 0;
    Py_ssize_t index = start;
    r.data = PyObject_GetAttr(db, str_data);
    r.expires = r.data == NULL ? NULL : PyObject_GetAttr(db, str_expires);
    store = r.expires == NULL ? NULL : PyObject_GetAttr(db, str_store);
    if (store == NULL)
        goto error;
    if (!PyDict_CheckExact(r.data) || !PyDict_CheckExact(r.expires)) {
        PyErr_SetString(PyExc_TypeError, "run(): db.data and db.expires must be dicts");
        goto error;
    }
    int readable = read_counter(store, str_used, &used);
    if (readable < 0)
        goto error;
    int counted = readable ? read_counter(store, str_dirty, &dirty) : 0;
    if (counted < 0)
        goto error;
    int unwatched = counted ? empty_dict_attr(store, str_watchers) : 0;
    if (unwatched < 0)
        goto error;
    r.writes = unwatched;
    int unblocked = empty_dict_attr(store, str_blocked_on);
    if (unblocked < 0)
        goto error;
    r.lists_may_appear = unblocked;
    r.used = used;
    r.dirty = dirty;

    int status = DONE;
    /* The batch may not change under us (no Python code runs here), but its size is read each turn. */
    while (index < PyList_GET_SIZE(batch)) {
        status = run_one(&r, PyList_GET_ITEM(batch, index));
        if (status != DONE)
            break;
        index++;
        if (r.ran_python || PyByteArray_GET_SIZE(out) >= flush_at)
            break;
    }
    int failed = status == FAILED;
    if (r.writes) {
        failed |= write_back(store, str_used, used, r.used) < 0;
        failed |= write_back(store, str_dirty, dirty, r.dirty) < 0;
    }
    Py_DECREF(store);
    Py_DECREF(r.expires);
    Py_DECREF(r.data);
    if (failed)
        return NULL;
    return PyLong_FromSsize_t(index);

error:
    Py_XDECREF(store);
    Py_XDECREF(r.expires);
    Py_XDECREF(r.data);
    return NULL;
}

static PyObject *
configure(PyObject *Py_UNUSED(module), PyObject *args)
{
    PyObject *deque;
    long long key_overhead, element_overhead, int_size;
    if (!PyArg_ParseTuple(args, "O!LLL", &PyType_Type, &deque, &key_overhead, &element_overhead, &int_size))
        return NULL;
    PyObject *append = PyObject_GetAttrString(deque, "append");
    PyObject *appendleft = PyObject_GetAttrString(deque, "appendleft");
    PyObject *pop = PyObject_GetAttrString(deque, "pop");
    PyObject *popleft = PyObject_GetAttrString(deque, "popleft");
    if (append == NULL || appendleft == NULL || pop == NULL || popleft == NULL) {
        Py_XDECREF(append);
        Py_XDECREF(appendleft);
        Py_XDECREF(pop);
        Py_XDECREF(popleft);
        return NULL;
    }
    Py_INCREF(deque);
    Py_XSETREF(DequeType, deque);
    Py_XSETREF(DequeAppend, append);
    Py_XSETREF(DequeAppendLeft, appendleft);
    Py_XSETREF(DequePop, pop);
    Py_XSETREF(DequePopLeft, popleft);
    KeyOverhead = key_overhead;
    ElementOverhead = element_overhead;
    IntSize = int_size;
    Py_RETURN_NONE;
}

static PyMethodDef module_methods[] = {
    {"configure", configure, METH_VARARGS,
     "Hand over the list type (collections.deque) and the store's size estimates (once, from executor.py)."},
    {"run", (PyCFunction)(void (*)(void))run, METH_FASTCALL,
     "Run the batch's plain hot requests from start; return the index of the first one not run."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "railcar.kv._exec", "The hot commands of a pipelined batch, in C.", -1,
    module_methods,
};

PyMODINIT_FUNC
PyInit__exec(void)
{
    struct { PyObject **slot; const char *text; } names[] = {
        {&str_data, "data"}, {&str_expires, "expires"}, {&str_store, "store"}, {&str_used, "used"},
        {&str_dirty, "dirty"}, {&str_watchers, "watchers"}, {&str_blocked_on, "blocked_on"},
    };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        if (*names[i].slot == NULL && (*names[i].slot = PyUnicode_InternFromString(names[i].text)) == NULL)
            return NULL;
    }
    return PyModule_Create(&module);
}
