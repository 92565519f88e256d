/* test_server_fuzz.c: libFuzzer target over the coordinator's input parsers: the first byte picks
 * the task-file parser, the --faults parser or the upload-body parser (JSON, fields, base64
 * packed updates), the rest is the input. Every input must give a clean verdict, never a crash
 * or a leak; an accepted upload must satisfy the protocol's invariants. */
#include "server_impl.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_upload(const char *s, size_t n)
{
    static const char task_json[] =
        "{\"task_id\":\"demo\",\"base_model_hash\":\"h\",\"pool_size\":64,\"pool_seed\":"
        "\"000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f\",\"lr\":0.01,"
        "\"eps\":0.001,\"local_steps\":4,\"quorum\":2,\"deadline_seconds\":5,\"max_abs_g\":100}";
    srv_task t;
    char err[256];
    if (srv_task_parse(task_json, &t, err, sizeof err) != PK_OK)
        abort();
    srv_upload_req u;
    srv_err e;
    if (!srv_upload_parse(&t, s, n, 1, &u, &e)) {
        if (!e.code || e.status < 400 || e.status > 500)
            abort();
        return;
    }
    /* accepted: sorted indices in the pool, finite bounded values, names well formed */
    pkp_pair p;
    long prev = -1;
    for (size_t i = 0; i < u.updates_len; i += PKP_PAIR_BYTES) {
        pkp_unpack(u.updates + i, PKP_PAIR_BYTES, &p);
        if (p.k >= 64 || (long)p.k <= prev || !isfinite(p.v) || fabsf(p.v) > 100.0f)
            abort();
        prev = p.k;
    }
    if (u.round != 1 || u.examples < 1 || !pkp_name_ok(u.idem) || strcmp(u.task_id, "demo"))
        abort();
    srv_upload_req_free(&u);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > 1 << 16)
        return 0;
    char *s = malloc(size);
    if (!s)
        return 0;
    memcpy(s, data + 1, size - 1);
    s[size - 1] = '\0'; /* the parsers below take NUL-terminated text, except the upload body */
    char err[512];
    switch (data[0] % 3) {
    case 0: {
        srv_task t;
        if (srv_task_parse(s, &t, err, sizeof err) == PK_OK &&
            (t.pool_size < 1 || t.pool_size > 65535 || t.quorum < 1 || !pkp_name_ok(t.task_id)))
            abort();
        break;
    }
    case 1: {
        srv_faults f;
        double delay = 0;
        if (srv_faults_parse(s, &f, err, sizeof err) == PK_OK)
            (void)srv_faults_draw(&f, &delay);
        break;
    }
    default:
        check_upload(s, size - 1);
        break;
    }
    free(s);
    return 0;
}
