/* railcar.proto._http1: the HTTP/1.1 server connection's input, with llhttp bound directly.

The pure-Python twin is ``ServerConnection`` in http1.py, which drives the same llhttp
(the copy httptools 0.9 carries, vendored in llhttp/) through httptools: one Python call
per request line piece, header line and head.  This binding collects a request's head in
C and builds its ``Request`` without a Python call when the head is common (the rule of
http1.py's ``on_headers_complete``: HTTP/1.1, keep-alive, origin-form target, one Host
already found valid, no other field ``check_head`` looks at).  Any other head goes to the
Python ``checked_head``, so every rule beyond llhttp's is written once, in Python.  Events,
limits, reasons and statuses are the twin's; a differential test holds them equal.
*/
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <strings.h>

/* llhttp's sources are compiled beside this file (MIT licence in llhttp/LICENSE-MIT). */
#include "llhttp/llhttp.h"

/* What http1.py hands over once (configure). */
static PyTypeObject *request_type;
static PyObject *body_type, *rejected_type, *end_event, *valid_hosts, *checked_head, *bad_request;
static PyObject *version_11, *empty_bytes;
static PyObject *s_method, *s_target, *s_version, *s_headers, *s_body, *s_keep_alive, *s_client,
    *s_server, *s_expects_continue, *s_status, *s_reason;

/* Method names by llhttp's number, made on first use (str for Request, bytes for checked_head). */
#define METHODS 64
static PyObject *method_str[METHODS], *method_bytes[METHODS];

typedef struct {
    PyObject_HEAD
    llhttp_t parser;
    PyObject *events; /* the list being filled, during receive only */
    PyObject *client, *server;
    Py_ssize_t max_head, max_headers, max_target, max_body;
    /* The head being collected. */
    PyObject *target, *field, *value, *headers;
    PyObject *host;     /* the last Host value (held by headers): the Host when hosts == 1 */
    int hosts;          /* Host lines so far */
    int special;        /* a HEAD_FIELDS field other than Host (a common head has none) */
    Py_ssize_t fields_size; /* name + value + 3 over the header lines (see http1.py) */
    Py_ssize_t raw_head, body_size;
    char reading, in_request, in_head, keep_alive, measure, continuing_head;
    char busy; /* inside receive: Python code it runs could call it again (another thread) */
    int fail_status; /* a broken rule, answered with its status */
    PyObject *fail_reason;
} Connection;

static llhttp_settings_t settings;

#define SELF(p) ((Connection *)(p)->data)

static int fail(Connection *self, int status, PyObject *reason) {
    /* Kept for receive, which answers it: llhttp only learns that a callback failed. */
    if (reason == NULL)
        return HPE_USER; /* a Python error, raised from receive */
    self->fail_status = status;
    Py_XSETREF(self->fail_reason, reason);
    return HPE_USER;
}

static int append_piece(PyObject **piece, const char *at, size_t length) {
    if (*piece == NULL) {
        *piece = PyBytes_FromStringAndSize(at, (Py_ssize_t)length);
        return *piece == NULL ? -1 : 0;
    }
    PyObject *more = PyBytes_FromStringAndSize(at, (Py_ssize_t)length);
    if (more == NULL)
        return -1;
    PyBytes_ConcatAndDel(piece, more); /* a piece split across reads: rare */
    return *piece == NULL ? -1 : 0;
}

static void forget_head(Connection *self) {
    Py_CLEAR(self->target);
    Py_CLEAR(self->field);
    Py_CLEAR(self->value);
    Py_CLEAR(self->headers);
    self->host = NULL;
    self->hosts = 0;
    self->special = 0;
    self->fields_size = 0;
}

static int on_message_begin(llhttp_t *p) {
    Connection *self = SELF(p);
    if (!self->reading) /* llhttp kept alive what checked_head closed: the rest is not read */
        return HPE_USER;
    self->in_request = 1;
    self->in_head = 1;
    return 0;
}

