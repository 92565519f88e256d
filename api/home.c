/* home.c: libpocketllm's handle, errors, version, logging and datasets (pocketllm.h). Each
 * function checks its arguments, calls the store (store/) and records the outcome on the
 * handle; the work itself is in the internal modules. */
#include "api_cli.h"
#include "api_impl.h"

#include "pk_crypto.h"
#include "pk_model.h"
#include "pk_train.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define PASS_MAX 1024

/* The status codes are the internal ones, value for value (a cast converts them). */
_Static_assert((int)POCKETLLM_ERR_CANCELLED == (int)PK_ERR_INTERRUPTED, "status codes");
_Static_assert((int)POCKETLLM_ERR_STALE_KEY == (int)PK_ERR_STALE_KEY, "status codes");
_Static_assert((int)POCKETLLM_ERR_UNSUPPORTED == (int)PK_ERR_UNSUPPORTED, "status codes");
_Static_assert((int)POCKETLLM_LOG_ERROR == (int)PK_LOG_ERROR, "log levels");

/* ---- process-wide setup: the log hook ---------------------------------------------------------
 * Thread safety: the application's callback is written by pocketllm_set_log, which the header
 * says to call before other threads use the library (as ggml_log_set); api_init runs once under
 * pthread_once. */

static pocketllm_log_fn user_log;
static void *user_log_arg;
static pthread_once_t init_once = PTHREAD_ONCE_INIT;

static void forward_log(pk_log_level level, const char *msg, void *user)
{
    (void)user;
    if (user_log)
        user_log((pocketllm_log_level)level, msg, user_log_arg);
}

static void init_once_fn(void)
{
    /* The internal default writes to stderr; an embedded library must not. */
    pk_log_set(forward_log, NULL, PK_LOG_WARN);
    if (pk_crypto_global_init() != PK_OK)
        pk_log(PK_LOG_ERROR, "libsodium failed to initialise");
}

void api_init(void)
{
    (void)pthread_once(&init_once, init_once_fn);
}

void pocketllm_set_log(pocketllm_log_fn fn, void *user, pocketllm_log_level min)
{
    api_init();
    user_log = fn;
    user_log_arg = user;
    pk_log_set(forward_log, NULL, (pk_log_level)min);
}

int pocketllm_set_threads(int n)
{
    return pk_threads_set(n);
}

int pocketllm_version(void)
{
    return PK_VERSION_NUMBER;
}

#define STR2(x) #x
#define STR(x)  STR2(x)
const char *pocketllm_version_string(void)
{
    return STR(PK_VERSION_MAJOR) "." STR(PK_VERSION_MINOR) "." STR(PK_VERSION_PATCH);
}

const char *pocketllm_status_str(pocketllm_status st)
{
    if (st == POCKETLLM_ERR_CANCELLED)
        return "cancelled";
    return pk_status_str((pk_status)st);
}

/* ---- errors on the handle ---------------------------------------------------------------------
 */

pocketllm_status api_done(pocketllm_home *h, pk_status st)
{
    if (h == NULL)
        return (pocketllm_status)st;
    if (st == PK_OK)
        h->err[0] = '\0';
    else if (h->err[0] == '\0')
        snprintf(h->err, sizeof h->err, "%s", pocketllm_status_str((pocketllm_status)st));
    return (pocketllm_status)st;
}

pocketllm_status api_fail(pocketllm_home *h, pk_status st, const char *fmt, ...)
{
    if (h != NULL) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(h->err, sizeof h->err, fmt, ap);
        va_end(ap);
    }
    return (pocketllm_status)st;
}

pocketllm_status api_check(pocketllm_home *h)
{
    if (h == NULL)
        return POCKETLLM_ERR_ARG;
    api_init();
    h->err[0] = '\0';
    if (h->s == NULL && h->no_home)
        return api_fail(h, PK_ERR_ARG,
                        "this handle holds no agent home (pocketllm_home_open_none): open one "
                        "with pocketllm_home_open");
    if (h->s == NULL)
        return api_fail(h, PK_ERR_ARG, "this handle's home failed to open: close it");
    return POCKETLLM_OK;
}

const char *pocketllm_errmsg(const pocketllm_home *h)
{
    return h ? h->err : "no handle (NULL pocketllm_home)";
}

void pocketllm_cancel(pocketllm_home *h)
{
    if (h != NULL)
        atomic_store(&h->cancel, 1);
}

/* ---- open / close ------------------------------------------------------------------------------
 */

pocketllm_home_params pocketllm_home_default_params(void)
{
    pocketllm_home_params p;
    memset(&p, 0, sizeof p);
    return p;
}

