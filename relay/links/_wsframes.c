/* Masked WebSocket text frames, a burst of them in one bytes object, for the upstream link's one write per burst.
 *
 * Boundary: `relay.links.wsframe.masked_text_frames` calls `masked_text_frames(payloads, keys)` with the burst's
 * UTF-8 payloads (a list of bytes) and 4 random bytes per payload (the masking keys, RFC 6455 section 5.3); it
 * returns the frames back to back: FIN + text opcode, the MASK bit with the shortest length encoding, the key, the
 * payload XORed with the key. The Python version in wsframe.py gives the same bytes (tests/links/test_wsframe.py
 * holds them equal). Pure: no I/O, no state. Why it is native: docs/performance.md ("The twelfth round").
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

static Py_ssize_t header_size(Py_ssize_t n) {
    /* 2 bytes, 2 more for a 16-bit length, 8 more for a 64-bit one; then the 4-byte key. */
    return (n < 126 ? 2 : (n < 65536 ? 4 : 10)) + 4;
}

static char *put_header(char *out, Py_ssize_t n, const unsigned char *key) {
    *out++ = (char)0x81;
    if (n < 126) {
        *out++ = (char)(0x80 | n);
    } else if (n < 65536) {
        *out++ = (char)(0x80 | 126);
        *out++ = (char)((n >> 8) & 0xFF);
        *out++ = (char)(n & 0xFF);
    } else {
        *out++ = (char)(0x80 | 127);
        uint64_t len = (uint64_t)n;
        for (int shift = 56; shift >= 0; shift -= 8) {
            *out++ = (char)((len >> shift) & 0xFF);
        }
    }
    memcpy(out, key, 4);
    return out + 4;
}

static void put_masked(char *out, const char *payload, Py_ssize_t n, const unsigned char *key) {
    /* Eight bytes at a time with the key repeated twice (byte order does not matter: both sides are bytes in
     * memory order), then the tail byte by byte; the key's phase is the byte's offset modulo 4 throughout. */
    unsigned char key8[8] = {key[0], key[1], key[2], key[3], key[0], key[1], key[2], key[3]};
    uint64_t mask;
    memcpy(&mask, key8, 8);
    Py_ssize_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t word;
        memcpy(&word, payload + i, 8);
        word ^= mask;
        memcpy(out + i, &word, 8);
    }
    for (; i < n; i++) {
        out[i] = (char)(payload[i] ^ key[i & 3]);
    }
}

static PyObject *masked_text_frames(PyObject *module, PyObject *args) {
    PyObject *payloads;
    Py_buffer keys;
    (void)module;
    if (!PyArg_ParseTuple(args, "O!y*", &PyList_Type, &payloads, &keys)) {
        return NULL;
    }
    PyObject *out = NULL;
    Py_ssize_t count = PyList_GET_SIZE(payloads);
    if (keys.len != 4 * count) {
        PyErr_Format(PyExc_ValueError, "%zd payloads need %zd key bytes, got %zd", count, 4 * count, keys.len);
        goto done;
    }
    Py_ssize_t total = 0;
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *payload = PyList_GET_ITEM(payloads, i);
        if (!PyBytes_CheckExact(payload)) {
            PyErr_Format(PyExc_TypeError, "payload %zd is %.100s, not bytes", i, Py_TYPE(payload)->tp_name);
            goto done;
        }
        Py_ssize_t n = PyBytes_GET_SIZE(payload);
        if (total > PY_SSIZE_T_MAX - n - 14) {
            PyErr_NoMemory();
            goto done;
        }
        total += header_size(n) + n;
    }
    /* Nothing below runs Python code, so the list cannot change under the loop. */
    out = PyBytes_FromStringAndSize(NULL, total);
    if (out == NULL) {
        goto done;
    }
    char *at = PyBytes_AS_STRING(out);
    const unsigned char *key = (const unsigned char *)keys.buf;
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *payload = PyList_GET_ITEM(payloads, i);
        Py_ssize_t n = PyBytes_GET_SIZE(payload);
        at = put_header(at, n, key + 4 * i);
        put_masked(at, PyBytes_AS_STRING(payload), n, key + 4 * i);
        at += n;
    }
done:
    PyBuffer_Release(&keys);
    return out;
}

static PyMethodDef METHODS[] = {
    {"masked_text_frames", masked_text_frames, METH_VARARGS,
     "masked_text_frames(payloads: list[bytes], keys: bytes) -> bytes: the payloads as masked final text frames, "
     "back to back, payload i masked with keys[4*i:4*i+4]."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef MODULE = {PyModuleDef_HEAD_INIT, "_wsframes", NULL, -1, METHODS, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__wsframes(void) {
    return PyModule_Create(&MODULE);
}
