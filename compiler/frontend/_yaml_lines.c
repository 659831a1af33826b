/*
 * The block-YAML line reader of compiler/frontend/yaml_fast.py, in C.
 *
 * yaml_fast._read is the specification: this file reads exactly the same subset of YAML, line
 * by line, into the same node tree (Scalar / Mapping / Sequence objects of
 * compiler/frontend/yaml_loader.py, same values, styles, raw text, lines and columns), and
 * returns None wherever _read gives up ("bails"), so that libyaml reads the text instead and
 * reports whatever is wrong with it. It never reports anything itself.
 * tests/frontend/test_yaml_fast.py runs every check on both readers and compares them with each
 * other on generated and damaged documents.
 *
 * The extension is optional (setup.py builds it when a C compiler is there); without it
 * yaml_fast uses the Python reader. The text must be ASCII (the caller checks): every
 * character is one byte, so byte offsets are columns.
 *
 * Node slots are written through their member descriptors' offsets: the classes are plain
 * slotted Python classes, and a fresh object's slots are empty, so each store takes a new
 * reference and nothing is overwritten. The offsets are looked up and type-checked on each call.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <string.h>

#define KEY_CACHE_SIZE 4096 /* power of two; keys repeat, distinct ones are few */
#define KEY_MAX_CACHED 64

typedef struct {
    Py_ssize_t ind;
    int is_map;
    PyObject *items; /* borrowed: the node (and so its list) is owned by the tree */
    PyObject *index; /* borrowed; NULL for a sequence */
} Frame;

typedef struct {
    PyObject *str; /* owned */
    Py_ssize_t len;
    Py_hash_t h;
} KeyEntry;

typedef struct {
    PyTypeObject *scalar_tp, *mapping_tp, *sequence_tp;
    Py_ssize_t s_value, s_style, s_raw, s_span, s_file, s_line, s_col;
    Py_ssize_t m_items, m_index, m_span, m_file, m_line, m_col;
    Py_ssize_t q_items, q_span, q_file, q_line, q_col;
    PyObject *name;          /* borrowed (argument) */
    PyObject *resolve_plain; /* borrowed (argument) */
    PyObject *plain;         /* owned dict: text -> (value, kind), as _read's ``plain`` */
    PyObject *style_plain, *style_single, *style_double; /* owned */
    PyObject *line_obj;      /* owned: the current line number, shared by the line's nodes */
    Py_ssize_t lineno;
    char resolvable[128];
    char bad_first[128];
    KeyEntry *keys; /* good keys (the checks passed), by text */
} Reader;

/* -- helpers ------------------------------------------------------------------------------- */

#define SLOT(o, off) (*(PyObject **)((char *)(o) + (off)))

static int
slot_offset(PyTypeObject *tp, const char *name, Py_ssize_t *out)
{
    PyObject *d = PyObject_GetAttrString((PyObject *)tp, name);
    if (d == NULL)
        return -1;
    if (Py_TYPE(d) != &PyMemberDescr_Type) {
        Py_DECREF(d);
        PyErr_Format(PyExc_TypeError, "%s.%s is not a slot", tp->tp_name, name);
        return -1;
    }
    PyMemberDef *m = ((PyMemberDescrObject *)d)->d_member;
    int ok = m->type == T_OBJECT_EX && !(m->flags & READONLY) && m->offset > 0;
    *out = m->offset;
    Py_DECREF(d);
    if (!ok) {
        PyErr_Format(PyExc_TypeError, "%s.%s is not an object slot", tp->tp_name, name);
        return -1;
    }
    return 0;
}

static int
check_class(PyObject *o, const char *what)
{
    if (!PyType_Check(o)) {
        PyErr_Format(PyExc_TypeError, "%s must be a class", what);
        return -1;
    }
    PyTypeObject *tp = (PyTypeObject *)o;
    if (tp->tp_alloc == NULL || tp->tp_dictoffset != 0) {
        PyErr_Format(PyExc_TypeError, "%s must be a slotted class", what);
        return -1;
    }
    return 0;
}

