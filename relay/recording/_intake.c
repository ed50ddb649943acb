/* What the recorder takes in from a bridge flush without its own Python per entry: the flood gate's pass and the
 * run extender.
 *
 * Boundary: `relay.recording.intake` calls `set_kinds(append, deltas, truncate)` once (the event types it tells
 * apart) and then `pass_over(entries, start, mono, left_gate, right_gate, default_format, output_format)`, which
 * returns `(index, dropped, skipped)` exactly as `pass_over_python` there defines them, or uses `RunExtender`
 * (`arm`, `take`, `disarm`), which answers as `PythonRunExtender` there does (the module docstring says what each
 * takes; tests/recording/test_intake.py holds the two versions equal). No I/O; state: the three event types, and
 * each extender's runs. Why it is native: docs/performance.md ("The thirteenth round", "The fourteenth round").
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>

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
static PyObject *NAME_RATE = NULL;
static PyObject *PCM_TYPE = NULL;

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

enum { PASS = 0, TRUNCATE = 1, CHUNK = 2 };

/* One entry as both passes read it: -1 error, PASS (not audio, or audio that is not a non-empty string), TRUNCATE
 * (a client's truncate), or CHUNK with `*assistant`, and new references in `*audio`, `*item_id` (None for the
 * user's) and `*fmt` (the entry's format, else the default; the assistant's default is asked). */
static int read_chunk(PyObject *entry, PyObject *default_format, PyObject *output_format, int *assistant,
                      PyObject **audio, PyObject **item_id, PyObject **fmt) {
    int result = -1;
    PyObject *kind = NULL, *event = NULL, *found;
    *audio = *item_id = *fmt = NULL;
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
        result = from_client < 0 ? -1 : (from_client && PyDict_CheckExact(event)) ? TRUNCATE : PASS;
        goto done;
    }
    int right_dir = attr_equals(entry, NAME_DIR, is_append ? DIR_CLIENT : DIR_SERVER);
    if (right_dir <= 0 || !PyDict_CheckExact(event)) {
        result = right_dir < 0 ? -1 : PASS;
        goto done;
    }
    *assistant = is_delta;
    /* New references at once: the output format is Python code, which could change the event. */
    found = PyDict_GetItemWithError(event, is_delta ? KEY_DELTA : KEY_AUDIO);
    if (found == NULL && PyErr_Occurred()) {
        goto done;
    }
    *audio = Py_XNewRef(found);
    found = Py_None;
    if (is_delta) {
        found = PyDict_GetItemWithError(event, KEY_ITEM_ID);
        if (found == NULL) {
            if (PyErr_Occurred()) {
                goto done;
            }
            found = Py_None;
        }
    }
    *item_id = Py_NewRef(found);
    /* `entry.audio_format or ...`: the entry's format when it is true, else the default (the assistant's: asked). */
    *fmt = PyObject_GetAttr(entry, NAME_AUDIO_FORMAT);
    if (*fmt == NULL) {
        goto done;
    }
    int stated = PyObject_IsTrue(*fmt);
    if (stated < 0) {
        goto done;
    }
    if (!stated) {
        Py_SETREF(*fmt, is_delta ? PyObject_CallNoArgs(output_format) : Py_NewRef(default_format));
        if (*fmt == NULL) {
            goto done;
        }
    }
    result = *audio != NULL && PyUnicode_Check(*audio) && PyUnicode_GET_LENGTH(*audio) > 0 ? CHUNK : PASS;
done:
    Py_XDECREF(kind);
    Py_XDECREF(event);
    if (result != CHUNK) {
        Py_CLEAR(*audio);
        Py_CLEAR(*item_id);
        Py_CLEAR(*fmt);
    }
    return result;
}

/* What a pass does with one chunk (its references borrowed from the walk): -1 error, 0 taken (the walk goes on),
 * 1 the recorder takes it up (the walk stops there). */
typedef int (*ChunkVisit)(void *pass, int assistant, PyObject *audio, PyObject *item_id, PyObject *fmt);

/* Both passes' walk over `entries[start:]`: what is not audio is passed over, a client's truncate stops it, each
 * chunk goes to `visit`. Returns the index it stopped at (`max(start, len(entries))` when none is left), or -1 with
 * an exception set. The list is read again on every turn: Python code run on the way (an attribute, a comparison,
 * the output format) could change it. */