/* Opens (or with p->create, first creates) the home; the message goes to h->err. */
static pk_status open_store(pocketllm_home *h, const char *dir, const char *pass, size_t len,
                            const pocketllm_home_params *p)
{
    char db[1100];
    struct stat sb;
    if (stat(dir, &sb) == 0 && !S_ISDIR(sb.st_mode)) {
        api_fail(h, PK_ERR_ARG, "%s is a file, not an agent home directory", dir);
        return PK_ERR_ARG;
    }
    if (pk_store_db_path(dir, db, sizeof db) != 0) {
        api_fail(h, PK_ERR_ARG, "the agent home path is too long");
        return PK_ERR_ARG;
    }
    if (access(db, F_OK) != 0) {
        if (!p->create) {
            api_fail(h, PK_ERR_NOTFOUND, "no agent home at %s", dir);
            return PK_ERR_NOTFOUND;
        }
        pk_store_params sp = pk_store_default_params();
        sp.opslimit = p->kdf_opslimit;
        sp.memlimit = p->kdf_memlimit;
        pk_status st = pk_store_init(dir, pass, len, sp, h->err, sizeof h->err);
        if (st != PK_OK)
            return st;
    }
    pk_status st = pk_store_open(dir, pass, len, &h->s, h->err, sizeof h->err);
    if (st == PK_ERR_AUTH)
        api_fail(h, st, "wrong passphrase for %s", dir);
    return st;
}

pocketllm_status pocketllm_home_open(const char *dir, void *passphrase, size_t len,
                                     const pocketllm_home_params *params, pocketllm_home **out)
{
    pocketllm_home_params p = params ? *params : pocketllm_home_default_params();
    pocketllm_home *h = NULL;
    pk_status st = PK_OK;
    api_init();
    if (out == NULL) {
        st = PK_ERR_ARG;
        goto out;
    }
    *out = NULL;
    h = calloc(1, sizeof *h);
    if (h == NULL) {
        st = PK_ERR_NOMEM;
        goto out;
    }
    atomic_init(&h->cancel, 0);
    if (dir == NULL || *dir == '\0')
        st = (pk_status)api_fail(h, PK_ERR_ARG, "no agent home directory given");
    else if (passphrase == NULL || len == 0 || len > PASS_MAX)
        st = (pk_status)api_fail(h, PK_ERR_ARG, "the passphrase must be 1 to %d bytes", PASS_MAX);
    else
        st = open_store(h, dir, passphrase, len, &p);
    *out = h;
out:
    if (passphrase != NULL && len > 0)
        pk_secure_wipe(passphrase, len); /* the contract: wiped whatever happened */
    return api_done(h, st);
}

pocketllm_status pocketllm_home_open_none(pocketllm_home **out)
{
    api_init();
    if (out == NULL)
        return POCKETLLM_ERR_ARG;
    *out = calloc(1, sizeof **out);
    if (*out == NULL)
        return POCKETLLM_ERR_NOMEM;
    atomic_init(&(*out)->cancel, 0);
    (*out)->no_home = 1;
    return POCKETLLM_OK;
}

pk_store *pk_api_home_store(pocketllm_home *h)
{
    return h ? h->s : NULL;
}

void pocketllm_home_close(pocketllm_home *h)
{
    if (h == NULL)
        return;
    pk_store_close(h->s);
    free(h);
}

/* ---- datasets
 * ------------------------------------------------------------------------------------ */

pocketllm_import_params pocketllm_import_default_params(void)
{
    pocketllm_import_params p;
    memset(&p, 0, sizeof p);
    p.format = POCKETLLM_FORMAT_AUTO;
    return p;
}

/* The internal options of p; -1 for a format that is not one. */
static int import_opts(const pocketllm_import_params *p, pk_import_opts *o)
{
    memset(o, 0, sizeof *o);
    if (p == NULL)
        return 0;
    switch (p->format) {
    case POCKETLLM_FORMAT_AUTO:
        o->format = PK_IMPORT_AUTO;
        break;
    case POCKETLLM_FORMAT_JSONL:
        o->format = PK_IMPORT_JSONL;
        break;
    case POCKETLLM_FORMAT_TXT:
        o->format = PK_IMPORT_TXT;
        break;
    case POCKETLLM_FORMAT_CSV:
        o->format = PK_IMPORT_CSV;
        break;
    default:
        return -1;
    }
    o->paragraphs = p->paragraphs != 0;
    o->progress = p->progress;
    o->progress_user = p->user;
    return 0;
}

static pocketllm_status import_check(pocketllm_home *h, const char *name,
                                     const pocketllm_import_params *params, pk_import_opts *o,
                                     int64_t *n_imported)
{
    pocketllm_status st = api_check(h);
    if (n_imported)
        *n_imported = 0;
    if (st != POCKETLLM_OK)
        return st;
    if (name == NULL || *name == '\0')
        return api_fail(h, PK_ERR_ARG, "no dataset name given");
    if (import_opts(params, o) != 0)
        return api_fail(h, PK_ERR_ARG, "unknown import format %d", (int)params->format);
    return POCKETLLM_OK;
}

