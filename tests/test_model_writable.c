/* test_model_writable.c: pk_model_make_writable (model/load.c), which gives the tensors a training
 * run writes memory of the process's own at load, so that the first MeZO update does not take a
 * copy-on-write fault per page. The weights keep their bytes and the logits their bits; writing
 * every page of them afterwards takes (almost) no page faults, where the plain mapping takes one
 * per page; RSS does not hold the file's pages and the copy at once; a subset mask leaves the
 * other tensors copy-on-write; pk_model_restore_base still restores everything, bit for bit; a
 * second call keeps what was written. */
#include "model_test_util.h"
#include "pk_model.h"
#include "pk_test.h"

#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#define STORIES PK_STORIES_DIR

/* An OPT of about 27 MB, so that RSS figures stand out of the allocator's noise. */
static const char big_opt_config[] =
    "{\"architectures\": [\"OPTForCausalLM\"], \"model_type\": \"opt\", \"vocab_size\": 4000,"
    " \"hidden_size\": 512, \"num_hidden_layers\": 2, \"num_attention_heads\": 8,"
    " \"ffn_dim\": 2048, \"max_position_embeddings\": 64, \"word_embed_proj_dim\": 512,"
    " \"do_layer_norm_before\": true, \"activation_function\": \"relu\", \"enable_bias\": true,"
    " \"pad_token_id\": 1, \"bos_token_id\": 2, \"eos_token_id\": 2,"
    " \"tie_word_embeddings\": true, \"torch_dtype\": \"float32\"}";

static long minor_faults(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_minflt;
}

/* A field of /proc/self/status in kB ("VmRSS", "VmHWM"), -1 if unreadable. */
static long status_kb(const char *key)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long v = -1;
    size_t n = strlen(key);
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, key, n) && line[n] == ':')
            v = strtol(line + n + 1, NULL, 10);
    if (f)
        fclose(f);
    return v;
}

/* Adds delta to one byte in every 4 KB page of the chosen tensors (NULL = all); returns the minor
 * page faults that took. */
static long touch_pages(pk_model *m, const uint8_t *which, int delta)
{
    long before = minor_faults();
    for (size_t i = 0; i < pk_model_n_tensors(m); i++) {
        pk_tensor_info ti;
        if (pk_model_tensor(m, i, &ti) != PK_OK || (which && !which[i]))
            continue;
        unsigned char *p = ti.data;
        size_t bytes = ti.numel * pk_dtype_size(ti.dtype);
        for (size_t off = 0; off < bytes; off += 4096)
            p[off] = (unsigned char)(p[off] + delta);
    }
    return minor_faults() - before;
}

/* 1 if every tensor of a and b holds the same bytes. */
static int same_weights(const pk_model *a, const pk_model *b)
{
    for (size_t i = 0; i < pk_model_n_tensors(a); i++) {
        pk_tensor_info x, y;
        if (pk_model_tensor(a, i, &x) != PK_OK || pk_model_tensor(b, i, &y) != PK_OK ||
            memcmp(x.data, y.data, x.numel * pk_dtype_size(x.dtype)) != 0)
            return 0;
    }
    return 1;
}

static void logits(pk_model *m, float *out)
{
    int32_t ids[9] = {1, 17, 250, 33, 99, 4, 100, 7, 64}, len = 9;
    pk_batch b = {1, 9, ids, &len, NULL};
    PK_CHECK(pk_model_logits(m, &b, NULL, out) == PK_OK);
}

static size_t pages_of(const pk_model *m)
{
    size_t pages = 0;
    for (size_t i = 0; i < pk_model_n_tensors(m); i++) {
        pk_tensor_info ti;
        if (pk_model_tensor(m, i, &ti) == PK_OK)
            pages += (ti.numel * pk_dtype_size(ti.dtype) + 4095) / 4096;
    }
    return pages;
}

