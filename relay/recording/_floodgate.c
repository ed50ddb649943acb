/* The entries of a bridge flush the recorder passes over, for its flood gate.
 *
 * Boundary: `relay.recording.floodgate` calls `set_kinds(append, deltas, truncate)` once (the event types it tells
 * apart) and then `pass_over(entries, start, mono, left_gate, right_gate, default_format, output_format)`, which
 * returns `(index, dropped, skipped)` exactly as `pass_over_python` in floodgate.py defines them (the module
 * docstring there says what is passed over; tests/recording/test_floodgate.py holds the two equal). Pure: no I/O,
 * no state but the three event types. Why it is native: docs/performance.md ("The thirteenth round").
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

static PyObject *KIND_APPEND = NULL;
static PyObject *KIND_DELTAS = NULL;
static PyObject *KIND_TRUNCATE = NULL;
static PyObject *NAME_TYPE = NULL;
static PyObject *NAME_EVENT = NULL;
static PyObject *NAME_DIR = NULL;
static PyObject *NAME_AUDIO_FORMAT = NULL;
static PyObject *KEY_AUDIO = NULL;
static PyObject *KEY_DELTA = NULL;
static PyObject *KEY_ITEM_ID = NULL;
static PyObject *DIR_CLIENT = NULL;
static PyObject *DIR_SERVER = NULL;

static PyObject *set_kinds(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    (void)module;
    if (nargs != 3 || !PyUnicode_Check(args[0]) || !PyFrozenSet_Check(args[1]) || !PyUnicode_Check(args[2])) {
        PyErr_SetString(PyExc_TypeError, "set_kinds(append: str, deltas: frozenset, truncate: str)");
        return NULL;
    }
    Py_INCREF(args[0]);
    Py_XSETREF(KIND_APPEND, args[0]);
    Py_INCREF(args[1]);
    Py_XSETREF(KIND_DELTAS, args[1]);
    Py_INCREF(args[2]);
    Py_XSETREF(KIND_TRUNCATE, args[2]);
    Py_RETURN_NONE;
}

/* `a == b` as Python's operator computes it (no shortcut for identical objects: a NaN is not equal to itself):
 * 1, 0, or -1 with an exception set. */
static int equal(PyObject *a, PyObject *b) {
    PyObject *result = PyObject_RichCompare(a, b, Py_EQ);
    if (result == NULL) {
        return -1;
    }
    int truth = PyObject_IsTrue(result);
    Py_DECREF(result);
    return truth;
}

/* A string attribute equal to `want`: 1, 0, or -1 with an exception set. */
static int attr_equals(PyObject *entry, PyObject *name, PyObject *want) {
    PyObject *value = PyObject_GetAttr(entry, name);
    if (value == NULL) {
        return -1;
    }
    int result = equal(value, want);
    Py_DECREF(value);
    return result;
}

/* The gate's field `i` as a C integer (-1 with an exception set when it is not one). */
static Py_ssize_t gate_int(PyObject *gate, Py_ssize_t i) {
    return PyLong_AsSsize_t(PyTuple_GET_ITEM(gate, i));
}

/* Whether `gate` drops a chunk of `audio` in `fmt` for `item_id` at `mono`: 1, 0, or -1 with an exception set. */
static int gate_drops(PyObject *gate, double mono, PyObject *fmt, PyObject *item_id, PyObject *audio) {
    if (gate == Py_None) {
        return 0;
    }
    if (!PyTuple_Check(gate) || PyTuple_GET_SIZE(gate) != 6) {
        PyErr_SetString(PyExc_TypeError, "a gate is None or a tuple of six fields");
        return -1;
    }
    double until = PyFloat_AsDouble(PyTuple_GET_ITEM(gate, 0));
    if (until == -1.0 && PyErr_Occurred()) {
        return -1;
    }
    if (!(mono < until) || fmt != PyTuple_GET_ITEM(gate, 1)) {
        return 0;
    }
    int same_item = equal(item_id, PyTuple_GET_ITEM(gate, 2));
    if (same_item <= 0) {
        return same_item;
    }
    Py_ssize_t length = gate_int(gate, 3);
    if (length == -1 && PyErr_Occurred()) {
        return -1;
    }
    Py_ssize_t n = PyUnicode_GET_LENGTH(audio);
    return n == length && PyUnicode_READ_CHAR(audio, n - 1) != '=';
}

