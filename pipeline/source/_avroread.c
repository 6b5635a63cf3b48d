/*
 * The native Avro binary reader of pipeline.source.avro_reader.
 *
 * _avroread.Reader(nodes, root) takes the flat node table that
 * avro_reader.native_table() walks out of a parsed schema, checks it and
 * turns it into C structs once; the reader is then called as
 * reader(buf, pos) -> (value, position after the datum), and returns the
 * values the generated Python reader and fastavro return.
 *
 * The node table is a tuple of nodes, each a tuple whose first item is its
 * kind; children are indexes into the table (so recursive records work):
 *
 *   ("null",) ("boolean",) ("long",) ("float",) ("double",) ("string",)
 *   ("bytes",)
 *   ("fixed", size)               size >= 0
 *   ("enum", symbols)             a tuple of the symbols
 *   ("record", keys, fields)      a tuple of str keys, a tuple of indexes
 *   ("union", branches)           a tuple of indexes
 *   ("array", items, empty)       empty: whether an item can take no bytes
 *   ("map", keys, values, empty)  keys: the key node (a "string" node)
 *
 * The bytes are untrusted (Kafka): every read is checked against the end
 * of the buffer, lengths and counts are compared with the bytes left
 * before they are used, and records, arrays and maps nest at most
 * MAX_DEPTH deep (a recursive schema's datum cannot overflow the C stack;
 * a union is a loop, each turn of which reads a byte at least). A datum
 * that ends early raises EOFError; a bad union branch, enum index, length,
 * count or over-long varint raises ValueError, with the generated reader's
 * messages. As there, a block count of items that can take no bytes (null,
 * an empty fixed or record) is not bounded by the bytes left.
 *
 * The Reader holds the table (so the keys and symbols the nodes borrow from
 * it) and a dict per record node that each read copies. It is immutable and
 * its table of tuples was made before it: a reference cycle through it
 * passes through a mutable object (an enum symbol's), whose tp_clear breaks
 * it, so it only traverses (no tp_clear).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stddef.h>
#include <stdint.h>

/* Records, arrays and maps nested deeper than this raise ValueError. */
#define MAX_DEPTH 500

enum kind {
    K_NULL,
    K_BOOLEAN,
    K_LONG,
    K_FLOAT,
    K_DOUBLE,
    K_STRING,
    K_BYTES,
    K_FIXED,
    K_ENUM,
    K_RECORD,
    K_UNION,
    K_ARRAY,
    K_MAP,
};

static const struct {
    const char *name;
    enum kind kind;
    Py_ssize_t arity; /* the items of its node tuple, the kind included */
} KINDS[] = {
    {"null", K_NULL, 1},     {"boolean", K_BOOLEAN, 1}, {"long", K_LONG, 1},
    {"float", K_FLOAT, 1},   {"double", K_DOUBLE, 1},   {"string", K_STRING, 1},
    {"bytes", K_BYTES, 1},   {"fixed", K_FIXED, 2},     {"enum", K_ENUM, 2},
    {"record", K_RECORD, 3}, {"union", K_UNION, 2},     {"array", K_ARRAY, 3},
    {"map", K_MAP, 4},
};

typedef struct node {
    enum kind kind;
    int empty;       /* array, map: an item can take no bytes */
    Py_ssize_t size; /* fixed: bytes; enum: symbols; record: fields;
                        union: branches; array: 1; map: 2 */
    struct node **children; /* record: the fields' nodes; union: the
                               branches; array: {items}; map: {keys, values} */
    PyObject *objs; /* borrowed from the table: record: its keys;
                       enum: its symbols (tuples) */
    PyObject *blank; /* record: {key: None for each key}, owned: copying it
                        gives a dict of the right size at once */
} node;

typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    PyObject *table; /* the node table: holds every node's objs */
    node *nodes;
    Py_ssize_t count;
    node *root;
} Reader;

