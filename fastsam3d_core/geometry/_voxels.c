/* Voxel loops of a click's paste-back, each one pass over memory with the GIL released.
 *
 * NumPy does each of these as several whole-array operations (a product, a comparison, a
 * packing, a copy), and np.packbits holds the GIL; on a 512x512x300 CT a click rewrites about
 * 14 million voxels, and those passes were most of a click after the decoder. The Python side
 * (voxel_kernels.py) checks every array's type and layout and falls back to NumPy, giving
 * the same bytes, where this module is not built.
 *
 * Arrays come through the buffer protocol (no NumPy headers at build time); every array must
 * be contiguous along its last axis, the others may be strided (a box of a larger array).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#define HAVE_AVX2_PATH 1
#include <immintrin.h>
#endif

/* ---- packing: bytes (nonzero = 1) to bits, first byte in the highest bit (np.packbits) ---- */

/* Up to eight bytes, one by one (a row's last bytes). */
static inline uint8_t pack_tail(const uint8_t *src, Py_ssize_t count) {
    uint8_t byte = 0;
    for (Py_ssize_t n = 0; n < count; n++) {
        byte |= (uint8_t)((src[n] != 0) << (7 - n));
    }
    return byte;
}

/* Eight bytes, each 0 or not, to one byte: each nonzero byte to 0x01 at its place, then one
 * multiplication moves byte i's bit to bit 63 - i (no two products meet, so no carries). */
static inline uint8_t pack_eight(const uint8_t *src) {
#if defined(__BYTE_ORDER__) && defined(__ORDER_BIG_ENDIAN__) && \
    __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    return pack_tail(src, 8); /* the word trick below reads src[0] as the lowest byte */
#else
    uint64_t x;
    memcpy(&x, src, 8);
    const uint64_t low7 = 0x7f7f7f7f7f7f7f7fULL;
    x = (((x & low7) + low7) | x) & 0x8080808080808080ULL;
    x >>= 7;
    return (uint8_t)((x * 0x8040201008040201ULL) >> 56);
#endif
}

static void pack_row_scalar(const uint8_t *src, Py_ssize_t length, uint8_t *dst) {
    Py_ssize_t whole = length / 8;
    for (Py_ssize_t b = 0; b < whole; b++) {
        dst[b] = pack_eight(src + 8 * b);
    }
    if (length % 8) {
        dst[whole] = pack_tail(src + 8 * whole, length % 8);
    }
}

#ifdef HAVE_AVX2_PATH
/* 32 bytes at a time: the bytes of each group of eight reversed, so that movemask's bit order
 * (first byte lowest) becomes np.packbits' within each output byte. */
__attribute__((target("avx2"))) static void pack_row_avx2(const uint8_t *src, Py_ssize_t length,
                                                          uint8_t *dst) {
    const __m256i zero = _mm256_setzero_si256();
    const __m256i reverse = _mm256_setr_epi8(7, 6, 5, 4, 3, 2, 1, 0, 15, 14, 13, 12, 11, 10, 9, 8,
                                             7, 6, 5, 4, 3, 2, 1, 0, 15, 14, 13, 12, 11, 10, 9, 8);
    Py_ssize_t b = 0;
    for (; b + 32 <= length; b += 32) {
        __m256i bytes = _mm256_loadu_si256((const __m256i *)(src + b));
        __m256i is_zero = _mm256_shuffle_epi8(_mm256_cmpeq_epi8(bytes, zero), reverse);
        uint32_t bits = ~(uint32_t)_mm256_movemask_epi8(is_zero);
        memcpy(dst + b / 8, &bits, 4); /* little-endian: output byte g is bits 8g..8g+7 */
    }
    pack_row_scalar(src + b, length - b, dst + b / 8);
}
#endif

typedef void (*pack_row_fn)(const uint8_t *, Py_ssize_t, uint8_t *);
static pack_row_fn pack_row = pack_row_scalar;

/* ---- the interpolated sign between two source planes ---- */

/* out[k] = fraction * (above[k] - below[k]) > -below[k]: the difference rounded to float32,
 * the product rounded, then compared, as NumPy's subtract, multiply, negative and greater
 * compute it (no fused multiply-add: the product is not added to anything). */
