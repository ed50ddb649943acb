/* The event log's hot record in native code: the record of a flat audio event (an `input_audio_buffer.append`
 * or an output audio delta, every 20 ms each way), written in one call.
 *
 * Boundary: `relay.eventlog.records.RecordBuilder` calls `audio_record` for a flat audio event with the default
 * record options (`log_content` on, `log_audio_hash` off). It returns the record's JSON line, byte for byte what
 * the Python builder gives (tests/eventlog/test_flatrecord.py holds them equal over generated events), or None for
 * anything it does not write the same way (a nested value, a number orjson spells with an exponent, an integer
 * beyond 64 bits, a string that is not valid UTF-8, another type): the Python builder then writes that record.
 * `audio_records` writes a run of such records, read from the log entries themselves, into one blob (a burst of
 * frames in one call, no Python per record); the run stops at the first entry `audio_record` would hand back.
 * Pure: no I/O, no state but the formatted second of the last timestamp. The record format is docs/event-log.md;
 * why this is native is docs/performance.md ("The ninth round", "The eleventh round").
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdlib.h>
#include <string.h>
#include <limits.h>
#include <time.h>

typedef struct {
    char *data;
    Py_ssize_t len;
    Py_ssize_t cap;
    char local[1024];
} Buf;

static void buf_init(Buf *b) {
    b->data = b->local;
    b->len = 0;
    b->cap = (Py_ssize_t)sizeof b->local;
}

static int buf_grow(Buf *b, Py_ssize_t more) {
    Py_ssize_t need = b->len + more;
    if (need <= b->cap) {
        return 0;
    }
    Py_ssize_t cap = b->cap * 2;
    while (cap < need) {
        cap *= 2;
    }
    char *data;
    if (b->data == b->local) {
        data = PyMem_Malloc((size_t)cap);
        if (data != NULL) {
            memcpy(data, b->local, (size_t)b->len);
        }
    } else {
        data = PyMem_Realloc(b->data, (size_t)cap);
    }
    if (data == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    b->data = data;
    b->cap = cap;
    return 0;
}

static int put(Buf *b, const char *s, Py_ssize_t n) {
    if (buf_grow(b, n) < 0) {
        return -1;
    }
    memcpy(b->data + b->len, s, (size_t)n);
    b->len += n;
    return 0;
}

#define PUT_LITERAL(b, s) put((b), (s), (Py_ssize_t)(sizeof(s) - 1))

/* Return codes of the writers: 0 written, -1 a Python error is set, 1 not this writer's to write (fall back). */
#define FALLBACK 1

static const char HEX[] = "0123456789abcdef";

/* A JSON string as orjson writes it: UTF-8, with `"`, `\` and the control characters escaped (\b \t \n \f \r
 * short, the others \u00XX) and nothing else. */
static int put_string(Buf *b, PyObject *s) {
    Py_ssize_t n;
    const char *src = PyUnicode_AsUTF8AndSize(s, &n);
    if (src == NULL) {
        /* A lone surrogate: orjson refuses it too; the Python builder's fallback writes that record. */
        PyErr_Clear();
        return FALLBACK;
    }
    if (buf_grow(b, n + 2) < 0) {
        return -1;
    }
    b->data[b->len++] = '"';
    Py_ssize_t run = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)src[i];
        if (c >= 0x20 && c != '"' && c != '\\') {
            continue;
        }
        if (put(b, src + run, i - run) < 0) {
            return -1;
        }
        run = i + 1;
        char esc[6] = {'\\', 0, 0, 0, 0, 0};
        Py_ssize_t len = 2;
        switch (c) {
        case '"': esc[1] = '"'; break;
        case '\\': esc[1] = '\\'; break;
        case '\b': esc[1] = 'b'; break;
        case '\t': esc[1] = 't'; break;
        case '\n': esc[1] = 'n'; break;
        case '\f': esc[1] = 'f'; break;
        case '\r': esc[1] = 'r'; break;
        default:
            esc[1] = 'u';
            esc[2] = '0';
            esc[3] = '0';
            esc[4] = HEX[c >> 4];
            esc[5] = HEX[c & 0xF];
            len = 6;
        }
        if (put(b, esc, len) < 0) {
            return -1;
        }
    }
    if (put(b, src + run, n - run) < 0 || buf_grow(b, 1) < 0) {
        return -1;
    }
    b->data[b->len++] = '"';
    return 0;
}