/* One entry: -1 error, 0 passed over, 1 the recorder takes it up. What a gate dropped is added to the counts. */
static int look_at(PyObject *entry, double mono, PyObject *left_gate, PyObject *right_gate, PyObject *default_format,
                   PyObject *output_format, Py_ssize_t *dropped, Py_ssize_t *skipped) {
    int result = -1;
    PyObject *kind = NULL, *event = NULL, *fmt = NULL;
    PyObject *audio, *item_id = Py_None, *gate;  /* borrowed from `event` or the arguments */
    int assistant;
    kind = PyObject_GetAttr(entry, NAME_TYPE);
    if (kind == NULL) {
        goto done;
    }
    int is_append = equal(kind, KIND_APPEND);
    if (is_append < 0) {
        goto done;
    }
    int is_delta = 0;
    if (!is_append) {
        is_delta = PySet_Contains(KIND_DELTAS, kind);
        if (is_delta < 0) {
            goto done;
        }
    }
    event = PyObject_GetAttr(entry, NAME_EVENT);
    if (event == NULL) {
        goto done;
    }
    if (!is_append && !is_delta) {
        int is_truncate = equal(kind, KIND_TRUNCATE);
        if (is_truncate <= 0) {
            result = is_truncate;
            goto done;
        }
        int from_client = attr_equals(entry, NAME_DIR, DIR_CLIENT);
        result = from_client < 0 ? -1 : (from_client && PyDict_CheckExact(event));
        goto done;
    }
    int right_dir = attr_equals(entry, NAME_DIR, is_append ? DIR_CLIENT : DIR_SERVER);
    if (right_dir <= 0 || !PyDict_CheckExact(event)) {
        result = right_dir < 0 ? -1 : 0;
        goto done;
    }
    assistant = is_delta;
    gate = assistant ? right_gate : left_gate;
    audio = PyDict_GetItemWithError(event, assistant ? KEY_DELTA : KEY_AUDIO);
    if (audio == NULL && PyErr_Occurred()) {
        goto done;
    }
    if (assistant) {
        item_id = PyDict_GetItemWithError(event, KEY_ITEM_ID);
        if (item_id == NULL) {
            if (PyErr_Occurred()) {
                goto done;
            }
            item_id = Py_None;
        }
    }
    /* `entry.audio_format or ...`: the entry's format when it is true, else the default (the assistant's: asked). */
    fmt = PyObject_GetAttr(entry, NAME_AUDIO_FORMAT);
    if (fmt == NULL) {
        goto done;
    }
    int stated = PyObject_IsTrue(fmt);
    if (stated < 0) {
        goto done;
    }
    if (!stated) {
        Py_SETREF(fmt, assistant ? PyObject_CallNoArgs(output_format) : Py_NewRef(default_format));
        if (fmt == NULL) {
            goto done;
        }
    }
    if (audio == NULL || !PyUnicode_Check(audio) || PyUnicode_GET_LENGTH(audio) == 0) {
        result = 0;
        goto done;
    }
    int drops = gate_drops(gate, mono, fmt, item_id, audio);
    if (drops <= 0) {
        result = drops < 0 ? -1 : 1;
        goto done;
    }
    Py_ssize_t counted = gate_int(gate, 5);
    Py_ssize_t frames = assistant ? gate_int(gate, 4) : 0;
    if ((counted == -1 || frames == -1) && PyErr_Occurred()) {
        goto done;
    }
    *dropped += counted;
    *skipped += frames;
    result = 0;
done:
    Py_XDECREF(kind);
    Py_XDECREF(event);
    Py_XDECREF(fmt);
    return result;
}

static PyObject *pass_over(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    (void)module;
    if (nargs != 7) {
        PyErr_Format(PyExc_TypeError, "pass_over takes 7 arguments, got %zd", nargs);
        return NULL;
    }
    if (KIND_APPEND == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "set_kinds was not called");
        return NULL;
    }
    PyObject *entries = args[0];
    if (!PyList_Check(entries)) {
        PyErr_Format(PyExc_TypeError, "entries must be a list, not %.100s", Py_TYPE(entries)->tp_name);
        return NULL;
    }
    Py_ssize_t index = PyLong_AsSsize_t(args[1]);
    if (index == -1 && PyErr_Occurred()) {
        return NULL;
    }
    double mono = PyFloat_AsDouble(args[2]);
    if (mono == -1.0 && PyErr_Occurred()) {
        return NULL;
    }
    if (index < 0) {
        PyErr_SetString(PyExc_ValueError, "start must not be negative");
        return NULL;
    }
    Py_ssize_t dropped = 0, skipped = 0;
    /* The list is read again on every turn: Python code run on the way (an attribute, a comparison, the output
     * format) could change it. */
    for (; index < PyList_GET_SIZE(entries); index++) {
        PyObject *entry = PyList_GET_ITEM(entries, index);
        Py_INCREF(entry);
        int taken = look_at(entry, mono, args[3], args[4], args[5], args[6], &dropped, &skipped);
        Py_DECREF(entry);
        if (taken < 0) {
            return NULL;
        }
        if (taken) {
            break;
        }
    }
    return Py_BuildValue("(nnn)", index, dropped, skipped);
}

static PyMethodDef METHODS[] = {
    {"set_kinds", (PyCFunction)(void (*)(void))set_kinds, METH_FASTCALL,
     "set_kinds(append: str, deltas: frozenset[str], truncate: str) -> None: the event types pass_over tells apart."},
    {"pass_over", (PyCFunction)(void (*)(void))pass_over, METH_FASTCALL,
     "pass_over(entries, start, mono, left_gate, right_gate, default_format, output_format) -> (index, dropped, "
     "skipped): see relay/recording/floodgate.py."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef MODULE = {PyModuleDef_HEAD_INIT, "_floodgate", NULL, -1, METHODS, NULL, NULL, NULL, NULL};

static PyObject *interned(const char *text) {
    return PyUnicode_InternFromString(text);
}

PyMODINIT_FUNC PyInit__floodgate(void) {
    NAME_TYPE = interned("type");
    NAME_EVENT = interned("event");
    NAME_DIR = interned("dir");
    NAME_AUDIO_FORMAT = interned("audio_format");
    KEY_AUDIO = interned("audio");
    KEY_DELTA = interned("delta");
    KEY_ITEM_ID = interned("item_id");
    DIR_CLIENT = interned("client");
    DIR_SERVER = interned("server");
    if (!NAME_TYPE || !NAME_EVENT || !NAME_DIR || !NAME_AUDIO_FORMAT || !KEY_AUDIO || !KEY_DELTA || !KEY_ITEM_ID ||
        !DIR_CLIENT || !DIR_SERVER) {
        return NULL;
    }
    return PyModule_Create(&MODULE);
}
