/* RESP request parser in C: railcar.proto.resp.RequestParser's behaviour, event for event.
 *
 * The pure-Python parser in resp.py is the reference; this one gives the same commands, the
 * same errors (texts and points) and the same count of buffered bytes for any split of any
 * byte stream (tests/property/test_resp_split.py checks it).  Inline commands go to the
 * Python ``split_inline`` (rare, and its quoting rules then live in one place); the error
 * classes and that function are handed over once by resp.py with ``configure``.
 *
 * ``take_ready`` returns every complete request of the buffer at once, so a server runs a
 * read's pipeline with one call into the parser instead of one per request.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <string.h>

#define INLINE_MAX (64 * 1024)
#define MAX_BULK (512LL * 1024 * 1024)
#define INT_MAX_32 2147483647LL
#define UNAUTH_MAX_ARGS 10
#define UNAUTH_MAX_BULK 16384
/* Command names returned as one shared bytes object each (saves an allocation and a hash). */
#define NAME_CACHE 16
#define NAME_MAX_LEN 16
/* A buffer grown past this for a big request is freed once everything in it is parsed. */
#define SHRINK_ABOVE (256 * 1024)

static PyObject *ProtocolErrorType = NULL;  /* resp.RespProtocolError */
static PyObject *OverflowErrorType = NULL;  /* resp.QueryBufferOverflow */
static PyObject *SplitInline = NULL;        /* resp.split_inline */

typedef struct {
    PyObject_HEAD
    char *buf;
    Py_ssize_t len;   /* bytes held */
    Py_ssize_t cap;
    Py_ssize_t pos;   /* first byte not yet part of a returned element */
    Py_ssize_t left;  /* elements still to read of the array in progress; 0: between requests */
    PyObject *args;   /* the array in progress (a list), or NULL */
    PyObject *ready;  /* requests handed back with put_back, returned first (a list), or NULL */
    Py_ssize_t ready_next;  /* index of the next of them */
    Py_ssize_t max_buffer;
    int authenticated;
    int names;
    PyObject *name_cache[NAME_CACHE];
} Parser;

/* Redis's string2ll: strict base-10 64-bit integer (no '+', no leading zeros); 0 when not one. */
static int
string_to_ll(const char *s, Py_ssize_t n, long long *out)
{
    if (n == 0 || n > 20)
        return 0;
    if (n == 1 && s[0] == '0') {
        *out = 0;
        return 1;
    }
    int negative = 0;
    const char *p = s, *end = s + n;
    if (*p == '-') {
        negative = 1;
        p++;
        if (p == end)
            return 0;
    }
    if (*p < '1' || *p > '9')
        return 0;
    unsigned long long v = 0;
    for (; p < end; p++) {
        if (*p < '0' || *p > '9')
            return 0;
        unsigned long long d = (unsigned long long)(*p - '0');
        if (v > (18446744073709551615ULL - d) / 10)
            return 0;
        v = v * 10 + d;
    }
    if (negative) {
        if (v > 9223372036854775808ULL)
            return 0;
        *out = (long long)(0 - v);
    }
    else {
        if (v > 9223372036854775807ULL)
            return 0;
        *out = (long long)v;
    }
    return 1;
}

/* Where `c` is in [pos, len), as C's strchr finds it: -1 if absent or a NUL byte comes first. */
static inline Py_ssize_t
line_end(const Parser *self, char c, Py_ssize_t pos)
{
    const char *start = self->buf + pos;
    const char *hit = memchr(start, c, (size_t)(self->len - pos));
    if (hit == NULL || memchr(start, 0, (size_t)(hit - start)) != NULL)
        return -1;
    return hit - self->buf;
}

static void
protocol_error(const char *text)
{
    PyErr_SetString(ProtocolErrorType, text);
}

static void
expected_dollar(unsigned char c)
{
    PyObject *shown;
    if (c == '\n' || c == '\r')
        shown = PyUnicode_FromString(" ");
    else
        shown = PyUnicode_DecodeUTF8((const char *)&c, 1, "surrogateescape");
    if (shown == NULL)
        return;
    PyObject *text = PyUnicode_FromFormat("Protocol error: expected '$', got '%U'", shown);
    Py_DECREF(shown);
    if (text != NULL) {
        PyErr_SetObject(ProtocolErrorType, text);
        Py_DECREF(text);
    }
}

