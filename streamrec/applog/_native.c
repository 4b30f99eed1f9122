/* The client's hot paths in C: a usual action (encoded, then produced in the same call), and a
 * usual feature log (the user's maps, the shown items, their cross with the user).
 *
 * Why C: these run once per logged message, and in Python they cost more than producing it (an
 * action ~0.9 us, a 10-item feature log ~20 us, against ~0.6 us to produce). They write the bytes
 * ``LogEncoder``'s Python paths write (``action_message``, ``feature_message``), from the same
 * rules: tests/client/test_encoder.py runs every test on both paths and compares the two on
 * random and broken logs. Anything unusual returns None and the Python path takes the log (it
 * checks every field and raises naming it); a cache miss calls back into Python, which checks
 * and encodes the values once. If this module is not built (no C compiler at install), the
 * encoder runs the Python paths alone.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#define SMALL 8192     /* positions below this take the fast path (as SMALL_LONGS in avrobin.py) */
#define STACK_ITEMS 64

static PyObject *s_request_id, *s_item_id, *s_action, *s_ts_ms, *s_value, *s_sparse, *s_dense, *s_position;

/* Avro long: zig-zag, then little-endian base-128. Returns the byte count (at most 10). */
static Py_ssize_t put_long(char *out, int64_t n) {
    uint64_t z = ((uint64_t)n << 1) ^ (uint64_t)(n >> 63);
    Py_ssize_t k = 0;
    while (z > 0x7F) {
        out[k++] = (char)((z & 0x7F) | 0x80);
        z >>= 7;
    }
    out[k++] = (char)z;
    return k;
}

/* An exact int (not a bool, not a subclass) in int64 range into *v; 0 if it is not one (no error set). */
static int exact_int64(PyObject *o, int64_t *v) {
    if (!PyLong_CheckExact(o)) return 0;
    int overflow = 0;
    long long x = PyLong_AsLongLongAndOverflow(o, &overflow);
    if (overflow || (x == -1 && PyErr_Occurred())) {
        PyErr_Clear();
        return 0;
    }
    *v = (int64_t)x;
    return 1;
}

/* A usual action's Kafka key into *key, its message into *data and its timestamp into *ts_out
 * (new references): 1; 0 (no error set) if the action is not the usual (the Python path takes it);
 * -1 on error. heads: request id -> (Kafka key, the action's bytes up to the item id);
 * actions: name -> its bytes. */
static int encode_action(PyObject *log, PyObject *heads, PyObject *actions, PyObject **key, PyObject **data,
                         PyObject **ts_out) {
    PyObject *rid = NULL, *act = NULL, *iid = NULL, *ts = NULL, *value = NULL;
    int r = -1;
    if (!(rid = PyObject_GetAttr(log, s_request_id)) || !(act = PyObject_GetAttr(log, s_action)) ||
        !(iid = PyObject_GetAttr(log, s_item_id)) || !(ts = PyObject_GetAttr(log, s_ts_ms)) ||
        !(value = PyObject_GetAttr(log, s_value)))
        goto done;
    int64_t i, t;
    r = 0;
    if (value != Py_None || !PyUnicode_CheckExact(rid) || !PyUnicode_CheckExact(act) || !exact_int64(iid, &i) ||
        !exact_int64(ts, &t) || t < 0)
        goto done;
    PyObject *head = PyDict_GetItemWithError(heads, rid);
    PyObject *ab = head == NULL ? NULL : PyDict_GetItemWithError(actions, act);
    if (ab == NULL) {
        if (PyErr_Occurred()) r = -1;
        goto done;
    }
    if (!PyTuple_CheckExact(head) || PyTuple_GET_SIZE(head) != 2 || !PyBytes_CheckExact(PyTuple_GET_ITEM(head, 1)) ||
        !PyBytes_CheckExact(ab))
        goto done;
    PyObject *hb = PyTuple_GET_ITEM(head, 1);
    Py_ssize_t nh = PyBytes_GET_SIZE(hb), na = PyBytes_GET_SIZE(ab);
    char buf[512], *p = nh + na + 21 <= (Py_ssize_t)sizeof buf ? buf : PyMem_Malloc(nh + na + 21);
    if (p == NULL) {
        PyErr_NoMemory();
        r = -1;
        goto done;
    }
    memcpy(p, PyBytes_AS_STRING(hb), nh);
    Py_ssize_t k = nh + put_long(p + nh, i);
    memcpy(p + k, PyBytes_AS_STRING(ab), na);
    k += na;
    k += put_long(p + k, t);
    p[k++] = 0; /* value: null */
    *data = PyBytes_FromStringAndSize(p, k);
    if (p != buf) PyMem_Free(p);
    r = *data == NULL ? -1 : 1;
    if (r > 0) {
        *key = Py_NewRef(PyTuple_GET_ITEM(head, 0));
        *ts_out = Py_NewRef(ts);
    }
done:
    Py_XDECREF(rid);
    Py_XDECREF(act);
    Py_XDECREF(iid);
    Py_XDECREF(ts);
    Py_XDECREF(value);
    return r;
}