#define SIGNS_ROW_BODY                                                 \
    for (Py_ssize_t k = 0; k < length; k++) {                          \
        float step = above[k] - below[k];                              \
        out[k] = (uint8_t)(fraction * step > -below[k]);               \
    }

static void signs_row_scalar(const float *below, const float *above, float fraction,
                             Py_ssize_t length, uint8_t *out) {
    SIGNS_ROW_BODY
}

#ifdef HAVE_AVX2_PATH
__attribute__((target("avx2"))) static void signs_row_avx2(const float *below,
                                                           const float *above, float fraction,
                                                           Py_ssize_t length, uint8_t *out) {
    SIGNS_ROW_BODY
}
#endif

typedef void (*signs_row_fn)(const float *, const float *, float, Py_ssize_t, uint8_t *);
static signs_row_fn signs_row = signs_row_scalar;

/* ---- which loops run ---- */

static int avx2_available(void) {
#ifdef HAVE_AVX2_PATH
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2");
#else
    return 0;
#endif
}

/* The AVX2 loops (only where avx2_available()) or the scalar ones. */
static void select_loops(int avx2) {
    pack_row = pack_row_scalar;
    signs_row = signs_row_scalar;
#ifdef HAVE_AVX2_PATH
    if (avx2) {
        pack_row = pack_row_avx2;
        signs_row = signs_row_avx2;
    }
#else
    (void)avx2;
#endif
}

/* ---- argument checks ---- */

typedef struct {
    Py_buffer view;
    int held;
} Array;

static void release(Array *arrays, int count) {
    for (int n = 0; n < count; n++) {
        if (arrays[n].held) {
            PyBuffer_Release(&arrays[n].view);
            arrays[n].held = 0;
        }
    }
}

/* The buffer of `object`: `ndim` axes, items of `itemsize` bytes (format `kind`, a struct
 * letter, or 0 for any one-byte item), the last axis contiguous. */
static int get_array(PyObject *object, Array *array, int ndim, char kind, Py_ssize_t itemsize,
                     int writable, const char *name) {
    int flags = PyBUF_STRIDES | PyBUF_FORMAT | (writable ? PyBUF_WRITABLE : 0);
    if (PyObject_GetBuffer(object, &array->view, flags) < 0) {
        return -1;
    }
    array->held = 1;
    Py_buffer *v = &array->view;
    const char *format = v->format ? v->format : "B";
    if (*format == '<' || *format == '=' || *format == '@') {
        format++;
    }
    int kind_ok = kind ? (format[0] == kind && format[1] == 0) : 1;
    if (v->ndim != ndim || v->itemsize != itemsize || !kind_ok ||
        (ndim > 0 && v->shape[ndim - 1] > 1 && v->strides[ndim - 1] != itemsize)) {
        PyErr_Format(PyExc_ValueError,
                     "%s: expected %d axes of %zd-byte items, the last contiguous", name, ndim,
                     itemsize);
        return -1;
    }
    return 0;
}

#define AT(array, type, ...) ((type *)item_at(&(array).view, __VA_ARGS__))

static inline char *item_at(Py_buffer *v, Py_ssize_t i, Py_ssize_t j) {
    char *base = (char *)v->buf;
    if (v->ndim >= 1) base += i * v->strides[0];
    if (v->ndim >= 2) base += j * v->strides[1];
    return base;
}

/* ---- signs_between(below, above, fractions, out) ---- */

