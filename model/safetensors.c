/* safetensors.c: validation of a safetensors header (bounds, JSON, dtypes, shapes, offsets inside
 * the data area and not overlapping) and the streaming writer. Mapping files and binding tensors
 * to the architecture is load.c's job. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "model_impl.h"

/* Known safetensors dtypes we do not compute with; allowed for tensors the model ignores. */
static const struct {
    const char *name;
    int size;
} other_dtypes[] = {{"F64", 8}, {"I64", 8},  {"U64", 8},     {"I32", 4},
                    {"U32", 4}, {"I16", 2},  {"U16", 2},     {"I8", 1},
                    {"U8", 1},  {"BOOL", 1}, {"F8_E4M3", 1}, {"F8_E5M2", 1}};

static int dtype_from_name(const char *s, int *size)
{
    if (strcmp(s, "F32") == 0) {
        *size = 4;
        return PK_DTYPE_F32;
    }
    if (strcmp(s, "F16") == 0) {
        *size = 2;
        return PK_DTYPE_F16;
    }
    if (strcmp(s, "BF16") == 0) {
        *size = 2;
        return PK_DTYPE_BF16;
    }
    for (size_t i = 0; i < sizeof other_dtypes / sizeof other_dtypes[0]; i++) {
        if (strcmp(s, other_dtypes[i].name) == 0) {
            *size = other_dtypes[i].size;
            return -1;
        }
    }
    return -2;
}

static int cmp_begin(const void *a, const void *b)
{
    const pk_st_tensor *x = a, *y = b;
    if (x->begin != y->begin)
        return x->begin < y->begin ? -1 : 1;
    return x->end < y->end ? -1 : (x->end > y->end);
}

static int cmp_name(const void *a, const void *b)
{
    const pk_st_tensor *x = a, *y = b;
    return strcmp(x->name, y->name);
}

/* v as a count: a JSON number that is a whole number in [0, 9e15] (exact in a double). */
static int json_count(const cJSON *v, uint64_t *out)
{
    if (!cJSON_IsNumber(v) || v->valuedouble < 0 || v->valuedouble > 9.0e15 ||
        v->valuedouble != (double)(int64_t)v->valuedouble)
        return -1;
    *out = (uint64_t)v->valuedouble;
    return 0;
}

/* t->ndim and t->shape (padded with 1s) from the entry's "shape"; *numel the element count. */
static int parse_shape(const char *fname, const cJSON *sh, pk_st_tensor *t, uint64_t *numel,
                       char *err, size_t errlen)
{
    int nd = cJSON_GetArraySize(sh);
    if (nd > 4) {
        pk_seterr(err, errlen, "%s: tensor %s: %d dimensions (at most 4 supported)", fname, t->name,
                  nd);
        return -1;
    }
    t->ndim = nd;
    *numel = 1;
    for (int d = 0; d < nd; d++) {
        uint64_t s = 0;
        if (json_count(cJSON_GetArrayItem(sh, d), &s) != 0) {
            pk_seterr(err, errlen, "%s: tensor %s: shape[%d] is not a non-negative integer", fname,
                      t->name, d);
            return -1;
        }
        t->shape[d] = (int64_t)s;
        if (s != 0 && *numel > UINT64_MAX / 8 / s) {
            pk_seterr(err, errlen, "%s: tensor %s: shape too large", fname, t->name);
            return -1;
        }
        *numel *= s;
    }
    for (int d = nd; d < 4; d++)
        t->shape[d] = 1;
    return 0;
}

/* t->begin and t->end from "data_offsets", inside the data area, nbytes apart and aligned to
 * the dtype's element size esize (dtype names it in messages). */
static int parse_offsets(const char *fname, const cJSON *off, uint64_t data_len, uint64_t nbytes,
                         int esize, const char *dtype, pk_st_tensor *t, char *err, size_t errlen)
{
    uint64_t ob[2];
    for (int i = 0; i < 2; i++) {
        if (json_count(cJSON_GetArrayItem(off, i), &ob[i]) != 0) {
            pk_seterr(err, errlen, "%s: tensor %s: data_offsets[%d] is not a non-negative integer",
                      fname, t->name, i);
            return -1;
        }
    }
    t->begin = ob[0];
    t->end = ob[1];
    if (t->begin > t->end || t->end > data_len) {
        pk_seterr(err, errlen,
                  "%s: tensor %s: data_offsets [%llu, %llu] out of range (data area is %llu bytes)",
                  fname, t->name, (unsigned long long)t->begin, (unsigned long long)t->end,
                  (unsigned long long)data_len);
        return -1;
    }
    if (t->end - t->begin != nbytes) {
        pk_seterr(err, errlen, "%s: tensor %s: %llu bytes but dtype %s x shape needs %llu", fname,
                  t->name, (unsigned long long)(t->end - t->begin), dtype,
                  (unsigned long long)nbytes);
        return -1;
    }
    if (t->begin % (uint64_t)esize != 0) {
        pk_seterr(err, errlen, "%s: tensor %s: data offset %llu not aligned to its dtype", fname,
                  t->name, (unsigned long long)t->begin);
        return -1;
    }
    return 0;
}