/* Decimal digits of `v`, written backwards from `end`; returns where they start. (snprintf cost more than the rest
 * of a record's head.) */
static char *digits(char *end, unsigned long long v) {
    do {
        *--end = (char)('0' + v % 10);
        v /= 10;
    } while (v != 0);
    return end;
}

static int put_int(Buf *b, long long v) {
    char tmp[24];
    char *end = tmp + sizeof tmp;
    unsigned long long magnitude = v < 0 ? 0ULL - (unsigned long long)v : (unsigned long long)v;
    char *start = digits(end, magnitude);
    if (v < 0) {
        *--start = '-';
    }
    return put(b, start, end - start);
}

/* A float as orjson writes it, where that is Python's shortest repr: orjson and repr agree on the digits, and
 * differ only in how they write an exponent, so a number that needs one is left to the Python builder. */
static int put_float(Buf *b, double v) {
    char *text = PyOS_double_to_string(v, 'r', 0, Py_DTSF_ADD_DOT_0, NULL);
    if (text == NULL) {
        return -1;
    }
    int rc = 0;
    if (strpbrk(text, "eEni") != NULL) { /* an exponent, inf or nan */
        rc = FALLBACK;
    } else {
        rc = put(b, text, (Py_ssize_t)strlen(text));
    }
    PyMem_Free(text);
    return rc;
}

/* `round_ms` of records.py (milliseconds to three decimals, half away from zero, in the same float steps), written
 * as Python's repr writes that float. Below 1e12 ms a float with at most three decimals is the nearest one to that
 * decimal and no shorter decimal is nearer, so its repr is the decimal itself: the integer count of thousandths,
 * its point put back, trailing zeros dropped down to one. Beyond that the Python builder writes it. */
static int put_ms(Buf *b, double ms) {
    if (!(ms > -1e12 && ms < 1e12)) {
        return FALLBACK;
    }
    long long thousandths = (long long)(ms * 1000.0 + (ms >= 0 ? 0.5 : -0.5));
    unsigned long long magnitude = thousandths < 0 ? 0ULL - (unsigned long long)thousandths : (unsigned long long)thousandths;
    char tmp[32];
    char *end = tmp + sizeof tmp;
    /* The three decimals, their trailing zeros dropped down to one, then the point and the whole part. */
    unsigned long long decimals = magnitude % 1000;
    int kept = 3;
    while (kept > 1 && decimals % 10 == 0) {
        decimals /= 10;
        kept--;
    }
    for (int i = 0; i < kept; i++) {
        *--end = (char)('0' + decimals % 10);
        decimals /= 10;
    }
    *--end = '.';
    char *start = digits(end, magnitude / 1000);
    if (thousandths < 0) {
        *--start = '-';
    }
    return put(b, start, tmp + sizeof tmp - start);
}

/* A value of a flat event: a string, an integer within 64 bits, a float, true, false or null. */
static int put_scalar(Buf *b, PyObject *v) {
    if (PyUnicode_CheckExact(v)) {
        return put_string(b, v);
    }
    if (v == Py_True) {
        return PUT_LITERAL(b, "true");
    }
    if (v == Py_False) {
        return PUT_LITERAL(b, "false");
    }
    if (v == Py_None) {
        return PUT_LITERAL(b, "null");
    }
    if (PyLong_CheckExact(v)) {
        int overflow = 0;
        long long n = PyLong_AsLongLongAndOverflow(v, &overflow);
        if (overflow != 0) {
            return FALLBACK;
        }
        if (n == -1 && PyErr_Occurred()) {
            return -1;
        }
        return put_int(b, n);
    }
    if (PyFloat_CheckExact(v)) {
        return put_float(b, PyFloat_AS_DOUBLE(v));
    }
    return FALLBACK;
}

/* A member after the first: `head` (a comma, the quoted key and a colon) and the value. */
static int put_member(Buf *b, const char *head, PyObject *value) {
    if (put(b, head, (Py_ssize_t)strlen(head)) < 0) {
        return -1;
    }
    return put_scalar(b, value);
}