/* action(log, heads, actions) -> (key, message) | None */
static PyObject *action(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "action(log, heads, actions)");
        return NULL;
    }
    PyObject *key, *data, *ts;
    int r = encode_action(args[0], args[1], args[2], &key, &data, &ts);
    if (r <= 0) return r < 0 ? NULL : Py_NewRef(Py_None);
    PyObject *out = PyTuple_Pack(2, key, data);
    Py_DECREF(key);
    Py_DECREF(data);
    Py_DECREF(ts);
    return out;
}

/* send_action(log, heads, actions, produce, topic) -> the message's size | None: a usual action
 * encoded and handed to produce(topic, message, key, -1, None, None, ts_ms), the client's call,
 * with no Python frame in between (actions are most of what a feed logs). A BufferError from
 * produce propagates: nothing was queued, and the client retries on its slow path. */
static PyObject *send_action(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 5) {
        PyErr_SetString(PyExc_TypeError, "send_action(log, heads, actions, produce, topic)");
        return NULL;
    }
    PyObject *key, *data, *ts;
    int r = encode_action(args[0], args[1], args[2], &key, &data, &ts);
    if (r <= 0) return r < 0 ? NULL : Py_NewRef(Py_None);
    PyObject *minus1 = PyLong_FromLong(-1);
    PyObject *call[7] = {args[4], data, key, minus1, Py_None, Py_None, ts};
    PyObject *got = minus1 == NULL ? NULL : PyObject_Vectorcall(args[3], call, 7, NULL);
    Py_XDECREF(minus1);
    Py_ssize_t size = PyBytes_GET_SIZE(data);
    Py_DECREF(key);
    Py_DECREF(data);
    Py_DECREF(ts);
    if (got == NULL) return NULL;
    Py_DECREF(got);
    return PyLong_FromSsize_t(size);
}

/* ---- exact-value caches --------------------------------------------------------------------
 * An item's sparse map is cached under its item id, a dense map under an exact hash of its values
 * (type tags, values, dict order), each with a private deep copy of the values it was encoded
 * from; a hit is confirmed by an exact comparison with that copy: the same values of the same
 * types in the same order, as ``encoder._key``'s marshal bytes tell apart, without building them
 * (building them was most of an item's cost). Only "plain" values are cached (dicts with string
 * keys, lists, tuples, exact ints, strings and floats; ``encoder._plain``); anything else returns
 * None. An item whose values changed is encoded again and replaces its entry. */
#define FNV_PRIME 0x100000001b3ULL
enum { T_INT = 1, T_STR, T_FLOAT, T_LIST, T_TUPLE, T_DICT };

static inline uint64_t mix(uint64_t h, uint64_t x) { return (h ^ x) * FNV_PRIME; }

/* 1 and the hash in *h; 0 (no error set) if o is not plain; -1 on error. */
static int exact_hash(PyObject *o, uint64_t *h, int depth) {
    if (depth > 32) return 0;
    PyTypeObject *t = Py_TYPE(o);
    if (t == &PyLong_Type || t == &PyUnicode_Type || t == &PyFloat_Type) {
        Py_hash_t x = PyObject_Hash(o); /* a string caches its hash */
        if (x == -1 && PyErr_Occurred()) return -1;
        *h = mix(mix(*h, t == &PyLong_Type ? T_INT : t == &PyUnicode_Type ? T_STR : T_FLOAT), (uint64_t)x);
        return 1;
    }
    if (t == &PyList_Type || t == &PyTuple_Type) {
        Py_ssize_t n = PySequence_Fast_GET_SIZE(o);
        *h = mix(mix(*h, t == &PyList_Type ? T_LIST : T_TUPLE), (uint64_t)n);
        for (Py_ssize_t q = 0; q < n; q++) {
            int r = exact_hash(PySequence_Fast_GET_ITEM(o, q), h, depth + 1);
            if (r <= 0) return r;
        }
        return 1;
    }
    if (t == &PyDict_Type) {
        *h = mix(mix(*h, T_DICT), (uint64_t)PyDict_GET_SIZE(o));
        Py_ssize_t pos = 0;
        PyObject *k, *v;
        while (PyDict_Next(o, &pos, &k, &v)) {
            if (!PyUnicode_CheckExact(k)) return 0;
            int r = exact_hash(k, h, depth + 1);
            if (r > 0) r = exact_hash(v, h, depth + 1);
            if (r <= 0) return r;
        }
        return 1;
    }
    return 0;
}

