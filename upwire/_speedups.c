/* upwire._speedups: C versions of the hot loops of the sans-I/O core, and of broadcast's send loop.
 *
 * Each function has a pure-Python twin (in upwire/protocol/frames.py; take_simple_frames in
 * upwire/protocol/simple_frames.py, send_each in upwire/broadcast.py) that is used when this extension is
 * not built; tests/protocol/test_speedups.py and tests/integration/test_send_each.py check that both give
 * identical results on random input.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <string.h>
#ifndef _WIN32
#include <sys/socket.h>
#endif
#ifndef MSG_NOSIGNAL
#define MSG_NOSIGNAL 0 /* where it is missing, Python's own SIG_IGN for SIGPIPE applies */
#endif

/* Write n bytes of `in` XORed with the 4-byte key, starting at key byte `shift` (0-3), to `out` (which may be
 * `in` itself). 64 bytes at a time with GCC/Clang vector types (SSE2 on any x86-64, and a copy of the function
 * for AVX2 picked when the CPU has it), then 8 at a time: the key repeated as one word. Unmasking is a pass over
 * every received byte, so it should run at the speed of the cache, not of one 64-bit register. */
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__aarch64__))
#define MASK_VECTORS 1
typedef unsigned char mask_vector __attribute__((vector_size(32)));
#if defined(__x86_64__) && defined(__linux__) && defined(__GLIBC__) && !defined(__clang__) && __GNUC__ >= 8
#define MASK_CLONES __attribute__((target_clones("avx2", "default")))
#endif
#endif
#ifndef MASK_CLONES
#define MASK_CLONES
#endif

MASK_CLONES static void
mask_into(unsigned char *out, const unsigned char *in, Py_ssize_t n, const unsigned char *k, int shift)
{
    unsigned char rotated[8];
    Py_ssize_t i = 0;
    uint64_t word;

    /* The key as it applies from the first byte on, twice: 8 bytes (most payloads are short: no loop
     * over 32 bytes to set up). */
    for (int j = 0; j < 4; j++) {
        rotated[j] = rotated[j + 4] = k[(j + shift) & 3];
    }
#ifdef MASK_VECTORS
    if (n >= 64) {
        mask_vector key_vector;
        unsigned char wide[32];
        for (int j = 0; j < 32; j += 8) {
            memcpy(wide + j, rotated, 8);
        }
        memcpy(&key_vector, wide, 32);
        for (; i + 64 <= n; i += 64) {
            mask_vector a, b;
            memcpy(&a, in + i, 32);
            memcpy(&b, in + i + 32, 32);
            a ^= key_vector;
            b ^= key_vector;
            memcpy(out + i, &a, 32);
            memcpy(out + i + 32, &b, 32);
        }
    }
#endif
    memcpy(&word, rotated, 8); /* i is a multiple of 4 here: the key starts over */
    for (; i + 8 <= n; i += 8) {
        uint64_t chunk;
        memcpy(&chunk, in + i, 8);
        chunk ^= word;
        memcpy(out + i, &chunk, 8);
    }
    for (; i < n; i++) {
        out[i] = in[i] ^ rotated[i & 3];
    }
}

/* The arguments of apply_mask and mask_in_place, (data, mask_key, offset=0): the data's buffer (writable
 * when `flags` says so), the key's, and where in the key the data starts. 0, or -1 with an exception set
 * and no buffer held. */
static int
mask_arguments(PyObject *const *args, Py_ssize_t nargs, const char *usage, int flags, Py_buffer *data,
               Py_buffer *key, int *shift)
{
    Py_ssize_t offset = 0;

    if (nargs < 2 || nargs > 3) {
        PyErr_SetString(PyExc_TypeError, usage);
        return -1;
    }
    if (nargs == 3) {
        offset = PyLong_AsSsize_t(args[2]);
        if (offset == -1 && PyErr_Occurred()) {
            return -1;
        }
    }
    if (PyObject_GetBuffer(args[0], data, flags) < 0) {
        if ((flags & PyBUF_WRITABLE) && PyErr_ExceptionMatches(PyExc_BufferError)) {
            /* read-only (or not contiguous): a TypeError, as for the Python twin and socket.recv_into */
            PyErr_SetString(PyExc_TypeError, "a writable, contiguous buffer is needed");
        }
        return -1;
    }
    if (PyObject_GetBuffer(args[1], key, PyBUF_SIMPLE) < 0) {
        PyBuffer_Release(data);
        return -1;
    }
    if (key->len != 4) {
        PyErr_SetString(PyExc_ValueError, "mask_key must be 4 bytes");
        PyBuffer_Release(key);
        PyBuffer_Release(data);
        return -1;
    }
    *shift = (int)(((offset % 4) + 4) % 4);
    return 0;
}

/* apply_mask(data, mask_key, offset=0) -> bytes
 * XOR data with the 4-byte masking key repeated (RFC 6455 section 5.3), starting at key byte
 * offset % 4. */