/* The decoded length of base64 text, as `b64_decoded_len` in relay/core/frames.py computes it. */
static Py_ssize_t b64_decoded_len(PyObject *text) {
    Py_ssize_t n = PyUnicode_GET_LENGTH(text);
    Py_ssize_t out = n * 3 / 4;
    if (n == 0 || PyUnicode_READ_CHAR(text, n - 1) != '=') {
        return out;
    }
    return out - 1 - (n >= 2 && PyUnicode_READ_CHAR(text, n - 2) == '=');
}

/* The RFC 3339 timestamp of records.py's `_Rfc3339`: UTC, microseconds, the second's text formatted once. */
static long long cached_second = -1;
static char cached_prefix[32];
static Py_ssize_t cached_prefix_len = 0;

static int put_timestamp(Buf *b, double wall) {
    if (!(wall >= 0.0 && wall < 253402300800.0)) { /* before 1970 or after 9999: the Python builder's */
        return FALLBACK;
    }
    long long second = (long long)wall;
    long long micros = (long long)((wall - (double)second) * 1000000.0 + 0.5);
    if (micros == 1000000) {
        second += 1;
        micros = 0;
    }
    if (second != cached_second) {
        time_t t = (time_t)second;
        struct tm tm;
        char prefix[sizeof cached_prefix];
        if (gmtime_r(&t, &tm) == NULL || tm.tm_year + 1900 < 1000) {
            return FALLBACK;
        }
        size_t n = strftime(prefix, sizeof prefix, "%Y-%m-%dT%H:%M:%S.", &tm);
        if (n == 0) {
            return FALLBACK;
        }
        memcpy(cached_prefix, prefix, n); /* the cache changes only whole, after the second formatted */
        cached_prefix_len = (Py_ssize_t)n;
        cached_second = second;
    }
    char tail[8];
    for (int i = 5; i >= 0; i--) {
        tail[i] = (char)('0' + micros % 10);
        micros /= 10;
    }
    tail[6] = 'Z';
    tail[7] = '"';
    if (PUT_LITERAL(b, "\"") < 0 || put(b, cached_prefix, cached_prefix_len) < 0) {
        return -1;
    }
    return put(b, tail, 8);
}

#define TRY(expr)                 \
    do {                          \
        int rc_ = (expr);         \
        if (rc_ != 0) {           \
            return rc_;           \
        }                         \
    } while (0)

static PyObject *KEY_AUDIO, *KEY_EVENT_ID, *KEY_ITEM_ID, *KEY_RESPONSE_ID;