/* 1 if a and b are the same plain values (types, order, float bits), 0 if not, -1 on error. */
static int exact_equal(PyObject *a, PyObject *b, int depth) {
    if (a == b) return 1;
    PyTypeObject *t = Py_TYPE(a);
    if (t != Py_TYPE(b) || depth > 32) return 0;
    if (t == &PyFloat_Type) {
        double x = PyFloat_AS_DOUBLE(a), y = PyFloat_AS_DOUBLE(b);
        return memcmp(&x, &y, sizeof x) == 0; /* -0.0 is not 0.0: their float32 bytes differ */
    }
    if (t == &PyLong_Type || t == &PyUnicode_Type) return PyObject_RichCompareBool(a, b, Py_EQ);
    if (t == &PyList_Type || t == &PyTuple_Type) {
        Py_ssize_t n = PySequence_Fast_GET_SIZE(a);
        if (n != PySequence_Fast_GET_SIZE(b)) return 0;
        for (Py_ssize_t q = 0; q < n; q++) {
            int r = exact_equal(PySequence_Fast_GET_ITEM(a, q), PySequence_Fast_GET_ITEM(b, q), depth + 1);
            if (r <= 0) return r;
        }
        return 1;
    }
    if (t == &PyDict_Type) {
        if (PyDict_GET_SIZE(a) != PyDict_GET_SIZE(b)) return 0;
        Py_ssize_t pa = 0, pb = 0;
        PyObject *ka, *va, *kb, *vb;
        while (PyDict_Next(a, &pa, &ka, &va)) {
            if (!PyDict_Next(b, &pb, &kb, &vb)) return 0;
            int r = exact_equal(ka, kb, depth + 1);
            if (r > 0) r = exact_equal(va, vb, depth + 1);
            if (r <= 0) return r;
        }
        return 1;
    }
    return 0;
}

/* A copy the application cannot mutate: containers copied, immutable leaves shared. */
static PyObject *exact_copy(PyObject *o) {
    PyTypeObject *t = Py_TYPE(o);
    if (t == &PyList_Type || t == &PyTuple_Type) {
        Py_ssize_t n = PySequence_Fast_GET_SIZE(o);
        PyObject *c = t == &PyList_Type ? PyList_New(n) : PyTuple_New(n);
        for (Py_ssize_t q = 0; c != NULL && q < n; q++) {
            PyObject *x = exact_copy(PySequence_Fast_GET_ITEM(o, q));
            if (x == NULL) Py_CLEAR(c);
            else if (t == &PyList_Type) PyList_SET_ITEM(c, q, x);
            else PyTuple_SET_ITEM(c, q, x);
        }
        return c;
    }
    if (t == &PyDict_Type) {
        PyObject *c = PyDict_New(), *k, *v;
        Py_ssize_t pos = 0;
        while (c != NULL && PyDict_Next(o, &pos, &k, &v)) {
            PyObject *x = exact_copy(v);
            if (x == NULL || PyDict_SetItem(c, k, x) < 0) Py_CLEAR(c);
            Py_XDECREF(x);
        }
        return c;
    }
    return Py_NewRef(o);
}

/* The value cached under key for the raw values o (a new reference) if they are still the same,
 * else miss(miss_arg, j, None), stored with a copy of o for next time. NULL with an error set if
 * miss raised, NULL without one if o is not plain (the caller returns None). */
static PyObject *cached(PyObject *cache, PyObject *key, PyObject *o, Py_ssize_t limit, PyObject *miss,
                        PyObject *miss_arg, Py_ssize_t j) {
    PyObject *got = PyDict_GetItemWithError(cache, key); /* (copy of the values, cached value) */
    if (got != NULL && PyTuple_CheckExact(got) && PyTuple_GET_SIZE(got) == 2) {
        int r = exact_equal(o, PyTuple_GET_ITEM(got, 0), 0);
        if (r != 0) return r > 0 ? Py_NewRef(PyTuple_GET_ITEM(got, 1)) : NULL;
    } else if (PyErr_Occurred()) {
        return NULL;
    }
    uint64_t h = 0;
    int r = exact_hash(o, &h, 0); /* is it plain? */
    if (r <= 0) return NULL;
    PyObject *value = PyObject_CallFunction(miss, "OnO", miss_arg, j, Py_None);
    if (value == NULL) return NULL;
    PyObject *c = exact_copy(o), *pair = c == NULL ? NULL : PyTuple_Pack(2, c, value);
    Py_XDECREF(c);
    if (pair != NULL && PyDict_GET_SIZE(cache) >= limit) PyDict_Clear(cache); /* encoder._put's policy */
    if (pair == NULL || PyDict_SetItem(cache, key, pair) < 0) Py_CLEAR(value);
    Py_XDECREF(pair);
    return value;
}