/* All tensors: same bytes and logits, writes without faults, restore_base, second call. */
static void check_all(void)
{
    pk_model *plain = load_model_checked(STORIES), *w = load_model_checked(STORIES);
    if (!plain || !w)
        goto out;
    size_t V = (size_t)pk_model_vocab_size(w), pages = pages_of(w);
    float *l0 = malloc(9 * V * 4), *l1 = malloc(9 * V * 4);
    PK_CHECK(pk_model_make_writable(w, NULL) == PK_OK);
    PK_CHECK(same_weights(plain, w));
    logits(plain, l0);
    logits(w, l1);
    PK_CHECK(memcmp(l0, l1, 9 * V * 4) == 0);
    long cow = touch_pages(plain, NULL, 1), own = touch_pages(w, NULL, 1);
    fprintf(stderr, "writing %zu weight pages: %ld faults mapped, %ld made writable\n", pages, cow,
            own);
    PK_CHECK(cow >= (long)pages / 2); /* the copy-on-write cost the change removes */
    PK_CHECK(own < (long)pages / 8);
    PK_CHECK(same_weights(plain, w)); /* both moved the same way */
    /* a second call is a no-op: it must not read the file over the written weights */
    PK_CHECK(pk_model_make_writable(w, NULL) == PK_OK);
    PK_CHECK(same_weights(plain, w));
    logits(w, l1);
    PK_CHECK(memcmp(l0, l1, 9 * V * 4) != 0);
    PK_CHECK(pk_model_restore_base(w) == PK_OK);
    logits(w, l1);
    PK_CHECK(memcmp(l0, l1, 9 * V * 4) == 0);
    /* the ranges stay our own after a restore */
    PK_CHECK(touch_pages(w, NULL, 1) < (long)pages / 8);
    free(l0);
    free(l1);
out:
    pk_model_free(plain);
    pk_model_free(w);
}

/* A mask: the others stay copy-on-write mappings; restore_base restores both kinds. */
static void check_subset(void)
{
    pk_model *base = load_model_checked(STORIES), *w = load_model_checked(STORIES);
    if (!base || !w)
        goto out;
    size_t nt = pk_model_n_tensors(w), V = (size_t)pk_model_vocab_size(w);
    uint8_t *mask = calloc(nt, 1), *rest = calloc(nt, 1);
    for (size_t i = 0; i < nt; i++) {
        mask[i] = i % 2 == 0;
        rest[i] = !mask[i];
    }
    float *l0 = malloc(9 * V * 4), *l1 = malloc(9 * V * 4);
    logits(base, l0);
    PK_CHECK(pk_model_make_writable(w, mask) == PK_OK);
    PK_CHECK(same_weights(base, w));
    touch_pages(w, mask, 3);
    long other = touch_pages(w, rest, 3);
    PK_CHECK(other > 0); /* the unmasked tensors were still the file's pages */
    PK_CHECK(pk_model_restore_base(w) == PK_OK);
    PK_CHECK(same_weights(base, w));
    logits(w, l1);
    PK_CHECK(memcmp(l0, l1, 9 * V * 4) == 0);
    free(l0);
    free(l1);
    free(mask);
    free(rest);
out:
    pk_model_free(base);
    pk_model_free(w);
}

/* RSS: the file's pages are unmapped before the copy fills, so the peak stays one copy. */
static void check_rss(void)
{
    char dir[] = "/tmp/pk_writable_XXXXXX", err[512] = "", cmd[300];
    PK_CHECK(mkdtemp(dir) != NULL);
    PK_CHECK(pk_model_make(big_opt_config, strlen(big_opt_config), dir, PK_DTYPE_F32, 3, err,
                           sizeof err) == PK_OK);
    pk_model *m = load_model_checked(dir);
    if (m != NULL) {
        long wkb = (long)(pk_model_weight_bytes(m) / 1024);
        touch_pages(m, NULL, 0); /* read every page: RSS now holds the file's pages */
        long before = status_kb("VmRSS");
        FILE *f = fopen("/proc/self/clear_refs", "w"); /* "5" resets the peak (VmHWM) */
        int reset = f != NULL && fputs("5", f) >= 0;
        if (f != NULL && fclose(f) != 0)
            reset = 0;
        PK_CHECK(pk_model_make_writable(m, NULL) == PK_OK);
        long after = status_kb("VmRSS"), peak = status_kb("VmHWM");
        fprintf(stderr, "weights %ld kB: RSS %ld -> %ld kB, peak %ld kB%s\n", wkb, before, after,
                peak, reset ? "" : " (peak not reset: not checked)");
        PK_CHECK(after < before + wkb / 8);
        if (reset)
            PK_CHECK(peak < before + wkb / 8);
    }
    pk_model_free(m);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    PK_CHECK(system(cmd) == 0);
}

int main(void)
{
    check_all();
    check_subset();
    check_rss();
    return PK_TEST_DONE();
}
