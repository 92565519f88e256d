/* test_sync_util.h: helpers shared by the sync integration tests (included by one .c each). */
#ifndef PK_TEST_SYNC_UTIL_H
#define PK_TEST_SYNC_UTIL_H

#include "pk_net.h"

#include <stdlib.h>
#include <string.h>

/* 1 if the n bytes at hay contain needle (a captured body need not be NUL-terminated). */
static inline int contains(const char *hay, size_t n, const char *needle)
{
    size_t m = strlen(needle);
    for (size_t i = 0; i + m <= n; i++)
        if (!memcmp(hay + i, needle, m))
            return 1;
    return 0;
}

/* GET base_url/v1/log?since=0 from a coordinator, retried up to `attempts` times (faults may be
 * on). The JSON text (owned, free()), or NULL. */
static inline char *fetch_global_log(const char *base_url, int attempts)
{
    pk_http *h = NULL;
    char *resp = NULL;
    long status = 0;
    pk_http_params hp = pk_http_default_params();
    hp.max_attempts = attempts;
    hp.backoff_ms = 10;
    if (pk_http_create(base_url, hp, &h, NULL, 0) != PK_OK)
        return NULL;
    if (pk_http_request(h, "GET", "/v1/log?since=0&limit=256", NULL, 0, PK_HTTP_JSON, &status,
                        &resp, NULL, NULL, 0) != PK_OK ||
        status != 200) {
        free(resp);
        resp = NULL;
    }
    pk_http_destroy(h);
    return resp;
}

#endif /* PK_TEST_SYNC_UTIL_H */