/* Where a read is: 0 <= pos <= len at every step. */
typedef struct {
    const unsigned char *buf;
    Py_ssize_t len;
    Py_ssize_t pos;
    int depth;
} cursor;

static PyObject *read_value(cursor *c, const node *nd);

/* --- errors ------------------------------------------------------------ */

static PyObject *
ends_early(const cursor *c, long long need)
{
    PyErr_Format(PyExc_EOFError,
                 "the datum ends early: %lld bytes needed at byte %zd, "
                 "%zd left",
                 need, c->pos, c->len - c->pos);
    return NULL;
}

static int
varint_ends_early(const cursor *c)
{
    PyErr_Format(PyExc_EOFError,
                 "the datum ends early: a varint at byte %zd runs past its "
                 "end (%zd bytes)",
                 c->pos, c->len);
    return -1;
}

/* --- varints ----------------------------------------------------------- */

static inline int64_t
unzigzag(uint64_t n)
{
    return (int64_t)(n >> 1) ^ -(int64_t)(n & 1);
}

/* An unsigned varint of up to 10 bytes (zigzag not undone). */
static int
read_varint_slow(cursor *c, uint64_t *out)
{
    const unsigned char *p = c->buf + c->pos;
    Py_ssize_t left = c->len - c->pos;
    uint64_t n = 0;
    int i;

    for (i = 0; i < 9; i++) {
        if (i >= left) {
            return varint_ends_early(c);
        }
        n |= (uint64_t)(p[i] & 0x7F) << (7 * i);
        if (p[i] < 0x80) {
            c->pos += i + 1;
            *out = n;
            return 0;
        }
    }
    if (left < 10) {
        return varint_ends_early(c);
    }
    if (p[9] > 1) {
        PyErr_SetString(PyExc_ValueError, "varint beyond 64 bits");
        return -1;
    }
    *out = n | (uint64_t)p[9] << 63;
    c->pos += 10;
    return 0;
}

static inline int
read_varint(cursor *c, uint64_t *out)
{
    if (c->pos < c->len && c->buf[c->pos] < 0x80) {
        *out = c->buf[c->pos];
        c->pos++;
        return 0;
    }
    return read_varint_slow(c, out);
}

static inline int
read_long(cursor *c, int64_t *out)
{
    uint64_t n;

    if (read_varint(c, &n) < 0) {
        return -1;
    }
    *out = unzigzag(n);
    return 0;
}

/* The length of a string or bytes, checked against the bytes left. */
static int
read_length(cursor *c, Py_ssize_t *out)
{
    int64_t n;

    if (read_long(c, &n) < 0) {
        return -1;
    }
    if (n < 0) {
        PyErr_SetString(PyExc_ValueError, "negative length");
        return -1;
    }
    if ((uint64_t)n > (uint64_t)(c->len - c->pos)) {
        ends_early(c, (long long)n);
        return -1;
    }
    *out = (Py_ssize_t)n;
    return 0;
}

/* The item count of an array's or a map's next block, 0 at the end. A
 * negative count is followed by the block's size in bytes (not needed). A
 * count larger than the bytes left is corrupt unless an item can be empty. */
static int
read_count(cursor *c, int empty, uint64_t *out)
{
    int64_t n, size;
    uint64_t count;

    if (read_long(c, &n) < 0) {
        return -1;
    }
    if (n < 0) {
        count = (uint64_t)0 - (uint64_t)n; /* -n, 2**63 for INT64_MIN */
        if (read_long(c, &size) < 0) {
            return -1;
        }
    }
    else {
        count = (uint64_t)n;
    }
    if (!empty && count > (uint64_t)(c->len - c->pos)) {
        PyErr_Format(PyExc_ValueError,
                     "block of %llu items is longer than the datum",
                     (unsigned long long)count);
        return -1;
    }
    *out = count;
    return 0;
}

/* --- containers -------------------------------------------------------- */

