/* writable.c: the weights a run writes (pk_model.h, DESIGN 5). pk_model_make_writable gives the
 * chosen tensors anonymous memory of the process's own over their mapped ranges, filled from the
 * files with one sequential read, so the first update does not take a copy-on-write fault per
 * page; pk_model_restore_base drops the written pages and reads those ranges again. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "gguf_impl.h"
#include "model_impl.h"

/* Reads bytes [off, off+len) of a mapping's file into dst. */
static pk_status read_range(const pk_mapping *map, void *dst, size_t off, size_t len)
{
    size_t done = 0;
    while (done < len) {
        ssize_t k = pread(map->fd, (char *)dst + done, len - done, (off_t)(off + done));
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            return PK_ERR_IO; /* an error, or the file shrank since it was mapped */
        done += (size_t)k;
    }
    return PK_OK;
}

static int cmp_range(const void *a, const void *b)
{
    const pk_private_range *x = a, *y = b;
    if (x->map != y->map)
        return x->map < y->map ? -1 : 1;
    return x->off < y->off ? -1 : (x->off > y->off);
}

/* The page ranges of the mappings that hold the chosen tensors (NULL = all), sorted, overlapping
 * and touching ones merged; *n gets their count. Owned result (free), NULL if out of memory. */
static pk_private_range *tensor_ranges(const pk_model *m, const uint8_t *tensors, size_t *n)
{
    size_t page = (size_t)sysconf(_SC_PAGESIZE), k = 0;
    pk_private_range *r = malloc((m->n_t ? m->n_t : 1) * sizeof *r);
    for (size_t i = 0; r && i < m->n_t; i++) {
        const pk_tensor *t = &m->t[i];
        if ((tensors && !tensors[i]) || t->owned || t->numel == 0) /* heap copies are private */
            continue;
        for (int mi = 0; mi < m->n_maps; mi++) {
            const char *base = m->maps[mi].base, *d = t->data;
            if (d < base || d >= base + m->maps[mi].len)
                continue;
            size_t a = (size_t)(d - base), b = a + pk_dtype_row_bytes(t->dtype, t->numel);
            b = (b + page - 1) / page * page;
            a = a / page * page;
            r[k].map = mi;
            r[k].off = a;
            r[k].len = (b < m->maps[mi].len ? b : m->maps[mi].len) - a;
            k++;
        }
    }
    if (r)
        qsort(r, k, sizeof *r, cmp_range);
    size_t w = 0;
    for (size_t i = 0; i < k; i++) {
        if (w > 0 && r[w - 1].map == r[i].map && r[i].off <= r[w - 1].off + r[w - 1].len) {
            size_t end = r[i].off + r[i].len, wend = r[w - 1].off + r[w - 1].len;
            r[w - 1].len = (end > wend ? end : wend) - r[w - 1].off;
        } else {
            r[w++] = r[i];
        }
    }
    *n = w;
    return r;
}

/* Weights that cannot be rewritten in place: block-quantized tensors (an update would be
 * re-quantized) and the q/k rows of a llama.cpp file (re-reading the file undoes their
 * reordering). PK_ERR_UNSUPPORTED with a warning naming the tensor or file. */
static pk_status check_rewritable(const pk_model *m, const uint8_t *tensors)
{
    for (size_t i = 0; i < m->n_t; i++) {
        if ((!tensors || tensors[i]) && pk_dtype_is_quant(m->t[i].dtype)) {
            pk_log(PK_LOG_WARN, "%s: tensor %s is %s: quantized weights are frozen", m->dir,
                   m->t[i].name, pk_dtype_name(m->t[i].dtype));
            return PK_ERR_UNSUPPORTED;
        }
    }
    if (m->n_maps == 1 && pk_gguf_reordered(m->maps[0].base, m->maps[0].len)) {
        pk_log(PK_LOG_WARN,
               "%s: a llama GGUF file from llama.cpp cannot be trained in place (its q/k rows "
               "were reordered at load; save it as a model first)",
               m->dir);
        return PK_ERR_UNSUPPORTED;
    }
    return PK_OK;
}

pk_status pk_model_make_writable(pk_model *m, const uint8_t *tensors)
{
    if (m->priv != NULL)
        return PK_OK; /* done once: its ranges may hold written weights by now */
    pk_status cs = check_rewritable(m, tensors);
    if (cs != PK_OK)
        return cs;
    size_t n = 0;
    pk_private_range *r = tensor_ranges(m, tensors, &n);
    if (r == NULL)
        return PK_ERR_NOMEM;
    pk_status st = PK_OK;
    for (size_t i = 0; i < n && st == PK_OK; i++) {
        const pk_mapping *map = &m->maps[r[i].map];
        char *at = (char *)map->base + r[i].off;
        /* the range becomes anonymous memory at the same address (the file's pages there are
         * unmapped first, so RSS never holds both), then one sequential read fills it */
        void *p = mmap(at, r[i].len, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
        if (p == MAP_FAILED) {
            st = PK_ERR_NOMEM;
            break;
        }
#ifdef MADV_HUGEPAGE
        (void)madvise(p, r[i].len, MADV_HUGEPAGE); /* 2 MB pages where the kernel has them */
#endif
        st = read_range(map, p, r[i].off, r[i].len);
    }
    if (st != PK_OK) {
        free(r);
        return st; /* the model's weights are now unusable: the caller frees it */
    }
    m->priv = r;
    m->n_priv = n;
    return PK_OK;
}

pk_status pk_model_restore_base(pk_model *m)
{
    if (m->n_maps == 1 && pk_gguf_reordered(m->maps[0].base, m->maps[0].len))
        return PK_ERR_UNSUPPORTED; /* the file's q/k rows are in llama.cpp's order */
    /* written pages of a MAP_PRIVATE file mapping are private copies: dropping them makes the
     * next access read the file again; the ranges pk_model_make_writable made anonymous are read
     * again instead (dropping those would zero them) */
    size_t k = 0;
    for (int i = 0; i < m->n_maps; i++) {
        const pk_mapping *map = &m->maps[i];
        size_t at = 0;
        for (; k < m->n_priv && m->priv[k].map == i; k++) {
            const pk_private_range *r = &m->priv[k];
            if (r->off > at && madvise((char *)map->base + at, r->off - at, MADV_DONTNEED) != 0)
                return PK_ERR_IO;
            if (read_range(map, (char *)map->base + r->off, r->off, r->len) != PK_OK)
                return PK_ERR_IO;
            at = r->off + r->len;
        }
        if (at < map->len && madvise((char *)map->base + at, map->len - at, MADV_DONTNEED) != 0)
            return PK_ERR_IO;
    }
    for (size_t i = 0; i < m->n_t; i++)
        if (m->t[i].owned)
            memcpy(m->t[i].owned, m->t[i].src, pk_dtype_row_bytes(m->t[i].dtype, m->t[i].numel));
    return PK_OK;
}
