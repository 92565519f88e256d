/* sync_opts.c: the start and the --json report that `pocketllm sync` and `pocketllm fedsim
 * device` share (sync_opts.h); the round itself is net/'s pk_sync_round. */
#include "sync_opts.h"

#include "cli.h"
#include "passphrase.h"

#include "pk_crypto.h"

#include <cjson/cJSON.h>

int cli_sync_start(cli_common *c)
{
    cli_apply_threads(c);
    if (cli_http_init(c->cmd) != 0)
        return CLI_ERR;
    if (pk_crypto_global_init() != PK_OK) {
        cli_error(c->cmd, "cannot initialise libsodium");
        return CLI_ERR;
    }
    return 0;
}

int cli_sync_open(cli_common *c, pk_store **s)
{
    if (cli_sync_start(c) != 0)
        return CLI_ERR;
    return cli_open_store(c, s) != 0 ? CLI_ERR : 0;
}

int cli_sync_report_json(const pocketllm_sync_result *r, double secs)
{
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "device_id", r->device_id);
    cJSON_AddStringToObject(j, "task_id", r->task_id);
    cJSON_AddNumberToObject(j, "round", (double)r->round);
    cJSON_AddBoolToObject(j, "uploaded", r->uploaded);
    cJSON_AddNumberToObject(j, "flushed", r->flushed);
    cJSON_AddNumberToObject(j, "steps", (double)r->steps);
    cJSON_AddNumberToObject(j, "pairs", (double)r->pairs);
    cJSON_AddNumberToObject(j, "examples", (double)r->examples);
    cJSON_AddBoolToObject(j, "round_closed", r->round_closed);
    cJSON_AddNumberToObject(j, "log_version", (double)r->log_version);
    cJSON_AddStringToObject(j, "log_head", r->log_head);
    cJSON_AddStringToObject(j, "model_hash", r->model_hash);
    cJSON_AddBoolToObject(j, "dp", r->dp);
    if (r->delta > 0) {
        cli_json_add_finite(j, "epsilon", r->epsilon); /* clipping without noise: null */
        cJSON_AddNumberToObject(j, "delta", r->delta);
    }
    cJSON_AddNumberToObject(j, "upload_body_bytes", (double)r->upload_body_bytes);
    cJSON_AddNumberToObject(j, "bytes_up", (double)r->bytes_up);
    cJSON_AddNumberToObject(j, "bytes_down", (double)r->bytes_down);
    cJSON_AddNumberToObject(j, "body_bytes_up", (double)r->body_bytes_up);
    cJSON_AddNumberToObject(j, "body_bytes_down", (double)r->body_bytes_down);
    cJSON_AddNumberToObject(j, "requests", (double)r->requests);
    cJSON_AddNumberToObject(j, "attempts", (double)r->attempts);
    cJSON_AddNumberToObject(j, "seconds", secs);
    return cli_json_print(j);
}
