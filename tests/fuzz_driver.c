/* fuzz_driver.c: runs a libFuzzer target without libFuzzer (gcc builds, sanitizer CI).
 * Feeds every file of the corpus directories given as arguments, then deterministic mutations
 * (byte flips, truncations, insertions) of each, so the target runs under ASan/UBSan on every
 * test run. PK_FUZZ_ITERS (default 2000) bounds the mutations per corpus file. */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "test_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static uint64_t next_rand(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

static void run_mutations(const uint8_t *buf, size_t n, long iters, uint64_t *rng)
{
    size_t cap = n + 64;
    uint8_t *m = malloc(cap);
    if (!m)
        return;
    for (long it = 0; it < iters; it++) {
        memcpy(m, buf, n);
        size_t len = n;
        int edits = 1 + (int)(next_rand(rng) % 4);
        for (int e = 0; e < edits; e++) {
            uint64_t r = next_rand(rng);
            switch (r % 4) {
            case 0: /* flip a byte */
                if (len)
                    m[r / 4 % len] ^= (uint8_t)(1u << (r / 64 % 8));
                break;
            case 1: /* truncate */
                if (len)
                    len = (size_t)(r / 4 % len);
                break;
            case 2: /* set an interesting byte */
                if (len) {
                    static const uint8_t vals[] = {0, 0xff, '"', '{', '}', '[', ']', ',', ':', '9'};
                    m[r / 4 % len] = vals[r / 64 % sizeof vals];
                }
                break;
            default: /* insert a random byte */
                if (len < cap) {
                    size_t at = len ? (size_t)(r / 4 % len) : 0;
                    memmove(m + at + 1, m + at, len - at);
                    m[at] = (uint8_t)(r >> 40);
                    len++;
                }
                break;
            }
        }
        LLVMFuzzerTestOneInput(m, len);
    }
    free(m);
}

/* Feeds one corpus file and its mutations; 0 if it is unreadable or over 16 MiB. */
static int run_file(const char *path, long iters, uint64_t *rng)
{
    struct stat st;
    if (stat(path, &st) != 0 || st.st_size > (16 << 20))
        return 0;
    size_t n = 0;
    uint8_t *buf = (uint8_t *)slurp(path, &n);
    if (!buf)
        return 0;
    LLVMFuzzerTestOneInput(buf, n);
    run_mutations(buf, n, iters, rng);
    free(buf);
    return 1;
}

int main(int argc, char **argv)
{
    const char *it_env = getenv("PK_FUZZ_ITERS");
    long iters = it_env ? atol(it_env) : 2000;
    uint64_t rng = 0x9e3779b97f4a7c15ull;
    int files = 0;
    LLVMFuzzerTestOneInput((const uint8_t *)"", 0);
    for (int a = 1; a < argc; a++) {
        struct stat st;
        if (stat(argv[a], &st) != 0) {
            fprintf(stderr, "fuzz_driver: %s: no such corpus\n", argv[a]);
            return 1;
        }
        if (!S_ISDIR(st.st_mode)) {
            files += run_file(argv[a], iters, &rng);
            continue;
        }
        DIR *d = opendir(argv[a]);
        struct dirent *de;
        while (d && (de = readdir(d)) != NULL) {
            if (de->d_name[0] == '.')
                continue;
            char path[4096];
            snprintf(path, sizeof path, "%s/%s", argv[a], de->d_name);
            files += run_file(path, iters, &rng);
        }
        if (d)
            closedir(d);
    }
    fprintf(stderr, "fuzz_driver: %d corpus files, %ld mutations each\n", files, iters);
    return 0;
}