static PyObject *
ascii_str(const char *p, Py_ssize_t n)
{
    PyObject *s = PyUnicode_New(n, 127);
    if (s != NULL && n > 0)
        memcpy(PyUnicode_1BYTE_DATA(s), p, (size_t)n);
    return s;
}

static Py_ssize_t
find2(const char *p, Py_ssize_t n, char a, char b)
{
    /* the index of the first "ab" in p[0:n], or -1 */
    const char *s = p, *end = p + n;
    while (s < end) {
        const char *hit = memchr(s, a, (size_t)(end - s));
        if (hit == NULL || hit + 1 >= end)
            return -1;
        if (hit[1] == b)
            return hit - p;
        s = hit + 1;
    }
    return -1;
}

static int
starts_comment(const char *p, Py_ssize_t n)
{
    /* rest.lstrip(" ").startswith("#") */
    Py_ssize_t i = 0;
    while (i < n && p[i] == ' ')
        i++;
    return i < n && p[i] == '#';
}

static PyObject *
line_number(Reader *r)
{
    if (r->line_obj == NULL)
        r->line_obj = PyLong_FromSsize_t(r->lineno);
    return r->line_obj;
}

/* A new Scalar. value, style and raw are borrowed. */
static PyObject *
new_scalar(Reader *r, PyObject *value, PyObject *style, PyObject *raw, Py_ssize_t col)
{
    PyObject *line = line_number(r);
    if (line == NULL)
        return NULL;
    PyObject *c = PyLong_FromSsize_t(col);
    if (c == NULL)
        return NULL;
    PyObject *o = r->scalar_tp->tp_alloc(r->scalar_tp, 0);
    if (o == NULL) {
        Py_DECREF(c);
        return NULL;
    }
    Py_INCREF(value);
    SLOT(o, r->s_value) = value;
    Py_INCREF(style);
    SLOT(o, r->s_style) = style;
    Py_INCREF(raw);
    SLOT(o, r->s_raw) = raw;
    Py_INCREF(Py_None);
    SLOT(o, r->s_span) = Py_None;
    Py_INCREF(r->name);
    SLOT(o, r->s_file) = r->name;
    Py_INCREF(line);
    SLOT(o, r->s_line) = line;
    SLOT(o, r->s_col) = c;
    return o;
}

/* A new empty Mapping (is_map) or Sequence; *items and *index get its list and dict. */
static PyObject *
new_collection(Reader *r, int is_map, Py_ssize_t col, PyObject **items, PyObject **index)
{
    PyObject *line = line_number(r);
    if (line == NULL)
        return NULL;
    PyTypeObject *tp = is_map ? r->mapping_tp : r->sequence_tp;
    PyObject *o = tp->tp_alloc(tp, 0);
    if (o == NULL)
        return NULL;
    PyObject *list = PyList_New(0);
    PyObject *c = PyLong_FromSsize_t(col);
    PyObject *dict = is_map ? PyDict_New() : NULL;
    if (list == NULL || c == NULL || (is_map && dict == NULL)) {
        Py_XDECREF(list);
        Py_XDECREF(c);
        Py_XDECREF(dict);
        Py_DECREF(o);
        return NULL;
    }
    Py_INCREF(line);
    Py_INCREF(r->name);
    Py_INCREF(Py_None);
    if (is_map) {
        SLOT(o, r->m_items) = list;
        SLOT(o, r->m_index) = dict;
        SLOT(o, r->m_span) = Py_None;
        SLOT(o, r->m_file) = r->name;
        SLOT(o, r->m_line) = line;
        SLOT(o, r->m_col) = c;
    } else {
        SLOT(o, r->q_items) = list;
        SLOT(o, r->q_span) = Py_None;
        SLOT(o, r->q_file) = r->name;
        SLOT(o, r->q_line) = line;
        SLOT(o, r->q_col) = c;
    }
    *items = list;
    if (index != NULL)
        *index = dict;
    return o;
}