/* Reads one tensor entry; returns 0 or -1 with err set. */
static int parse_entry(const char *fname, const cJSON *it, uint64_t data_len, pk_st_tensor *t,
                       char *err, size_t errlen)
{
    const char *name = it->string;
    if (strlen(name) >= sizeof t->name) {
        pk_seterr(err, errlen, "%s: tensor name longer than %zu bytes", fname, sizeof t->name - 1);
        return -1;
    }
    snprintf(t->name, sizeof t->name, "%s", name);
    if (!cJSON_IsObject(it)) {
        pk_seterr(err, errlen, "%s: tensor %s: header entry is not an object", fname, name);
        return -1;
    }
    const cJSON *dt = cJSON_GetObjectItemCaseSensitive(it, "dtype");
    const cJSON *sh = cJSON_GetObjectItemCaseSensitive(it, "shape");
    const cJSON *off = cJSON_GetObjectItemCaseSensitive(it, "data_offsets");
    if (!cJSON_IsString(dt) || !cJSON_IsArray(sh) || !cJSON_IsArray(off) ||
        cJSON_GetArraySize(off) != 2) {
        pk_seterr(err, errlen, "%s: tensor %s: needs dtype, shape and data_offsets [begin, end]",
                  fname, name);
        return -1;
    }
    int esize = 0;
    t->dtype = dtype_from_name(dt->valuestring, &esize);
    if (t->dtype == -2) {
        pk_seterr(err, errlen, "%s: tensor %s: unknown dtype \"%s\"", fname, name, dt->valuestring);
        return -1;
    }
    uint64_t numel = 0;
    if (parse_shape(fname, sh, t, &numel, err, errlen) != 0)
        return -1;
    return parse_offsets(fname, off, data_len, numel * (uint64_t)esize, esize, dt->valuestring, t,
                         err, errlen);
}

pk_status pk_st_parse(const char *fname, const char *header, size_t header_len, uint64_t data_len,
                      pk_st_tensor **out, size_t *n_out, char *err, size_t errlen)
{
    *out = NULL;
    *n_out = 0;
    pk_status st = PK_ERR_FORMAT;
    pk_st_tensor *ts = NULL;
    cJSON *root = cJSON_ParseWithLength(header, header_len);
    if (!root || !cJSON_IsObject(root)) {
        pk_seterr(err, errlen, "%s: header is not a valid JSON object", fname);
        goto out;
    }
    size_t n = 0;
    for (const cJSON *it = root->child; it; it = it->next)
        n++;
    ts = calloc(n ? n : 1, sizeof *ts);
    if (!ts) {
        st = PK_ERR_NOMEM;
        pk_seterr(err, errlen, "%s: out of memory", fname);
        goto out;
    }
    size_t k = 0;
    for (const cJSON *it = root->child; it; it = it->next) {
        if (!it->string) {
            pk_seterr(err, errlen, "%s: header entry without a name", fname);
            goto out;
        }
        if (strcmp(it->string, "__metadata__") == 0)
            continue;
        if (parse_entry(fname, it, data_len, &ts[k], err, errlen) != 0)
            goto out;
        k++;
    }
    qsort(ts, k, sizeof *ts, cmp_name);
    for (size_t i = 1; i < k; i++) {
        if (strcmp(ts[i - 1].name, ts[i].name) == 0) {
            pk_seterr(err, errlen, "%s: tensor %s listed twice", fname, ts[i].name);
            goto out;
        }
    }
    /* overlap check on a copy sorted by offset (empty tensors overlap nothing) */
    pk_st_tensor *byoff = malloc((k ? k : 1) * sizeof *byoff);
    if (!byoff) {
        st = PK_ERR_NOMEM;
        goto out;
    }
    memcpy(byoff, ts, k * sizeof *ts);
    qsort(byoff, k, sizeof *byoff, cmp_begin);
    const pk_st_tensor *prev = NULL;
    int bad = 0;
    for (size_t i = 0; i < k && !bad; i++) {
        if (byoff[i].begin == byoff[i].end)
            continue;
        if (prev && byoff[i].begin < prev->end) {
            pk_seterr(err, errlen, "%s: tensor %s: data_offsets overlap tensor %s", fname,
                      byoff[i].name, prev->name);
            bad = 1;
        }
        prev = &byoff[i];
    }
    free(byoff);
    if (bad)
        goto out;
    *out = ts;
    *n_out = k;
    ts = NULL;
    st = PK_OK;
out:
    cJSON_Delete(root);
    free(ts);
    return st;
}

pk_status pk_safetensors_check_header(const char *fname, const char *header, size_t header_len,
                                      uint64_t data_len, char *err, size_t errlen)
{
    pk_st_tensor *ts = NULL;
    size_t n = 0;
    pk_status st = pk_st_parse(fname, header, header_len, data_len, &ts, &n, err, errlen);
    free(ts);
    return st;
}

