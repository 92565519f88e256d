/* demo_fed.c: `pocketllm demo --federated`, one federated round on this machine: it starts the
 * coordinator (pocketllm-server-mock) as a child process (fedsim/'s pk_fedsim_coord_start, with
 * the request bodies captured), runs two simulated devices through pk_sync_round (pk_net.h) and
 * reports what crossed the wire. The round's protocol and the devices' MeZO steps are net/'s
 * and train/'s. */
#include "cli.h"
#include "demo.h"
#include "passphrase.h"

#include "pk_crypto.h"
#include "pk_fedsim.h"
#include "pk_net.h"
#include "pk_tokenizer.h"
#include "pk_train.h"
#include "progress.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define ERRLEN 1024

/* ---- demo --federated ------------------------------------------------------------------------
 * One federated round on this machine: pocketllm-server-mock on 127.0.0.1 with a task
 * whose base model is the demo's, and two simulated devices, each an agent home of its own with
 * half of the Pip notes, running pk_sync_round in this process one after the other. The round
 * closes at quorum 2: device A uploads and leaves it open, device B uploads (the round closes)
 * and replays the global log, then A catches up. Both must end with the same weights. The
 * coordinator runs in its own process group and dies with the demo (pk_fedsim.h); its files
 * live in HOME/federated and go away with the demo home unless --keep. */

#define FED_TASK        "pocketllm-demo"
#define FED_POOL_SIZE   4096
#define FED_LOCAL_STEPS 20   /* MeZO steps per device (fewer if --steps is smaller) */
#define FED_DEADLINE_S  600  /* long enough that the round closes at quorum, never by time */
#define FED_WAIT_S      60.0 /* device B waits this long for the round to close */
#define FED_SERVER      "pocketllm-server-mock"
#define FED_MIN_LINE    16 /* note lines shorter than this are not searched for in bodies */

typedef struct fed_coord {
    pk_fedsim_coord *h; /* running, or NULL */
    const char *url;    /* view of h's URL */
    char bin[1100], dir[400];
} fed_coord;

typedef struct fed_device {
    char name;          /* 'A' or 'B' */
    char home[450];     /* its agent home */
    pk_store *s;        /* open for the whole federated part */
    int64_t notes;      /* training notes it holds */
    pk_sync_report up;  /* the call that uploaded its update */
    pk_sync_report end; /* its last call: model_hash is the model it ends with */
    uint64_t wire_up;   /* bytes sent over all its calls, HTTP headers included */
    uint64_t wire_down; /* bytes received over all its calls */
} fed_device;

/* The coordinator binary: installed next to pocketllm (same bin dir), or in the build tree
 * (BUILD/cli/pocketllm -> BUILD/server-mock/pocketllm-server-mock). */
static int fed_find_server(char *out, size_t n)
{
    char exe[1024];
    if (demo_exe_dir(exe, sizeof exe) != 0) {
        cli_error("demo", "cannot locate the pocketllm binary (/proc/self/exe): %s",
                  strerror(errno));
        return CLI_ERR;
    }
    static const char *const rel[] = {"/" FED_SERVER, "/../server-mock/" FED_SERVER};
    for (size_t i = 0; i < sizeof rel / sizeof rel[0]; i++) {
        char cand[1100];
        snprintf(cand, sizeof cand, "%s%s", exe, rel[i]);
        char *abs = access(cand, X_OK) == 0 ? realpath(cand, NULL) : NULL;
        int ok = abs && strlen(abs) < n;
        if (ok)
            snprintf(out, n, "%s", abs);
        free(abs);
        if (ok)
            return CLI_OK;
    }
    cli_error("demo",
              "--federated needs the coordinator %s, found neither %s/%s nor "
              "%s/../server-mock/%s; build it (cmake --build BUILD --target %s) or install it "
              "next to pocketllm",
              FED_SERVER, exe, FED_SERVER, exe, FED_SERVER, FED_SERVER);
    return CLI_ERR;
}