static int
enter(cursor *c)
{
    if (c->depth >= MAX_DEPTH) {
        PyErr_Format(PyExc_ValueError,
                     "the datum nests records, arrays and maps deeper than "
                     "%d",
                     MAX_DEPTH);
        return -1;
    }
    c->depth++;
    return 0;
}

static PyObject *
read_record(cursor *c, const node *nd)
{
    PyObject *record, *value;
    Py_ssize_t i;
    int failed;

    if (enter(c) < 0) {
        return NULL;
    }
    record = PyDict_Copy(nd->blank);
    if (record == NULL) {
        return NULL;
    }
    for (i = 0; i < nd->size; i++) {
        value = read_value(c, nd->children[i]);
        if (value == NULL) {
            Py_DECREF(record);
            return NULL;
        }
        failed = PyDict_SetItem(record, PyTuple_GET_ITEM(nd->objs, i), value);
        Py_DECREF(value);
        if (failed) {
            Py_DECREF(record);
            return NULL;
        }
    }
    c->depth--;
    return record;
}

static PyObject *
read_array(cursor *c, const node *nd)
{
    PyObject *list, *item;
    uint64_t count, k;
    int failed;

    if (enter(c) < 0) {
        return NULL;
    }
    list = PyList_New(0);
    if (list == NULL) {
        return NULL;
    }
    for (;;) {
        if (read_count(c, nd->empty, &count) < 0) {
            goto fail;
        }
        if (count == 0) {
            break;
        }
        for (k = 0; k < count; k++) {
            item = read_value(c, nd->children[0]);
            if (item == NULL) {
                goto fail;
            }
            failed = PyList_Append(list, item);
            Py_DECREF(item);
            if (failed) {
                goto fail;
            }
        }
    }
    c->depth--;
    return list;
fail:
    Py_DECREF(list);
    return NULL;
}

static PyObject *
read_map(cursor *c, const node *nd)
{
    PyObject *map, *key, *value;
    uint64_t count, k;
    int failed;

    if (enter(c) < 0) {
        return NULL;
    }
    map = PyDict_New();
    if (map == NULL) {
        return NULL;
    }
    for (;;) {
        if (read_count(c, nd->empty, &count) < 0) {
            goto fail;
        }
        if (count == 0) {
            break;
        }
        for (k = 0; k < count; k++) {
            key = read_value(c, nd->children[0]);
            if (key == NULL) {
                goto fail;
            }
            value = read_value(c, nd->children[1]);
            if (value == NULL) {
                Py_DECREF(key);
                goto fail;
            }
            failed = PyDict_SetItem(map, key, value);
            Py_DECREF(key);
            Py_DECREF(value);
            if (failed) {
                goto fail;
            }
        }
    }
    c->depth--;
    return map;
fail:
    Py_DECREF(map);
    return NULL;
}

/* --- one value --------------------------------------------------------- */