static PyObject *
name_bytes(Parser *self, const char *s, Py_ssize_t n)
{
    if (n <= NAME_MAX_LEN) {
        for (int i = 0; i < self->names; i++) {
            PyObject *name = self->name_cache[i];
            if (PyBytes_GET_SIZE(name) == n && memcmp(PyBytes_AS_STRING(name), s, (size_t)n) == 0) {
                Py_INCREF(name);
                return name;
            }
        }
    }
    PyObject *name = PyBytes_FromStringAndSize(s, n);
    if (name != NULL && n <= NAME_MAX_LEN && self->names < NAME_CACHE) {
        Py_INCREF(name);
        self->name_cache[self->names++] = name;
    }
    return name;
}

static PyObject *
parse_inline(Parser *self)
{
    Py_ssize_t pos = self->pos;
    Py_ssize_t newline = line_end(self, '\n', pos);
    if (newline < 0) {
        if (self->len - pos > INLINE_MAX) {
            protocol_error("Protocol error: too big inline request");
            return NULL;
        }
        Py_RETURN_NONE;
    }
    Py_ssize_t end = (newline > pos && self->buf[newline - 1] == '\r') ? newline - 1 : newline;
    PyObject *line = PyBytes_FromStringAndSize(self->buf + pos, end - pos);
    if (line == NULL)
        return NULL;
    PyObject *args = PyObject_CallOneArg(SplitInline, line);
    Py_DECREF(line);
    if (args == NULL)
        return NULL;
    if (args == Py_None) {
        Py_DECREF(args);
        protocol_error("Protocol error: unbalanced quotes in request");
        return NULL;
    }
    self->pos = newline + 1;
    return args;
}

/* The next request (a list, possibly empty), None when none is complete, NULL on error. */
static PyObject *
parse_next(Parser *self)
{
    const char *buf = self->buf;
    Py_ssize_t pos = self->pos, end = self->len;
    if (self->left == 0) {
        if (pos >= end) {
            self->pos = self->len = 0;
            if (self->cap > SHRINK_ABOVE) {  /* a big request is done: an idle client keeps little */
                PyMem_Free(self->buf);
                self->buf = NULL;
                self->cap = 0;
            }
            Py_RETURN_NONE;
        }
        if (buf[pos] != '*')
            return parse_inline(self);
        Py_ssize_t newline = line_end(self, '\r', pos);
        if (newline < 0) {
            if (end - pos > INLINE_MAX) {
                protocol_error("Protocol error: too big mbulk count string");
                return NULL;
            }
            Py_RETURN_NONE;
        }
        if (newline + 2 > end)
            Py_RETURN_NONE;
        long long count;
        if (!string_to_ll(buf + pos + 1, newline - pos - 1, &count) || count > INT_MAX_32) {
            protocol_error("Protocol error: invalid multibulk length");
            return NULL;
        }
        if (count > UNAUTH_MAX_ARGS && !self->authenticated) {
            protocol_error("Protocol error: unauthenticated multibulk length");
            return NULL;
        }
        self->pos = pos = newline + 2;
        if (count <= 0)
            return PyList_New(0);
        /* The list grows as elements come: a huge count announced costs nothing up front. */
        PyObject *args = PyList_New(count <= 64 ? (Py_ssize_t)count : 0);
        if (args == NULL)
            return NULL;
        if (count <= 64)
            Py_SET_SIZE(args, 0);  /* preallocated, filled by index below */
        Py_XSETREF(self->args, args);
        self->left = (Py_ssize_t)count;
    }
    PyListObject *args = (PyListObject *)self->args;
    Py_ssize_t left = self->left;
    while (left) {
        Py_ssize_t newline = line_end(self, '\r', pos);
        if (newline < 0) {
            if (end - pos > INLINE_MAX) {
                protocol_error("Protocol error: too big bulk count string");
                return NULL;
            }
            break;
        }
        if (newline + 2 > end)
            break;
        if (buf[pos] != '$') {
            expected_dollar((unsigned char)buf[pos]);
            return NULL;
        }
        long long size;
        if (!string_to_ll(buf + pos + 1, newline - pos - 1, &size) || size < 0 || size > MAX_BULK) {
            protocol_error("Protocol error: invalid bulk length");
            return NULL;
        }
        if (size > UNAUTH_MAX_BULK && !self->authenticated) {
            protocol_error("Protocol error: unauthenticated bulk length");
            return NULL;
        }
        Py_ssize_t start = newline + 2;
        if (start + size + 2 > end)
            break;
        PyObject *arg = Py_SIZE(args) == 0 ? name_bytes(self, buf + start, (Py_ssize_t)size)
                                           : PyBytes_FromStringAndSize(buf + start, (Py_ssize_t)size);
        if (arg == NULL)
            return NULL;
        Py_ssize_t n = Py_SIZE(args);
        if (n < args->allocated) {
            args->ob_item[n] = arg;  /* steals the reference */
            Py_SET_SIZE(args, n + 1);
        }
        else {
            int failed = PyList_Append((PyObject *)args, arg);
            Py_DECREF(arg);
            if (failed)
                return NULL;
        }
        pos = start + (Py_ssize_t)size + 2;
        left--;
        self->pos = pos;  /* each element is consumed once, even if a later one is bad */
        self->left = left;
    }
    if (left)
        Py_RETURN_NONE;
    PyObject *done = self->args;
    self->args = NULL;
    return done;
}