static int write_record(Buf *b, PyObject *session_id, long long seq, double wall, double t_ms, PyObject *dir,
                        PyObject *type, PyObject *event, PyObject *field, PyObject *frame_bytes,
                        long long bytes_per_second) {
    /* Every key an exact str first: looking up a str among str keys runs no Python code, so nothing below can
     * change the dict while it is read (a key of another type could, through its __eq__). A parsed frame's keys
     * are always str. */
    PyObject *key, *value;
    Py_ssize_t pos = 0;
    while (PyDict_Next(event, &pos, &key, &value)) {
        if (!PyUnicode_CheckExact(key)) {
            return FALLBACK;
        }
    }
    PyObject *payload = PyDict_GetItemWithError(event, field);
    if (payload == NULL || !PyUnicode_CheckExact(payload)) {
        return PyErr_Occurred() ? -1 : FALLBACK;
    }
    int is_audio = PyUnicode_Compare(field, KEY_AUDIO) == 0;
    if (!is_audio) {
        int has_audio = PyDict_Contains(event, KEY_AUDIO);
        if (has_audio != 0) {
            return has_audio < 0 ? -1 : FALLBACK;
        }
    }

    TRY(PUT_LITERAL(b, "{\"v\":1,\"ts\":"));
    TRY(put_timestamp(b, wall));
    TRY(PUT_LITERAL(b, ",\"level\":\"info\",\"t_ms\":"));
    TRY(put_ms(b, t_ms));
    TRY(put_member(b, ",\"session_id\":", session_id));
    TRY(PUT_LITERAL(b, ",\"seq\":"));
    TRY(put_int(b, seq));
    TRY(put_member(b, ",\"dir\":", dir));
    TRY(put_member(b, ",\"type\":", type));

    static const char *const id_heads[3] = {",\"event_id\":", ",\"item_id\":", ",\"response_id\":"};
    PyObject *id_keys[3] = {KEY_EVENT_ID, KEY_ITEM_ID, KEY_RESPONSE_ID};
    for (int i = 0; i < 3; i++) {
        PyObject *value = PyDict_GetItemWithError(event, id_keys[i]);
        if (value == NULL) {
            if (PyErr_Occurred()) {
                return -1;
            }
            continue;
        }
        if (PyUnicode_CheckExact(value)) {
            TRY(put_member(b, id_heads[i], value));
        }
    }
    if (frame_bytes != Py_None) {
        TRY(put_member(b, ",\"bytes\":", frame_bytes));
    }
    TRY(PUT_LITERAL(b, ",\"event\":{"));
    pos = 0;
    int first = 1;
    while (PyDict_Next(event, &pos, &key, &value)) {
        if (!first) {
            TRY(PUT_LITERAL(b, ","));
        }
        first = 0;
        TRY(put_string(b, key));
        TRY(PUT_LITERAL(b, ":"));
        if (value == payload && PyUnicode_Compare(key, field) == 0) {
            Py_ssize_t n_bytes = b64_decoded_len(payload);
            TRY(PUT_LITERAL(b, "{\"audio_bytes\":"));
            TRY(put_int(b, (long long)n_bytes));
            TRY(PUT_LITERAL(b, ",\"audio_ms\":"));
            if (bytes_per_second == -1) { /* no audio format known */
                TRY(PUT_LITERAL(b, "null"));
            } else if (bytes_per_second < 0) {
                return FALLBACK;
            } else {
                TRY(put_ms(b, bytes_per_second ? (double)n_bytes * 1000.0 / (double)bytes_per_second : 0.0));
            }
            TRY(PUT_LITERAL(b, "}"));
        } else {
            TRY(put_scalar(b, value));
        }
    }
    return PUT_LITERAL(b, "}}\n");
}

/* An int argument as a long long: 1 it fits, 0 it does not (past 64 bits), -1 a TypeError for another type. */
static int as_long_long(PyObject *arg, long long *out) {
    if (!PyLong_Check(arg)) {
        PyErr_SetString(PyExc_TypeError, "audio_record: seq and bytes_per_second are int");
        return -1;
    }
    int overflow = 0;
    *out = PyLong_AsLongLongAndOverflow(arg, &overflow);
    if (*out == -1 && PyErr_Occurred()) {
        return -1;
    }
    return overflow == 0;
}

/* Both writers' third and fourth arguments: the wall time and t_ms. -1 with a TypeError for another type. */
static int read_times(PyObject *const *args, double *wall, double *t_ms) {
    *wall = PyFloat_AsDouble(args[2]);
    if (*wall == -1.0 && PyErr_Occurred()) {
        return -1;
    }
    *t_ms = PyFloat_AsDouble(args[3]);
    return *t_ms == -1.0 && PyErr_Occurred() ? -1 : 0;
}

static PyObject *audio_record(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (nargs != 10) {
        PyErr_SetString(PyExc_TypeError, "audio_record takes 10 arguments");
        return NULL;
    }
    PyObject *session_id = args[0], *dir = args[4], *type = args[5], *event = args[6], *field = args[7];
    if (!PyUnicode_CheckExact(session_id) || !PyUnicode_CheckExact(dir) || !PyUnicode_CheckExact(type) ||
        !PyDict_CheckExact(event) || !PyUnicode_CheckExact(field)) {
        Py_RETURN_NONE;
    }
    long long seq = 0, bytes_per_second = 0;
    int seq_fits = as_long_long(args[1], &seq), rate_fits = as_long_long(args[9], &bytes_per_second);
    if (seq_fits < 0 || rate_fits < 0) {
        return NULL;
    }
    if (!seq_fits || !rate_fits) {
        Py_RETURN_NONE; /* past 64 bits: the Python builder writes it */
    }
    double wall, t_ms;
    if (read_times(args, &wall, &t_ms) < 0) {
        return NULL;
    }
    PyObject *frame_bytes = args[8];
    if (frame_bytes != Py_None && !PyLong_CheckExact(frame_bytes)) {
        Py_RETURN_NONE;
    }
    Buf b;
    buf_init(&b);
    int rc = write_record(&b, session_id, seq, wall, t_ms, dir, type, event, field, frame_bytes, bytes_per_second);
    PyObject *out = NULL;
    if (rc == 0) {
        out = PyBytes_FromStringAndSize(b.data, b.len);
    } else if (rc == FALLBACK) {
        out = Py_NewRef(Py_None);
    }
    if (b.data != b.local) {
        PyMem_Free(b.data);
    }
    return out;
}