static int on_url(llhttp_t *p, const char *at, size_t length) {
    Connection *self = SELF(p);
    if (append_piece(&self->target, at, length) < 0)
        return HPE_USER;
    if (PyBytes_GET_SIZE(self->target) > self->max_target)
        return fail(self, 414, PyUnicode_FromFormat("request target over %zd bytes", self->max_target));
    return 0;
}

/* The header-count limit, checked where httptools hands the last line over: when the next
   line begins, at the head's end and at a chunk's end (trailers), so both refuse alike. */
static int check_count(Connection *self) {
    if (self->headers != NULL && PyList_GET_SIZE(self->headers) > self->max_headers)
        return fail(self, 431, PyUnicode_FromFormat("more than %zd header lines", self->max_headers));
    return 0;
}

static int on_header_field(llhttp_t *p, const char *at, size_t length) {
    Connection *self = SELF(p);
    if (self->field == NULL && check_count(self))
        return HPE_USER;
    return append_piece(&self->field, at, length) < 0 ? HPE_USER : 0;
}

static int on_chunk_complete(llhttp_t *p) {
    return check_count(SELF(p));
}

static int on_header_value(llhttp_t *p, const char *at, size_t length) {
    return append_piece(&SELF(p)->value, at, length) < 0 ? HPE_USER : 0;
}

/* Which of http1_checks.HEAD_FIELDS a name is: 1 for Host, 2 for another, 0 for none. */
static int head_field(PyObject *name) {
    Py_ssize_t size = PyBytes_GET_SIZE(name);
    const char *s = PyBytes_AS_STRING(name);
    switch (size) {
    case 4: return strncasecmp(s, "host", 4) == 0 ? 1 : 0;
    case 6: return strncasecmp(s, "expect", 6) == 0 ? 2 : 0;
    case 7: return strncasecmp(s, "upgrade", 7) == 0 ? 2 : 0;
    case 10: return strncasecmp(s, "connection", 10) == 0 ? 2 : 0;
    case 14: return strncasecmp(s, "content-length", 14) == 0 ? 2 : 0;
    case 16: return strncasecmp(s, "proxy-connection", 16) == 0 ? 2 : 0;
    case 17: return strncasecmp(s, "transfer-encoding", 17) == 0 ? 2 : 0;
    default: return 0;
    }
}

static int on_header_value_complete(llhttp_t *p) {
    Connection *self = SELF(p);
    PyObject *name = self->field ? self->field : Py_NewRef(empty_bytes);
    PyObject *value = self->value ? self->value : Py_NewRef(empty_bytes);
    self->field = self->value = NULL;
    /* llhttp drops the whitespace before a value, not after it: neither is part of it (RFC 9112 5). */
    Py_ssize_t size = PyBytes_GET_SIZE(value);
    const char *text = PyBytes_AS_STRING(value);
    while (size > 0 && (text[size - 1] == ' ' || text[size - 1] == '\t'))
        size--;
    if (size < PyBytes_GET_SIZE(value)) {
        PyObject *trimmed = PyBytes_FromStringAndSize(text, size);
        Py_DECREF(value);
        if (trimmed == NULL) {
            Py_DECREF(name);
            return HPE_USER;
        }
        value = trimmed;
    }
    PyObject *line = PyTuple_New(2);
    if (line == NULL) {
        Py_DECREF(name);
        Py_DECREF(value);
        return HPE_USER;
    }
    PyTuple_SET_ITEM(line, 0, name);
    PyTuple_SET_ITEM(line, 1, value);
    if (self->headers == NULL && (self->headers = PyList_New(0)) == NULL) {
        Py_DECREF(line);
        return HPE_USER;
    }
    int appended = PyList_Append(self->headers, line);
    Py_DECREF(line);
    if (appended < 0)
        return HPE_USER;
    self->fields_size += PyBytes_GET_SIZE(name) + PyBytes_GET_SIZE(value) + 3;
    switch (head_field(name)) {
    case 1:
        self->host = value;
        self->hosts++;
        break;
    case 2:
        self->special = 1;
        break;
    }
    return 0;
}

