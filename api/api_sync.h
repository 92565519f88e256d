/* api_sync.h: the one mapping from net/'s round report to the public sync result, shared by
 * pocketllm_sync (run.c) and the CLI's `fedsim device`, which runs its round through fedsim/
 * but reports it in the same form as `pocketllm sync`. Internal: not in libpocketllm's ABI. */
#ifndef PK_API_SYNC_H
#define PK_API_SYNC_H

#include "pocketllm.h"

#include "pk_net.h"

void pk_api_sync_result(pocketllm_sync_result *r, const pk_sync_report *s);

#endif /* PK_API_SYNC_H */