/* The attributes `audio_records` reads from each log entry (a `LogEntry` of relay/core/outbox.py) and its format. */
static PyObject *ATTR_TYPE, *ATTR_DIR, *ATTR_EVENT, *ATTR_BYTES, *ATTR_CLIENT_EVENT, *ATTR_SERVER_EVENT,
    *ATTR_AUDIO_FORMAT, *ATTR_BYTES_PER_SECOND;

/* One entry of a run into `b`: 0 written, -1 a Python error, FALLBACK not a flat audio record this writer writes
 * (the buffer is then as it was). What `build` in records.py checks before it calls `audio_record`, then that. */
static int write_entry(Buf *b, PyObject *session_id, long long seq, double wall, double t_ms, PyObject *entry,
                       PyObject *fields) {
    PyObject *type = NULL, *field, *client_event = NULL, *server_event = NULL, *dir = NULL, *event = NULL;
    PyObject *frame_bytes = NULL, *format = NULL, *rate = NULL;
    int rc = FALLBACK;
    Py_ssize_t mark = b->len;
    type = PyObject_GetAttr(entry, ATTR_TYPE);
    if (type == NULL) {
        goto error;
    }
    if (!PyUnicode_CheckExact(type)) {
        goto done;
    }
    field = PyDict_GetItemWithError(fields, type); /* borrowed: `fields` holds it */
    if (field == NULL) {
        if (PyErr_Occurred()) {
            goto error;
        }
        goto done;
    }
    if ((client_event = PyObject_GetAttr(entry, ATTR_CLIENT_EVENT)) == NULL ||
        (server_event = PyObject_GetAttr(entry, ATTR_SERVER_EVENT)) == NULL ||
        (dir = PyObject_GetAttr(entry, ATTR_DIR)) == NULL || (event = PyObject_GetAttr(entry, ATTR_EVENT)) == NULL ||
        (frame_bytes = PyObject_GetAttr(entry, ATTR_BYTES)) == NULL ||
        (format = PyObject_GetAttr(entry, ATTR_AUDIO_FORMAT)) == NULL) {
        goto error;
    }
    if (client_event != Py_None || server_event != Py_None || !PyUnicode_CheckExact(field) ||
        !PyUnicode_CheckExact(dir) || !PyDict_CheckExact(event) ||
        (frame_bytes != Py_None && !PyLong_CheckExact(frame_bytes))) {
        goto done;
    }
    long long bytes_per_second = -1;
    if (format != Py_None) {
        if ((rate = PyObject_GetAttr(format, ATTR_BYTES_PER_SECOND)) == NULL) {
            goto error;
        }
        int overflow = 0;
        if (!PyLong_CheckExact(rate)) {
            goto done;
        }
        bytes_per_second = PyLong_AsLongLongAndOverflow(rate, &overflow);
        if (bytes_per_second == -1 && PyErr_Occurred()) {
            goto error;
        }
        if (overflow != 0 || bytes_per_second < 0) {
            goto done;
        }
    }
    rc = write_record(b, session_id, seq, wall, t_ms, dir, type, event, field, frame_bytes, bytes_per_second);
    goto done;
error:
    rc = -1;
done:
    if (rc != 0) {
        b->len = mark;
    }
    Py_XDECREF(type);
    Py_XDECREF(client_event);
    Py_XDECREF(server_event);
    Py_XDECREF(dir);
    Py_XDECREF(event);
    Py_XDECREF(frame_bytes);
    Py_XDECREF(format);
    Py_XDECREF(rate);
    return rc;
}