static PyObject *method_name(uint8_t method, PyObject **cache, int as_str) {
    if (method >= METHODS) {
        PyErr_Format(PyExc_SystemError, "llhttp method number %d past the table", method);
        return NULL;
    }
    PyObject *name = cache[method];
    if (name == NULL) {
        const char *text = llhttp_method_name((llhttp_method_t)method);
        name = as_str ? PyUnicode_InternFromString(text) : PyBytes_FromString(text);
        cache[method] = name;
    }
    return name;
}

/* checked_head's verdict on an uncommon head: 0, or -1 with the failure kept (or a Python error). */
static int check_uncommon(Connection *self, PyObject *method, PyObject *target, PyObject *version,
                          PyObject *headers, int *keep_alive, int *expects_continue) {
    PyObject *verdict = PyObject_CallFunction(checked_head, "OOOOOn", method, target, version, headers,
                                              *keep_alive ? Py_True : Py_False, self->max_body);
    if (verdict == NULL) {
        if (!PyErr_ExceptionMatches(bad_request)) {
            /* As the twin, where httptools turns a callback's exception into its own error:
               llhttp's reason, 400.  Anything not an Exception (KeyboardInterrupt) goes up. */
            if (PyErr_ExceptionMatches(PyExc_Exception))
                PyErr_Clear();
            return -1;
        }
        PyObject *kind, *exc, *traceback;
        PyErr_Fetch(&kind, &exc, &traceback);
        PyErr_NormalizeException(&kind, &exc, &traceback);
        Py_XDECREF(kind);
        Py_XDECREF(traceback);
        PyObject *status = PyObject_GetAttr(exc, s_status);
        PyObject *reason = PyObject_GetAttr(exc, s_reason);
        Py_DECREF(exc);
        int code = status ? (int)PyLong_AsLong(status) : -1;
        Py_XDECREF(status);
        if (reason == NULL || PyErr_Occurred()) {
            Py_XDECREF(reason);
            return -1;
        }
        fail(self, code, reason);
        return -1;
    }
    int ok = PyArg_ParseTuple(verdict, "pp", keep_alive, expects_continue);
    Py_DECREF(verdict);
    return ok ? 0 : -1;
}

static int set_fields(PyObject *request, PyObject *names[], PyObject *values[], int count) {
    for (int i = 0; i < count; i++)
        if (PyObject_GenericSetAttr(request, names[i], values[i]) < 0)
            return -1;
    return 0;
}

