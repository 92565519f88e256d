/* store_test_util.h: helpers shared by the store tests: temporary homes, text and import files,
 * byte scans and directory snapshots, on top of test_util.h. Header-only (static functions), for
 * the tests that open a store. */
#ifndef PK_STORE_TEST_UTIL_H
#define PK_STORE_TEST_UTIL_H

#include "pk_crypto.h"
#include "pk_store.h"
#include "test_util.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define TEST_PASS "correct horse battery staple"

static inline pk_store_params tiny_params(void)
{
    pk_store_params p = {1, 8192}; /* fast Argon2id for tests; the default stays interactive */
    return p;
}

static inline void make_tmp_home(char *dir, size_t n, const char *tag)
{
    const char *t = getenv("TMPDIR");
    snprintf(dir, n, "%s/pk-%s-XXXXXX", t && *t ? t : "/tmp", tag);
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        exit(1);
    }
}

#ifdef PK_SOURCE_DIR
/* Creates the store at dir (TEST_PASS, tiny_params) and imports demo/data/train.txt as dataset
 * "pip" and demo/data/heldout.txt as "pip-heldout" (*n_train and *n_heldout examples). 0, or -1
 * after saying why on stderr. */
static inline int make_demo_store(const char *dir, int64_t *n_train, int64_t *n_heldout)
{
    char err[512] = "";
    pk_store *s = NULL;
    pk_import_opts io = {.format = PK_IMPORT_TXT, .paragraphs = 0};
    pk_status st = pk_store_init(dir, TEST_PASS, strlen(TEST_PASS), tiny_params(), err, sizeof err);
    if (st == PK_OK)
        st = pk_store_open(dir, TEST_PASS, strlen(TEST_PASS), &s, err, sizeof err);
    if (st == PK_OK)
        st = pk_store_import(s, PK_SOURCE_DIR "/demo/data/train.txt", "pip", io, n_train, err,
                             sizeof err);
    if (st == PK_OK)
        st = pk_store_import(s, PK_SOURCE_DIR "/demo/data/heldout.txt", "pip-heldout", io,
                             n_heldout, err, sizeof err);
    pk_store_close(s);
    if (st != PK_OK)
        fprintf(stderr, "FATAL: a store with demo/data at %s: %s\n", dir, err);
    return st == PK_OK ? 0 : -1;
}
#endif

/* The store tests' name for remove_tree (test_trainer.c uses it too). */
static inline void rm_rf(const char *dir)
{
    remove_tree(dir);
}

static inline void write_text(const char *path, const char *text)
{
    if (write_all(path, text, strlen(text)) != 0) {
        perror(path);
        exit(1);
    }
}

/* Writes n lines "<prefix><i><suffix>\n" (i = 0..n-1) to path: an import file of known size. */
static inline void write_lines(const char *path, int n, const char *prefix, const char *suffix)
{
    FILE *f = fopen(path, "w");
    if (!f) {
        perror(path);
        exit(1);
    }
    for (int i = 0; i < n; i++)
        fprintf(f, "%s%d%s\n", prefix, i, suffix);
    fclose(f);
}

static inline int buf_has(const unsigned char *b, size_t n, const void *needle, size_t m)
{
    for (size_t i = 0; m && i + m <= n; i++)
        if (b[i] == *(const unsigned char *)needle && !memcmp(b + i, needle, m))
            return 1;
    return 0;
}

typedef struct needle_scan {
    const void *needle;
    size_t m;
    int hits;
} needle_scan;

static inline void scan_file(const char *path, int is_dir, void *user)
{
    needle_scan *s = user;
    size_t n = 0;
    if (is_dir)
        return;
    unsigned char *b = (unsigned char *)slurp(path, &n);
    if (b && buf_has(b, n, s->needle, s->m)) {
        fprintf(stderr, "  found secret bytes in %s\n", path);
        s->hits++;
    }
    free(b);
}

/* Number of files under dir (recursively) that contain needle. */
static inline int dir_has(const char *dir, const void *needle, size_t m)
{
    needle_scan s = {needle, m, 0};
    walk_tree(dir, scan_file, &s);
    return s.hits;
}

/* A snapshot of a directory: names, sizes and a hash of every file's bytes. */
static inline void dir_snapshot(const char *dir, char *out, size_t n)
{
    DIR *d = opendir(dir);
    struct dirent *de;
    char p[1200], names[64][256];
    int k = 0;
    out[0] = '\0';
    while (d && (de = readdir(d)) != NULL && k < 64)
        if (strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
            snprintf(names[k++], sizeof names[0], "%s", de->d_name);
    if (d)
        closedir(d);
    for (int i = 0; i < k; i++) /* sort for a stable order */
        for (int j = i + 1; j < k; j++)
            if (strcmp(names[i], names[j]) > 0) {
                char t[256];
                memcpy(t, names[i], sizeof t);
                memcpy(names[i], names[j], sizeof t);
                memcpy(names[j], t, sizeof t);
            }
    for (int i = 0; i < k; i++) {
        size_t sz = 0;
        char hex[65], line[400];
        if (snprintf(p, sizeof p, "%s/%s", dir, names[i]) >= (int)sizeof p)
            continue;
        char *b = slurp(p, &sz);
        pk_hash_hex(b ? (const void *)b : (const void *)"", sz, hex);
        free(b);
        if (snprintf(line, sizeof line, "%.256s:%zu:%s;", names[i], sz, hex) >= (int)sizeof line)
            continue;
        strncat(out, line, n - strlen(out) - 1);
    }
}

#endif /* PK_STORE_TEST_UTIL_H */