static int
Parser_init(Parser *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"max_buffer", NULL};
    Py_ssize_t max_buffer = (Py_ssize_t)1 << 30;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|n", kwlist, &max_buffer))
        return -1;
    if (ProtocolErrorType == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "railcar.proto._resp is not configured");
        return -1;
    }
    self->max_buffer = max_buffer;
    self->authenticated = 1;
    return 0;
}

static int
Parser_traverse(Parser *self, visitproc visit, void *arg)
{
    Py_VISIT(self->args);
    Py_VISIT(self->ready);
    return 0;
}

static int
Parser_clear(Parser *self)
{
    Py_CLEAR(self->args);
    Py_CLEAR(self->ready);
    for (int i = 0; i < self->names; i++)
        Py_CLEAR(self->name_cache[i]);
    self->names = 0;
    return 0;
}

static void
Parser_dealloc(Parser *self)
{
    PyObject_GC_UnTrack(self);
    Parser_clear(self);
    PyMem_Free(self->buf);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *
Parser_feed(Parser *self, PyObject *data)
{
    Py_buffer view;
    if (PyObject_GetBuffer(data, &view, PyBUF_SIMPLE) < 0)
        return NULL;
    if (self->pos > 0 && self->pos * 2 >= self->len) {
        /* Less left than consumed: moving it costs no more than what was parsed. */
        memmove(self->buf, self->buf + self->pos, (size_t)(self->len - self->pos));
        self->len -= self->pos;
        self->pos = 0;
    }
    Py_ssize_t need = self->len + view.len;
    if (need > self->cap) {
        Py_ssize_t cap = self->cap ? self->cap : 4096;
        while (cap < need)
            cap *= 2;
        char *grown = PyMem_Realloc(self->buf, (size_t)cap);
        if (grown == NULL) {
            PyBuffer_Release(&view);
            return PyErr_NoMemory();
        }
        self->buf = grown;
        self->cap = cap;
    }
    memcpy(self->buf + self->len, view.buf, (size_t)view.len);
    self->len = need;
    PyBuffer_Release(&view);
    if (self->len - self->pos > self->max_buffer) {
        PyErr_Format(OverflowErrorType, "query buffer over %zd bytes", self->max_buffer);
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
Parser_next_command(Parser *self, PyObject *Py_UNUSED(ignored))
{
    PyObject *ready = self->ready;
    if (ready != NULL) {
        PyObject *command = PyList_GET_ITEM(ready, self->ready_next);
        Py_INCREF(command);
        if (++self->ready_next == PyList_GET_SIZE(ready))
            Py_CLEAR(self->ready);
        return command;
    }
    return parse_next(self);
}

static PyObject *
Parser_take_ready(Parser *self, PyObject *Py_UNUSED(ignored))
{
    PyObject *out;
    if (self->ready != NULL) {
        out = PyList_GetSlice(self->ready, self->ready_next, PyList_GET_SIZE(self->ready));
        Py_CLEAR(self->ready);
    }
    else
        out = PyList_New(0);
    if (out == NULL)
        return NULL;
    for (;;) {
        PyObject *command = parse_next(self);
        if (command == NULL) {
            if (PyList_GET_SIZE(out) == 0) {
                Py_DECREF(out);
                return NULL;
            }
            /* The requests before a protocol error are served first; parsing again raises it
               again.  Any other exception (MemoryError, one from split_inline) goes up now. */
            if (!PyErr_ExceptionMatches(ProtocolErrorType)) {
                Py_DECREF(out);
                return NULL;
            }
            PyErr_Clear();
            return out;
        }
        if (command == Py_None) {
            Py_DECREF(command);
            return out;
        }
        if (PyList_GET_SIZE(command) == 0) {  /* an empty array or blank line: Redis skips it */
            Py_DECREF(command);
            continue;
        }
        int failed = PyList_Append(out, command);
        Py_DECREF(command);
        if (failed) {
            Py_DECREF(out);
            return NULL;
        }
    }
}

static PyObject *
Parser_put_back(Parser *self, PyObject *commands)
{
    if (!PyList_Check(commands)) {
        PyErr_SetString(PyExc_TypeError, "put_back takes a list");
        return NULL;
    }
    Py_ssize_t n = PyList_GET_SIZE(commands);
    if (n == 0)
        Py_RETURN_NONE;
    PyObject *ready = PyList_GetSlice(commands, 0, n);
    if (ready == NULL)
        return NULL;
    if (self->ready != NULL) {  /* requests handed back earlier come after these */
        PyObject *rest = PyList_GetSlice(self->ready, self->ready_next, PyList_GET_SIZE(self->ready));
        if (rest == NULL || PyList_SetSlice(ready, n, n, rest) < 0) {
            Py_XDECREF(rest);
            Py_DECREF(ready);
            return NULL;
        }
        Py_DECREF(rest);
    }
    Py_XSETREF(self->ready, ready);
    self->ready_next = 0;
    Py_RETURN_NONE;
}

static PyObject *
Parser_get_buffered(Parser *self, void *Py_UNUSED(closure))
{
    return PyLong_FromSsize_t(self->len - self->pos);
}

static PyObject *
Parser_get_at_boundary(Parser *self, void *Py_UNUSED(closure))
{
    return PyBool_FromLong(self->left == 0);
}

static PyObject *
Parser_get_authenticated(Parser *self, void *Py_UNUSED(closure))
{
    return PyBool_FromLong(self->authenticated);
}

static int
Parser_set_authenticated(Parser *self, PyObject *value, void *Py_UNUSED(closure))
{
    if (value == NULL) {
        PyErr_SetString(PyExc_AttributeError, "cannot delete authenticated");
        return -1;
    }
    int truth = PyObject_IsTrue(value);
    if (truth < 0)
        return -1;
    self->authenticated = truth;
    return 0;
}

static PyMethodDef Parser_methods[] = {
    {"feed", (PyCFunction)Parser_feed, METH_O,
     "Add received bytes; raises QueryBufferOverflow when the unparsed bytes pass max_buffer."},
    {"next_command", (PyCFunction)Parser_next_command, METH_NOARGS,
     "The next complete request (possibly empty: skip it), or None; raises RespProtocolError."},
    {"take_ready", (PyCFunction)Parser_take_ready, METH_NOARGS,
     "Every complete non-empty request at once; raises RespProtocolError only when none comes before it."},
    {"put_back", (PyCFunction)Parser_put_back, METH_O,
     "Return requests taken with take_ready and not run, to be returned first."},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef Parser_members[] = {
    {"max_buffer", T_PYSSIZET, offsetof(Parser, max_buffer), 0, "Most unparsed bytes held."},
    {NULL, 0, 0, 0, NULL},
};

static PyGetSetDef Parser_getset[] = {
    {"buffered", (getter)Parser_get_buffered, NULL, "Bytes received and not yet returned.", NULL},
    {"at_boundary", (getter)Parser_get_at_boundary, NULL, "True between requests.", NULL},
    {"authenticated", (getter)Parser_get_authenticated, (setter)Parser_set_authenticated,
     "False while a password is required and not given (the stricter limits apply).", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject ParserType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "railcar.proto._resp.CRequestParser",
    .tp_doc = "RESP request parser in C, with RequestParser's behaviour.",
    .tp_basicsize = sizeof(Parser),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Parser_init,
    .tp_dealloc = (destructor)Parser_dealloc,
    .tp_traverse = (traverseproc)Parser_traverse,
    .tp_clear = (inquiry)Parser_clear,
    .tp_methods = Parser_methods,
    .tp_members = Parser_members,
    .tp_getset = Parser_getset,
};

static PyObject *
configure(PyObject *Py_UNUSED(module), PyObject *args)
{
    PyObject *protocol, *overflow, *split;
    if (!PyArg_ParseTuple(args, "OOO", &protocol, &overflow, &split))
        return NULL;
    Py_INCREF(protocol);
    Py_INCREF(overflow);
    Py_INCREF(split);
    Py_XSETREF(ProtocolErrorType, protocol);
    Py_XSETREF(OverflowErrorType, overflow);
    Py_XSETREF(SplitInline, split);
    Py_RETURN_NONE;
}

static PyMethodDef module_methods[] = {
    {"configure", configure, METH_VARARGS,
     "Hand over RespProtocolError, QueryBufferOverflow and split_inline (once, from resp.py)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "railcar.proto._resp", "RESP request parser in C.", -1, module_methods,
};

PyMODINIT_FUNC
PyInit__resp(void)
{
    if (PyType_Ready(&ParserType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    Py_INCREF(&ParserType);
    if (PyModule_AddObject(m, "CRequestParser", (PyObject *)&ParserType) < 0) {
        Py_DECREF(&ParserType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