pocketllm_status pocketllm_import(pocketllm_home *h, const char *name, const void *data, size_t len,
                                  const pocketllm_import_params *params, int64_t *n_imported)
{
    pk_import_opts o;
    pocketllm_status st = import_check(h, name, params, &o, n_imported);
    if (st != POCKETLLM_OK)
        return st;
    if (o.format == PK_IMPORT_AUTO)
        return api_fail(h, PK_ERR_ARG, "import from memory needs a format (jsonl, txt or csv)");
    if (data == NULL && len > 0)
        return api_fail(h, PK_ERR_ARG, "no data (NULL with %zu bytes)", len);
    return api_done(h, pk_store_import_buffer(h->s, data ? data : "", len, name, o, n_imported,
                                              h->err, sizeof h->err));
}

pocketllm_status pocketllm_import_file(pocketllm_home *h, const char *name, const char *path,
                                       const pocketllm_import_params *params, int64_t *n_imported)
{
    pk_import_opts o;
    pocketllm_status st = import_check(h, name, params, &o, n_imported);
    if (st != POCKETLLM_OK)
        return st;
    if (path == NULL || *path == '\0')
        return api_fail(h, PK_ERR_ARG, "no file given");
    return api_done(h, pk_store_import(h->s, path, name, o, n_imported, h->err, sizeof h->err));
}

pocketllm_status pocketllm_datasets(pocketllm_home *h, pocketllm_dataset *out, size_t cap,
                                    size_t *n)
{
    pocketllm_status st = api_check(h);
    if (st != POCKETLLM_OK)
        return st;
    if (n == NULL || (out == NULL && cap > 0))
        return api_fail(h, PK_ERR_ARG, "pocketllm_datasets: n is NULL, or out is NULL with cap");
    pk_dataset_info *d = NULL;
    size_t total = 0;
    pk_status ps = pk_store_dataset_list(h->s, &d, &total, h->err, sizeof h->err);
    *n = 0;
    if (ps == PK_OK) {
        for (size_t i = 0; i < total && i < cap; i++) {
            out[i].id = d[i].id;
            snprintf(out[i].name, sizeof out[i].name, "%s", d[i].name);
            out[i].n_examples = d[i].n_examples;
            out[i].sealed_bytes = d[i].sealed_bytes;
            out[i].created_at = d[i].created_at;
        }
        *n = total;
    }
    free(d);
    return api_done(h, ps);
}

pocketllm_status pocketllm_dataset_forget(pocketllm_home *h, const char *name, int with_runs,
                                          int64_t *runs, size_t cap, size_t *n_runs)
{
    pocketllm_status st = api_check(h);
    if (n_runs)
        *n_runs = 0;
    if (st != POCKETLLM_OK)
        return st;
    if (name == NULL || *name == '\0')
        return api_fail(h, PK_ERR_ARG, "no dataset name given");
    if (runs == NULL && cap > 0)
        return api_fail(h, PK_ERR_ARG, "pocketllm_dataset_forget: runs is NULL with cap %zu", cap);
    int64_t *ids = NULL, n = 0;
    pk_status ps =
        pk_store_dataset_forget_ex(h->s, name, with_runs != 0, &ids, &n, h->err, sizeof h->err);
    if (ps == PK_OK) {
        for (int64_t i = 0; i < n && (size_t)i < cap; i++)
            runs[i] = ids[i];
        if (n_runs)
            *n_runs = (size_t)n;
    }
    free(ids);
    return api_done(h, ps);
}

/* ---- export ------------------------------------------------------------------------------------
 */

pocketllm_status pocketllm_export_seedlog(pocketllm_home *h, int64_t run_id, const char *path,
                                          size_t *bytes)
{
    pocketllm_status st = api_check(h);
    if (bytes)
        *bytes = 0;
    if (st != POCKETLLM_OK)
        return st;
    if (run_id <= 0 || path == NULL || *path == '\0')
        return api_fail(h, PK_ERR_ARG, "a positive run id and a path are required");
    return api_done(h, pk_export_seedlog(h->s, run_id, path, bytes, h->err, sizeof h->err));
}

pocketllm_status pocketllm_seedlog_check(pocketllm_home *h, const char *path, int64_t *n_rows)
{
    if (h == NULL)
        return POCKETLLM_ERR_ARG;
    api_init();
    h->err[0] = '\0';
    if (n_rows)
        *n_rows = 0;
    if (path == NULL || *path == '\0')
        return api_fail(h, PK_ERR_ARG, "no seed log path given");
    pk_seedlog log;
    memset(&log, 0, sizeof log);
    pk_status st = pk_seedlog_read(path, &log, h->err, sizeof h->err);
    if (st == PK_OK && n_rows)
        *n_rows = (int64_t)log.n_rows;
    pk_seedlog_clear(&log);
    return api_done(h, st);
}
