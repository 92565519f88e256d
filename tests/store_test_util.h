/* store_test_util.h: helpers shared by the store tests: temporary homes, files, byte scans and
 * directory snapshots. Header-only (static functions), for tests/test_store*.c only. */
#ifndef PK_STORE_TEST_UTIL_H
#define PK_STORE_TEST_UTIL_H

#include "pk_crypto.h"
#include "pk_store.h"

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

static inline void rm_rf(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *de;
    char p[1200];
    while (d && (de = readdir(d)) != NULL) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
            continue;
        if (snprintf(p, sizeof p, "%s/%s", dir, de->d_name) >= (int)sizeof p)
            continue;
        struct stat st;
        if (lstat(p, &st) == 0 && S_ISDIR(st.st_mode))
            rm_rf(p);
        else
            unlink(p);
    }
    if (d)
        closedir(d);
    rmdir(dir);
}

static inline void write_text(const char *path, const char *text)
{
    FILE *f = fopen(path, "wb");
    if (!f) {
        perror(path);
        exit(1);
    }
    fputs(text, f);
    fclose(f);
}

static inline unsigned char *read_all(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    *n = 0;
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long sz = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *b = malloc((size_t)sz + 1);
    if (b)
        *n = fread(b, 1, (size_t)sz, f);
    fclose(f);
    return b;
}

static inline int buf_has(const unsigned char *b, size_t n, const void *needle, size_t m)
{
    for (size_t i = 0; m && i + m <= n; i++)
        if (b[i] == *(const unsigned char *)needle && !memcmp(b + i, needle, m))
            return 1;
    return 0;
}

/* Number of files under dir (recursively) that contain needle. */
static inline int dir_has(const char *dir, const void *needle, size_t m)
{
    DIR *d = opendir(dir);
    struct dirent *de;
    char p[1200];
    int hits = 0;
    while (d && (de = readdir(d)) != NULL) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
            continue;
        if (snprintf(p, sizeof p, "%s/%s", dir, de->d_name) >= (int)sizeof p)
            continue;
        struct stat st;
        if (lstat(p, &st) != 0)
            continue;
        if (S_ISDIR(st.st_mode)) {
            hits += dir_has(p, needle, m);
            continue;
        }
        size_t n = 0;
        unsigned char *b = read_all(p, &n);
        if (b && buf_has(b, n, needle, m)) {
            fprintf(stderr, "  found secret bytes in %s\n", p);
            hits++;
        }
        free(b);
    }
    if (d)
        closedir(d);
    return hits;
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
        unsigned char *b = read_all(p, &sz);
        pk_hash_hex(b ? (const void *)b : (const void *)"", sz, hex);
        free(b);
        if (snprintf(line, sizeof line, "%.256s:%zu:%s;", names[i], sz, hex) >= (int)sizeof line)
            continue;
        strncat(out, line, n - strlen(out) - 1);
    }
}

#endif /* PK_STORE_TEST_UTIL_H */