static PyObject *
read_value(cursor *c, const node *nd)
{
    int64_t v;
    uint64_t raw;
    Py_ssize_t n;
    double d;
    const char *at;

    for (;;) { /* a union reads its branch index, then its branch */
        switch (nd->kind) {
        case K_NULL:
            Py_RETURN_NONE;
        case K_BOOLEAN:
            if (c->pos >= c->len) {
                return ends_early(c, 1);
            }
            return PyBool_FromLong(c->buf[c->pos++] != 0);
        case K_LONG:
            if (read_long(c, &v) < 0) {
                return NULL;
            }
            return PyLong_FromLongLong(v);
        case K_FLOAT:
        case K_DOUBLE:
            n = nd->kind == K_FLOAT ? 4 : 8;
            if (c->len - c->pos < n) {
                return ends_early(c, n);
            }
            at = (const char *)c->buf + c->pos;
            d = n == 4 ? PyFloat_Unpack4(at, 1) : PyFloat_Unpack8(at, 1);
            if (d == -1.0 && PyErr_Occurred()) {
                return NULL;
            }
            c->pos += n;
            return PyFloat_FromDouble(d);
        case K_STRING:
            if (read_length(c, &n) < 0) {
                return NULL;
            }
            at = (const char *)c->buf + c->pos;
            c->pos += n;
            return PyUnicode_DecodeUTF8(at, n, NULL); /* strict */
        case K_BYTES:
            if (read_length(c, &n) < 0) {
                return NULL;
            }
            at = (const char *)c->buf + c->pos;
            c->pos += n;
            return PyBytes_FromStringAndSize(at, n);
        case K_FIXED:
            if (nd->size > c->len - c->pos) {
                return ends_early(c, nd->size);
            }
            at = (const char *)c->buf + c->pos;
            c->pos += nd->size;
            return PyBytes_FromStringAndSize(at, nd->size);
        case K_ENUM:
            if (read_long(c, &v) < 0) {
                return NULL;
            }
            if (v < 0 || v >= nd->size) {
                return PyErr_Format(PyExc_ValueError,
                                    "enum index %lld of %zd symbols",
                                    (long long)v, nd->size);
            }
            return Py_NewRef(PyTuple_GET_ITEM(nd->objs, (Py_ssize_t)v));
        case K_RECORD:
            return read_record(c, nd);
        case K_UNION:
            if (read_varint(c, &raw) < 0) {
                return NULL;
            }
            if ((raw & 1) || raw / 2 >= (uint64_t)nd->size) {
                return PyErr_Format(PyExc_ValueError,
                                    "union branch %lld of a %zd-branch union",
                                    (long long)unzigzag(raw), nd->size);
            }
            nd = nd->children[raw / 2];
            continue; /* each turn reads a byte at least: it ends */
        case K_ARRAY:
            return read_array(c, nd);
        case K_MAP:
            return read_map(c, nd);
        }
        PyErr_SetString(PyExc_SystemError, "_avroread: a node of no kind");
        return NULL;
    }
}

/* --- the Reader type --------------------------------------------------- */

static PyObject *
reader_call(PyObject *self, PyObject *const *args, size_t nargsf,
            PyObject *kwnames)
{
    Reader *reader = (Reader *)self;
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf), pos;
    Py_buffer view;
    int release = 0;
    static const unsigned char nothing[1] = {0};
    cursor c;
    PyObject *value, *end, *out;

    if (kwnames != NULL && PyTuple_GET_SIZE(kwnames) > 0) {
        PyErr_SetString(PyExc_TypeError,
                        "a Reader takes no keyword arguments");
        return NULL;
    }
    if (nargs != 2) {
        PyErr_Format(PyExc_TypeError,
                     "a Reader takes 2 arguments (buf, pos), %zd given",
                     nargs);
        return NULL;
    }
    if (reader->root == NULL) {
        PyErr_SetString(PyExc_ValueError, "the Reader is not initialised");
        return NULL;
    }
    pos = PyNumber_AsSsize_t(args[1], PyExc_OverflowError);
    if (pos == -1 && PyErr_Occurred()) {
        return NULL;
    }
    if (PyBytes_CheckExact(args[0])) {
        c.buf = (const unsigned char *)PyBytes_AS_STRING(args[0]);
        c.len = PyBytes_GET_SIZE(args[0]);
    }
    else {
        if (PyObject_GetBuffer(args[0], &view, PyBUF_SIMPLE) < 0) {
            return NULL;
        }
        release = 1;
        c.buf = view.buf != NULL ? (const unsigned char *)view.buf : nothing;
        c.len = view.len;
    }
    if (pos < 0 || pos > c.len) {
        if (release) {
            PyBuffer_Release(&view);
        }
        PyErr_Format(PyExc_IndexError,
                     "position %zd is outside the datum's %zd bytes", pos,
                     c.len);
        return NULL;
    }
    c.pos = pos;
    c.depth = 0;
    value = read_value(&c, reader->root);
    if (release) {
        PyBuffer_Release(&view);
    }
    if (value == NULL) {
        return NULL;
    }
    end = PyLong_FromSsize_t(c.pos);
    if (end == NULL) {
        Py_DECREF(value);
        return NULL;
    }
    out = PyTuple_New(2);
    if (out == NULL) {
        Py_DECREF(value);
        Py_DECREF(end);
        return NULL;
    }
    PyTuple_SET_ITEM(out, 0, value); /* steals */
    PyTuple_SET_ITEM(out, 1, end);
    return out;
}