static PyObject *audio_records(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (nargs != 7) {
        PyErr_SetString(PyExc_TypeError, "audio_records takes 7 arguments");
        return NULL;
    }
    PyObject *session_id = args[0], *entries = args[4], *fields = args[6];
    if (!PyList_CheckExact(entries) || !PyDict_CheckExact(fields)) {
        PyErr_SetString(PyExc_TypeError, "audio_records: entries is a list and fields a dict");
        return NULL;
    }
    long long seq = 0;
    int seq_fits = as_long_long(args[1], &seq);
    Py_ssize_t start = PyLong_AsSsize_t(args[5]);
    if (seq_fits < 0 || (start == -1 && PyErr_Occurred())) {
        return NULL;
    }
    double wall, t_ms;
    if (read_times(args, &wall, &t_ms) < 0) {
        return NULL;
    }
    Buf b;
    buf_init(&b);
    Py_ssize_t count = 0;
    int rc = 0;
    if (seq_fits && PyUnicode_CheckExact(session_id) && start >= 0) {
        /* A record's code may run Python (a property of an entry), which could change the list: its length is
         * read again each turn and each entry held while it is written. */
        while (start + count < PyList_GET_SIZE(entries) && seq + count < LLONG_MAX) {
            PyObject *entry = Py_NewRef(PyList_GET_ITEM(entries, start + count));
            rc = write_entry(&b, session_id, seq + count, wall, t_ms, entry, fields);
            Py_DECREF(entry);
            if (rc != 0) {
                break;
            }
            count++;
        }
    }
    PyObject *out = NULL;
    if (rc >= 0) {
        PyObject *blob = PyBytes_FromStringAndSize(b.data, b.len);
        if (blob != NULL) {
            out = Py_BuildValue("(Nn)", blob, count);
        }
    }
    if (b.data != b.local) {
        PyMem_Free(b.data);
    }
    return out;
}

static PyMethodDef methods[] = {
    {"audio_records", (PyCFunction)(void (*)(void))audio_records, METH_FASTCALL,
     "audio_records(session_id, first_seq, wall, t_ms, entries, start, fields)\n"
     "--\n\n"
     "The records of the run of flat audio log entries from entries[start] on, as one blob of JSON lines with\n"
     "seqs from first_seq, and how many there are: (b'', 0) when entries[start] is not one. `fields` maps each\n"
     "audio event type to its payload field. Each line is what audio_record writes for that entry."},
    {"audio_record", (PyCFunction)(void (*)(void))audio_record, METH_FASTCALL,
     "audio_record(session_id, seq, wall, t_ms, dir, type, event, field, frame_bytes, bytes_per_second)\n"
     "--\n\n"
     "The JSON line of a flat audio event's record, or None when the Python builder is to write it.\n"
     "bytes_per_second is -1 when the audio format is unknown."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "relay.eventlog._flatrecord",
    "The event log's flat audio record in native code (see relay/eventlog/records.py).", -1, methods,
};

PyMODINIT_FUNC PyInit__flatrecord(void) {
    /* The interned names of the keys and attributes read above. */
    static const struct {
        PyObject **name;
        const char *text;
    } NAMES[] = {
        {&KEY_AUDIO, "audio"}, {&KEY_EVENT_ID, "event_id"}, {&KEY_ITEM_ID, "item_id"},
        {&KEY_RESPONSE_ID, "response_id"}, {&ATTR_TYPE, "type"}, {&ATTR_DIR, "dir"}, {&ATTR_EVENT, "event"},
        {&ATTR_BYTES, "bytes"}, {&ATTR_CLIENT_EVENT, "client_event"}, {&ATTR_SERVER_EVENT, "server_event"},
        {&ATTR_AUDIO_FORMAT, "audio_format"}, {&ATTR_BYTES_PER_SECOND, "bytes_per_second"},
    };
    for (size_t i = 0; i < sizeof NAMES / sizeof NAMES[0]; i++) {
        *NAMES[i].name = PyUnicode_InternFromString(NAMES[i].text);
        if (*NAMES[i].name == NULL) {
            return NULL;
        }
    }
    return PyModule_Create(&module);
}