/* Append (key, node) to a mapping: index[key_text] = len(items); items.append((key, node)).
   Steals key and node. */
static int
map_put(PyObject *items, PyObject *index, PyObject *ktext, PyObject *key, PyObject *node)
{
    PyObject *pos = PyLong_FromSsize_t(PyList_GET_SIZE(items));
    PyObject *pair = PyTuple_New(2);
    if (pos == NULL || pair == NULL) {
        Py_XDECREF(pos);
        Py_XDECREF(pair);
        Py_DECREF(key);
        Py_DECREF(node);
        return -1;
    }
    PyTuple_SET_ITEM(pair, 0, key);
    PyTuple_SET_ITEM(pair, 1, node);
    int rc = PyDict_SetItem(index, ktext, pos);
    Py_DECREF(pos);
    if (rc == 0)
        rc = PyList_Append(items, pair);
    Py_DECREF(pair);
    return rc;
}

static int
list_put(PyObject *items, PyObject *node)
{
    int rc = PyList_Append(items, node);
    Py_DECREF(node);
    return rc;
}

/* _resolve_plain through the shared cache: a borrowed (value, kind) tuple, or NULL. */
static PyObject *
resolved(Reader *r, PyObject *text)
{
    PyObject *hit = PyDict_GetItemWithError(r->plain, text);
    if (hit != NULL || PyErr_Occurred())
        return hit;
    PyObject *res = PyObject_CallOneArg(r->resolve_plain, text);
    if (res == NULL)
        return NULL;
    if (!PyTuple_Check(res) || PyTuple_GET_SIZE(res) != 2) {
        Py_DECREF(res);
        PyErr_SetString(PyExc_TypeError, "resolve_plain must return a pair");
        return NULL;
    }
    int rc = PyDict_SetItem(r->plain, text, res);
    Py_DECREF(res); /* the dict holds it */
    return rc < 0 ? NULL : res;
}

/* -- results of the small readers: 1 = done, 0 = bail (not in the subset), -1 = error ------ */

#define BAIL 0

/* _quoted(c, start): *value (new ref), *style (borrowed), *end. */
static int
quoted(Reader *r, const char *c, Py_ssize_t n, Py_ssize_t start, PyObject **value,
       PyObject **style, Py_ssize_t *end)
{
    char q = c[start];
    if (q == '"') {
        const char *close = memchr(c + start + 1, '"', (size_t)(n - start - 1));
        if (close == NULL)
            return BAIL;
        Py_ssize_t len = close - (c + start + 1);
        if (memchr(c + start + 1, '\\', (size_t)len) != NULL)
            return BAIL; /* escapes: leave them to libyaml */
        *value = ascii_str(c + start + 1, len);
        if (*value == NULL)
            return -1;
        *style = r->style_double;
        *end = close - c + 1;
        return 1;
    }
    /* single quotes: '' is a quote */
    Py_ssize_t i = start + 1, count = 0;
    for (;;) {
        const char *close = memchr(c + i, '\'', (size_t)(n - i));
        if (close == NULL)
            return BAIL; /* multi-line */
        Py_ssize_t e = close - c;
        count += e - i;
        if (e + 1 < n && c[e + 1] == '\'') {
            count += 1;
            i = e + 2;
            continue;
        }
        *end = e + 1;
        break;
    }
    PyObject *s = PyUnicode_New(count, 127);
    if (s == NULL)
        return -1;
    Py_UCS1 *out = PyUnicode_1BYTE_DATA(s);
    for (Py_ssize_t k = start + 1; k < *end - 1; k++) {
        *out++ = (Py_UCS1)c[k];
        if (c[k] == '\'')
            k++; /* the doubled quote */
    }
    *value = s;
    *style = r->style_single;
    return 1;
}

static int
dash_like(const char *v, Py_ssize_t n)
{
    /* '-', '?' or ':' followed by a space or the end: an indicator, not a plain scalar */
    char f = v[0];
    return (f == '-' || f == '?' || f == ':') && (n == 1 || v[1] == ' ');
}