static int on_headers_complete(llhttp_t *p) {
    Connection *self = SELF(p);
    PyObject *method = method_name(p->method, method_bytes, 0);
    PyObject *method_text = method_name(p->method, method_str, 1);
    if (method == NULL || method_text == NULL || check_count(self))
        return HPE_USER;
    if (self->target == NULL)
        self->target = Py_NewRef(empty_bytes);
    if (self->headers == NULL && (self->headers = PyList_New(0)) == NULL)
        return HPE_USER;
    PyObject *target = self->target;
    if (self->measure) {
        /* The fewest bytes the head can have taken: see http1.py's on_headers_complete. */
        Py_ssize_t size =
            self->fields_size + PyBytes_GET_SIZE(method) + PyBytes_GET_SIZE(target) + 14;
        if (size > self->max_head)
            return fail(self, 431, PyUnicode_FromFormat("request head over %zd bytes", self->max_head));
    }
    int keep_alive = llhttp_should_keep_alive(p);
    int expects_continue = 0;
    PyObject *version;
    int common = keep_alive && PyBytes_GET_SIZE(target) > 0 && PyBytes_AS_STRING(target)[0] == '/' &&
                 !self->special && self->hosts == 1 && p->http_major == 1 && p->http_minor == 1;
    if (common) {
        int known = PySet_Contains(valid_hosts, self->host);
        if (known < 0)
            return HPE_USER;
        common = known;
    }
    if (common) {
        if (p->method == HTTP_CONNECT)
            return fail(self, 501, PyUnicode_FromString("CONNECT is not supported"));
        version = Py_NewRef(version_11);
    } else {
        version = PyUnicode_FromFormat("%d.%d", p->http_major, p->http_minor);
        if (version == NULL)
            return HPE_USER;
        if (check_uncommon(self, method, target, version, self->headers, &keep_alive, &expects_continue) < 0) {
            Py_DECREF(version);
            return HPE_USER;
        }
        self->body_size = 0;
    }
    if (self->continuing_head) {
        self->continuing_head = 0;
        self->raw_head = 0;
    }
    self->in_head = 0;
    self->keep_alive = (char)keep_alive;
    PyObject *request = request_type->tp_alloc(request_type, 0);
    if (request == NULL) {
        Py_DECREF(version);
        return HPE_USER;
    }
    PyObject *names[] = {s_method, s_target, s_version, s_headers, s_body,
                         s_keep_alive, s_client, s_server, s_expects_continue};
    PyObject *values[] = {method_text, target, version, self->headers, empty_bytes,
                          keep_alive ? Py_True : Py_False, self->client ? self->client : Py_None,
                          self->server ? self->server : Py_None,
                          expects_continue ? Py_True : Py_False};
    int failed = set_fields(request, names, values, 9) < 0 || PyList_Append(self->events, request) < 0;
    Py_DECREF(request);
    Py_DECREF(version);
    forget_head(self);
    if (failed)
        return HPE_USER;
    /* As httptools: an upgrade request has no body for llhttp, which then pauses. */
    return p->upgrade ? 1 : 0;
}

static int on_body(llhttp_t *p, const char *at, size_t length) {
    Connection *self = SELF(p);
    self->body_size += (Py_ssize_t)length;
    if (self->body_size > self->max_body)
        return fail(self, 413, PyUnicode_FromFormat("request body over %zd bytes", self->max_body));
    PyObject *data = PyBytes_FromStringAndSize(at, (Py_ssize_t)length);
    if (data == NULL)
        return HPE_USER;
    PyObject *event = PyObject_CallOneArg(body_type, data);
    Py_DECREF(data);
    if (event == NULL)
        return HPE_USER;
    int appended = PyList_Append(self->events, event);
    Py_DECREF(event);
    return appended < 0 ? HPE_USER : 0;
}

static int on_message_complete(llhttp_t *p) {
    Connection *self = SELF(p);
    /* Trailer fields measured as a head is (see http1.py's on_message_complete). */
    if (self->headers != NULL && self->measure && self->fields_size > self->max_head)
        return fail(self, 431, PyUnicode_FromFormat("trailer fields over %zd bytes", self->max_head));
    if (PyList_Append(self->events, end_event) < 0)
        return HPE_USER;
    self->in_request = 0;
    if (self->headers != NULL) {
        /* A chunked body's trailer fields: dropped (see http1.py). */
        forget_head(self);
        self->continuing_head = 0;
        self->raw_head = 0;
    }
    if (!self->keep_alive)
        self->reading = 0;
    return 0;
}

static int reject(Connection *self, int status, PyObject *reason) {
    self->reading = 0;
    if (reason == NULL)
        return -1;
    PyObject *event = PyObject_CallFunction(rejected_type, "iO", status, reason);
    Py_DECREF(reason);
    if (event == NULL)
        return -1;
    int appended = PyList_Append(self->events, event);
    Py_DECREF(event);
    return appended;
}

static int count_partial_head(Connection *self, Py_ssize_t size) {
    /* As http1.py's _count_partial_head: every read after the one a head began in counts whole. */
    if (!self->reading)
        return 0;
    if (!self->continuing_head) {
        self->continuing_head = 1;
        return 0;
    }
    self->raw_head += size;
    if (self->raw_head > self->max_head)
        return reject(self, 431, PyUnicode_FromFormat("request head over %zd bytes", self->max_head));
    return 0;
}