/* A dense map's cache key: its exact hash as an int, or NULL (no error set) if it is not plain. */
static PyObject *hash_key(PyObject *o) {
    uint64_t h = 0xcbf29ce484222325ULL;
    int r = exact_hash(o, &h, 0);
    return r > 0 ? PyLong_FromUnsignedLongLong(h) : NULL;
}

/* The attribute, or NULL with no error set if the object lacks it (not an Item: the caller returns None). */
static PyObject *attr(PyObject *o, PyObject *name) {
    PyObject *v = PyObject_GetAttr(o, name);
    if (v == NULL && PyErr_ExceptionMatches(PyExc_AttributeError)) PyErr_Clear();
    return v;
}

static int cmp_int64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* Whether an id occurs twice; sorts ids when there are many (a feed shows tens of items). */
static int shown_twice(int64_t *ids, Py_ssize_t n) {
    if (n > STACK_ITEMS) {
        qsort(ids, (size_t)n, sizeof(int64_t), cmp_int64);
        for (Py_ssize_t a = 1; a < n; a++)
            if (ids[a] == ids[a - 1]) return 1;
        return 0;
    }
    for (Py_ssize_t a = 1; a < n; a++)
        for (Py_ssize_t b = 0; b < a; b++)
            if (ids[a] == ids[b]) return 1;
    return 0;
}


/* dict[key] (a new reference), made an empty dict if missing; a full dict is emptied first. */
static PyObject *sub_dict(PyObject *d, PyObject *key, Py_ssize_t limit) {
    PyObject *sub = PyDict_GetItemWithError(d, key);
    if (sub != NULL) return Py_NewRef(sub);
    if (PyErr_Occurred() || !(sub = PyDict_New())) return NULL;
    if (PyDict_GET_SIZE(d) >= limit) PyDict_Clear(d);
    if (PyDict_SetItem(d, key, sub) < 0) Py_CLEAR(sub);
    return sub;
}

/* The cross's map entry for two source entries (FIDs, bytes), as _Cross.entry builds it: its key,
 * the FIDs of every pair as one block, the block's end. cross: (key bytes, pairs: FID a -> FID b ->
 * the pair's varint, pair(a, b) -> that varint for a pair not seen yet). */
static PyObject *cross_entry(PyObject *cross, PyObject *ea, PyObject *eb, Py_ssize_t limit) {
    PyObject *key = PyTuple_GET_ITEM(cross, 0), *pairs = PyTuple_GET_ITEM(cross, 1), *pair = PyTuple_GET_ITEM(cross, 2);
    PyObject *fa = PyTuple_GET_ITEM(ea, 0), *fb = PyTuple_GET_ITEM(eb, 0);
    if (!PyTuple_CheckExact(fa) || !PyTuple_CheckExact(fb) || !PyBytes_CheckExact(key)) {
        PyErr_SetString(PyExc_TypeError, "an entry's FIDs are a tuple");
        return NULL;
    }
    Py_ssize_t na = PyTuple_GET_SIZE(fa), nb = PyTuple_GET_SIZE(fb), n = na * nb, size = PyBytes_GET_SIZE(key) + 11;
    PyObject **got = PyMem_Calloc(n ? (size_t)n : 1, sizeof(PyObject *)), *out = NULL;
    if (got == NULL) return PyErr_NoMemory();
    for (Py_ssize_t a = 0, q = 0; a < na; a++) {
        PyObject *x = PyTuple_GET_ITEM(fa, a), *sub = sub_dict(pairs, x, limit);
        if (sub == NULL) goto done;
        for (Py_ssize_t b = 0; b < nb; b++, q++) {
            PyObject *y = PyTuple_GET_ITEM(fb, b), *v = PyDict_GetItemWithError(sub, y);
            if (v != NULL) {
                got[q] = Py_NewRef(v);
            } else if (PyErr_Occurred() || !(got[q] = PyObject_CallFunctionObjArgs(pair, x, y, NULL)) ||
                       (PyDict_GET_SIZE(sub) >= limit && (PyDict_Clear(sub), 0)) ||
                       PyDict_SetItem(sub, y, got[q]) < 0) {
                Py_DECREF(sub);
                goto done;
            }
            if (!PyBytes_CheckExact(got[q])) {
                PyErr_SetString(PyExc_TypeError, "a pair's varint is bytes");
                Py_DECREF(sub);
                goto done;
            }
            size += PyBytes_GET_SIZE(got[q]);
        }
        Py_DECREF(sub);
    }
    if (!(out = PyBytes_FromStringAndSize(NULL, size))) goto done;
    char *p = PyBytes_AS_STRING(out);
    Py_ssize_t k = PyBytes_GET_SIZE(key);
    memcpy(p, PyBytes_AS_STRING(key), k);
    if (n) k += put_long(p + k, n);
    for (Py_ssize_t q = 0; q < n; q++) {
        memcpy(p + k, PyBytes_AS_STRING(got[q]), PyBytes_GET_SIZE(got[q]));
        k += PyBytes_GET_SIZE(got[q]);
    }
    p[k++] = 0;
    if (_PyBytes_Resize(&out, k) < 0) out = NULL;
done:
    for (Py_ssize_t q = 0; q < n; q++) Py_XDECREF(got[q]);
    PyMem_Free(got);
    return out;
}