/* The node at index `obj` of the table: an int in [0, count). `at` is the
 * node that refers to it, -1 for the root (for the messages). */
static node *
child(Reader *self, Py_ssize_t at, PyObject *obj)
{
    Py_ssize_t i;

    if (!PyLong_CheckExact(obj)) {
        if (at < 0) {
            PyErr_Format(PyExc_TypeError, "the root is an int, not %.100s",
                         Py_TYPE(obj)->tp_name);
        }
        else {
            PyErr_Format(PyExc_TypeError,
                         "node %zd: a child is an int index, not %.100s", at,
                         Py_TYPE(obj)->tp_name);
        }
        return NULL;
    }
    i = PyLong_AsSsize_t(obj);
    if (i == -1 && PyErr_Occurred()) {
        if (!PyErr_ExceptionMatches(PyExc_OverflowError)) {
            return NULL;
        }
        PyErr_Clear(); /* out of range, below */
    }
    if (i < 0 || i >= self->count) {
        if (at < 0) {
            PyErr_Format(PyExc_ValueError,
                         "the root %R is not a node of the table (%zd nodes)",
                         obj, self->count);
        }
        else {
            PyErr_Format(PyExc_ValueError,
                         "node %zd: child %R is not a node of the table (%zd "
                         "nodes)",
                         at, obj, self->count);
        }
        return NULL;
    }
    return &self->nodes[i];
}

/* Fills nd->children from `indexes`, a tuple of indexes (or the items of
 * a node tuple from `first` on when `indexes` is the node itself). */
