/* upwire._speedups: C versions of the hot loops of the sans-I/O core.
 *
 * Each function has a pure-Python twin in upwire/protocol/frames.py that is used when this extension is
 * not built; tests/protocol/test_speedups.py checks that both give identical results on random input.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

/* apply_mask(data, mask_key, offset=0) -> bytes
 * XOR data with the 4-byte masking key repeated (RFC 6455 section 5.3), starting at key byte
 * offset % 4. Eight bytes at a time: the key repeated twice as one 64-bit word. */
static PyObject *
apply_mask(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    Py_buffer data, key;
    Py_ssize_t offset = 0;
    PyObject *result = NULL;

    if (nargs < 2 || nargs > 3) {
        PyErr_SetString(PyExc_TypeError, "apply_mask(data, mask_key, offset=0)");
        return NULL;
    }
    if (nargs == 3) {
        offset = PyLong_AsSsize_t(args[2]);
        if (offset == -1 && PyErr_Occurred()) {
            return NULL;
        }
    }
    if (PyObject_GetBuffer(args[0], &data, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    if (PyObject_GetBuffer(args[1], &key, PyBUF_SIMPLE) < 0) {
        PyBuffer_Release(&data);
        return NULL;
    }
    if (key.len != 4) {
        PyErr_SetString(PyExc_ValueError, "mask_key must be 4 bytes");
        goto done;
    }
    result = PyBytes_FromStringAndSize(NULL, data.len);
    if (result == NULL) {
        goto done;
    }
    {
        const unsigned char *in = (const unsigned char *)data.buf;
        unsigned char *out = (unsigned char *)PyBytes_AS_STRING(result);
        const unsigned char *k = (const unsigned char *)key.buf;
        unsigned char rotated[8];
        Py_ssize_t i = 0, n = data.len;
        uint64_t word;
        int shift = (int)(((offset % 4) + 4) % 4);

        for (int j = 0; j < 8; j++) {
            rotated[j] = k[(j + shift) & 3];
        }
        memcpy(&word, rotated, 8);
        for (; i + 8 <= n; i += 8) {
            uint64_t chunk;
            memcpy(&chunk, in + i, 8);
            chunk ^= word;
            memcpy(out + i, &chunk, 8);
        }
        for (; i < n; i++) {
            out[i] = in[i] ^ rotated[i & 7];
        }
    }
done:
    PyBuffer_Release(&key);
    PyBuffer_Release(&data);
    return result;
}

/* alloc_buffer(size) -> bytearray
 * A bytearray of `size` bytes whose contents are not initialized: the buffer a large frame is received
 * into (its pages are touched only as bytes arrive, and nothing is written twice). The caller reads only
 * what it wrote into it. */
static PyObject *
alloc_buffer(PyObject *module, PyObject *arg)
{
    Py_ssize_t size = PyLong_AsSsize_t(arg);
    if (size == -1 && PyErr_Occurred()) {
        return NULL;
    }
    if (size < 0) {
        PyErr_SetString(PyExc_ValueError, "size must not be negative");
        return NULL;
    }
    return PyByteArray_FromStringAndSize(NULL, size);
}

static PyMethodDef speedups_methods[] = {
    {"apply_mask", (PyCFunction)(void (*)(void))apply_mask, METH_FASTCALL,
     "apply_mask(data, mask_key, offset=0) -> bytes: XOR with the repeated 4-byte key."},
    {"alloc_buffer", (PyCFunction)alloc_buffer, METH_O,
     "alloc_buffer(size) -> bytearray: `size` bytes, not initialized."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef speedups_module = {
    PyModuleDef_HEAD_INIT, "upwire._speedups", "C versions of upwire's hot loops.", -1,
    speedups_methods,
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    return PyModule_Create(&speedups_module);
}