/* Every item's bytes from its id on, as encoder._items_fast joins them (a new reference), None if
 * anything is not the usual, NULL on error (a miss's SpecError included).
 *   item_cache: item id -> (a copy of its sparse map, ItemEntry (a 9-tuple)), at most limit entries;
 *   miss_item(item, j, None) -> ItemEntry; dense_cache: exact hash -> (a copy, bytes); miss_dense(dense, j, None)
 *   cross_cache: user-side entry bytes -> {item-side entry bytes -> the cross's entry}, or None when no
 *   cross applies; cross: see cross_entry, which makes a missing entry, with user_entry as its first
 *   source if user_first, else its second. */
static PyObject *encode_items(PyObject *list, PyObject *icache, PyObject *dcache, Py_ssize_t limit,
                              PyObject *miss_item, PyObject *miss_dense, PyObject *xcache, PyObject *user,
                              int user_first, PyObject *cross) {
    if (!PyList_CheckExact(list)) Py_RETURN_NONE;
    PyObject *ub = NULL;
    if (xcache != NULL) {
        if (!PyTuple_CheckExact(user) || PyTuple_GET_SIZE(user) != 2 || !PyTuple_CheckExact(cross) ||
            PyTuple_GET_SIZE(cross) != 3)
            Py_RETURN_NONE;
        ub = PyTuple_GET_ITEM(user, 1);
    }
    Py_ssize_t n = PyList_GET_SIZE(list);
    /* per item, owned: its ItemEntry, dense bytes, cross bytes (or NULL) and position */
    PyObject *stack[3 * STACK_ITEMS];
    int64_t pstack[2 * STACK_ITEMS];
    PyObject **held = stack;
    int64_t *pos = pstack;
    if (n > STACK_ITEMS) {
        held = PyMem_Calloc(3 * (size_t)n, sizeof(PyObject *));
        pos = PyMem_Malloc(2 * (size_t)n * sizeof(int64_t));
        if (held == NULL || pos == NULL) {
            PyMem_Free(held);
            PyMem_Free(pos);
            return PyErr_NoMemory();
        }
    } else {
        memset(stack, 0, sizeof(stack));
    }
    PyObject **es = held, **ds = held + n, **xs = held + 2 * n;
    int64_t *ids = pos + n;
    PyObject *result = NULL, *per_user = NULL; /* the cross's entries for this user: item-side bytes -> bytes */
    Py_ssize_t total = 0;
    for (Py_ssize_t j = 0; j < n; j++) {
        PyObject *it = PyList_GET_ITEM(list, j);
        Py_INCREF(it); /* a miss's Python code could change the list */
        PyObject *iid = NULL, *sparse = NULL, *dense = NULL, *p = NULL, *dk = NULL;
        int ok = 0; /* 1: go on; 0: None (the Python path takes the log); -1: an error is set */
        if (!(iid = attr(it, s_item_id)) || !(sparse = attr(it, s_sparse)) || !(dense = attr(it, s_dense)) ||
            !(p = attr(it, s_position)))
            goto item_done;
        if (p == Py_None) {
            pos[j] = j;
        } else if (!exact_int64(p, &pos[j])) {
            goto item_done;
        }
        if (pos[j] < 0 || pos[j] >= SMALL) goto item_done;
        if (!PyLong_CheckExact(iid)) goto item_done;
        if (!(es[j] = cached(icache, iid, sparse, limit, miss_item, it, j))) goto item_done;
        if (!(dk = hash_key(dense))) goto item_done;
        if (!(ds[j] = cached(dcache, dk, dense, limit, miss_dense, dense, j))) goto item_done;
        ok = 1;
    item_done:
        if (!ok && PyErr_Occurred()) ok = -1;
        Py_DECREF(it);
        Py_XDECREF(iid);
        Py_XDECREF(sparse);
        Py_XDECREF(dense);
        Py_XDECREF(p);
        Py_XDECREF(dk);
        if (ok < 0) goto done;
        if (ok == 0) goto none;
    }
    for (Py_ssize_t j = 0; j < n; j++) {
        PyObject *e = es[j];
        if (!PyTuple_CheckExact(e) || PyTuple_GET_SIZE(e) != 9 || !PyBytes_CheckExact(ds[j])) goto none;
        if (!exact_int64(PyTuple_GET_ITEM(e, 0), &ids[j])) goto none;
        PyObject *xb = PyTuple_GET_ITEM(e, 8); /* the item-side source's entry bytes, or None */
        if (xcache != NULL && xb != Py_None) {
            /* keyed by user, then item-side bytes: no pair tuple is built per item */
            if (per_user == NULL && !(per_user = sub_dict(xcache, ub, limit))) goto done;
            PyObject *x = PyDict_GetItemWithError(per_user, xb);
            if (x != NULL) {
                xs[j] = Py_NewRef(x);
            } else {
                if (PyErr_Occurred()) goto done;
                PyObject *src = PyTuple_GET_ITEM(e, 7);
                if (!PyTuple_CheckExact(src) || PyTuple_GET_SIZE(src) != 2) goto none;
                xs[j] = user_first ? cross_entry(cross, user, src, limit) : cross_entry(cross, src, user, limit);
                if (xs[j] == NULL) goto done;
                if (PyDict_GET_SIZE(per_user) >= limit) PyDict_Clear(per_user);
                if (PyDict_SetItem(per_user, xb, xs[j]) < 0) goto done;
            }
            if (!PyBytes_CheckExact(xs[j])) goto none;
            total += PyBytes_GET_SIZE(xs[j]);
        }
        PyObject *iid_b = PyTuple_GET_ITEM(e, 1), *pre = PyTuple_GET_ITEM(e, xcache != NULL ? 6 : 5);
        if (!PyBytes_CheckExact(iid_b) || !PyBytes_CheckExact(pre)) goto none;
        total += PyBytes_GET_SIZE(iid_b) + 2 + PyBytes_GET_SIZE(pre) + PyBytes_GET_SIZE(ds[j]);
    }
    if (shown_twice(ids, n)) goto none; /* the Python path raises */
    result = PyBytes_FromStringAndSize(NULL, total);
    if (result == NULL) goto done;
    char *out = PyBytes_AS_STRING(result);
    Py_ssize_t k = 0;
    for (Py_ssize_t j = 0; j < n; j++) {
        PyObject *e = es[j];
        PyObject *parts[4] = {PyTuple_GET_ITEM(e, 1), PyTuple_GET_ITEM(e, xcache != NULL ? 6 : 5), xs[j], ds[j]};
        for (int q = 0; q < 4; q++) {
            if (parts[q] == NULL) continue;
            memcpy(out + k, PyBytes_AS_STRING(parts[q]), PyBytes_GET_SIZE(parts[q]));
            k += PyBytes_GET_SIZE(parts[q]);
            if (q == 0) k += put_long(out + k, pos[j]); /* the position follows the id */
        }
    }
    if (_PyBytes_Resize(&result, k) < 0) result = NULL;
    goto done;
none:
    result = Py_NewRef(Py_None);
done:
    for (Py_ssize_t q = 0; q < 3 * n; q++) Py_XDECREF(held[q]);
    if (held != stack) {
        PyMem_Free(held);
        PyMem_Free(pos);
    }
    Py_XDECREF(per_user);
    return result;
}

