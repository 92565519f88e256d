/* curl_dl.c: libcurl is loaded with dlopen on first use instead of being linked, the way systemd
 * loads its optional libraries: a process that never talks HTTP (train, bench mezo, forward)
 * never maps libcurl and its TLS, LDAP, Kerberos and HTTP/2 chain (about 6.5 MB of RSS).
 * The SONAME to load (PK_CURL_SONAME) and the Debian package that ships it (PK_CURL_PACKAGE) are
 * taken at configure time from the libcurl CMake found. curl_global_init is left to http.c.
 *
 * Thread safety: the table and the error text are written once, inside pthread_once, and only
 * read after it, so any thread may call pk_curl_load and pk_curl_errmsg. */
#include "curl_dl.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#ifndef PK_CURL_SONAME
#error "PK_CURL_SONAME (the libcurl to dlopen) is set by CMakeLists.txt"
#endif
#ifndef PK_CURL_PACKAGE
#define PK_CURL_PACKAGE "" /* not known: the message names the SONAME only */
#endif

/* dlsym returns a void *: POSIX guarantees function pointers have its size and representation. */
_Static_assert(sizeof(void *) == sizeof(void (*)(void)), "function pointers wider than void *");

static const struct {
    const char *name; /* the libcurl symbol */
    size_t offset;    /* of its pointer in pk_curl_api */
} symbols[] = {
    {"curl_global_init", offsetof(pk_curl_api, global_init)},
    {"curl_global_cleanup", offsetof(pk_curl_api, global_cleanup)},
    {"curl_easy_init", offsetof(pk_curl_api, easy_init)},
    {"curl_easy_cleanup", offsetof(pk_curl_api, easy_cleanup)},
    {"curl_easy_reset", offsetof(pk_curl_api, easy_reset)},
    {"curl_easy_setopt", offsetof(pk_curl_api, easy_setopt)},
    {"curl_easy_perform", offsetof(pk_curl_api, easy_perform)},
    {"curl_easy_getinfo", offsetof(pk_curl_api, easy_getinfo)},
    {"curl_easy_strerror", offsetof(pk_curl_api, easy_strerror)},
    {"curl_easy_escape", offsetof(pk_curl_api, easy_escape)},
    {"curl_free", offsetof(pk_curl_api, free)},
    {"curl_slist_append", offsetof(pk_curl_api, slist_append)},
    {"curl_slist_free_all", offsetof(pk_curl_api, slist_free_all)},
};
_Static_assert(sizeof symbols / sizeof symbols[0] == sizeof(pk_curl_api) / sizeof(void *),
               "every pk_curl_api field needs a symbols[] entry");

static pk_curl_api api;
static const pk_curl_api *loaded; /* &api once every symbol resolved, else NULL */
static char errmsg[512];
static pthread_once_t once = PTHREAD_ONCE_INIT;

static void fail(const char *what, const char *why)
{
    if (PK_CURL_PACKAGE[0])
        snprintf(errmsg, sizeof errmsg,
                 "%s (%s): the commands that use HTTP need it; install the Debian package %s "
                 "(apt-get install %s)",
                 what, why ? why : "unknown error", PK_CURL_PACKAGE, PK_CURL_PACKAGE);
    else
        snprintf(errmsg, sizeof errmsg,
                 "%s (%s): the commands that use HTTP need it; install the package that "
                 "provides " PK_CURL_SONAME,
                 what, why ? why : "unknown error");
}

static void load(void)
{
    /* RTLD_LOCAL keeps curl's symbols to this handle; it is never closed once it resolved */
    void *lib = dlopen(PK_CURL_SONAME, RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
        fail("cannot load " PK_CURL_SONAME, dlerror());
        return;
    }
    for (size_t i = 0; i < sizeof symbols / sizeof symbols[0]; i++) {
        void *fn = dlsym(lib, symbols[i].name);
        if (!fn) {
            char what[128];
            snprintf(what, sizeof what, PK_CURL_SONAME " has no %s", symbols[i].name);
            fail(what, dlerror());
            dlclose(lib);
            return;
        }
        memcpy((char *)&api + symbols[i].offset, &fn, sizeof fn);
    }
    loaded = &api;
}

const pk_curl_api *pk_curl_load(void)
{
    if (pthread_once(&once, load) != 0)
        return NULL;
    return loaded;
}

const char *pk_curl_errmsg(void)
{
    if (pthread_once(&once, load) != 0)
        return "cannot load " PK_CURL_SONAME ": pthread_once failed";
    return errmsg;
}