/* A plain scalar value v[0:n] (after a key's ": " or a "- "): the trailing comment cut, the
   checks of _read / _plain, resolved. *node is a new Scalar. */
static int
plain_scalar(Reader *r, const char *v, Py_ssize_t n, Py_ssize_t col, PyObject **node)
{
    Py_ssize_t cut = find2(v, n, ' ', '#');
    if (cut >= 0) {
        n = cut;
        while (n > 0 && v[n - 1] == ' ')
            n--;
    }
    unsigned char first = (unsigned char)v[0];
    if (r->bad_first[first] || first == '"' || first == '\'')
        return BAIL;
    if (dash_like(v, n))
        return BAIL;
    if (v[n - 1] == ':' || find2(v, n, ':', ' ') >= 0)
        return BAIL; /* libyaml: "mapping values are not allowed here" */
    PyObject *text = ascii_str(v, n);
    if (text == NULL)
        return -1;
    PyObject *value = text, *raw = text;
    if (r->resolvable[first]) {
        PyObject *hit = resolved(r, text);
        if (hit == NULL) {
            Py_DECREF(text);
            return -1;
        }
        int kind = PyObject_IsTrue(PyTuple_GET_ITEM(hit, 1));
        if (kind != 0) {
            Py_DECREF(text);
            return kind < 0 ? -1 : BAIL; /* merge key or an unsupported tag */
        }
        value = PyTuple_GET_ITEM(hit, 0);
        if (Py_IS_TYPE(value, &PyUnicode_Type))
            raw = value;
    }
    *node = new_scalar(r, value, r->style_plain, raw, col);
    Py_DECREF(text);
    return *node == NULL ? -1 : 1;
}

/* _check_key for a key that is not cached yet. */
static int
check_key(Reader *r, const char *k, Py_ssize_t n, PyObject *text)
{
    if (n == 0 || n > 1000 || k[n - 1] == ' ' || memchr(k, '#', (size_t)n) != NULL)
        return BAIL; /* libyaml: no simple key longer than 1024 characters */
    unsigned char first = (unsigned char)k[0];
    if (r->bad_first[first] || first == '"' || first == '\'')
        return BAIL;
    if (dash_like(k, n))
        return BAIL;
    if (r->resolvable[first]) {
        PyObject *hit = resolved(r, text);
        if (hit == NULL)
            return -1;
        int kind = PyObject_IsTrue(PyTuple_GET_ITEM(hit, 1));
        if (kind != 0)
            return kind < 0 ? -1 : BAIL; /* a merge key, or a tag the event reader reports */
    }
    return 1;
}

static Py_hash_t
bytes_hash(const char *p, Py_ssize_t n)
{
    Py_uhash_t h = 2166136261u; /* FNV-1a: the cache is internal, any spread will do */
    for (Py_ssize_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)p[i]) * 16777619u;
    return (Py_hash_t)h;
}

/* The key text k[0:n] as a str whose key checks passed (borrowed when cached, else a new
   reference in *owned); 0 = bail. */
static int
key_text(Reader *r, const char *k, Py_ssize_t n, PyObject **text, PyObject **owned)
{
    *owned = NULL;
    Py_hash_t h = 0;
    KeyEntry *slot = NULL;
    if (n > 0 && n <= KEY_MAX_CACHED) {
        h = bytes_hash(k, n);
        Py_ssize_t i = (Py_ssize_t)((Py_uhash_t)h & (KEY_CACHE_SIZE - 1));
        for (int probe = 0; probe < 8; probe++) {
            KeyEntry *e = &r->keys[(i + probe) & (KEY_CACHE_SIZE - 1)];
            if (e->str == NULL) {
                slot = e;
                break;
            }
            if (e->h == h && e->len == n && memcmp(PyUnicode_1BYTE_DATA(e->str), k, (size_t)n) == 0) {
                *text = e->str;
                return 1;
            }
        }
    }
    PyObject *s = ascii_str(k, n);
    if (s == NULL)
        return -1;
    int rc = check_key(r, k, n, s);
    if (rc != 1) {
        Py_DECREF(s);
        return rc;
    }
    if (slot != NULL) {
        slot->str = s; /* the cache owns it */
        slot->len = n;
        slot->h = h;
    } else {
        *owned = s;
    }
    *text = s;
    return 1;
}