static PyObject *s_items, *s_user, *s_user_dense, *s_user_id, *s_source;

/* Avro string of a str: its UTF-8 length, then the bytes; NULL (no error set) if it will not encode. */
static PyObject *utf8(PyObject *str) {
    PyObject *b = PyUnicode_AsUTF8String(str);
    if (b == NULL && PyErr_ExceptionMatches(PyExc_UnicodeEncodeError)) PyErr_Clear();
    return b;
}

/* feature(log, ctx) -> (key, message) | None: a whole feature log, as LogEncoder.feature_message
 * writes it, when everything in it is the usual; None gives it to the Python path, which checks
 * and raises. ctx (LogEncoder._native_ctx): (FeatureLog header, ActionLog header, heads,
 * heads_limit, fits (-1: any), max_bytes (-1: any), user_cache, user_dense_cache, limit,
 * miss_user, miss_user_dense, item_cache, dense_cache, miss_item, miss_dense, xfast), xfast None
 * or (the cross's user-side source, user_first, cross_cache, cross) as for encode_items. */
static PyObject *feature(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2 || !PyTuple_CheckExact(args[1]) || PyTuple_GET_SIZE(args[1]) != 16) {
        PyErr_SetString(PyExc_TypeError, "feature(log, ctx)");
        return NULL;
    }
    PyObject *log = args[0], *const *c = &PyTuple_GET_ITEM(args[1], 0);
    PyObject *fl_header = c[0], *al_header = c[1], *heads = c[2], *ucache = c[6], *udcache = c[7], *xfast = c[15];
    Py_ssize_t heads_limit = PyLong_AsSsize_t(c[3]), fits = PyLong_AsSsize_t(c[4]), max_bytes = PyLong_AsSsize_t(c[5]),
               limit = PyLong_AsSsize_t(c[8]);
    if (PyErr_Occurred()) return NULL;
    PyObject *rid = NULL, *its = NULL, *uid = NULL, *ts = NULL, *user = NULL, *udense = NULL, *source = NULL;
    PyObject *key = NULL, *src = NULL, *uk = NULL, *udk = NULL, *ue = NULL, *ud = NULL, *ib = NULL, *result = NULL;
    if (!(rid = attr(log, s_request_id)) || !(its = attr(log, s_items)) || !(uid = attr(log, s_user_id)) ||
        !(ts = attr(log, s_ts_ms)) || !(user = attr(log, s_user)) || !(udense = attr(log, s_user_dense)) ||
        !(source = attr(log, s_source)))
        goto none_or_error;
    int64_t u, t;
    if (!PyUnicode_CheckExact(rid) || PyUnicode_GET_LENGTH(rid) == 0 || !PyList_CheckExact(its) ||
        PyList_GET_SIZE(its) == 0 || !exact_int64(uid, &u) || !exact_int64(ts, &t) || t < 0 ||
        !PyUnicode_CheckExact(source))
        goto none_or_error;
    if (!(key = utf8(rid)) || !(src = utf8(source))) goto none_or_error;
    /* the user's maps, cached under an exact hash of their values, as an item's dense map */
    if (!(uk = hash_key(user)) || !(ue = cached(ucache, uk, user, limit, c[9], user, -1))) goto none_or_error;
    if (!(udk = hash_key(udense)) || !(ud = cached(udcache, udk, udense, limit, c[10], udense, -1)))
        goto none_or_error;
    if (!PyTuple_CheckExact(ue) || PyTuple_GET_SIZE(ue) != 2 || !PyBytes_CheckExact(PyTuple_GET_ITEM(ue, 0)) ||
        !PyDict_CheckExact(PyTuple_GET_ITEM(ue, 1)) || !PyBytes_CheckExact(ud))
        goto none_or_error;
    PyObject *xcache = NULL, *xu = NULL, *cross = NULL;
    int user_first = 0;
    if (xfast != Py_None) { /* (user-side source, user_first, cross_cache, cross) */
        xu = PyDict_GetItemWithError(PyTuple_GET_ITEM(ue, 1), PyTuple_GET_ITEM(xfast, 0));
        if (xu == NULL && PyErr_Occurred()) goto none_or_error;
        if (xu != NULL) {
            user_first = PyTuple_GET_ITEM(xfast, 1) == Py_True;
            xcache = PyTuple_GET_ITEM(xfast, 2);
            cross = PyTuple_GET_ITEM(xfast, 3);
        }
    }
    if (!(ib = encode_items(its, c[11], c[12], limit, c[13], c[14], xcache, xu, user_first, cross))) goto none_or_error;
    if (ib == Py_None) goto none_or_error;
    Py_ssize_t nk = PyBytes_GET_SIZE(key), ns = PyBytes_GET_SIZE(src);
    Py_ssize_t size = PyBytes_GET_SIZE(fl_header) + PyBytes_GET_SIZE(PyTuple_GET_ITEM(ue, 0)) + PyBytes_GET_SIZE(ud) +
                      PyBytes_GET_SIZE(ib) + nk + ns + 5 * 10 + 1; /* 5 varints, the items' end */
    if (!(result = PyBytes_FromStringAndSize(NULL, size))) goto none_or_error;
    char *p = PyBytes_AS_STRING(result);
    Py_ssize_t k = 0, rid_at;
