/* curl_dl.h: libcurl, loaded at run time (curl_dl.c). Private to net/ (http.c, pull.c) and
 * its tests: everything else talks HTTP through pk_http_* or pk_pull.
 * <curl/curl.h> is still used for types and constants; only the calls go through the table.
 * Thread safety: pk_curl_load may be called from any thread; the table it returns is read-only. */
#ifndef PK_CURL_DL_H
#define PK_CURL_DL_H

#include <curl/curl.h>

/* The libcurl functions net/ calls, each resolved from the library by its curl_ name. */
typedef struct pk_curl_api {
    CURLcode (*global_init)(long flags);
    void (*global_cleanup)(void);
    CURL *(*easy_init)(void);
    void (*easy_cleanup)(CURL *curl);
    void (*easy_reset)(CURL *curl);
    CURLcode (*easy_setopt)(CURL *curl, CURLoption option, ...);
    CURLcode (*easy_perform)(CURL *curl);
    CURLcode (*easy_getinfo)(CURL *curl, CURLINFO info, ...);
    const char *(*easy_strerror)(CURLcode code);
    char *(*easy_escape)(CURL *curl, const char *s, int length);
    void (*free)(void *p);
    struct curl_slist *(*slist_append)(struct curl_slist *list, const char *s);
    void (*slist_free_all)(struct curl_slist *list);
} pk_curl_api;

/* Loads the libcurl this build was compiled against (PK_CURL_SONAME) and resolves every
 * function of pk_curl_api, once per process; later calls return the first answer. Returns the
 * table (a view valid for the life of the process: the library is never unloaded), or NULL if
 * the library or one of its functions is missing. Does not call curl_global_init. */
const pk_curl_api *pk_curl_load(void);
/* Why libcurl cannot be used, naming the library and the Debian package to install, or "" if
 * it loaded. Loads it first if pk_curl_load was not called yet. Static text. */
const char *pk_curl_errmsg(void);

#endif /* PK_CURL_DL_H */