/* -- the reader ---------------------------------------------------------------------------- */

typedef struct {
    PyObject *items, *index; /* borrowed: the mapping's */
    PyObject *key;           /* owned */
    PyObject *ktext;         /* owned */
    Py_ssize_t ind;
} Pending;

static void
drop_pending(Pending *p)
{
    Py_CLEAR(p->key);
    Py_CLEAR(p->ktext);
}

/* 1 = the documents are in *docs, 0 = bail, -1 = error */
static int
read_text(Reader *r, const char *buf, Py_ssize_t n, Py_ssize_t max_depth, PyObject *docs)
{
    Frame *stack = PyMem_Calloc((size_t)max_depth + 1, sizeof(Frame));
    if (stack == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    Py_ssize_t depth = 0;
    PyObject *root = NULL; /* owned */
    Pending pend = {NULL, NULL, NULL, NULL, 0};
    int rc = 1;
    Py_ssize_t pos = 0;
    r->lineno = -1;

    for (;;) {
        if (pos > n)
            break;
        const char *nl = memchr(buf + pos, '\n', (size_t)(n - pos));
        Py_ssize_t end = nl ? nl - buf : n;
        const char *line = buf + pos;
        Py_ssize_t len = end - pos;
        pos = end + 1;
        r->lineno++;
        Py_CLEAR(r->line_obj);
        if (!nl)
            pos = n + 1; /* the last line */

        Py_ssize_t ind = 0;
        while (ind < len && line[ind] == ' ')
            ind++;
        if (ind == len)
            continue;
        const char *c = line + ind;
        Py_ssize_t cl = len - ind;
        char c0 = c[0];
        if (c0 == '#')
            continue;
        if (c[cl - 1] == ' ') {
            rc = BAIL;
            break;
        }
        if (ind == 0 && (c0 == '-' || c0 == '.' || c0 == '%')) {
            if (cl == 3 && memcmp(c, "---", 3) == 0) {
                if (pend.key != NULL) {
                    rc = BAIL;
                    break;
                }
                if (root != NULL) {
                    if (PyList_Append(docs, root) < 0) {
                        rc = -1;
                        break;
                    }
                    Py_CLEAR(root);
                }
                depth = 0;
                continue;
            }
            if ((cl >= 4 && memcmp(c, "--- ", 4) == 0) || (cl >= 3 && memcmp(c, "...", 3) == 0) ||
                c0 == '%') {
                rc = BAIL;
                break;
            }
        }
        /* -- where does this line go? -- */
        int dash = c0 == '-' && (cl == 1 || c[1] == ' ');
        Frame *top;
        if (pend.key != NULL) {
            if (!(ind > pend.ind || (ind == pend.ind && dash)) || depth >= max_depth) {
                rc = BAIL; /* a null value (or a scalar on the next line); too deep */
                break;
            }
            PyObject *items, *index = NULL;
            PyObject *coll = new_collection(r, !dash, ind, &items, &index);
            if (coll == NULL) {
                rc = -1;
                break;
            }
            PyObject *key = pend.key, *ktext = pend.ktext;
            pend.key = NULL;
            pend.ktext = NULL;
            int put = map_put(pend.items, pend.index, ktext, key, coll);
            Py_DECREF(ktext);
            if (put < 0) {
                rc = -1;
                break;
            }
            top = &stack[depth++];
            top->ind = ind;
            top->is_map = !dash;
            top->items = items;
            top->index = index;
        } else if (depth == 0) {
            if (root != NULL || ind != 0) {
                rc = BAIL;
                break;
            }
            PyObject *items, *index = NULL;
            root = new_collection(r, !dash, 0, &items, &index);
            if (root == NULL) {
                rc = -1;
                break;
            }
            top = &stack[depth++];
            top->ind = 0;
            top->is_map = !dash;
            top->items = items;
            top->index = index;
        } else {
            top = &stack[depth - 1];
            while (top->ind != ind || top->is_map == dash) {
                Py_ssize_t tind = top->ind;
                if (tind > ind || (tind == ind && !top->is_map && !dash && depth > 1 &&
                                   stack[depth - 2].ind == ind)) {
                    depth--;
                    if (depth == 0)
                        break;
                    top = &stack[depth - 1];
                    continue;
                }
                break;
            }
            if (depth == 0 || top->ind != ind || top->is_map == dash) {
                rc = BAIL;
                break;
            }
        }
        /* -- the line's content -- */
        Py_ssize_t col = ind, k;
        if (dash) {
            if (cl == 1) {
                rc = BAIL; /* "-" alone: item on the next lines */
                break;
            }
            Py_ssize_t j = 2;
            while (j < cl && c[j] == ' ')
                j++;
            c += j;
            cl -= j;
            col = ind + j;
            if (c[0] == '#' || (c[0] == '-' && dash_like(c, cl))) {
                rc = BAIL;
                break;
            }
            PyObject *seq_items = top->items;
            char first = c[0];
            if (first == '"' || first == '\'') {
                PyObject *value, *style;
                Py_ssize_t qend;
                int q = quoted(r, c, cl, 0, &value, &style, &qend);
                if (q != 1) {
                    rc = q;
                    break;
                }
                if (qend < cl && !(starts_comment(c + qend, cl - qend) && c[qend] == ' ')) {
                    Py_DECREF(value);
                    rc = BAIL; /* a quoted key, or text after the closing quote */
                    break;
                }
                PyObject *raw = ascii_str(c, qend);
                PyObject *node = raw ? new_scalar(r, value, style, raw, col) : NULL;
                Py_DECREF(value);
                Py_XDECREF(raw);
                if (node == NULL || list_put(seq_items, node) < 0) {
                    rc = -1;
                    break;
                }
                continue;
            }
            k = find2(c, cl, ':', ' ');
            if (k < 0 && c[cl - 1] == ':')
                k = cl - 1;
            if (k < 0) { /* a plain scalar item */
                PyObject *node;
                int p = plain_scalar(r, c, cl, col, &node);
                if (p != 1 || list_put(seq_items, node) < 0) {
                    rc = p == 1 ? -1 : p;
                    break;
                }
                continue;
            }
            if (depth >= max_depth) {
                rc = BAIL;
                break;
            }
            PyObject *items, *index;
            PyObject *coll = new_collection(r, 1, col, &items, &index);
            if (coll == NULL || list_put(seq_items, coll) < 0) {
                rc = -1;
                break;
            }
            top = &stack[depth++];
            top->ind = col;
            top->is_map = 1;
            top->items = items;
            top->index = index;
        } else {
            k = find2(c, cl, ':', ' ');
            if (k < 0) {
                if (c[cl - 1] != ':') {
                    rc = BAIL; /* a scalar where a key belongs */
                    break;
                }
                k = cl - 1;
            }
        }
        /* c[0:k] is a key of the mapping on top; the value starts after ": " */
        PyObject *ktext, *kowned;
        int kr = key_text(r, c, k, &ktext, &kowned);
        if (kr != 1) {
            rc = kr;
            break;
        }
        int dup = PyDict_Contains(top->index, ktext);
        if (dup != 0) {
            Py_XDECREF(kowned);
            rc = dup < 0 ? -1 : BAIL; /* duplicate key: the full loader reports it */
            break;
        }
        PyObject *key = new_scalar(r, ktext, r->style_plain, ktext, col);
        if (key == NULL) {
            Py_XDECREF(kowned);
            rc = -1;
            break;
        }
        Py_ssize_t j = k + 1;
        while (j < cl && c[j] == ' ')
            j++;
        if (j == cl || c[j] == '#') {
            pend.items = top->items;
            pend.index = top->index;
            pend.key = key;
            pend.ktext = ktext;
            Py_INCREF(ktext);
            Py_XDECREF(kowned);
            pend.ind = col;
            continue;
        }
        Py_ssize_t vcol = col + j;
        char first = c[j];
        PyObject *node = NULL;
        int vr = 1;
        if (first == '"' || first == '\'') {
            PyObject *value, *style;
            Py_ssize_t qend;
            vr = quoted(r, c, cl, j, &value, &style, &qend);
            if (vr == 1) {
                if (qend < cl && !(c[qend] == ' ' && starts_comment(c + qend, cl - qend))) {
                    Py_DECREF(value);
                    vr = BAIL;
                } else {
                    PyObject *raw = ascii_str(c + j, qend - j);
                    node = raw ? new_scalar(r, value, style, raw, vcol) : NULL;
                    Py_DECREF(value);
                    Py_XDECREF(raw);
                    vr = node ? 1 : -1;
                }
            }
        } else if ((first == '{' || first == '[') && j + 2 <= cl &&
                   c[j + 1] == (first == '{' ? '}' : ']') && (j + 2 == cl || c[j + 2] == ' ')) {
            /* an empty flow collection ("podSelector: {}"), maybe with a comment after it */
            if (j + 2 < cl && !starts_comment(c + j + 2, cl - j - 2)) {
                vr = BAIL;
            } else {
                PyObject *items, *index = NULL;
                node = new_collection(r, first == '{', vcol, &items, &index);
                vr = node ? 1 : -1;
            }
        } else {
            vr = plain_scalar(r, c + j, cl - j, vcol, &node);
        }
        if (vr != 1) {
            Py_DECREF(key);
            Py_XDECREF(kowned);
            rc = vr;
            break;
        }
        int put = map_put(top->items, top->index, ktext, key, node);
        Py_XDECREF(kowned);
        if (put < 0) {
            rc = -1;
            break;
        }
    }
    if (rc == 1 && pend.key != NULL)
        rc = BAIL;
    if (rc == 1 && root != NULL && PyList_Append(docs, root) < 0)
        rc = -1;
    drop_pending(&pend);
    Py_XDECREF(root);
    PyMem_Free(stack);
    return rc;
}

static int
char_table(PyObject *container, char *table)
{
    for (int ch = 0; ch < 128; ch++) {
        PyObject *s = PyUnicode_FromOrdinal(ch);
        if (s == NULL)
            return -1;
        int in = PySequence_Contains(container, s);
        Py_DECREF(s);
        if (in < 0)
            return -1;
        table[ch] = (char)in;
    }
    return 0;
}

static void
reader_clear(Reader *r)
{
    Py_CLEAR(r->plain);
    Py_CLEAR(r->style_plain);
    Py_CLEAR(r->style_single);
    Py_CLEAR(r->style_double);
    Py_CLEAR(r->line_obj);
    if (r->keys != NULL) {
        for (Py_ssize_t i = 0; i < KEY_CACHE_SIZE; i++)
            Py_XDECREF(r->keys[i].str);
        PyMem_Free(r->keys);
        r->keys = NULL;
    }
}

PyDoc_STRVAR(read_doc,
"read(text, name, Scalar, Mapping, Sequence, resolve_plain, resolvable_first, bad_first,\n"
"     max_depth) -> list | None\n\n"
"The documents of the ASCII ``text`` as yaml_fast._read builds them, or None where _read\n"
"would give up.");

static PyObject *
yaml_lines_read(PyObject *module, PyObject *args)
{
    PyObject *text, *name, *scalar, *mapping, *sequence, *resolve_plain, *resolvable, *bad;
    Py_ssize_t max_depth;
    if (!PyArg_ParseTuple(args, "UUOOOOOOn:read", &text, &name, &scalar, &mapping, &sequence,
                          &resolve_plain, &resolvable, &bad, &max_depth))
        return NULL;
    if (!PyUnicode_IS_ASCII(text))
        Py_RETURN_NONE;
    if (max_depth < 1 || max_depth > 100000) {
        PyErr_SetString(PyExc_ValueError, "max_depth out of range");
        return NULL;
    }
    if (check_class(scalar, "Scalar") < 0 || check_class(mapping, "Mapping") < 0 ||
        check_class(sequence, "Sequence") < 0)
        return NULL;
    if (!PyCallable_Check(resolve_plain)) {
        PyErr_SetString(PyExc_TypeError, "resolve_plain must be callable");
        return NULL;
    }
    Reader r;
    memset(&r, 0, sizeof(r));
    r.scalar_tp = (PyTypeObject *)scalar;
    r.mapping_tp = (PyTypeObject *)mapping;
    r.sequence_tp = (PyTypeObject *)sequence;
    r.name = name;
    r.resolve_plain = resolve_plain;
    if (slot_offset(r.scalar_tp, "value", &r.s_value) < 0 ||
        slot_offset(r.scalar_tp, "style", &r.s_style) < 0 ||
        slot_offset(r.scalar_tp, "raw", &r.s_raw) < 0 ||
        slot_offset(r.scalar_tp, "_span", &r.s_span) < 0 ||
        slot_offset(r.scalar_tp, "_file", &r.s_file) < 0 ||
        slot_offset(r.scalar_tp, "_line", &r.s_line) < 0 ||
        slot_offset(r.scalar_tp, "_col", &r.s_col) < 0 ||
        slot_offset(r.mapping_tp, "items", &r.m_items) < 0 ||
        slot_offset(r.mapping_tp, "_index", &r.m_index) < 0 ||
        slot_offset(r.mapping_tp, "_span", &r.m_span) < 0 ||
        slot_offset(r.mapping_tp, "_file", &r.m_file) < 0 ||
        slot_offset(r.mapping_tp, "_line", &r.m_line) < 0 ||
        slot_offset(r.mapping_tp, "_col", &r.m_col) < 0 ||
        slot_offset(r.sequence_tp, "items", &r.q_items) < 0 ||
        slot_offset(r.sequence_tp, "_span", &r.q_span) < 0 ||
        slot_offset(r.sequence_tp, "_file", &r.q_file) < 0 ||
        slot_offset(r.sequence_tp, "_line", &r.q_line) < 0 ||
        slot_offset(r.sequence_tp, "_col", &r.q_col) < 0)
        return NULL;
    if (char_table(resolvable, r.resolvable) < 0 || char_table(bad, r.bad_first) < 0)
        return NULL;
    r.plain = PyDict_New();
    r.style_plain = PyUnicode_FromString("");
    r.style_single = PyUnicode_FromString("'");
    r.style_double = PyUnicode_FromString("\"");
    r.keys = PyMem_Calloc(KEY_CACHE_SIZE, sizeof(KeyEntry));
    PyObject *docs = PyList_New(0);
    if (r.plain == NULL || r.style_plain == NULL || r.style_single == NULL ||
        r.style_double == NULL || docs == NULL || r.keys == NULL) {
        if (r.keys == NULL && !PyErr_Occurred())
            PyErr_NoMemory();
        Py_XDECREF(docs);
        reader_clear(&r);
        return NULL;
    }
    int rc = read_text(&r, (const char *)PyUnicode_1BYTE_DATA(text), PyUnicode_GET_LENGTH(text),
                       max_depth, docs);
    reader_clear(&r);
    if (rc == 1)
        return docs;
    Py_DECREF(docs);
    if (rc < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"read", yaml_lines_read, METH_VARARGS, read_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "_yaml_lines",
    "The block-YAML line reader of yaml_fast, in C (optional accelerator).", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC
PyInit__yaml_lines(void)
{
    return PyModule_Create(&module_def);
}