static int
children(Reader *self, Py_ssize_t at, node *nd, PyObject *indexes,
         Py_ssize_t first, Py_ssize_t count)
{
    Py_ssize_t i;

    nd->children = PyMem_Calloc(count > 0 ? (size_t)count : 1, sizeof(node *));
    if (nd->children == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    for (i = 0; i < count; i++) {
        nd->children[i] = child(self, at, PyTuple_GET_ITEM(indexes, first + i));
        if (nd->children[i] == NULL) {
            return -1;
        }
    }
    return 0;
}

static int
exact_tuple(Py_ssize_t at, PyObject *obj, const char *what)
{
    if (!PyTuple_CheckExact(obj)) {
        PyErr_Format(PyExc_TypeError, "node %zd: %s is a tuple, not %.100s",
                     at, what, Py_TYPE(obj)->tp_name);
        return -1;
    }
    return 0;
}

static int
flag(Py_ssize_t at, PyObject *obj)
{
    if (!PyBool_Check(obj)) {
        PyErr_Format(PyExc_TypeError,
                     "node %zd: its last item is a bool, not %.100s", at,
                     Py_TYPE(obj)->tp_name);
        return -1;
    }
    return obj == Py_True;
}

static int
parse_node(Reader *self, Py_ssize_t at)
{
    PyObject *item = PyTuple_GET_ITEM(self->table, at), *kind, *keys, *fields;
    node *nd = &self->nodes[at];
    size_t k;
    Py_ssize_t i;

    if (!PyTuple_CheckExact(item) || PyTuple_GET_SIZE(item) < 1) {
        PyErr_Format(PyExc_TypeError,
                     "node %zd is not a tuple (kind, ...): %.100s", at,
                     Py_TYPE(item)->tp_name);
        return -1;
    }
    kind = PyTuple_GET_ITEM(item, 0);
    if (!PyUnicode_Check(kind)) {
        PyErr_Format(PyExc_TypeError, "node %zd: its kind is a str, not %.100s",
                     at, Py_TYPE(kind)->tp_name);
        return -1;
    }
    for (k = 0; k < sizeof(KINDS) / sizeof(KINDS[0]); k++) {
        if (PyUnicode_CompareWithASCIIString(kind, KINDS[k].name) == 0) {
            break;
        }
    }
    if (k == sizeof(KINDS) / sizeof(KINDS[0])) {
        PyErr_Format(PyExc_ValueError, "node %zd: unknown kind %R", at, kind);
        return -1;
    }
    if (PyTuple_GET_SIZE(item) != KINDS[k].arity) {
        PyErr_Format(PyExc_ValueError,
                     "node %zd: a %s node is a tuple of %zd items, not %zd", at,
                     KINDS[k].name, KINDS[k].arity, PyTuple_GET_SIZE(item));
        return -1;
    }
    nd->kind = KINDS[k].kind;
    switch (nd->kind) {
    case K_FIXED:
        if (!PyLong_CheckExact(PyTuple_GET_ITEM(item, 1))) {
            PyErr_Format(PyExc_TypeError, "node %zd: a fixed size is an int",
                         at);
            return -1;
        }
        nd->size = PyLong_AsSsize_t(PyTuple_GET_ITEM(item, 1));
        if (nd->size == -1 && PyErr_Occurred()) {
            if (!PyErr_ExceptionMatches(PyExc_OverflowError)) {
                return -1;
            }
            PyErr_Clear();
        }
        if (nd->size < 0) {
            PyErr_Format(PyExc_ValueError,
                         "node %zd: fixed size %R is out of range", at,
                         PyTuple_GET_ITEM(item, 1));
            return -1;
        }
        return 0;
    case K_ENUM:
        nd->objs = PyTuple_GET_ITEM(item, 1);
        if (exact_tuple(at, nd->objs, "its symbols") < 0) {
            return -1;
        }
        nd->size = PyTuple_GET_SIZE(nd->objs);
        return 0;
    case K_RECORD:
        keys = PyTuple_GET_ITEM(item, 1);
        fields = PyTuple_GET_ITEM(item, 2);
        if (exact_tuple(at, keys, "its keys") < 0 ||
            exact_tuple(at, fields, "its fields") < 0) {
            return -1;
        }
        nd->size = PyTuple_GET_SIZE(fields);
        if (PyTuple_GET_SIZE(keys) != nd->size) {
            PyErr_Format(PyExc_ValueError,
                         "node %zd: %zd keys for %zd fields", at,
                         PyTuple_GET_SIZE(keys), nd->size);
            return -1;
        }
        for (i = 0; i < nd->size; i++) {
            /* exactly str: no Python __hash__ or __eq__ runs in a read */
            if (!PyUnicode_CheckExact(PyTuple_GET_ITEM(keys, i))) {
                PyErr_Format(PyExc_TypeError, "node %zd: key %zd is not a str",
                             at, i);
                return -1;
            }
        }
        nd->objs = keys;
        nd->blank = PyDict_New();
        if (nd->blank == NULL) {
            return -1;
        }
        for (i = 0; i < nd->size; i++) {
            if (PyDict_SetItem(nd->blank, PyTuple_GET_ITEM(keys, i), Py_None)) {
                return -1;
            }
        }
        return children(self, at, nd, fields, 0, nd->size);
    case K_UNION:
        fields = PyTuple_GET_ITEM(item, 1);
        if (exact_tuple(at, fields, "its branches") < 0) {
            return -1;
        }
        nd->size = PyTuple_GET_SIZE(fields);
        return children(self, at, nd, fields, 0, nd->size);
    case K_ARRAY:
    case K_MAP:
        nd->size = nd->kind == K_ARRAY ? 1 : 2;
        nd->empty = flag(at, PyTuple_GET_ITEM(item, nd->size + 1));
        if (nd->empty < 0) {
            return -1;
        }
        return children(self, at, nd, item, 1, nd->size);
    default:
        return 0;
    }
}

static void
free_nodes(Reader *self)
{
    Py_ssize_t i;

    if (self->nodes != NULL) {
        for (i = 0; i < self->count; i++) {
            PyMem_Free(self->nodes[i].children);
            Py_XDECREF(self->nodes[i].blank);
        }
        PyMem_Free(self->nodes);
        self->nodes = NULL;
    }
    self->root = NULL;
    self->count = 0;
}

static PyObject *
reader_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"nodes", "root", NULL};
    PyObject *table, *root;
    Py_ssize_t count, at;
    Reader *self;

    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OO:Reader", kwlist, &table,
                                     &root)) {
        return NULL;
    }
    if (!PyTuple_CheckExact(table)) {
        PyErr_Format(PyExc_TypeError, "the node table is a tuple, not %.100s",
                     Py_TYPE(table)->tp_name);
        return NULL;
    }
    count = PyTuple_GET_SIZE(table);
    self = (Reader *)type->tp_alloc(type, 0); /* zeroed */
    if (self == NULL) {
        return NULL;
    }
    self->vectorcall = reader_call;
    self->table = Py_NewRef(table);
    self->nodes = PyMem_Calloc(count > 0 ? (size_t)count : 1, sizeof(node));
    if (self->nodes == NULL) {
        Py_DECREF(self);
        return PyErr_NoMemory();
    }
    self->count = count;
    for (at = 0; at < count; at++) {
        if (parse_node(self, at) < 0) {
            Py_DECREF(self);
            return NULL;
        }
    }
    self->root = child(self, -1, root);
    if (self->root == NULL) {
        Py_DECREF(self);
        return NULL;
    }
    return (PyObject *)self;
}

