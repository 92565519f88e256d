/* api_impl.h: what the files of libpocketllm (api/) share: the handle's body and the helpers
 * that set its error text. Private to api/. */
#ifndef PK_API_IMPL_H
#define PK_API_IMPL_H

#include "pocketllm.h"

#include "pk_common.h"
#include "pk_store.h"

#include <stdatomic.h>

#define API_ERRLEN 1024

struct pocketllm_home {
    pk_store *s;          /* NULL on a handle whose open failed, or of no home */
    int no_home;          /* 1: made by pocketllm_home_open_none */
    char err[API_ERRLEN]; /* the last failure, "" after a success */
    atomic_int cancel;    /* set by pocketllm_cancel from any thread */
};

/* One-time library setup (libsodium, the log hook) on first use; idempotent, thread-safe. */
void api_init(void);

/* Records st on h: clears h->err on POCKETLLM_OK, else keeps the message already written to
 * h->err or, when there is none, writes what st means. Returns st as a pocketllm_status. */
pocketllm_status api_done(pocketllm_home *h, pk_status st);
/* Writes a printf-formatted message to h->err and returns st. */
pocketllm_status api_fail(pocketllm_home *h, pk_status st, const char *fmt, ...) PK_PRINTF(3, 4);
/* Checks h (non-NULL, opened): POCKETLLM_OK, else the failure recorded where it can be. */
pocketllm_status api_check(pocketllm_home *h);

#endif /* PK_API_IMPL_H */