#define PUT(b) (memcpy(p + k, PyBytes_AS_STRING(b), PyBytes_GET_SIZE(b)), k += PyBytes_GET_SIZE(b))
    PUT(fl_header);
    rid_at = k;
    k += put_long(p + k, nk);
    memcpy(p + k, PyBytes_AS_STRING(key), nk);
    k += nk;
    Py_ssize_t rid_end = k;
    k += put_long(p + k, u);
    k += put_long(p + k, t);
    PUT(PyTuple_GET_ITEM(ue, 0));
    PUT(ud);
    k += put_long(p + k, PyList_GET_SIZE(its));
    PUT(ib);
    p[k++] = 0; /* the items' end */
    k += put_long(p + k, ns);
    PUT(src);
#undef PUT
    if (max_bytes >= 0 && k > max_bytes) { /* too big: the Python path raises */
        Py_CLEAR(result);
        goto none_or_error;
    }
    int known = PyDict_Contains(heads, rid);
    if (known < 0) {
        Py_CLEAR(result);
        goto none_or_error;
    }
    if (!known) { /* the request's actions will follow: remember their head (LogEncoder._head) */
        Py_ssize_t nh = PyBytes_GET_SIZE(al_header) + rid_end - rid_at;
        if (fits < 0 || nh <= fits) {
            PyObject *hb = PyBytes_FromStringAndSize(NULL, nh), *head = NULL;
            if (hb != NULL) {
                memcpy(PyBytes_AS_STRING(hb), PyBytes_AS_STRING(al_header), PyBytes_GET_SIZE(al_header));
                memcpy(PyBytes_AS_STRING(hb) + PyBytes_GET_SIZE(al_header), p + rid_at, rid_end - rid_at);
                head = PyTuple_Pack(2, key, hb);
            }
            if (head != NULL && PyDict_GET_SIZE(heads) >= heads_limit) PyDict_Clear(heads);
            if (head == NULL || PyDict_SetItem(heads, rid, head) < 0) Py_CLEAR(result);
            Py_XDECREF(hb);
            Py_XDECREF(head);
            if (result == NULL) goto none_or_error;
        }
    }
    if (_PyBytes_Resize(&result, k) < 0) goto none_or_error;
    PyObject *pair = PyTuple_Pack(2, key, result);
    Py_SETREF(result, pair);
    goto done;