static int
reader_traverse(Reader *self, visitproc visit, void *arg)
{
    Py_ssize_t i;

    Py_VISIT(self->table);
    for (i = 0; self->nodes != NULL && i < self->count; i++) {
        Py_VISIT(self->nodes[i].blank);
    }
    return 0;
}

static void
reader_dealloc(Reader *self)
{
    PyObject_GC_UnTrack(self);
    free_nodes(self);
    Py_CLEAR(self->table);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *
reader_repr(Reader *self)
{
    return PyUnicode_FromFormat("<_avroread.Reader of %zd nodes>",
                                self->count);
}

PyDoc_STRVAR(reader_doc,
             "Reader(nodes, root)\n--\n\n"
             "The reader of Avro binary datums of the schema whose node table "
             "is `nodes` (see pipeline.source.avro_reader.native_table), "
             "starting at node `root`.\n\n"
             "reader(buf, pos) reads one datum of `buf` (bytes or any "
             "contiguous buffer) from `pos` and returns (value, position "
             "after it).");

static PyTypeObject ReaderType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "pipeline.source._avroread.Reader",
    .tp_basicsize = sizeof(Reader),
    .tp_dealloc = (destructor)reader_dealloc,
    .tp_vectorcall_offset = offsetof(Reader, vectorcall),
    .tp_repr = (reprfunc)reader_repr,
    .tp_call = PyVectorcall_Call,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC |
                Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_doc = reader_doc,
    .tp_traverse = (traverseproc)reader_traverse,
    .tp_new = reader_new,
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "pipeline.source._avroread",
    .m_doc = "The native Avro binary reader of pipeline.source.avro_reader.",
    .m_size = -1,
};

PyMODINIT_FUNC
PyInit__avroread(void)
{
    PyObject *m;

    if (PyType_Ready(&ReaderType) < 0) {
        return NULL;
    }
    m = PyModule_Create(&module);
    if (m == NULL) {
        return NULL;
    }
    if (PyModule_AddIntConstant(m, "MAX_DEPTH", MAX_DEPTH) < 0 ||
        PyModule_AddObjectRef(m, "Reader", (PyObject *)&ReaderType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
