/* sim_data.c: the homes of a simulation: the observer home (the union of the training data, the
 * eval set, the coordinator's view of the global model) and one encrypted home per device with
 * its share of the examples (split.c). Every home has its own identity key; all share one
 * random passphrase kept in OUT/homes/passphrase (0600). The store is store/'s. */
#define _XOPEN_SOURCE 700 /* nftw */
#include "fedsim_impl.h"
#include "pk_crypto.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define UNION       "union"
#define EVAL        "eval"
#define LOCAL       "local"
#define MAX_CLASSES 256

void fs_note(fs_sim *x, const char *fmt, ...)
{
    char line[512];
    va_list ap;
    if (!x->h || !x->h->on_note)
        return;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    x->h->on_note(x->h->user, line);
}

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    remove(path);
    return 0;
}

void fs_last_line(const char *path, char *out, size_t n)
{
    char line[512];
    out[0] = '\0';
    FILE *f = fopen(path, "r");
    while (f && fgets(line, sizeof line, f))
        if (line[0] != '\n')
            snprintf(out, n, "%s", line);
    if (f)
        fclose(f);
    out[strcspn(out, "\n")] = '\0';
}

void fs_remove_tree(const char *dir)
{
    nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* Simulated homes trade key-derivation cost for speed: the passphrase is 32 random bytes, so a
 * weak Argon2id setting costs no security here (docs/FEDSIM.md). */
static pk_store_params cheap_kdf(void)
{
    pk_store_params sp = {1, 8192};
    return sp;
}

static pk_status open_home(fs_sim *x, const char *dir, pk_store **out)
{
    char serr[512] = "";
    pk_status st = pk_store_init(dir, x->pass, strlen(x->pass), cheap_kdf(), serr, sizeof serr);
    if (st == PK_OK)
        st = pk_store_open(dir, x->pass, strlen(x->pass), out, serr, sizeof serr);
    if (st != PK_OK)
        pk_seterr(x->err, x->errlen, "home %s: %s", dir, serr);
    return st;
}

static pk_status make_dirs(fs_sim *x)
{
    const pk_fedsim_params *p = x->p;
    uint8_t rnd[32];
    snprintf(x->homes, sizeof x->homes, "%s/homes", p->out_dir);
    snprintf(x->pass_path, sizeof x->pass_path, "%s/passphrase", x->homes);
    if (mkdir(p->out_dir, 0700) != 0 && errno != EEXIST) {
        pk_seterr(x->err, x->errlen, "cannot create %s: %s", p->out_dir, strerror(errno));
        return PK_ERR_IO;
    }
    fs_remove_tree(x->homes); /* homes a --keep run left behind */
    if (mkdir(x->homes, 0700) != 0) {
        pk_seterr(x->err, x->errlen, "cannot create %s: %s", x->homes, strerror(errno));
        return PK_ERR_IO;
    }
    pk_crypto_random(rnd, sizeof rnd);
    pk_hex_encode(x->pass, sizeof x->pass, rnd, sizeof rnd);
    int fd = open(x->pass_path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    int ok = fd >= 0 && write(fd, x->pass, 64) == 64;
    if (fd >= 0)
        ok = close(fd) == 0 && ok;
    if (!ok) {
        pk_seterr(x->err, x->errlen, "cannot write %s: %s", x->pass_path, strerror(errno));
        return PK_ERR_IO;
    }
    return PK_OK;
}

/* Copies dataset `from` of src into dataset `to` of dst. */
static pk_status copy_dataset(fs_sim *x, pk_store *src, const char *from, const char *to)
{
    char serr[512] = "";
    int64_t ds = 0, n = 0, *ids = NULL;
    pk_status st = pk_store_dataset_id(src, from, &ds, serr, sizeof serr);
    if (st == PK_OK)
        st = pk_store_example_ids(src, ds, &ids, &n, serr, sizeof serr);
    for (int64_t i = 0; st == PK_OK && i < n; i++) {
        pk_example *e = NULL;
        st = pk_store_example_get(src, ds, ids[i], &e, serr, sizeof serr);
        if (st == PK_OK)
            st = pk_store_example_add(x->obs, to, e, NULL, serr, sizeof serr);
        pk_example_free(e);
    }
    free(ids);
    if (st == PK_OK && n == 0) {
        snprintf(serr, sizeof serr, "it is empty");
        st = PK_ERR_ARG;
    }
    if (st != PK_OK)
        pk_seterr(x->err, x->errlen, "dataset %s: %s", from,
                  st == PK_ERR_NOTFOUND ? "not found in the source home" : serr);
    return st;
}

static pk_status import_file(fs_sim *x, const char *path, const char *to)
{
    char serr[512] = "";
    pk_import_opts io;
    memset(&io, 0, sizeof io);
    int64_t n = 0;
    pk_status st = pk_store_import(x->obs, path, to, io, &n, serr, sizeof serr);
    if (st == PK_OK && n == 0) {
        snprintf(serr, sizeof serr, "%s holds no examples", path);
        st = PK_ERR_ARG;
    }
    if (st != PK_OK)
        pk_seterr(x->err, x->errlen, "%s", serr);
    return st;
}

static pk_status load_data(fs_sim *x)
{
    const pk_fedsim_params *p = x->p;
    char dir[1100];
    snprintf(dir, sizeof dir, "%s/observer", x->homes);
    pk_status st = open_home(x, dir, &x->obs);
    if (st == PK_OK)
        st = p->data_file ? import_file(x, p->data_file, UNION)
                          : copy_dataset(x, p->src, p->src_dataset, UNION);
    if (st == PK_OK)
        st = p->eval_file ? import_file(x, p->eval_file, EVAL)
                          : copy_dataset(x, p->src, p->eval_dataset, EVAL);
    return st;
}

/* Class ids from the examples' label strings (first seen = 0); no label: class 0. */
static int32_t class_of(char (*names)[64], int32_t *n_names, const char *label)
{
    if (!label)
        return 0;
    for (int32_t c = 0; c < *n_names; c++)
        if (!strncmp(names[c], label, 63))
            return c;
    if (*n_names == MAX_CLASSES)
        return MAX_CLASSES - 1;
    snprintf(names[*n_names], 64, "%s", label);
    return (*n_names)++;
}

/* One device home with the examples of `ids` assigned to it. */
static pk_status make_device(fs_sim *x, int j, int64_t ds, const int64_t *ids, const int32_t *dev,
                             int64_t n, int64_t *count)
{
    char serr[512] = "";
    pk_store *s = NULL;
    snprintf(x->home[j], sizeof x->home[j], "%s/dev-%05d", x->homes, j);
    pk_status st = open_home(x, x->home[j], &s);
    *count = 0;
    for (int64_t i = 0; st == PK_OK && i < n; i++) {
        if (dev[i] != j)
            continue;
        pk_example *e = NULL;
        st = pk_store_example_get(x->obs, ds, ids[i], &e, serr, sizeof serr);
        if (st == PK_OK)
            st = pk_store_example_add(s, LOCAL, e, NULL, serr, sizeof serr);
        pk_example_free(e);
        ++*count;
    }
    if (st != PK_OK && serr[0])
        pk_seterr(x->err, x->errlen, "device home %s: %s", x->home[j], serr);
    pk_store_close(s);
    return st;
}

/* Reads the union's labels, splits, fills every device home. */
static pk_status deal(fs_sim *x, int64_t ds, const int64_t *ids, int64_t n)
{
    char serr[512] = "";
    char(*names)[64] = calloc(MAX_CLASSES, 64);
    int32_t *cls = malloc((size_t)n * sizeof *cls), *dev = malloc((size_t)n * sizeof *dev);
    int32_t n_names = 0;
    pk_status st = names && cls && dev ? PK_OK : PK_ERR_NOMEM;
    for (int64_t i = 0; st == PK_OK && i < n; i++) {
        pk_example *e = NULL;
        st = pk_store_example_get(x->obs, ds, ids[i], &e, serr, sizeof serr);
        if (st == PK_OK)
            cls[i] = class_of(names, &n_names, e->label);
        pk_example_free(e);
    }
    if (st == PK_OK)
        st = pk_fedsim_split(&x->p->split, cls, (size_t)n, x->n_dev, x->p->seed, dev, x->err,
                             x->errlen);
    x->sum->min_device_examples = n;
    for (int j = 0; st == PK_OK && j < x->n_dev && !pk_interrupted(); j++) {
        int64_t c = 0;
        st = make_device(x, j, ds, ids, dev, n, &c);
        x->sum->min_device_examples =
            c < x->sum->min_device_examples ? c : x->sum->min_device_examples;
        x->sum->max_device_examples =
            c > x->sum->max_device_examples ? c : x->sum->max_device_examples;
    }
    if (st == PK_OK && pk_interrupted())
        st = PK_ERR_INTERRUPTED;
    free(names);
    free(cls);
    free(dev);
    return st;
}

pk_status fs_setup_homes(fs_sim *x)
{
    char serr[512] = "";
    int64_t ds = 0, n = 0, *ids = NULL, ev = 0;
    pk_status st = make_dirs(x);
    if (st == PK_OK)
        st = load_data(x);
    if (st == PK_OK)
        st = pk_store_dataset_id(x->obs, UNION, &ds, serr, sizeof serr);
    if (st == PK_OK)
        st = pk_store_example_ids(x->obs, ds, &ids, &n, serr, sizeof serr);
    if (st == PK_OK)
        st = pk_store_dataset_id(x->obs, EVAL, &ev, serr, sizeof serr);
    if (st == PK_OK)
        st = pk_store_example_count(x->obs, ev, &x->sum->eval_examples, serr, sizeof serr);
    if (st != PK_OK && serr[0])
        pk_seterr(x->err, x->errlen, "observer home: %s", serr);
    x->sum->examples = n;
    if (st == PK_OK && n < x->n_dev) {
        pk_seterr(x->err, x->errlen,
                  "%d devices need at least %d training examples, the "
                  "dataset has %lld",
                  x->n_dev, x->n_dev, (long long)n);
        st = PK_ERR_ARG;
    }
    if (st == PK_OK)
        fs_note(x, "%lld training examples, %lld eval examples; creating %d device homes",
                (long long)n, (long long)x->sum->eval_examples, x->n_dev);
    if (st == PK_OK)
        st = deal(x, ds, ids, n);
    free(ids);
    return st;
}