none_or_error:
    if (!PyErr_Occurred()) result = Py_NewRef(Py_None);
done:
    Py_XDECREF(rid);
    Py_XDECREF(its);
    Py_XDECREF(uid);
    Py_XDECREF(ts);
    Py_XDECREF(user);
    Py_XDECREF(udense);
    Py_XDECREF(source);
    Py_XDECREF(key);
    Py_XDECREF(src);
    Py_XDECREF(uk);
    Py_XDECREF(udk);
    Py_XDECREF(ue);
    Py_XDECREF(ud);
    Py_XDECREF(ib);
    return result;
}

static PyMethodDef methods[] = {
    {"action", (PyCFunction)(void (*)(void))action, METH_FASTCALL,
     "action(log, heads, actions) -> (key, message) | None: a usual action's message."},
    {"send_action", (PyCFunction)(void (*)(void))send_action, METH_FASTCALL,
     "send_action(log, heads, actions, produce, topic) -> size | None: a usual action encoded and produced."},
    {"feature", (PyCFunction)(void (*)(void))feature, METH_FASTCALL,
     "feature(log, ctx) -> (key, message) | None: a usual feature log's message, as LogEncoder.feature_message."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_native", "The client's hot paths in C.", -1, methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__native(void) {
    struct {
        PyObject **s;
        const char *name;
    } names[] = {{&s_request_id, "request_id"}, {&s_item_id, "item_id"}, {&s_action, "action"},
                 {&s_ts_ms, "ts_ms"},           {&s_value, "value"},     {&s_sparse, "sparse"},
                 {&s_dense, "dense"},           {&s_position, "position"},  {&s_items, "items"},
                 {&s_user, "user"},             {&s_user_dense, "user_dense"}, {&s_user_id, "user_id"},
                 {&s_source, "source"}};
    for (size_t q = 0; q < sizeof(names) / sizeof(names[0]); q++) {
        if (!(*names[q].s = PyUnicode_InternFromString(names[q].name))) return NULL;
    }
    return PyModule_Create(&module);
}