static Py_ssize_t walk(PyObject *entries, Py_ssize_t index, PyObject *default_format, PyObject *output_format,
                       ChunkVisit visit, void *pass) {
    for (; index < PyList_GET_SIZE(entries); index++) {
        PyObject *entry = PyList_GET_ITEM(entries, index);
        int assistant = 0;
        PyObject *audio, *item_id, *fmt;
        Py_INCREF(entry);
        int read = read_chunk(entry, default_format, output_format, &assistant, &audio, &item_id, &fmt);
        Py_DECREF(entry);
        if (read < 0) {
            return -1;
        }
        if (read == TRUNCATE) {
            break;
        }
        if (read == PASS) {
            continue;
        }
        int stop = visit(pass, assistant, audio, item_id, fmt);
        Py_DECREF(audio);
        Py_DECREF(item_id);
        Py_DECREF(fmt);
        if (stop < 0) {
            return -1;
        }
        if (stop) {
            break;
        }
    }
    return index;
}

/* pass_over's state: the flush's time, the gates (left, right) and what they dropped so far. */
typedef struct {
    double mono;
    PyObject *gates[2];
    Py_ssize_t dropped, skipped;
} GatePass;

/* pass_over's visit: a chunk its channel's gate drops is counted and passed over; any other stops the walk. */
static int gate_visit(void *state, int assistant, PyObject *audio, PyObject *item_id, PyObject *fmt) {
    GatePass *pass = state;
    PyObject *gate = pass->gates[assistant];
    int drops = gate_drops(gate, pass->mono, fmt, item_id, audio);
    if (drops <= 0) {
        return drops < 0 ? -1 : 1;
    }
    Py_ssize_t counted = gate_int(gate, 5);
    Py_ssize_t frames = assistant ? gate_int(gate, 4) : 0;
    if ((counted == -1 || frames == -1) && PyErr_Occurred()) {
        return -1;
    }
    pass->dropped += counted;
    pass->skipped += frames;
    return 0;
}

/* The arguments both passes start with, `(entries, start, mono, ...)`: 0, or -1 with an exception set. */
static int walk_arguments(PyObject *const *args, Py_ssize_t *start, double *mono) {
    if (KIND_APPEND == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "set_kinds was not called");
        return -1;
    }
    if (!PyList_Check(args[0])) {
        PyErr_Format(PyExc_TypeError, "entries must be a list, not %.100s", Py_TYPE(args[0])->tp_name);
        return -1;
    }
    *start = PyLong_AsSsize_t(args[1]);
    if (*start == -1 && PyErr_Occurred()) {
        return -1;
    }
    *mono = PyFloat_AsDouble(args[2]);
    if (*mono == -1.0 && PyErr_Occurred()) {
        return -1;
    }
    if (*start < 0) {
        PyErr_SetString(PyExc_ValueError, "start must not be negative");
        return -1;
    }
    return 0;
}

static PyObject *pass_over(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    (void)module;
    if (nargs != 7) {
        PyErr_Format(PyExc_TypeError, "pass_over takes 7 arguments, got %zd", nargs);
        return NULL;
    }
    Py_ssize_t start;
    GatePass pass = {.gates = {args[3], args[4]}, .dropped = 0, .skipped = 0};
    if (walk_arguments(args, &start, &pass.mono) < 0) {
        return NULL;
    }
    Py_ssize_t index = walk(args[0], start, args[5], args[6], gate_visit, &pass);
    if (index < 0) {
        return NULL;
    }
    return Py_BuildValue("(nnn)", index, pass.dropped, pass.skipped);
}

/* ---- RunExtender ------------------------------------------------------------------------------------------ */

typedef struct {
    int armed;
    Py_ssize_t origin; /* where the run ended when it was armed */
    Py_ssize_t end;    /* where it ends now */
    PyObject *item_id; /* the assistant's run: its item (a str); NULL for the user's */
    PyObject *texts;   /* the texts taken since `arm`, a list */
} Run;

typedef struct {
    PyObject_HEAD
    PyObject *rate_obj;
    double rate;
    Py_ssize_t continue_within, lead, max_frames;
    double started_mono;
    Run runs[2];
} RunExtender;

static void run_clear(Run *run) {
    run->armed = 0;
    Py_CLEAR(run->item_id);
    Py_CLEAR(run->texts);
}

static int extender_init(RunExtender *self, PyObject *args, PyObject *kwargs) {
    static char *names[] = {"rate", "continue_within", "lead", "max_frames", "started_mono", NULL};
    PyObject *rate;
    Py_ssize_t continue_within, lead, max_frames;
    double started_mono;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O!nnnd:RunExtender", names, &PyLong_Type, &rate, &continue_within,
                                     &lead, &max_frames, &started_mono)) {
        return -1;
    }
    double rate_value = PyLong_AsDouble(rate);
    if (rate_value == -1.0 && PyErr_Occurred()) {
        return -1;
    }
    Py_INCREF(rate);
    Py_XSETREF(self->rate_obj, rate);
    self->rate = rate_value;
    self->continue_within = continue_within;
    self->lead = lead;
    self->max_frames = max_frames;
    self->started_mono = started_mono;
    run_clear(&self->runs[0]);
    run_clear(&self->runs[1]);
    return 0;
}