/* ---- writer ---- */

typedef struct order_item {
    const pk_st_entry *e;
    size_t idx;
} order_item;

static int cmp_order(const void *a, const void *b)
{
    const order_item *x = a, *y = b;
    return strcmp(x->e->name, y->e->name);
}

static size_t entry_numel(const pk_st_entry *e)
{
    size_t n = 1;
    for (int d = 0; d < e->ndim; d++)
        n *= (size_t)e->shape[d];
    return n;
}

/* Builds the header JSON (tensors laid out in name order), padded with spaces to 8 bytes. */
static char *build_header(const order_item *ord, size_t n, size_t *len)
{
    cJSON *root = cJSON_CreateObject();
    char *txt = NULL, *res = NULL;
    if (!root)
        return NULL;
    cJSON *meta = cJSON_AddObjectToObject(root, "__metadata__");
    if (!meta || !cJSON_AddStringToObject(meta, "format", "pt"))
        goto out;
    uint64_t off = 0;
    for (size_t i = 0; i < n; i++) {
        const pk_st_entry *e = ord[i].e;
        cJSON *o = cJSON_AddObjectToObject(root, e->name);
        if (!o || !cJSON_AddStringToObject(o, "dtype", pk_dtype_name(e->dtype)))
            goto out;
        cJSON *sh = cJSON_AddArrayToObject(o, "shape");
        cJSON *of = cJSON_AddArrayToObject(o, "data_offsets");
        if (!sh || !of)
            goto out;
        for (int d = 0; d < e->ndim; d++)
            cJSON_AddItemToArray(sh, cJSON_CreateNumber((double)e->shape[d]));
        uint64_t bytes = (uint64_t)entry_numel(e) * pk_dtype_size(e->dtype);
        cJSON_AddItemToArray(of, cJSON_CreateNumber((double)off));
        cJSON_AddItemToArray(of, cJSON_CreateNumber((double)(off + bytes)));
        off += bytes;
    }
    txt = cJSON_PrintUnformatted(root);
    if (!txt)
        goto out;
    size_t l = strlen(txt);
    size_t padded = (l + 7) / 8 * 8;
    res = malloc(padded + 1);
    if (!res)
        goto out;
    memcpy(res, txt, l);
    memset(res + l, ' ', padded - l);
    res[padded] = 0;
    *len = padded;
out:
    free(txt);
    cJSON_Delete(root);
    return res;
}

pk_status pk_safetensors_write(const char *path, const pk_st_entry *entries, size_t n,
                               pk_st_fill_fn fill, void *user, char *err, size_t errlen)
{
    enum { CHUNK = 1 << 18 };
    pk_status st = PK_ERR_NOMEM;
    FILE *f = NULL;
    char *hdr = NULL;
    float *buf = malloc(CHUNK * sizeof(float));
    void *nb = malloc(CHUNK * sizeof(float));
    order_item *ord = malloc((n ? n : 1) * sizeof *ord);
    if (!buf || !nb || !ord) {
        pk_seterr(err, errlen, "%s: out of memory", path);
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        ord[i].e = &entries[i];
        ord[i].idx = i;
    }
    qsort(ord, n, sizeof *ord, cmp_order);
    size_t hlen = 0;
    hdr = build_header(ord, n, &hlen);
    if (!hdr) {
        pk_seterr(err, errlen, "%s: out of memory building the header", path);
        goto out;
    }
    st = PK_ERR_IO;
    f = pk_fopen_private(path, "wb");
    if (!f) {
        pk_seterr(err, errlen, "%s: cannot create: %s", path, strerror(errno));
        goto out;
    }
    unsigned char lenb[8];
    for (int i = 0; i < 8; i++)
        lenb[i] = (unsigned char)((uint64_t)hlen >> (8 * i));
    if (fwrite(lenb, 1, 8, f) != 8 || fwrite(hdr, 1, hlen, f) != hlen)
        goto werr;
    for (size_t i = 0; i < n; i++) {
        const pk_st_entry *e = ord[i].e;
        size_t numel = entry_numel(e), es = pk_dtype_size(e->dtype);
        for (size_t s = 0; s < numel; s += CHUNK) {
            size_t c = numel - s < CHUNK ? numel - s : CHUNK;
            fill(user, ord[i].idx, s, c, buf);
            pk_narrow(e->dtype, buf, c, nb);
            if (fwrite(nb, es, c, f) != c)
                goto werr;
        }
    }
    if (fclose(f) != 0) {
        f = NULL;
        goto werr;
    }
    f = NULL;
    st = PK_OK;
    goto out;
werr:
    pk_seterr(err, errlen, "%s: write failed: %s", path, strerror(errno));
out:
    if (f)
        fclose(f);
    free(hdr);
    free(buf);
    free(nb);
    free(ord);
    return st;
}