/* The task: the demo's base model, a fresh random seed pool, the demo's lr and eps. */
static cJSON *fed_task_json(const demo_state *d, int64_t steps)
{
    pk_train_config cfg = demo_config(d);
    uint8_t pool_seed[32];
    char hex[65];
    pk_crypto_random(pool_seed, sizeof pool_seed);
    pk_hex_encode(hex, sizeof hex, pool_seed, sizeof pool_seed);
    cJSON *t = cJSON_CreateObject();
    cJSON_AddStringToObject(t, "task_id", FED_TASK);
    cJSON_AddStringToObject(t, "base_model_hash", d->base_hash);
    cJSON_AddNumberToObject(t, "pool_size", FED_POOL_SIZE);
    cJSON_AddStringToObject(t, "pool_seed", hex);
    cJSON_AddStringToObject(t, "z_kind", "gaussian");
    cJSON_AddNumberToObject(t, "lr", (double)cfg.mezo.lr);
    cJSON_AddNumberToObject(t, "eps", (double)cfg.mezo.eps);
    cJSON_AddNumberToObject(t, "local_steps", (double)steps);
    cJSON_AddNumberToObject(t, "batch_size", cfg.batch);
    cJSON_AddNumberToObject(t, "quorum", 2);
    cJSON_AddNumberToObject(t, "deadline_seconds", FED_DEADLINE_S);
    return t;
}

/* Starts the coordinator with the task and --capture HOME/federated/capture (every request
 * body, which fed_check_capture searches for note text). */
static int fed_coord_start(const demo_state *d, fed_coord *c, int64_t steps)
{
    char cap[500], err[ERRLEN] = "";
    cJSON *t = fed_task_json(d, steps);
    char *text = t ? cJSON_PrintUnformatted(t) : NULL;
    cJSON_Delete(t);
    if (!text) {
        cli_error("demo", "cannot build the coordinator's task: out of memory");
        return CLI_ERR;
    }
    snprintf(cap, sizeof cap, "%s/capture", c->dir);
    pk_status st = pk_fedsim_coord_start(c->bin, c->dir, text, NULL, cap, &c->h, err, sizeof err);
    cJSON_free(text);
    if (st == PK_ERR_INTERRUPTED)
        return CLI_INTERRUPTED;
    if (st != PK_OK)
        return cli_fail("demo", st, err);
    c->url = pk_fedsim_coord_url(c->h);
    return CLI_OK;
}

/* A device: a new encrypted home (the demo passphrase) with half of the training notes,
 * line by line as demo_import does: the first half for A, the second for B. */
static int fed_device_init(fed_device *v, const char *dir, int half)
{
    char serr[512] = ""; /* what the store says on failure */
    char err[ERRLEN] = "", line[1024];
    v->name = (char)('A' + half);
    snprintf(v->home, sizeof v->home, "%s/device-%c", dir, 'a' + half);
    pk_status st = demo_create_home(v->home, &v->s, err, sizeof err);
    size_t pos = 0, total = 0, i = 0;
    while (demo_next_line(pk_demo_train, pk_demo_train_len, &pos, line, sizeof line))
        total++;
    pos = 0;
    while (st == PK_OK &&
           demo_next_line(pk_demo_train, pk_demo_train_len, &pos, line, sizeof line)) {
        if ((i++ < total / 2) != (half == 0))
            continue;
        pk_example ex;
        memset(&ex, 0, sizeof ex);
        ex.text = line;
        st = pk_store_example_add(v->s, "pip", &ex, NULL, serr, sizeof serr);
        if (st == PK_OK)
            v->notes++;
        else
            snprintf(err, sizeof err, "%s", serr);
    }
    pk_secure_wipe(line, sizeof line);
    if (st != PK_OK) {
        cli_error("demo", "federated device %c (%s): %s", v->name, v->home, cli_errtext(st, err));
        return CLI_ERR;
    }
    return CLI_OK;
}

/* Held-out loss of m on the demo home's pip-heldout notes (the demo's own measure). */
static pk_status fed_eval(demo_state *d, pk_model *m, double *loss, char *err, size_t errlen)
{
    pk_train_config cfg = demo_config(d);
    pk_objective *obj = NULL;
    double acc = 0;
    pk_status st =
        pk_objective_from_store(d->s, "pip-heldout", m, d->model_dir, &cfg, &obj, err, errlen);
    if (st == PK_OK)
        st = pk_objective_eval(obj, m, (size_t)cfg.batch, loss, &acc);
    pk_objective_free(obj);
    return st;
}