static void extender_dealloc(RunExtender *self) {
    run_clear(&self->runs[0]);
    run_clear(&self->runs[1]);
    Py_CLEAR(self->rate_obj);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* A channel argument, 0 or 1 (-1 with an exception set). */
static int channel_of(PyObject *value) {
    long channel = PyLong_AsLong(value);
    if (channel == -1 && PyErr_Occurred()) {
        return -1;
    }
    if (channel != 0 && channel != 1) {
        PyErr_SetString(PyExc_ValueError, "channel must be 0 (left) or 1 (right)");
        return -1;
    }
    return (int)channel;
}

static PyObject *extender_arm(RunExtender *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 3) {
        PyErr_Format(PyExc_TypeError, "arm takes 3 arguments, got %zd", nargs);
        return NULL;
    }
    int channel = channel_of(args[0]);
    if (channel < 0) {
        return NULL;
    }
    Py_ssize_t end = PyLong_AsSsize_t(args[1]);
    if (end == -1 && PyErr_Occurred()) {
        return NULL;
    }
    if (channel == 1 && !PyUnicode_CheckExact(args[2])) {
        PyErr_SetString(PyExc_TypeError, "the assistant's run is armed with its item id");
        return NULL;
    }
    PyObject *texts = PyList_New(0);
    if (texts == NULL) {
        return NULL;
    }
    Run *run = &self->runs[channel];
    run_clear(run);
    run->armed = 1;
    run->origin = run->end = end;
    run->item_id = channel == 1 ? Py_NewRef(args[2]) : NULL;
    run->texts = texts;
    Py_RETURN_NONE;
}

static PyObject *extender_disarm(RunExtender *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 1) {
        PyErr_Format(PyExc_TypeError, "disarm takes 1 argument, got %zd", nargs);
        return NULL;
    }
    int channel = channel_of(args[0]);
    if (channel < 0) {
        return NULL;
    }
    Run *run = &self->runs[channel];
    if (!run->armed) {
        Py_RETURN_NONE;
    }
    PyObject *taken = Py_BuildValue("(nnO)", run->origin, run->end - run->origin, run->texts);
    if (taken != NULL) {
        run_clear(run);
    }
    return taken;
}

/* CPython's `x // y` for floats (the recorder's ms_to_frames rounds with it), then `int()` of the result. */
static int floor_div_to_frames(double x, double y, Py_ssize_t *out) {
    double mod = fmod(x, y);
    double div = (x - mod) / y;
    if (mod) {
        if ((y < 0) != (mod < 0)) {
            div -= 1.0;
        }
    }
    double floordiv;
    if (div) {
        floordiv = floor(div);
        if (div - floordiv > 0.5) {
            floordiv += 1.0;
        }
    } else {
        floordiv = copysign(0.0, x / y);
    }
    if (isnan(floordiv)) {
        PyErr_SetString(PyExc_ValueError, "cannot convert float NaN to integer");
        return -1;
    }
    if (!(floordiv > -9.2e18 && floordiv < 9.2e18)) {
        PyErr_SetString(PyExc_OverflowError, "a frame number out of range");
        return -1;
    }
    *out = (Py_ssize_t)floordiv;
    return 0;
}

/* Whether `fmt` is PCM at the recording rate (`fmt.rate == rate and fmt.type == "audio/pcm"`): 1, 0, or -1. */
static int plain_format(RunExtender *self, PyObject *fmt) {
    PyObject *rate = PyObject_GetAttr(fmt, NAME_RATE);
    if (rate == NULL) {
        return -1;
    }
    int same = equal(rate, self->rate_obj);
    Py_DECREF(rate);
    if (same <= 0) {
        return same;
    }
    return attr_equals(fmt, NAME_TYPE, PCM_TYPE);
}

/* take()'s state: the extender and the flush's time. */
typedef struct {
    RunExtender *self;
    double mono;
} ExtendPass;