static PyObject *signs_between(PyObject *Py_UNUSED(self), PyObject *args) {
    PyObject *objects[4];
    if (!PyArg_ParseTuple(args, "OOOO", &objects[0], &objects[1], &objects[2], &objects[3])) {
        return NULL;
    }
    Array a[4];
    memset(a, 0, sizeof a);
    enum { BELOW, ABOVE, FRACTIONS, OUT };
    if (get_array(objects[BELOW], &a[BELOW], 2, 'f', 4, 0, "below") < 0 ||
        get_array(objects[ABOVE], &a[ABOVE], 2, 'f', 4, 0, "above") < 0 ||
        get_array(objects[FRACTIONS], &a[FRACTIONS], 1, 'f', 4, 0, "fractions") < 0 ||
        get_array(objects[OUT], &a[OUT], 3, 0, 1, 1, "out") < 0) {
        release(a, 4);
        return NULL;
    }
    Py_ssize_t rows = a[BELOW].view.shape[0], length = a[BELOW].view.shape[1];
    Py_ssize_t planes = a[FRACTIONS].view.shape[0];
    Py_buffer *out = &a[OUT].view;
    if (a[ABOVE].view.shape[0] != rows || a[ABOVE].view.shape[1] != length ||
        out->shape[0] != planes || out->shape[1] != rows || out->shape[2] != length) {
        release(a, 4);
        PyErr_SetString(PyExc_ValueError, "signs_between: shapes do not match");
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS;
    for (Py_ssize_t t = 0; t < planes; t++) {
        float fraction = *AT(a[FRACTIONS], float, t, 0);
        for (Py_ssize_t j = 0; j < rows; j++) {
            signs_row(AT(a[BELOW], float, j, 0), AT(a[ABOVE], float, j, 0), fraction, length,
                      AT(a[OUT], uint8_t, t, j));
        }
    }
    Py_END_ALLOW_THREADS;
    release(a, 4);
    Py_RETURN_NONE;
}

/* ---- write_rows(region, new, before_bits, after_bits, rows_differ, flipped) ---- */

/* One row: both versions packed, their difference ORed into `flipped`; the new one copied
 * where they differ. Returns whether they did. */
static int write_row(uint8_t *region, const uint8_t *new_row, Py_ssize_t length, uint8_t *before,
                     uint8_t *after, uint8_t *flipped) {
    pack_row(region, length, before);
    pack_row(new_row, length, after);
    uint8_t any = 0;
    for (Py_ssize_t b = 0; b < (length + 7) / 8; b++) {
        uint8_t flips = before[b] ^ after[b];
        flipped[b] |= flips;
        any |= flips;
    }
    if (any) {
        memcpy(region, new_row, (size_t)length);
    }
    return any != 0;
}

static int check_write_shapes(Array *a) {
    Py_buffer *region = &a[0].view, *new_v = &a[1].view, *before = &a[2].view;
    Py_buffer *after = &a[3].view, *rows = &a[4].view, *flipped = &a[5].view;
    Py_ssize_t bytes = (region->shape[2] + 7) / 8;
    for (int axis = 0; axis < 3; axis++) {
        if (new_v->shape[axis] != region->shape[axis]) return 0;
        Py_ssize_t packed = axis == 2 ? bytes : region->shape[axis];
        if (before->shape[axis] != packed || after->shape[axis] != packed) return 0;
    }
    return rows->shape[0] == region->shape[0] && flipped->shape[0] == region->shape[1] &&
           flipped->shape[1] == bytes;
}

static PyObject *write_rows(PyObject *Py_UNUSED(self), PyObject *args) {
    PyObject *o[6];
    if (!PyArg_ParseTuple(args, "OOOOOO", &o[0], &o[1], &o[2], &o[3], &o[4], &o[5])) {
        return NULL;
    }
    Array a[6];
    memset(a, 0, sizeof a);
    if (get_array(o[0], &a[0], 3, 0, 1, 1, "region") < 0 ||
        get_array(o[1], &a[1], 3, 0, 1, 0, "new") < 0 ||
        get_array(o[2], &a[2], 3, 0, 1, 1, "before_bits") < 0 ||
        get_array(o[3], &a[3], 3, 0, 1, 1, "after_bits") < 0 ||
        get_array(o[4], &a[4], 1, 0, 1, 1, "rows_differ") < 0 ||
        get_array(o[5], &a[5], 2, 0, 1, 1, "flipped") < 0) {
        release(a, 6);
        return NULL;
    }
    if (!check_write_shapes(a)) {
        release(a, 6);
        PyErr_SetString(PyExc_ValueError, "write_rows: shapes do not match");
        return NULL;
    }
    Py_ssize_t depth = a[0].view.shape[0], rows = a[0].view.shape[1];
    Py_ssize_t length = a[0].view.shape[2];
    Py_BEGIN_ALLOW_THREADS;
    for (Py_ssize_t i = 0; i < depth; i++) {
        int differs = 0;
        for (Py_ssize_t j = 0; j < rows; j++) {
            differs |= write_row(AT(a[0], uint8_t, i, j), AT(a[1], uint8_t, i, j), length,
                                 AT(a[2], uint8_t, i, j), AT(a[3], uint8_t, i, j),
                                 AT(a[5], uint8_t, j, 0));
        }
        *AT(a[4], uint8_t, i, 0) = (uint8_t)differs;
    }
    Py_END_ALLOW_THREADS;
    release(a, 6);
    Py_RETURN_NONE;
}

/* ---- pack_rows(source, out): np.packbits(source, axis=-1) into out; the packer alone (tests) */

static PyObject *pack_rows(PyObject *Py_UNUSED(self), PyObject *args) {
    PyObject *o[2];
    if (!PyArg_ParseTuple(args, "OO", &o[0], &o[1])) {
        return NULL;
    }
    Array a[2];
    memset(a, 0, sizeof a);
    if (get_array(o[0], &a[0], 3, 0, 1, 0, "source") < 0 ||
        get_array(o[1], &a[1], 3, 0, 1, 1, "out") < 0) {
        release(a, 2);
        return NULL;
    }
    Py_buffer *src = &a[0].view, *dst = &a[1].view;
    if (dst->shape[0] != src->shape[0] || dst->shape[1] != src->shape[1] ||
        dst->shape[2] != (src->shape[2] + 7) / 8) {
        release(a, 2);
        PyErr_SetString(PyExc_ValueError, "pack_rows: shapes do not match");
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS;
    for (Py_ssize_t i = 0; i < src->shape[0]; i++) {
        for (Py_ssize_t j = 0; j < src->shape[1]; j++) {
            pack_row(AT(a[0], uint8_t, i, j), src->shape[2], AT(a[1], uint8_t, i, j));
        }
    }
    Py_END_ALLOW_THREADS;
    release(a, 2);
    Py_RETURN_NONE;
}

static PyObject *instruction_set(PyObject *Py_UNUSED(self), PyObject *Py_UNUSED(unused)) {
#ifdef HAVE_AVX2_PATH
    if (pack_row == pack_row_avx2) return PyUnicode_FromString("avx2");
#endif
    return PyUnicode_FromString("scalar");
}

/* The fastest loops this CPU runs (at import), or the scalar ones (tests: the path of CPUs
 * without AVX2, e.g. ARM, checked on any machine). */
static PyObject *use_instruction_set(PyObject *Py_UNUSED(self), PyObject *args) {
    const char *name;
    if (!PyArg_ParseTuple(args, "s", &name)) {
        return NULL;
    }
    if (strcmp(name, "scalar") == 0 || (strcmp(name, "avx2") == 0 && avx2_available())) {
        select_loops(strcmp(name, "avx2") == 0);
        Py_RETURN_NONE;
    }
    PyErr_Format(PyExc_ValueError, "this CPU or build has no %s loops", name);
    return NULL;
}

static PyMethodDef methods[] = {
    {"use_instruction_set", use_instruction_set, METH_VARARGS,
     "use_instruction_set(name): 'avx2' (where the CPU has it) or 'scalar'."},
    {"signs_between", signs_between, METH_VARARGS,
     "signs_between(below, above, fractions, out): "
     "out[t] = fractions[t] * (above - below) > -below."},
    {"write_rows", write_rows, METH_VARARGS,
     "write_rows(region, new, before_bits, after_bits, rows_differ, flipped)."},
    {"pack_rows", pack_rows, METH_VARARGS, "pack_rows(source, out): packbits along the last axis."},
    {"instruction_set", instruction_set, METH_NOARGS, "The instruction set the loops use."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_voxels", NULL, -1, methods};

PyMODINIT_FUNC PyInit__voxels(void) {
    select_loops(avx2_available());
    return PyModule_Create(&module);
}