/* One pk_sync_round of device v: upload (local steps on its notes) or catch up only; waits up
 * to wait_s for the round to close. The model is loaded for the call and freed after it, so at
 * most one extra copy of the model is in memory. With loss != NULL the resulting (global)
 * model's held-out loss is measured. */
static int fed_device_round(demo_state *d, const fed_coord *c, fed_device *v, int upload,
                            double wait_s, pk_sync_report *rep, double *loss)
{
    pk_train_config cfg = demo_config(d); /* the demo's batch and sequence length */
    pk_sync_mezo *mz = NULL;
    char err[ERRLEN] = "";
    pk_sync_params p = pk_sync_default_params();
    p.server = c->url;
    p.task_id = FED_TASK;
    p.upload = upload;
    p.wait_s = wait_s;
    pk_status st = pk_sync_mezo_open(v->s, d->model_dir, upload ? "pip" : NULL, NULL, NULL,
                                     cfg.batch, cfg.seq_len, &mz, err, sizeof err);
    if (st == PK_OK) {
        pk_sync_model_ops ops = pk_sync_mezo_ops(mz);
        st = pk_sync_round(v->s, &p, &ops, rep, err, sizeof err);
    }
    if (st == PK_OK && loss)
        st = fed_eval(d, pk_sync_mezo_model(mz), loss, err, sizeof err);
    pk_sync_mezo_free(mz);
    if (st != PK_OK) {
        cli_error("demo", "federated round, device %c: %s", v->name, cli_errtext(st, err));
        return CLI_ERR;
    }
    v->end = *rep;
    v->wire_up += rep->http.wire_up;
    v->wire_down += rep->http.wire_down;
    return pk_interrupted() ? CLI_INTERRUPTED : CLI_OK;
}

/* A uploads (the round stays open: quorum 2), B uploads and waits (the round closes, B replays
 * the global log), A catches up (replays it too). */
static int fed_round(demo_state *d, const fed_coord *c, fed_device *v, int64_t steps)
{
    pk_sync_report cu;
    int rc = fed_device_round(d, c, &v[0], 1, 0.0, &v[0].up, NULL);
    if (rc != CLI_OK)
        return rc;
    demo_say(
        d,
        "      device A (%s, %lld notes: the first half): %lld local MeZO steps, uploaded %lld "
        "(seed, sum of g) pairs to round %lld, %s\n",
        v[0].up.device_id, (long long)v[0].notes, (long long)v[0].up.steps,
        (long long)v[0].up.pairs, (long long)v[0].up.round,
        v[0].up.round_closed ? "which closed" : "which stays open (quorum 2)");
    rc = fed_device_round(d, c, &v[1], 1, FED_WAIT_S, &v[1].up, NULL);
    if (rc != CLI_OK)
        return rc;
    demo_say(d,
             "      device B (%s, %lld notes: the second half): %lld local MeZO steps, uploaded "
             "%lld pairs to round %lld, %s\n",
             v[1].up.device_id, (long long)v[1].notes, (long long)v[1].up.steps,
             (long long)v[1].up.pairs, (long long)v[1].up.round,
             v[1].up.round_closed ? "which closed; replayed the global log"
                                  : "which did NOT close");
    if (!v[0].up.uploaded || !v[1].up.uploaded || v[0].up.round != v[1].up.round ||
        !v[1].up.round_closed || v[0].up.steps != steps || v[1].up.steps != steps) {
        cli_error("demo",
                  "the federated round did not complete: device A uploaded to round %lld, "
                  "device B to round %lld (%s)",
                  (long long)v[0].up.round, (long long)v[1].up.round,
                  v[1].up.round_closed ? "closed" : "still open");
        return CLI_ERR;
    }
    rc = fed_device_round(d, c, &v[0], 0, 0.0, &cu, &d->fed.loss);
    if (rc != CLI_OK)
        return rc;
    demo_say(d, "      device A: caught up with the global log (version %lld) and replayed it\n",
             (long long)cu.log_version);
    return CLI_OK;
}