/* take()'s visit: a chunk that continues its channel's armed run is taken; any other stops the walk. */
static int extend_visit(void *state, int assistant, PyObject *audio, PyObject *item_id, PyObject *fmt) {
    ExtendPass *pass = state;
    RunExtender *self = pass->self;
    Run *run = &self->runs[assistant];
    if (!run->armed) {
        return 1;
    }
    if (assistant) {
        if (!PyUnicode_CheckExact(item_id)) {
            return 1;
        }
        int same = equal(item_id, run->item_id);
        if (same <= 0) {
            return same < 0 ? -1 : 1;
        }
    }
    Py_ssize_t length = PyUnicode_GET_LENGTH(audio);
    if (length % 8 || PyUnicode_READ_CHAR(audio, length - 1) == '=') {
        return 1;
    }
    int plain = plain_format(self, fmt);
    if (plain <= 0) {
        return plain < 0 ? -1 : 1;
    }
    Py_ssize_t now;
    if (floor_div_to_frames((pass->mono - self->started_mono) * 1000.0 * self->rate, 1000.0, &now) < 0) {
        return -1;
    }
    /* take() runs Python code (attributes, comparisons, the output format) that could disarm this run. */
    if (!run->armed) {
        return 1;
    }
    Py_ssize_t frames = length * 3 / 8;
    Py_ssize_t limit = now + self->lead < self->max_frames ? now + self->lead : self->max_frames;
    if (now > run->end + self->continue_within || run->end + frames > limit) {
        return 1;
    }
    if (PyList_Append(run->texts, audio) < 0) {
        return -1;
    }
    run->end += frames;
    return 0;
}

static PyObject *extender_take(RunExtender *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 5) {
        PyErr_Format(PyExc_TypeError, "take takes 5 arguments, got %zd", nargs);
        return NULL;
    }
    Py_ssize_t start;
    ExtendPass pass = {.self = self};
    if (walk_arguments(args, &start, &pass.mono) < 0) {
        return NULL;
    }
    Py_ssize_t index = walk(args[0], start, args[3], args[4], extend_visit, &pass);
    if (index < 0) {
        return NULL;
    }
    return PyLong_FromSsize_t(index);
}

static PyMethodDef EXTENDER_METHODS[] = {
    {"arm", (PyCFunction)(void (*)(void))extender_arm, METH_FASTCALL,
     "arm(channel, end, item_id) -> None: the channel's run ends at timeline frame `end` (the assistant's: of item "
     "`item_id`); take() extends it."},
    {"take", (PyCFunction)(void (*)(void))extender_take, METH_FASTCALL,
     "take(entries, start, mono, default_format, output_format) -> index: see relay/recording/intake.py."},
    {"disarm", (PyCFunction)(void (*)(void))extender_disarm, METH_FASTCALL,
     "disarm(channel) -> (origin, frames, texts) | None: what was taken since arm()."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject RunExtenderType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "relay.recording._intake.RunExtender",
    .tp_basicsize = sizeof(RunExtender),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "RunExtender(rate, continue_within, lead, max_frames, started_mono): see relay/recording/intake.py.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)extender_init,
    .tp_dealloc = (destructor)extender_dealloc,
    .tp_methods = EXTENDER_METHODS,
};

static PyMethodDef METHODS[] = {
    {"set_kinds", (PyCFunction)(void (*)(void))set_kinds, METH_FASTCALL,
     "set_kinds(append: str, deltas: frozenset[str], truncate: str) -> None: the event types pass_over tells apart."},
    {"pass_over", (PyCFunction)(void (*)(void))pass_over, METH_FASTCALL,
     "pass_over(entries, start, mono, left_gate, right_gate, default_format, output_format) -> (index, dropped, "
     "skipped): see relay/recording/intake.py."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef MODULE = {PyModuleDef_HEAD_INIT, "_intake", NULL, -1, METHODS, NULL, NULL, NULL, NULL};

static PyObject *interned(const char *text) {
    return PyUnicode_InternFromString(text);
}

PyMODINIT_FUNC PyInit__intake(void) {
    NAME_TYPE = interned("type");
    NAME_EVENT = interned("event");
    NAME_DIR = interned("dir");
    NAME_AUDIO_FORMAT = interned("audio_format");
    KEY_AUDIO = interned("audio");
    KEY_DELTA = interned("delta");
    KEY_ITEM_ID = interned("item_id");
    DIR_CLIENT = interned("client");
    DIR_SERVER = interned("server");
    NAME_RATE = interned("rate");
    PCM_TYPE = interned("audio/pcm");
    if (!NAME_TYPE || !NAME_EVENT || !NAME_DIR || !NAME_AUDIO_FORMAT || !KEY_AUDIO || !KEY_DELTA || !KEY_ITEM_ID ||
        !DIR_CLIENT || !DIR_SERVER || !NAME_RATE || !PCM_TYPE) {
        return NULL;
    }
    if (PyType_Ready(&RunExtenderType) < 0) {
        return NULL;
    }
    PyObject *module = PyModule_Create(&MODULE);
    if (module == NULL) {
        return NULL;
    }
    if (PyModule_AddObjectRef(module, "RunExtender", (PyObject *)&RunExtenderType) < 0) {
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