static PyObject *
apply_mask(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    Py_buffer data, key;
    int shift;
    PyObject *result;

    if (mask_arguments(args, nargs, "apply_mask(data, mask_key, offset=0)", PyBUF_SIMPLE, &data, &key,
                       &shift) < 0) {
        return NULL;
    }
    result = PyBytes_FromStringAndSize(NULL, data.len);
    if (result != NULL) {
        mask_into((unsigned char *)PyBytes_AS_STRING(result), (const unsigned char *)data.buf, data.len,
                  (const unsigned char *)key.buf, shift);
    }
    PyBuffer_Release(&key);
    PyBuffer_Release(&data);
    return result;
}

/* encode_frame(opcode, payload, fin=True, rsv=0, mask_key=None) -> bytes
 * A whole frame (RFC 6455 section 5.2): the header with the shortest length encoding, then the payload,
 * masked when mask_key is given; built in one allocation and one pass over the payload. */
static PyObject *
encode_frame_impl(int opcode, PyObject *payload_obj, int fin, int rsv, PyObject *mask_obj)
{
    Py_buffer payload, key;
    PyObject *result = NULL;
    Py_ssize_t n, header_len;
    unsigned char *out;
    int masked;

    if (opcode < 0 || opcode > 15 || rsv < 0 || rsv > 7) {
        PyErr_SetString(PyExc_ValueError, "opcode must be 0-15 and rsv 0-7");
        return NULL;
    }
    masked = mask_obj != Py_None;
    if (PyObject_GetBuffer(payload_obj, &payload, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    if (masked) {
        if (PyObject_GetBuffer(mask_obj, &key, PyBUF_SIMPLE) < 0) {
            PyBuffer_Release(&payload);
            return NULL;
        }
        if (key.len != 4) {
            PyErr_SetString(PyExc_ValueError, "mask_key must be 4 bytes");
            goto done;
        }
    }
    n = payload.len;
    header_len = 2 + (n < 126 ? 0 : n < 65536 ? 2 : 8) + (masked ? 4 : 0);
    result = PyBytes_FromStringAndSize(NULL, header_len + n);
    if (result == NULL) {
        goto done;
    }
    out = (unsigned char *)PyBytes_AS_STRING(result);
    out[0] = (unsigned char)((fin ? 0x80 : 0) | (rsv << 4) | opcode);
    {
        unsigned char mask_bit = masked ? 0x80 : 0;
        Py_ssize_t pos = 2;
        if (n < 126) {
            out[1] = (unsigned char)(mask_bit | n);
        }
        else if (n < 65536) {
            out[1] = mask_bit | 126;
            out[2] = (unsigned char)(n >> 8);
            out[3] = (unsigned char)n;
            pos = 4;
        }
        else {
            uint64_t length = (uint64_t)n;
            out[1] = mask_bit | 127;
            for (int i = 0; i < 8; i++) {
                out[2 + i] = (unsigned char)(length >> (56 - 8 * i));
            }
            pos = 10;
        }
        if (masked) {
            memcpy(out + pos, key.buf, 4);
            mask_into(out + pos + 4, (const unsigned char *)payload.buf, n,
                      (const unsigned char *)key.buf, 0);
        }
        else if (n > 0) {
            memcpy(out + pos, payload.buf, (size_t)n);
        }
    }
done:
    if (masked) {
        PyBuffer_Release(&key);
    }
    PyBuffer_Release(&payload);
    return result;
}

/* An int argument (opcode, rsv) as C int; -1 with an exception set when it is not an integer. A value
 * outside C int becomes -1, which the range checks then refuse as the Python twin does (ValueError). */
static int
int_argument(PyObject *obj, int *value)
{
    int overflow;
    long v = PyLong_AsLongAndOverflow(obj, &overflow);
    if (v == -1 && PyErr_Occurred()) {
        return -1;
    }
    *value = (overflow || v < INT_MIN || v > INT_MAX) ? -1 : (int)v;
    return 0;
}

/* The entry point: positional arguments (what the connection passes, once per message sent) are taken
 * straight from the call's stack; a call with keywords goes through the general argument parser. */
static PyObject *
encode_frame(PyObject *module, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    int opcode, fin = 1, rsv = 0;
    PyObject *mask_obj = Py_None;

    if (kwnames == NULL && nargs >= 2 && nargs <= 5) {
        if (int_argument(args[0], &opcode) < 0) {
            return NULL;
        }
        if (nargs > 2 && (fin = PyObject_IsTrue(args[2])) < 0) {
            return NULL;
        }
        if (nargs > 3 && int_argument(args[3], &rsv) < 0) {
            return NULL;
        }
        if (nargs > 4) {
            mask_obj = args[4];
        }
        return encode_frame_impl(opcode, args[1], fin, rsv, mask_obj);
    }
    {
        static char *kwlist[] = {"opcode", "payload", "fin", "rsv", "mask_key", NULL};
        PyObject *tuple, *dict = NULL, *payload_obj, *opcode_obj, *rsv_obj = NULL;
        int ok;

        tuple = PyTuple_New(nargs);
        if (tuple == NULL) {
            return NULL;
        }
        for (Py_ssize_t i = 0; i < nargs; i++) {
            Py_INCREF(args[i]);
            PyTuple_SET_ITEM(tuple, i, args[i]);
        }
        if (kwnames != NULL) {
            dict = PyDict_New();
            if (dict == NULL) {
                Py_DECREF(tuple);
                return NULL;
            }
            for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(kwnames); i++) {
                if (PyDict_SetItem(dict, PyTuple_GET_ITEM(kwnames, i), args[nargs + i]) < 0) {
                    Py_DECREF(tuple);
                    Py_DECREF(dict);
                    return NULL;
                }
            }
        }
        ok = PyArg_ParseTupleAndKeywords(tuple, dict, "OO|pOO:encode_frame", kwlist, &opcode_obj,
                                         &payload_obj, &fin, &rsv_obj, &mask_obj);
        if (ok && (int_argument(opcode_obj, &opcode) < 0 ||
                   (rsv_obj != NULL && int_argument(rsv_obj, &rsv) < 0))) {
            ok = 0;
        }
        if (ok) {
            /* The tuple and the dict hold the arguments until the frame is built. */
            PyObject *result = encode_frame_impl(opcode, payload_obj, fin, rsv, mask_obj);
            Py_DECREF(tuple);
            Py_XDECREF(dict);
            return result;
        }
        Py_DECREF(tuple);
        Py_XDECREF(dict);
        return NULL;
    }
}

/* The payloads handed out last (see keep_payload), at most SPARE_SLOTS of them and SPARE_BYTES in all. Once
 * nothing else refers to one (the application is done with it), the next payload of its size is received
 * into it instead of new memory: large short-lived allocations are what make the heap shrink and grow again,
 * with a page fault per 4 KiB each time. More than one, since messages arriving on several connections at
 * once are handed out (and dropped) in another order than they started arriving in. */
#ifndef SPARE_SLOTS
#define SPARE_SLOTS 4
#endif
#define SPARE_BYTES ((Py_ssize_t)16 << 20)
/* Binary messages parsed from a read (take_simple_frames) at least this large are reused alike. */
#define REUSE_MIN ((Py_ssize_t)256 << 10)
static PyObject *spare_payloads[SPARE_SLOTS];
static unsigned long spare_ages[SPARE_SLOTS]; /* when each was kept: the lowest is the oldest */
static unsigned long spare_clock = 0;

/* A bytes object of `size` bytes, not initialized: a spare one when one is free and that size. */
static PyObject *
new_payload(Py_ssize_t size)
{
#if !defined(Py_GIL_DISABLED) && PY_VERSION_HEX < 0x030F0000
    for (int i = 0; i < SPARE_SLOTS; i++) {
        PyObject *spare = spare_payloads[i];
        if (spare != NULL && Py_REFCNT(spare) == 1 && PyBytes_GET_SIZE(spare) == size) {
            /* Only this module refers to it: it is as good as new, once its cached hash is forgotten (as
             * _PyBytes_Resize does for a bytes object it reuses). */
            spare_payloads[i] = NULL;
#if defined(__GNUC__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
#endif
            ((PyBytesObject *)spare)->ob_shash = -1;
#if defined(__GNUC__)
#pragma GCC diagnostic pop
#endif
            return spare;
        }
    }
#endif
    return PyBytes_FromStringAndSize(NULL, size);
}

/* Remember a large payload that was just handed out, for new_payload to reuse once the application has
 * dropped it. It goes to a free slot (new_payload empties the slot it takes from), else replaces the oldest
 * one kept; older ones go while the ones kept add up to more than SPARE_BYTES. */
static void
remember_payload(PyObject *arg)
{
    Py_ssize_t total = 0;
    int slot = -1;

#if defined(Py_GIL_DISABLED) || PY_VERSION_HEX >= 0x030F0000
    return; /* new_payload reuses none there: keeping them would only hold memory */
#endif
    if (!PyBytes_CheckExact(arg) || PyBytes_GET_SIZE(arg) <= 1 || PyBytes_GET_SIZE(arg) > SPARE_BYTES) {
        return;
    }
    for (int i = 0; i < SPARE_SLOTS; i++) {
        if (spare_payloads[i] == NULL) {
            slot = i;
            break;
        }
        if (slot < 0 || spare_ages[i] < spare_ages[slot]) {
            slot = i;
        }
    }
    Py_XSETREF(spare_payloads[slot], Py_NewRef(arg));
    spare_ages[slot] = ++spare_clock;
    for (int i = 0; i < SPARE_SLOTS; i++) {
        if (spare_payloads[i] != NULL) {
            total += PyBytes_GET_SIZE(spare_payloads[i]);
        }
    }
    while (total > SPARE_BYTES) {
        /* the oldest other one (the one just kept fits by itself) */
        int oldest = -1;
        for (int i = 0; i < SPARE_SLOTS; i++) {
            if (i != slot && spare_payloads[i] != NULL
                && (oldest < 0 || spare_ages[i] < spare_ages[oldest])) {
                oldest = i;
            }
        }
        total -= PyBytes_GET_SIZE(spare_payloads[oldest]);
        Py_CLEAR(spare_payloads[oldest]);
    }
}

/* keep_payload(payload) -> None
 * remember_payload, for a payload that payload_buffer gave and that was just handed out. */
static PyObject *
keep_payload(PyObject *module, PyObject *arg)
{
    remember_payload(arg);
    Py_RETURN_NONE;
}

/* take_simple_frames(buffer, pos, masked, limit, events) -> int
 * The receive fast path (twin and rules: upwire/protocol/simple_frames.py). From `pos`, decode every frame
 * that is a whole message by itself: FIN, no RSV bit, TEXT or BINARY, the expected MASK bit, the minimal
 * length encoding, a length <= limit, complete, and valid UTF-8 for TEXT. Append each message (str or
 * bytes) to the list `events`; return where the run stops. A frame that is not simple is left where it
 * is, for the general parser: this function raises only for bad arguments or a lack of memory. */
static PyObject *
take_simple_frames(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    Py_buffer view;
    Py_ssize_t pos, end;
    int masked;
    unsigned long long limit;
    PyObject *events;
    const unsigned char *p;
    unsigned char mask_bit;

    if (nargs != 5) {
        PyErr_SetString(PyExc_TypeError, "take_simple_frames(buffer, pos, masked, limit, events)");
        return NULL;
    }
    pos = PyLong_AsSsize_t(args[1]);
    if (pos == -1 && PyErr_Occurred()) {
        return NULL;
    }
    masked = PyObject_IsTrue(args[2]);
    if (masked < 0) {
        return NULL;
    }
    {
        int overflow;
        long long value = PyLong_AsLongLongAndOverflow(args[3], &overflow);
        if (value == -1 && PyErr_Occurred()) {
            return NULL;
        }
        if (overflow < 0 || (overflow == 0 && value < 0)) {
            PyErr_SetString(PyExc_ValueError, "limit must not be negative");
            return NULL;
        }
        /* Larger than any frame length (lengths have 63 bits): no limit. */
        limit = overflow > 0 ? ULLONG_MAX : (unsigned long long)value;
    }
    events = args[4];
    if (!PyList_Check(events)) {
        PyErr_SetString(PyExc_TypeError, "events must be a list");
        return NULL;
    }
    if (PyObject_GetBuffer(args[0], &view, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    end = view.len;
    if (pos < 0 || pos > end) {
        PyErr_Format(PyExc_ValueError, "pos %zd is outside the buffer (0-%zd)", pos, end);
        PyBuffer_Release(&view);
        return NULL;
    }
    p = (const unsigned char *)view.buf;
    mask_bit = masked ? 0x80 : 0;
    while (end - pos >= 2) {
        unsigned char b0 = p[pos], b1 = p[pos + 1];
        uint64_t length = b1 & 0x7F;
        Py_ssize_t start = pos + 2, n;
        const unsigned char *key = NULL;
        PyObject *message;

        if ((b0 != 0x81 && b0 != 0x82) || (b1 & 0x80) != mask_bit) {
            break;
        }
        if (length == 126) {
            if (end - start < 2) {
                break;
            }
            length = ((uint64_t)p[start] << 8) | p[start + 1];
            start += 2;
            if (length < 126) {
                break; /* not the minimal encoding */
            }
        }
        else if (length == 127) {
            if (end - start < 8) {
                break;
            }
            length = 0;
            for (int i = 0; i < 8; i++) {
                length = (length << 8) | p[start + i];
            }
            start += 8;
            if (length < 65536 || (length >> 63)) {
                break; /* not minimal, or the most significant bit set */
            }
        }
        if (length > limit) {
            break;
        }
        if (masked) {
            if (end - start < 4) {
                break;
            }
            key = p + start;
            start += 4;
        }
        if ((uint64_t)(end - start) < length) {
            break;
        }
        n = (Py_ssize_t)length;
        if (b0 == 0x82) {
            message = n >= REUSE_MIN ? new_payload(n) : PyBytes_FromStringAndSize(NULL, n);
            if (message == NULL) {
                goto error;
            }
            if (masked) {
                mask_into((unsigned char *)PyBytes_AS_STRING(message), p + start, n, key, 0);
            }
            else {
                memcpy(PyBytes_AS_STRING(message), p + start, (size_t)n);
            }
            if (n >= REUSE_MIN) {
                remember_payload(message);
            }
        }
        else {
            unsigned char small[256];
            unsigned char *unmasked = NULL;
            const char *text = (const char *)p + start;
            if (masked) {
                unmasked = n <= (Py_ssize_t)sizeof(small) ? small : PyMem_Malloc((size_t)n);
                if (unmasked == NULL) {
                    PyErr_NoMemory();
                    goto error;
                }
                mask_into(unmasked, p + start, n, key, 0);
                text = (const char *)unmasked;
            }
            message = PyUnicode_DecodeUTF8(text, n, "strict");
            if (unmasked != NULL && unmasked != small) {
                PyMem_Free(unmasked);
            }
            if (message == NULL) {
                if (PyErr_ExceptionMatches(PyExc_UnicodeDecodeError)) {
                    PyErr_Clear();
                    break; /* not simple: the general path reports it */
                }
                goto error;
            }
        }
        if (PyList_Append(events, message) < 0) {
            Py_DECREF(message);
            goto error;
        }
        Py_DECREF(message);
        pos = start + n;
    }
    PyBuffer_Release(&view);
    return PyLong_FromSsize_t(pos);
error:
    PyBuffer_Release(&view);
    return NULL;
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

/* mask_in_place(buffer, mask_key, offset=0) -> None
 * apply_mask on a writable buffer, in place: a payload received into its own buffer is unmasked where it
 * lies, piece by piece as it arrives (offset: the piece's position within the payload). */
static PyObject *
mask_in_place(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    Py_buffer data, key;
    int shift;

    if (mask_arguments(args, nargs, "mask_in_place(buffer, mask_key, offset=0)", PyBUF_WRITABLE, &data,
                       &key, &shift) < 0) {
        return NULL;
    }
    mask_into((unsigned char *)data.buf, (const unsigned char *)data.buf, data.len,
              (const unsigned char *)key.buf, shift);
    PyBuffer_Release(&key);
    PyBuffer_Release(&data);
    Py_RETURN_NONE;
}

/* A large binary message is received straight into the bytes object the application gets: the kernel
 * copies it there, it is unmasked where it lies, and nothing copies it again.
 *
 * PayloadWriter exports a writable buffer over a new bytes object's storage and holds that object, so a
 * view of it never outlives the storage. The rule that makes writing into a bytes object sound: it is
 * written only through this view, and only before it is handed out; until then nothing else refers to it
 * (so nothing can have hashed or compared it). */
typedef struct {
    PyObject_HEAD
    PyObject *target; /* the bytes object, not yet handed out */
} PayloadWriter;

static int
payload_writer_getbuffer(PyObject *self, Py_buffer *view, int flags)
{
    PyObject *target = ((PayloadWriter *)self)->target;
    return PyBuffer_FillInfo(view, self, PyBytes_AS_STRING(target), PyBytes_GET_SIZE(target), 0, flags);
}

static void
payload_writer_dealloc(PyObject *self)
{
    Py_XDECREF(((PayloadWriter *)self)->target);
    Py_TYPE(self)->tp_free(self);
}

static PyBufferProcs payload_writer_as_buffer = {payload_writer_getbuffer, NULL};

static PyTypeObject PayloadWriterType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "upwire._speedups.PayloadWriter",
    .tp_basicsize = sizeof(PayloadWriter),
    .tp_dealloc = payload_writer_dealloc,
    .tp_as_buffer = &payload_writer_as_buffer,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "A writable buffer over a bytes object that is being filled (see payload_buffer).",
};

/* payload_buffer(size) -> (bytes, memoryview)
 * A bytes object of `size` bytes whose contents are not initialized, and a writable view of them to
 * receive a message's payload into. The caller hands the bytes object out once the view has filled it,
 * and writes nothing through the view after that. */
static PyObject *
payload_buffer(PyObject *module, PyObject *arg)
{
    Py_ssize_t size = PyLong_AsSsize_t(arg);
    PyObject *target, *view, *result;
    PayloadWriter *writer;

    if (size == -1 && PyErr_Occurred()) {
        return NULL;
    }
    if (size <= 0) {
        /* an empty bytes object is a shared singleton: never written into */
        PyErr_SetString(PyExc_ValueError, "size must be positive");
        return NULL;
    }
    target = new_payload(size);
    if (target == NULL) {
        return NULL;
    }
    writer = PyObject_New(PayloadWriter, &PayloadWriterType);
    if (writer == NULL) {
        Py_DECREF(target);
        return NULL;
    }
    writer->target = target; /* the writer's reference */
    view = PyMemoryView_FromObject((PyObject *)writer);
    Py_DECREF(writer); /* the view holds it now */
    if (view == NULL) {
        return NULL;
    }
    result = PyTuple_Pack(2, target, view);
    Py_DECREF(view);
    return result;
}

#ifndef _WIN32
/* send_each(fds, data) -> list[tuple[int, int]]
 * Send `data` on every socket of the list `fds` (file descriptors of non-blocking stream sockets) with
 * send(2), without blocking and without SIGPIPE, all in one pass without the GIL: broadcast's whole
 * per-connection cost. Returns (position in fds, bytes sent) for each socket that did not take all of
 * `data` (a full send buffer, or an error: the caller's transport writes the rest and meets the error
 * itself). */
static PyObject *
send_each(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    Py_buffer data;
    PyObject *fds, *result = NULL;
    Py_ssize_t n, i;
    int *fdv = NULL;
    Py_ssize_t *sent = NULL;
    int max_fd = 0;

    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "send_each(fds, data)");
        return NULL;
    }
    fds = args[0];
    if (!PyList_Check(fds)) {
        PyErr_SetString(PyExc_TypeError, "fds must be a list of file descriptors");
        return NULL;
    }
    if (PyObject_GetBuffer(args[1], &data, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    n = PyList_GET_SIZE(fds);
    fdv = PyMem_New(int, n > 0 ? n : 1);
    sent = PyMem_New(Py_ssize_t, n > 0 ? n : 1);
    if (fdv == NULL || sent == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    for (i = 0; i < n; i++) {
        long fd = PyLong_AsLong(PyList_GET_ITEM(fds, i));
        if (fd == -1 && PyErr_Occurred()) {
            goto done;
        }
        if (fd < 0 || fd > INT_MAX) {
            PyErr_Format(PyExc_ValueError, "not a file descriptor: %ld", fd);
            goto done;
        }
        fdv[i] = (int)fd;
        if (fd > max_fd) {
            max_fd = (int)fd;
        }
    }
    Py_BEGIN_ALLOW_THREADS
    /* A socket listed twice that did not take all of `data` gets nothing more in this pass: the rest of
     * its first copy must go out before any of the second. `failed` has a bit per such socket, allocated
     * at the first one (there are none in the usual case). */
    unsigned char *failed = NULL;
    for (i = 0; i < n; i++) {
        const char *buf = (const char *)data.buf;
        Py_ssize_t total = 0;
        int fd = fdv[i];
        int skip = failed != NULL && (failed[fd >> 3] & (1u << (fd & 7)));
        while (!skip && total < data.len) {
            ssize_t r = send(fd, buf + total, (size_t)(data.len - total), MSG_DONTWAIT | MSG_NOSIGNAL);
            if (r > 0) {
                total += r;
            }
            else if (r < 0 && errno == EINTR) {
                continue;
            }
            else {
                break; /* EAGAIN: the buffer is full; other errors are the transport's to report */
            }
        }
        sent[i] = total;
        if (total < data.len) {
            if (failed == NULL) {
                failed = PyMem_RawCalloc((size_t)max_fd / 8 + 1, 1);
                if (failed == NULL) {
                    /* Without memory, send no more: the later sockets report 0 bytes sent, and
                     * the caller's transports write the frame to them. */
                    for (i++; i < n; i++) {
                        sent[i] = 0;
                    }
                    break;
                }
            }
            failed[fd >> 3] |= (unsigned char)(1u << (fd & 7));
        }
    }
    PyMem_RawFree(failed);
    Py_END_ALLOW_THREADS
    result = PyList_New(0);
    if (result == NULL) {
        goto done;
    }
    for (i = 0; i < n; i++) {
        if (sent[i] < data.len) {
            PyObject *item = Py_BuildValue("(nn)", i, sent[i]);
            if (item == NULL || PyList_Append(result, item) < 0) {
                Py_XDECREF(item);
                Py_CLEAR(result);
                goto done;
            }
            Py_DECREF(item);
        }
    }
done:
    PyMem_Free(fdv);
    PyMem_Free(sent);
    PyBuffer_Release(&data);
    return result;
}
#endif

/* ------------------------------------------------------------------ the opening handshake */

/* read_common_head(data) -> (method, target, fields, size) | None
 * The C twin of upwire.protocol.request_head.read_common_head_py, whose docstring and comments give the
 * grammar (h11's, restricted to the common form): a request head that ends within the first 64 KiB of
 * `data`, with a request line `token SP target SP "HTTP/1.1" CRLF` and field lines
 * `token ":" OWS value OWS CRLF`, exactly one Host field and no Content-Length or Transfer-Encoding.
 * Anything else returns None (h11 reads it). One pass over the head, no regular expression. */

/* The characters of an HTTP token (RFC 9110 section 5.6.2). */
static int
is_tchar(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')
           || (c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

/* A field value holds any byte but NUL, LF, CR, VT and FF (h11's field-content, with obs-text). */
static int
ends_value(unsigned char c)
{
    return c == 0 || c == '\n' || c == '\r' || c == 0x0b || c == 0x0c;
}

/* Does the token p[0:n] equal the lower-case `name` without regard to ASCII case? */
static int
token_is(const unsigned char *p, Py_ssize_t n, const char *name)
{
    Py_ssize_t i;
    if ((size_t)n != strlen(name)) {
        return 0;
    }
    for (i = 0; i < n; i++) {
        unsigned char c = p[i];
        if (c >= 'A' && c <= 'Z') {
            c = (unsigned char)(c + 32);
        }
        if (c != (unsigned char)name[i]) {
            return 0;
        }
    }
    return 1;
}

/* Append p[0:n], decoded as Latin-1, to the list `fields`; -1 with an exception set on failure. */
static int
append_latin1(PyObject *fields, const unsigned char *p, Py_ssize_t n)
{
    PyObject *text = PyUnicode_DecodeLatin1((const char *)p, n, NULL);
    int failed;

    if (text == NULL) {
        return -1;
    }
    failed = PyList_Append(fields, text);
    Py_DECREF(text);
    return failed;
}

static PyObject *
read_common_head(PyObject *module, PyObject *arg)
{
    Py_buffer view;
    PyObject *fields = NULL, *method = NULL, *target = NULL, *result = NULL;
    const unsigned char *p;
    Py_ssize_t n, end = -1, stop, i, start, hosts = 0;

    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    p = (const unsigned char *)view.buf;
    n = view.len < 65536 ? view.len : 65536;
    /* The first CRLF CRLF that lies whole within the first 64 KiB. */
    for (i = 0; i + 4 <= n; i++) {
        const unsigned char *cr = memchr(p + i, '\r', (size_t)(n - 3 - i));
        if (cr == NULL) {
            break;
        }
        i = cr - p;
        if (p[i + 1] == '\n' && p[i + 2] == '\r' && p[i + 3] == '\n') {
            end = i;
            break;
        }
    }
    if (end < 0) {
        goto none;
    }
    stop = end + 2; /* up to the CRLF of the last line */
    /* The request line. */
    for (i = 0; i < stop && is_tchar(p[i]); i++) {
    }
    if (i == 0 || i >= stop || p[i] != ' ') {
        goto none;
    }
    method = PyUnicode_DecodeLatin1((const char *)p, i, NULL);
    if (method == NULL) {
        goto done;
    }
    start = ++i;
    while (i < stop && p[i] >= 0x21 && p[i] <= 0x7e) {
        i++;
    }
    if (i == start || stop - i < 11 || memcmp(p + i, " HTTP/1.1\r\n", 11) != 0) {
        goto none;
    }
    target = PyUnicode_DecodeLatin1((const char *)p + start, i - start, NULL);
    if (target == NULL) {
        goto done;
    }
    i += 11;
    fields = PyList_New(0);
    if (fields == NULL) {
        goto done;
    }
    /* The field lines, each whole up to its CRLF. */
    while (i < stop) {
        Py_ssize_t name_start = i, name_end, value_start, value_end;

        while (i < stop && is_tchar(p[i])) {
            i++;
        }
        if (i == name_start || i >= stop || p[i] != ':') {
            goto none;
        }
        name_end = i++;
        while (i < stop && (p[i] == ' ' || p[i] == '\t')) {
            i++;
        }
        value_start = i;
        while (i < stop && !ends_value(p[i])) {
            i++;
        }
        if (stop - i < 2 || p[i] != '\r' || p[i + 1] != '\n') {
            goto none;
        }
        value_end = i;
        while (value_end > value_start && (p[value_end - 1] == ' ' || p[value_end - 1] == '\t')) {
            value_end--;
        }
        i += 2;
        if (token_is(p + name_start, name_end - name_start, "host")) {
            hosts++;
        }
        else if (token_is(p + name_start, name_end - name_start, "content-length")
                 || token_is(p + name_start, name_end - name_start, "transfer-encoding")) {
            goto none; /* h11 rewrites these: left to it */
        }
        if (append_latin1(fields, p + name_start, name_end - name_start) < 0
            || append_latin1(fields, p + value_start, value_end - value_start) < 0) {
            goto done;
        }
    }
    if (hosts != 1) {
        goto none; /* h11 refuses a head without Host or with two */
    }
    result = Py_BuildValue("(OOOn)", method, target, fields, end + 4);
    goto done;
none:
    result = Py_NewRef(Py_None);
done:
    Py_XDECREF(method);
    Py_XDECREF(target);
    Py_XDECREF(fields);
    PyBuffer_Release(&view);
    return result;
}

/* SHA-1 (FIPS 180-4), for the one digest of a handshake: Sec-WebSocket-Accept. It is not a security
 * measure here (RFC 6455 section 10.3 uses it only to tie the answer to the request), and hashlib's
 * OpenSSL object costs more to set up for 60 bytes than the hashing itself. */
typedef struct {
    uint32_t h[5];
    unsigned char block[64];
    size_t used;     /* bytes in `block` */
    uint64_t length; /* bytes hashed */
} sha1_state;

static uint32_t
rotate_left(uint32_t x, int n)
{
    return (x << n) | (x >> (32 - n));
}

static void
sha1_compress(uint32_t h[5], const unsigned char *block)
{
    uint32_t w[80], a, b, c, d, e;
    int t;

    for (t = 0; t < 16; t++) {
        w[t] = (uint32_t)block[4 * t] << 24 | (uint32_t)block[4 * t + 1] << 16
               | (uint32_t)block[4 * t + 2] << 8 | (uint32_t)block[4 * t + 3];
    }
    for (t = 16; t < 80; t++) {
        w[t] = rotate_left(w[t - 3] ^ w[t - 8] ^ w[t - 14] ^ w[t - 16], 1);
    }
    a = h[0];
    b = h[1];
    c = h[2];
    d = h[3];
    e = h[4];
    for (t = 0; t < 80; t++) {
        uint32_t f, k, temp;
        if (t < 20) {
            f = (b & c) | (~b & d);
            k = 0x5a827999;
        }
        else if (t < 40) {
            f = b ^ c ^ d;
            k = 0x6ed9eba1;
        }
        else if (t < 60) {
            f = (b & c) | (b & d) | (c & d);
            k = 0x8f1bbcdc;
        }
        else {
            f = b ^ c ^ d;
            k = 0xca62c1d6;
        }
        temp = rotate_left(a, 5) + f + e + k + w[t];
        e = d;
        d = c;
        c = rotate_left(b, 30);
        b = a;
        a = temp;
    }
    h[0] += a;
    h[1] += b;
    h[2] += c;
    h[3] += d;
    h[4] += e;
}

static void
sha1_init(sha1_state *s)
{
    s->h[0] = 0x67452301;
    s->h[1] = 0xefcdab89;
    s->h[2] = 0x98badcfe;
    s->h[3] = 0x10325476;
    s->h[4] = 0xc3d2e1f0;
    s->used = 0;
    s->length = 0;
}

static void
sha1_update(sha1_state *s, const unsigned char *data, size_t n)
{
    s->length += n;
    while (n > 0) {
        size_t take = 64 - s->used < n ? 64 - s->used : n;
        memcpy(s->block + s->used, data, take);
        s->used += take;
        data += take;
        n -= take;
        if (s->used == 64) {
            sha1_compress(s->h, s->block);
            s->used = 0;
        }
    }
}

static void
sha1_final(sha1_state *s, unsigned char digest[20])
{
    uint64_t bits = s->length * 8;
    unsigned char tail[8];
    int i;

    /* A 1 bit, zeros up to 56 bytes into the last block, and the length in bits, big-endian. */
    sha1_update(s, (const unsigned char *)"\x80", 1);
    while (s->used != 56) {
        sha1_update(s, (const unsigned char *)"", 1);
    }
    for (i = 0; i < 8; i++) {
        tail[i] = (unsigned char)(bits >> (56 - 8 * i));
    }
    sha1_update(s, tail, 8);
    for (i = 0; i < 20; i++) {
        digest[i] = (unsigned char)(s->h[i / 4] >> (24 - 8 * (i % 4)));
    }
}

/* accept_key(key) -> str
 * The C twin of upwire.protocol.handshake.accept_key_py: base64 of the SHA-1 of the key followed by the
 * GUID of RFC 6455 section 1.3. */
static PyObject *
accept_key(PyObject *module, PyObject *arg)
{
    static const char guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
    static const char alphabet[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    PyObject *encoded, *result;
    unsigned char digest[21]; /* one zero byte past the 20 of the digest, for the last group */
    sha1_state state;
    Py_UCS1 *out;
    int i;

    if (!PyUnicode_Check(arg)) {
        PyErr_Format(PyExc_TypeError, "can only concatenate str (not \"%.200s\") to str",
                     Py_TYPE(arg)->tp_name);
        return NULL;
    }
    encoded = PyUnicode_AsASCIIString(arg); /* UnicodeEncodeError, as the twin's encode("ascii") */
    if (encoded == NULL) {
        return NULL;
    }
    sha1_init(&state);
    sha1_update(&state, (const unsigned char *)PyBytes_AS_STRING(encoded),
                (size_t)PyBytes_GET_SIZE(encoded));
    Py_DECREF(encoded);
    sha1_update(&state, (const unsigned char *)guid, sizeof(guid) - 1);
    sha1_final(&state, digest);
    digest[20] = 0;
    result = PyUnicode_New(28, 127);
    if (result == NULL) {
        return NULL;
    }
    out = PyUnicode_1BYTE_DATA(result);
    for (i = 0; i < 7; i++) { /* 7 groups of 3 bytes: the last one has 2, and ends with "=" */
        uint32_t group = (uint32_t)digest[3 * i] << 16 | (uint32_t)digest[3 * i + 1] << 8
                         | digest[3 * i + 2];
        out[4 * i] = (Py_UCS1)alphabet[group >> 18];
        out[4 * i + 1] = (Py_UCS1)alphabet[(group >> 12) & 63];
        out[4 * i + 2] = (Py_UCS1)alphabet[(group >> 6) & 63];
        out[4 * i + 3] = (Py_UCS1)alphabet[group & 63];
    }
    out[27] = '=';
    return result;
}

static PyMethodDef speedups_methods[] = {
    {"apply_mask", (PyCFunction)(void (*)(void))apply_mask, METH_FASTCALL,
     "apply_mask(data, mask_key, offset=0) -> bytes: XOR with the repeated 4-byte key."},
    {"encode_frame", (PyCFunction)(void (*)(void))encode_frame, METH_FASTCALL | METH_KEYWORDS,
     "encode_frame(opcode, payload, fin=True, rsv=0, mask_key=None) -> bytes: a whole frame, masked "
     "when mask_key is given."},
    {"take_simple_frames", (PyCFunction)(void (*)(void))take_simple_frames, METH_FASTCALL,
     "take_simple_frames(buffer, pos, masked, limit, events) -> int: decode the run of frames that are "
     "whole messages; return where it stops."},
    {"alloc_buffer", (PyCFunction)alloc_buffer, METH_O,
     "alloc_buffer(size) -> bytearray: `size` bytes, not initialized."},
    {"mask_in_place", (PyCFunction)(void (*)(void))mask_in_place, METH_FASTCALL,
     "mask_in_place(buffer, mask_key, offset=0) -> None: apply_mask on a writable buffer, in place."},
    {"payload_buffer", (PyCFunction)payload_buffer, METH_O,
     "payload_buffer(size) -> (bytes, memoryview): a bytes object not yet initialized, and a writable "
     "view to fill it through before it is handed out."},
    {"keep_payload", (PyCFunction)keep_payload, METH_O,
     "keep_payload(payload) -> None: reuse this payload for a later one once nothing refers to it."},
#ifndef _WIN32
    {"send_each", (PyCFunction)(void (*)(void))send_each, METH_FASTCALL,
     "send_each(fds, data) -> list[tuple[int, int]]: send data on each socket; (position, sent) of the "
     "sockets that did not take all of it."},
#endif
    {"read_common_head", (PyCFunction)read_common_head, METH_O,
     "read_common_head(data) -> (method, target, fields, size) | None: a whole request head in the "
     "common form, else None."},
    {"accept_key", (PyCFunction)accept_key, METH_O,
     "accept_key(key) -> str: the Sec-WebSocket-Accept value for a Sec-WebSocket-Key."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef speedups_module = {
    PyModuleDef_HEAD_INIT, "upwire._speedups", "C versions of upwire's hot loops.", -1,
    speedups_methods,
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    if (PyType_Ready(&PayloadWriterType) < 0) {
        return NULL;
    }
    return PyModule_Create(&speedups_module);
}