static PyObject *Connection_receive(Connection *self, PyObject *data) {
    if (self->busy) {
        PyErr_SetString(PyExc_RuntimeError, "receive() called while it runs (one thread at a time)");
        return NULL;
    }
    if (!self->reading)
        return PyList_New(0);
    Py_buffer view;
    if (PyObject_GetBuffer(data, &view, PyBUF_SIMPLE) < 0)
        return NULL;
    PyObject *events = self->events = PyList_New(0);
    if (events == NULL) {
        PyBuffer_Release(&view);
        return NULL;
    }
    self->busy = 1;
    self->measure = self->continuing_head || view.len > self->max_head;
    llhttp_errno_t err = llhttp_execute(&self->parser, view.buf, (size_t)view.len);
    PyBuffer_Release(&view);
    int failed = 0;
    if (err == HPE_PAUSED_UPGRADE) {
        /* The upgrade request is served as plain HTTP and is the connection's last (http1.py). */
        llhttp_resume_after_upgrade(&self->parser);
    } else if (err != HPE_OK) {
        if (PyErr_Occurred()) {
            failed = 1;
        } else if (self->fail_status) { /* kept: llhttp repeats its error if reading is set again */
            failed = reject(self, self->fail_status, Py_NewRef(self->fail_reason)) < 0;
        } else if (self->reading) { /* after a closing request llhttp refuses the rest: ignored */
            const char *why = llhttp_get_error_reason(&self->parser);
            if (why == NULL || *why == '\0')
                why = "malformed request";
            failed = reject(self, 400, PyUnicode_DecodeLatin1(why, (Py_ssize_t)strlen(why), NULL)) < 0;
        }
    }
    if (!failed && (self->in_head || self->headers != NULL))
        failed = count_partial_head(self, view.len) < 0;
    self->events = NULL;
    self->busy = 0;
    if (failed) {
        self->reading = 0;
        Py_DECREF(events);
        return NULL;
    }
    return events;
}

static int Connection_init(Connection *self, PyObject *args, PyObject *kwargs) {
    static char *keywords[] = {"max_head", "max_headers", "max_target", "max_body", "client", "server", NULL};
    PyObject *client = Py_None, *server = Py_None;
    if (self->busy) {
        PyErr_SetString(PyExc_RuntimeError, "__init__() called while receive() runs");
        return -1;
    }
    if (request_type == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "railcar.proto._http1.configure() was not called");
        return -1;
    }
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "nnnn|OO", keywords, &self->max_head, &self->max_headers,
                                     &self->max_target, &self->max_body, &client, &server))
        return -1;
    Py_XSETREF(self->client, Py_NewRef(client));
    Py_XSETREF(self->server, Py_NewRef(server));
    llhttp_init(&self->parser, HTTP_REQUEST, &settings);
    self->parser.data = self;
    forget_head(self);
    self->reading = 1;
    self->in_request = self->in_head = self->continuing_head = 0;
    self->keep_alive = 1;
    self->raw_head = self->body_size = 0;
    self->fail_status = 0;
    Py_CLEAR(self->fail_reason);
    return 0;
}

static int Connection_traverse(Connection *self, visitproc visit, void *arg) {
    /* client and server are whatever the caller set: they may refer back to the connection. */
    Py_VISIT(self->client);
    Py_VISIT(self->server);
    Py_VISIT(self->headers);
    return 0;
}

static int Connection_clear(Connection *self) {
    forget_head(self);
    Py_CLEAR(self->client);
    Py_CLEAR(self->server);
    Py_CLEAR(self->fail_reason);
    return 0;
}