/* Counts the request bodies the coordinator captured and checks that none holds the text of a
 * note: what left the devices is seeds, scalars, counts, ids and signatures. -1: a leak. */
static int fed_check_capture(const fed_coord *c, int *bodies, long long *bytes)
{
    char dir[500], path[800], line[1024];
    const size_t cap = (size_t)1 << 17; /* request bodies are capped at 64 KiB (PROTOCOL 7) */
    char *body = malloc(cap);
    int leaks = 0;
    snprintf(dir, sizeof dir, "%s/capture", c->dir);
    *bodies = 0;
    *bytes = 0;
    DIR *dp = body ? opendir(dir) : NULL;
    struct dirent *e;
    while (dp && (e = readdir(dp)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        FILE *f = fopen(path, "rb");
        size_t n = f ? fread(body, 1, cap - 1, f) : 0;
        if (f)
            fclose(f);
        body[n] = '\0';
        ++*bodies;
        *bytes += (long long)n;
        size_t pos = 0, len;
        while ((len = demo_next_line(pk_demo_train, pk_demo_train_len, &pos, line, sizeof line)))
            leaks += len >= FED_MIN_LINE && strstr(body, line) != NULL;
    }
    if (dp)
        closedir(dp);
    free(body);
    pk_secure_wipe(line, sizeof line);
    return leaks || !dp ? -1 : 0;
}

/* Prints the outcome and records it for --json; CLI_ERR if the devices disagree or a request
 * body carried note text. */
static int fed_summary(demo_state *d, const fed_coord *c, const fed_device *v)
{
    demo_fed *f = &d->fed;
    f->round = v[1].up.round;
    for (int i = 0; i < 2; i++) {
        snprintf(f->device_hash[i], sizeof f->device_hash[i], "%s", v[i].end.model_hash);
        f->wire_up[i] = v[i].wire_up;
        f->wire_down[i] = v[i].wire_down;
        f->upload_body[i] = v[i].up.upload_body_bytes;
        f->pairs[i] = v[i].up.pairs;
    }
    int same = strlen(v[0].end.model_hash) == 64 &&
               !strcmp(v[0].end.model_hash, v[1].end.model_hash) &&
               !strcmp(v[0].end.log_head, v[1].end.log_head);
    if (same)
        snprintf(f->hash, sizeof f->hash, "%s", v[0].end.model_hash);
    int clean = fed_check_capture(c, &f->bodies, &f->body_bytes) == 0;
    demo_say(d,
             "      global model: hash %.16s... on both devices %s; the base model was %.16s...\n",
             v[1].end.model_hash, same ? "(identical)" : "(MISMATCH)", d->base_hash);
    if (isfinite(f->loss))
        demo_say(d, "      held-out loss: global model %.4f, base model %.4f\n", f->loss,
                 d->loss_before);
    demo_say(d,
             "      traffic: device A %llu bytes up, %llu down; device B %llu up, %llu down (HTTP "
             "headers included)\n",
             (unsigned long long)f->wire_up[0], (unsigned long long)f->wire_down[0],
             (unsigned long long)f->wire_up[1], (unsigned long long)f->wire_down[1]);
    demo_say(d,
             "      what left each device: %lld and %lld (seed index, sum of g) pairs, an example "
             "count, its device id and an Ed25519 signature (upload bodies %llu and %llu bytes);\n"
             "      the coordinator received %d request bodies (%lld bytes) and %s\n",
             (long long)f->pairs[0], (long long)f->pairs[1], (unsigned long long)f->upload_body[0],
             (unsigned long long)f->upload_body[1], f->bodies, f->body_bytes,
             clean ? "none holds the text of a note" : "SOME HOLD NOTE TEXT");
    if (!same) {
        cli_error("demo", "the devices ended with different models: A %s (log %s), B %s (log %s)",
                  v[0].end.model_hash, v[0].end.log_head, v[1].end.model_hash, v[1].end.log_head);
        return CLI_ERR;
    }
    if (!clean) {
        cli_error("demo", "a request body sent to the coordinator contains note text (see %s)",
                  c->dir);
        return CLI_ERR;
    }
    return CLI_OK;
}

int demo_federated(demo_state *d)
{
    fed_coord c;
    fed_device v[2];
    memset(&c, 0, sizeof c);
    memset(v, 0, sizeof v);
    d->fed.loss = (double)NAN;
    int64_t steps = d->o.steps < FED_LOCAL_STEPS ? d->o.steps : FED_LOCAL_STEPS;
    demo_say(d, "\nFederated round: a local coordinator and two simulated devices\n");
    snprintf(c.dir, sizeof c.dir, "%s/federated", d->home);
    int rc = fed_find_server(c.bin, sizeof c.bin);
    if (rc == CLI_OK && mkdir(c.dir, 0700) != 0) {
        cli_error("demo", "cannot create %s: %s", c.dir, strerror(errno));
        rc = CLI_ERR;
    }
    double t0 = pk_time_now();
    for (int i = 0; i < 2 && rc == CLI_OK; i++)
        rc = fed_device_init(&v[i], c.dir, i);
    if (rc == CLI_OK)
        demo_say(d,
                 "      two new encrypted device homes with %lld and %lld of the training notes "
                 "(%.1f s)\n",
                 (long long)v[0].notes, (long long)v[1].notes, pk_time_now() - t0);
    if (rc == CLI_OK)
        rc = fed_coord_start(d, &c, steps);
    if (rc == CLI_OK)
        demo_say(d,
                 "      coordinator: %s on %s (task %s: a pool of %d seeds, %lld local steps, "
                 "quorum 2)\n",
                 FED_SERVER, c.url, FED_TASK, FED_POOL_SIZE, (long long)steps);
    if (rc == CLI_OK)
        rc = fed_round(d, &c, v, steps);
    pk_fedsim_coord_stop(c.h); /* on every path; it has written all it received */
    c.h = NULL;
    if (rc == CLI_INTERRUPTED)
        demo_say(d, "      interrupted; the coordinator was stopped\n");
    for (int i = 0; i < 2; i++)
        pk_store_close(v[i].s);
    if (rc == CLI_OK)
        rc = fed_summary(d, &c, v);
    if (d->o.keep)
        demo_say(d,
                 "      coordinator files (task.json, coord.db, server.log, capture/) and the "
                 "device homes: %s\n",
                 c.dir);
    return rc;
}

/* Two numbers as a JSON array. */
static void add_pair(cJSON *obj, const char *key, double a, double b)
{
    cJSON *arr = cJSON_AddArrayToObject(obj, key);
    cJSON_AddItemToArray(arr, cJSON_CreateNumber(a));
    cJSON_AddItemToArray(arr, cJSON_CreateNumber(b));
}

void demo_fed_json(const demo_state *d, int federated_ok, cJSON *obj)
{
    const demo_fed *f = &d->fed;
    if (federated_ok < 0) {
        cJSON_AddNullToObject(obj, "federated");
        return;
    }
    cJSON_AddBoolToObject(obj, "federated", federated_ok);
    cJSON_AddNumberToObject(obj, "federated_round", (double)f->round);
    cJSON_AddStringToObject(obj, "federated_hash", f->hash);
    cJSON *hashes = cJSON_AddArrayToObject(obj, "federated_device_hashes");
    cJSON_AddItemToArray(hashes, cJSON_CreateString(f->device_hash[0]));
    cJSON_AddItemToArray(hashes, cJSON_CreateString(f->device_hash[1]));
    add_pair(obj, "federated_bytes_up", (double)f->wire_up[0], (double)f->wire_up[1]);
    add_pair(obj, "federated_bytes_down", (double)f->wire_down[0], (double)f->wire_down[1]);
    add_pair(obj, "federated_upload_body_bytes", (double)f->upload_body[0],
             (double)f->upload_body[1]);
    add_pair(obj, "federated_pairs", (double)f->pairs[0], (double)f->pairs[1]);
    cJSON_AddNumberToObject(obj, "federated_request_bodies", f->bodies);
    cli_json_add_finite(obj, "federated_loss", f->loss);
}