static void Connection_dealloc(Connection *self) {
    PyObject_GC_UnTrack(self);
    Connection_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMethodDef Connection_methods[] = {
    {"receive", (PyCFunction)Connection_receive, METH_O,
     "Parse data and return the events it completed; raises RuntimeError if called while it runs, MemoryError."},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef Connection_members[] = {
    {"reading", T_BOOL, offsetof(Connection, reading), 0, "False once the input has ended."},
    {"in_request", T_BOOL, offsetof(Connection, in_request), READONLY, "A request has begun and not ended."},
    {"client", T_OBJECT, offsetof(Connection, client), 0, "The client's address, set on every Request."},
    {"server", T_OBJECT, offsetof(Connection, server), 0, "The server's address, set on every Request."},
    {NULL, 0, 0, 0, NULL},
};

static PyTypeObject ConnectionType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "railcar.proto._http1.Connection",
    .tp_basicsize = sizeof(Connection),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_traverse = (traverseproc)Connection_traverse,
    .tp_clear = (inquiry)Connection_clear,
    .tp_free = PyObject_GC_Del,
    .tp_doc = "One server-side HTTP/1.1 connection's input (see http1.ServerConnection, its twin).",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Connection_init,
    .tp_dealloc = (destructor)Connection_dealloc,
    .tp_methods = Connection_methods,
    .tp_members = Connection_members,
};

static PyObject *configure(PyObject *module, PyObject *args) {
    PyObject *request, *body, *rejected, *end, *hosts, *check, *bad;
    if (!PyArg_ParseTuple(args, "O!OOOO!OO", &PyType_Type, &request, &body, &rejected, &end, &PySet_Type,
                          &hosts, &check, &bad))
        return NULL;
    Py_XSETREF(request_type, (PyTypeObject *)Py_NewRef(request));
    Py_XSETREF(body_type, Py_NewRef(body));
    Py_XSETREF(rejected_type, Py_NewRef(rejected));
    Py_XSETREF(end_event, Py_NewRef(end));
    Py_XSETREF(valid_hosts, Py_NewRef(hosts));
    Py_XSETREF(checked_head, Py_NewRef(check));
    Py_XSETREF(bad_request, Py_NewRef(bad));
    Py_RETURN_NONE;
}

static PyMethodDef module_methods[] = {
    {"configure", configure, METH_VARARGS,
     "Hand over Request, Body, Rejected, END, valid_hosts, checked_head and BadRequest (once, from http1.py)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "railcar.proto._http1", "llhttp bound for railcar's HTTP/1.1 server input.", -1,
    module_methods,
};

PyMODINIT_FUNC PyInit__http1(void) {
    llhttp_settings_init(&settings);
    settings.on_message_begin = on_message_begin;
    settings.on_url = on_url;
    settings.on_header_field = on_header_field;
    settings.on_header_value = on_header_value;
    settings.on_header_value_complete = on_header_value_complete;
    settings.on_headers_complete = on_headers_complete;
    settings.on_body = on_body;
    settings.on_message_complete = on_message_complete;
    settings.on_chunk_complete = on_chunk_complete;
    if ((version_11 = PyUnicode_InternFromString("1.1")) == NULL ||
        (empty_bytes = PyBytes_FromStringAndSize("", 0)) == NULL ||
        (s_method = PyUnicode_InternFromString("method")) == NULL ||
        (s_target = PyUnicode_InternFromString("target")) == NULL ||
        (s_version = PyUnicode_InternFromString("version")) == NULL ||
        (s_headers = PyUnicode_InternFromString("headers")) == NULL ||
        (s_body = PyUnicode_InternFromString("body")) == NULL ||
        (s_keep_alive = PyUnicode_InternFromString("keep_alive")) == NULL ||
        (s_client = PyUnicode_InternFromString("client")) == NULL ||
        (s_server = PyUnicode_InternFromString("server")) == NULL ||
        (s_expects_continue = PyUnicode_InternFromString("expects_continue")) == NULL ||
        (s_status = PyUnicode_InternFromString("status")) == NULL ||
        (s_reason = PyUnicode_InternFromString("reason")) == NULL)
        return NULL;
    if (PyType_Ready(&ConnectionType) < 0)
        return NULL;
    PyObject *module = PyModule_Create(&module_def);
    if (module == NULL)
        return NULL;
    if (PyModule_AddObjectRef(module, "Connection", (PyObject *)&ConnectionType) < 0) {
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
