/* test_sync_cli.c: `pocketllm sync` end to end, as a user runs it: pocketllm-server-mock on
 * 127.0.0.1 --port 0 (faults on, request bodies captured) with a task whose base model is
 * stories260k, three agent homes (init, import of different private texts), two rounds with
 * the three agents running concurrently (a round closes at quorum 3), then checks that
 *  - every agent reports the same model_hash and log head after each round, the model moved;
 *  - `sync --catch-up` in a fresh home (a replay of the coordinator's log) gives that hash, and
 *    the --out model directories are byte-identical, load back to that hash and differ from
 *    the base model (and from a catch-up --out taken before round 1, which is the base model);
 *  - a --dp-clip/--dp-noise run reports the finite epsilon of the RDP accountant;
 *  - a wrong --model (a make-model tiny model) exits 1 naming the base-model mismatch;
 *  - no captured request body holds private text or a field outside the protocol's upload and
 *    register bodies, and each round got exactly one upload per agent.
 * The CLI and the server run as exec'd binaries (libgomp is not fork-safe). */
#include "pk_mezo.h"
#include "pk_model.h"
#include "pk_net.h"
#include "pk_store.h"
#include "pk_test.h"

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function" /* not every helper is used here */
#include "test_product_util.h"
#include "test_sync_util.h"
#include "test_util.h"
#pragma GCC diagnostic pop

#include <cJSON.h>
#include <dirent.h>
#include <sodium.h>
#include <time.h>

#define STORIES     PK_STORIES_DIR /* the copy shipped in models/ */
#define LOCAL_STEPS 4
#define ROUNDS      2
#define N_AGENTS    3
#define DP_CLIP     1.0
#define DP_NOISE    1.1
#define FAULTS      "delay=0.1:20ms,drop=0.03,5xx=0.05,truncate=0.03,seed=11"

static const char *const ADA[] = {
    "Ada's private diary: the lighthouse key is under the blue stone.",
    "Ada thinks the neighbour's cat is plotting something.",
    "Ada will propose to Sam at the harbour on Friday.",
};
static const char *const BO[] = {
    "Bo's private notes: call the dentist about the crown on Tuesday.",
    "Bo owes his brother four hundred pounds.",
    "Bo is secretly applying for a job in Lisbon.",
};
static const char *const CY[] = {
    "Cy's private messages: my bank PIN is definitely not 4921.",
    "Cy hid the spare car key inside the garden gnome.",
    "Cy's doctor said the test results look fine.",
    "Cy is planning a surprise party for Dee on the 14th.",
};
/* Distinctive words of the texts above (5+ letters, or with a space, so base64 and hex cannot
 * hold them by chance): none may appear in anything the coordinator receives. */
static const char *const WORDS[] = {"lighthouse", "neighbour", "harbour", "dentist", "brother",
                                    "Lisbon",     "bank PIN",  "gnome",   "doctor",  "surprise"};

typedef struct agent {
    const char *const *lines;
    size_t n_lines;
    char home[300], out[300], errlog[300];
    char pass[400];   /* passphrase option of every command (empty: POCKETLLM_PASSPHRASE) */
    char threads[32]; /* thread option of sync (empty: OMP_NUM_THREADS) */
} agent;

typedef struct report {
    int rc, ok, uploaded, round_closed, dp, has_eps;
    long long round, log_version, steps, requests, attempts, bytes_up, bytes_down;
    double epsilon;
    char model_hash[65], log_head[65];
} report;

typedef struct coord {
    server sv;
    int port;
    char url[64];
} coord;

static char g_tmp[128];
static uint8_t g_pool_seed[32]; /* the task's */

/* Weights hash of a model directory through the library (what the task's base hash means). */
static int dir_hash(const char *dir, char hex[65])
{
    pk_model *m = NULL;
    char err[256] = "";
    hex[0] = '\0';
    pk_status st = pk_model_load(dir, pk_model_default_params(), &m, err, sizeof err);
    if (st == PK_OK)
        st = pk_weights_hash(m, hex);
    pk_model_free(m);
    if (st != PK_OK)
        fprintf(stderr, "hash of %s: %s %s\n", dir, pk_status_str(st), err);
    return st == PK_OK;
}

/* ---- the coordinator --------------------------------------------------------------------------
 * test_product_util.h's server_start: PR_SET_PDEATHSIG kills it if this test dies on any path
 * (a crash, an abort, the ctest timeout), and coord_stop ends it on the normal path. */

static int coord_start(coord *c, const char *faults)
{
    char args[1400];
    snprintf(
        args, sizeof args,
        "--db %s/coord.db --task %s/task.json --capture %s/capture --faults %s 2>%s/server.log",
        g_tmp, g_tmp, g_tmp, faults, g_tmp);
    if (!server_start(&c->sv, args))
        return 0;
    c->port = c->sv.port;
    snprintf(c->url, sizeof c->url, "http://127.0.0.1:%d", c->port);
    return 1;
}

static void coord_stop(coord *c)
{
    server_stop(&c->sv);
}

/* ---- running the CLI ------------------------------------------------------------------------ */

static void parse_report(char *out, int rc, report *r)
{
    memset(r, 0, sizeof *r);
    r->rc = rc;
    cJSON *j = cJSON_Parse(last_line(out));
    const cJSON *h = cJSON_GetObjectItemCaseSensitive(j, "model_hash");
    const cJSON *lh = cJSON_GetObjectItemCaseSensitive(j, "log_head");
    const cJSON *e = cJSON_GetObjectItemCaseSensitive(j, "epsilon");
    r->ok = rc == 0 && cJSON_IsString(h) && cJSON_IsString(lh);
    if (r->ok) {
        snprintf(r->model_hash, sizeof r->model_hash, "%s", h->valuestring);
        snprintf(r->log_head, sizeof r->log_head, "%s", lh->valuestring);
    }
    r->uploaded = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(j, "uploaded"));
    r->round_closed = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(j, "round_closed"));
    r->dp = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(j, "dp"));
    r->has_eps = cJSON_IsNumber(e);
    r->epsilon = r->has_eps ? e->valuedouble : (double)NAN;
    static const char *const keys[] = {"round",    "log_version", "steps",     "requests",
                                       "attempts", "bytes_up",    "bytes_down"};
    long long *dst[] = {&r->round,    &r->log_version, &r->steps,     &r->requests,
                        &r->attempts, &r->bytes_up,    &r->bytes_down};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, keys[i]);
        *dst[i] = cJSON_IsNumber(v) ? (long long)v->valuedouble : -1;
    }
    cJSON_Delete(j);
}

/* `pocketllm sync` for an agent (stdout piped back, stderr appended to its log). */
static FILE *sync_start(const agent *a, const coord *c, const char *extra)
{
    char cmd[2048];
    snprintf(cmd, sizeof cmd,
             "%s sync --server %s --model %s --dataset d --home %s %s %s --json --wait 60 --out %s "
             "%s 2>>%s",
             POCKETLLM, c->url, STORIES, a->home, a->pass, a->threads, a->out, extra, a->errlog);
    return popen(cmd, "r");
}

static void sync_finish(FILE *p, const agent *a, report *r)
{
    char buf[8192];
    size_t n = p ? fread(buf, 1, sizeof buf - 1, p) : 0;
    buf[n] = '\0';
    int st = p ? pclose(p) : -1;
    parse_report(buf, WIFEXITED(st) ? WEXITSTATUS(st) : -1, r);
    if (!r->ok) {
        char cmd[400];
        fprintf(stderr, "sync of %s failed (exit %d), stdout: %s\nstderr:\n", a->home, r->rc, buf);
        snprintf(cmd, sizeof cmd, "cat %s >&2", a->errlog);
        if (system(cmd) != 0)
            fprintf(stderr, "(no stderr log)\n");
    }
}

static int make_agent(agent *a, int i, const char *const *lines, size_t n, const char *pass,
                      const char *threads)
{
    char cmd[2048], txt[300], text[1024] = "";
    a->lines = lines;
    a->n_lines = n;
    snprintf(a->home, sizeof a->home, "%s/agent%d", g_tmp, i);
    snprintf(a->out, sizeof a->out, "%s/out%d", g_tmp, i);
    snprintf(a->errlog, sizeof a->errlog, "%s/agent%d.err", g_tmp, i);
    snprintf(a->pass, sizeof a->pass, "%s", pass);
    snprintf(a->threads, sizeof a->threads, "%s", threads);
    snprintf(txt, sizeof txt, "%s/private%d.txt", g_tmp, i);
    for (size_t k = 0; k < n; k++) {
        strncat(text, lines[k], sizeof text - strlen(text) - 2);
        strcat(text, "\n");
    }
    if (write_string(txt, text) != 0)
        return 0;
    snprintf(cmd, sizeof cmd,
             "%s init --home %s %s --opslimit 1 --memlimit 8192 >/dev/null 2>>%s && "
             "%s import %s --dataset d --home %s %s >/dev/null 2>>%s",
             POCKETLLM, a->home, pass, a->errlog, POCKETLLM, txt, a->home, pass, a->errlog);
    return run_capture(cmd, NULL) == 0;
}

/* `pocketllm sync --catch-up` in home (created if needed) with --out, and extra options. */
static void catch_up_ex(const coord *c, const char *name, const char *extra, report *r)
{
    char cmd[2048], *out = NULL;
    snprintf(cmd, sizeof cmd,
             "(test -d %s/%s || %s init --home %s/%s --opslimit 1 --memlimit 8192 >/dev/null) && "
             "%s sync --catch-up --server %s --model %s --home %s/%s --json --out %s/%s.out %s",
             g_tmp, name, POCKETLLM, g_tmp, name, POCKETLLM, c->url, STORIES, g_tmp, name, g_tmp,
             name, extra);
    int rc = run_capture(cmd, &out);
    parse_report(out, rc, r);
    if (!r->ok)
        fprintf(stderr, "catch-up in %s failed (exit %d): %s\n", name, rc, out ? out : "");
    free(out);
}

static void catch_up(const coord *c, const char *name, report *r)
{
    catch_up_ex(c, name, "", r);
}

/* ---- an independent replay of the coordinator's log ----------------------------------------- */

/* seed_k = u64le(first 8 bytes of BLAKE2b-256(pool_seed || u32le(k))) (PROTOCOL 2). */
static uint64_t pool_seed_k(uint32_t k)
{
    uint8_t in[36], h[32];
    uint64_t s = 0;
    memcpy(in, g_pool_seed, 32);
    for (int i = 0; i < 4; i++)
        in[32 + i] = (uint8_t)(k >> (8 * i));
    crypto_generichash(h, sizeof h, in, sizeof in, NULL, 0);
    for (int i = 7; i >= 0; i--)
        s = s << 8 | h[i];
    return s;
}

/* Applies one log entry: W -= lr * coef[k] * z(seed_k), ascending k (PROTOCOL 3 and 6), to the
 * tensors of mask (NULL: all). */
static int apply_entry(pk_model *m, const uint8_t *mask, const cJSON *e)
{
    const cJSON *lr = cJSON_GetObjectItemCaseSensitive(e, "lr");
    const cJSON *u = cJSON_GetObjectItemCaseSensitive(e, "updates");
    static uint8_t bin[6 * 4096];
    size_t n = 0;
    if (!cJSON_IsNumber(lr) || !cJSON_IsString(u) ||
        sodium_base642bin(bin, sizeof bin, u->valuestring, strlen(u->valuestring), NULL, &n, NULL,
                          sodium_base64_VARIANT_ORIGINAL) != 0 ||
        n % 6 != 0)
        return 0;
    for (size_t i = 0; i < n; i += 6) {
        uint32_t k = (uint32_t)bin[i] | (uint32_t)bin[i + 1] << 8, bits = 0;
        float coef;
        for (int b = 3; b >= 0; b--)
            bits = bits << 8 | bin[i + 2 + b];
        memcpy(&coef, &bits, 4);
        pk_mezo_update(m, mask, pool_seed_k(k), PK_Z_GAUSSIAN, (float)lr->valuedouble, coef, 0.0f);
    }
    return 1;
}

/* The log replayed on stories260k here, training `spec` (NULL: all); *entries = entries
 * applied. 1 on success. */
static int ref_replay(const char *log, const char *spec, char hex[65], int *entries)
{
    pk_model *m = NULL;
    uint8_t *mask = NULL;
    char err[256] = "";
    cJSON *j = log ? cJSON_Parse(log) : NULL;
    const cJSON *e;
    int ok = j && pk_model_load(STORIES, pk_model_default_params(), &m, err, sizeof err) == PK_OK;
    ok = ok && (!spec || pk_mezo_trainable(m, spec, &mask, err, sizeof err) == PK_OK);
    *entries = 0;
    if (ok) {
        cJSON_ArrayForEach(e, cJSON_GetObjectItemCaseSensitive(j, "entries"))
        {
            ok = ok && apply_entry(m, mask, e);
            *entries += ok;
        }
    }
    ok = ok && pk_weights_hash(m, hex) == PK_OK;
    free(mask);
    pk_model_free(m);
    cJSON_Delete(j);
    return ok;
}

/* ---- the checks ----------------------------------------------------------------------------- */

/* One round: the three agents at once (the round closes when the third upload arrives). */
static void run_round(const coord *c, const agent *ag, int r, report rep[N_AGENTS])
{
    FILE *p[N_AGENTS];
    char extra[160];
    for (int i = 0; i < N_AGENTS; i++) {
        /* agent 2 uses DP in the last round; --batch 2 over its 4 examples: q = 1/2 */
        if (r == ROUNDS && i == 2)
            snprintf(extra, sizeof extra, "--batch 2 --dp-clip %g --dp-noise %g", DP_CLIP,
                     DP_NOISE);
        else
            snprintf(extra, sizeof extra, "--batch 2");
        p[i] = sync_start(&ag[i], c, extra);
        PK_CHECK(p[i] != NULL);
    }
    for (int i = 0; i < N_AGENTS; i++)
        sync_finish(p[i], &ag[i], &rep[i]);
    for (int i = 0; i < N_AGENTS; i++) {
        PK_CHECK_EQ(rep[i].rc, 0);
        PK_CHECK(rep[i].ok);
        PK_CHECK(rep[i].uploaded);
        PK_CHECK(rep[i].round_closed);
        PK_CHECK_EQ(rep[i].round, r);
        PK_CHECK_EQ(rep[i].log_version, r);
        PK_CHECK_EQ(rep[i].steps, LOCAL_STEPS);
        PK_CHECK(strlen(rep[i].model_hash) == 64);
        PK_CHECK(!strcmp(rep[i].model_hash, rep[0].model_hash));
        PK_CHECK(!strcmp(rep[i].log_head, rep[0].log_head));
        printf("round %d agent %d: %lld bytes up, %lld bytes down, %lld requests, %lld attempts, "
               "model %.16s\n",
               r, i, rep[i].bytes_up, rep[i].bytes_down, rep[i].requests, rep[i].attempts,
               rep[i].model_hash);
    }
}

static void check_dp(const report rep[N_AGENTS])
{
    double want = 0;
    /* what sync.c must account: q = batch / examples = 2/4, noise multiplier SIGMA / 2 against
     * the sensitivity 2C of a g clipped to [-C, C], LOCAL_STEPS steps, delta 1e-5 */
    PK_CHECK_EQ(pk_dp_epsilon_for(1.0, DP_NOISE / 2.0, LOCAL_STEPS, 1e-5, &want), PK_OK);
    PK_CHECK(rep[2].dp);
    PK_CHECK(rep[2].has_eps);
    PK_CHECK(isfinite(rep[2].epsilon) && rep[2].epsilon > 0.0);
    PK_CHECK_NEAR(rep[2].epsilon, want, 1e-5 * want);
    printf("dp: clip %g noise %g -> epsilon %.6g (accountant: %.6g) at delta 1e-5\n", DP_CLIP,
           DP_NOISE, rep[2].epsilon, want);
    for (int i = 0; i < 2; i++) {
        PK_CHECK(!rep[i].dp);
        PK_CHECK(!rep[i].has_eps);
    }
}

/* A model that is not the task's base model: exit 1 and a message naming the mismatch, both
 * with local data (a tiny model given stories260k's tokenizer so the dataset loads) and with
 * --catch-up (the bare make-model output, no tokenizer needed). */
static void check_wrong_model(const coord *c, const agent *a, const char *base)
{
    char cmd[2048], *out = NULL, tiny[300], tok[300], src[400], dst[400];
    snprintf(tiny, sizeof tiny, "%s/tiny", g_tmp);
    snprintf(tok, sizeof tok, "%s/tinytok", g_tmp);
    snprintf(cmd, sizeof cmd,
             "%s make-model --arch llama --preset tiny --out %s >/dev/null && mkdir -p %s",
             POCKETLLM, tiny, tok);
    PK_CHECK_EQ(run_capture(cmd, NULL), 0);
    static const char *const files[] = {"config.json", "model.safetensors"};
    for (int i = 0; i < 2; i++) {
        snprintf(src, sizeof src, "%s/%s", tiny, files[i]);
        snprintf(dst, sizeof dst, "%s/%s", tok, files[i]);
        PK_CHECK(copy_file(src, dst));
    }
    snprintf(dst, sizeof dst, "%s/tokenizer.model", tok);
    PK_CHECK(copy_file(STORIES "/tokenizer.model", dst));
    for (int v = 0; v < 2; v++) {
        snprintf(cmd, sizeof cmd, "%s sync --server %s --model %s --home %s %s --json %s 2>&1",
                 POCKETLLM, c->url, v ? tiny : tok, a->home, a->pass,
                 v ? "--catch-up" : "--dataset d --batch 2");
        int rc = run_capture(cmd, &out);
        PK_CHECK_EQ(rc, 1);
        PK_CHECK(out && strstr(out, "base model") && strstr(out, base));
        if (!out || !strstr(out, "base model"))
            fprintf(stderr, "wrong model (%s): exit %d, output: %s\n", v ? tiny : tok, rc,
                    out ? out : "");
        free(out);
        out = NULL;
    }
}

/* ---- what the coordinator received ---------------------------------------------------------- */

typedef struct scan {
    int bodies, uploads, leaks, bad_fields, too_big;
    int n_keys;
    long long key_round[64];
    char key[64][72];
} scan;

/* Records an upload's (round, idempotency key) once: resends after faults reuse the key. */
static void note_upload(scan *s, const cJSON *j)
{
    const cJSON *r = cJSON_GetObjectItemCaseSensitive(j, "round");
    const cJSON *k = cJSON_GetObjectItemCaseSensitive(j, "idempotency_key");
    if (!cJSON_IsNumber(r) || !cJSON_IsString(k)) {
        s->bad_fields++;
        return;
    }
    for (int i = 0; i < s->n_keys; i++)
        if (s->key_round[i] == (long long)r->valuedouble && !strcmp(s->key[i], k->valuestring))
            return;
    if (s->n_keys < 64) {
        s->key_round[s->n_keys] = (long long)r->valuedouble;
        snprintf(s->key[s->n_keys], sizeof s->key[0], "%s", k->valuestring);
        s->n_keys++;
    }
}

static void scan_body(const char *buf, size_t n, const char *const *secrets, size_t n_secrets,
                      scan *s)
{
    static const char *const allowed[] = {"public_key",      "task_id",  "round",   "device_id",
                                          "idempotency_key", "examples", "updates", "signature"};
    s->bodies++;
    s->too_big += n > 16384; /* no weights, no text: a body is a few hundred bytes */
    for (size_t i = 0; i < n_secrets; i++)
        s->leaks += contains(buf, n, secrets[i]);
    cJSON *j = cJSON_ParseWithLength(buf, n);
    const cJSON *it;
    if (!j)
        s->bad_fields++;
    cJSON_ArrayForEach(it, j)
    {
        int ok = 0;
        for (size_t k = 0; k < sizeof allowed / sizeof allowed[0]; k++)
            ok |= !strcmp(it->string, allowed[k]);
        s->bad_fields += !ok;
    }
    const cJSON *u = cJSON_GetObjectItemCaseSensitive(j, "updates");
    if (cJSON_IsString(u)) {
        s->uploads++;
        /* at most one (pool index, sum) pair per local step: 6 bytes each, base64 */
        s->bad_fields += strlen(u->valuestring) > (LOCAL_STEPS * 6 + 2) / 3 * 4;
        note_upload(s, j);
    }
    cJSON_Delete(j);
}

static void scan_dir(const char *dir, const char *const *secrets, size_t n_secrets, scan *s)
{
    memset(s, 0, sizeof *s);
    DIR *d = opendir(dir);
    struct dirent *de;
    static char buf[1 << 17];
    while (d && (de = readdir(d))) {
        char path[600];
        if (de->d_name[0] == '.')
            continue;
        snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
        FILE *f = fopen(path, "rb");
        if (!f)
            continue;
        size_t n = fread(buf, 1, sizeof buf - 1, f);
        fclose(f);
        buf[n] = '\0';
        scan_body(buf, n, secrets, n_secrets, s);
    }
    if (d)
        closedir(d);
}

static int uploads_in_round(const scan *s, long long r)
{
    int n = 0;
    for (int i = 0; i < s->n_keys; i++)
        n += s->key_round[i] == r;
    return n;
}

static void check_capture(const agent *ag)
{
    const char *secrets[32];
    size_t n = 0;
    for (int i = 0; i < N_AGENTS; i++)
        for (size_t k = 0; k < ag[i].n_lines; k++)
            secrets[n++] = ag[i].lines[k];
    for (size_t k = 0; k < sizeof WORDS / sizeof WORDS[0]; k++)
        secrets[n++] = WORDS[k];
    /* the scanner itself must see a leak: a body that carries private text and a text field */
    char ctl[300], path[400], body[512];
    snprintf(ctl, sizeof ctl, "%s/control", g_tmp);
    mkdir(ctl, 0700);
    snprintf(path, sizeof path, "%s/000000-POST-_v1_rounds_1_updates.body", ctl);
    snprintf(body, sizeof body,
             "{\"round\":1,\"idempotency_key\":\"k\",\"updates\":\"\",\"text\":\"%s\"}", CY[1]);
    PK_CHECK_EQ(write_string(path, body), 0);
    scan s;
    scan_dir(ctl, secrets, n, &s);
    PK_CHECK(s.leaks >= 1 && s.bad_fields >= 1);
    /* the real capture */
    char cap[300];
    snprintf(cap, sizeof cap, "%s/capture", g_tmp);
    scan_dir(cap, secrets, n, &s);
    PK_CHECK_EQ(s.leaks, 0);
    PK_CHECK_EQ(s.bad_fields, 0);
    PK_CHECK_EQ(s.too_big, 0);
    PK_CHECK(s.bodies >= N_AGENTS * (1 + ROUNDS)); /* registrations + uploads at least */
    for (int r = 1; r <= ROUNDS; r++)
        PK_CHECK_EQ(uploads_in_round(&s, r), N_AGENTS); /* one upload per agent and round */
    PK_CHECK_EQ(s.n_keys, N_AGENTS * ROUNDS);           /* the wrong-model runs uploaded nothing */
    printf("capture: %d request bodies (%d uploads, %d distinct) hold no private text\n", s.bodies,
           s.uploads, s.n_keys);
}

/* ---- the model directories ------------------------------------------------------------------ */

/* Every file of a has a byte-identical twin in b, and b has no other file. */
static int dirs_equal(const char *a, const char *b)
{
    int same = 1, na = 0, nb = 0;
    DIR *d = opendir(a);
    struct dirent *de;
    while (d && (de = readdir(d))) {
        char pa[600], pb[600];
        if (de->d_name[0] == '.')
            continue;
        snprintf(pa, sizeof pa, "%s/%s", a, de->d_name);
        snprintf(pb, sizeof pb, "%s/%s", b, de->d_name);
        same &= files_equal(pa, pb);
        na++;
    }
    if (d)
        closedir(d);
    d = opendir(b);
    while (d && (de = readdir(d)))
        nb += de->d_name[0] != '.';
    if (d)
        closedir(d);
    return same && na > 0 && na == nb;
}

static void check_outputs(const agent *ag, const char *base, const char *final)
{
    char o0[300], o4[300], f0[400], f4[400], h[65];
    snprintf(o0, sizeof o0, "%s/fresh0.out", g_tmp);
    snprintf(o4, sizeof o4, "%s/fresh.out", g_tmp);
    snprintf(f0, sizeof f0, "%s/model.safetensors", o0);
    snprintf(f4, sizeof f4, "%s/model.safetensors", o4);
    for (int i = 0; i < N_AGENTS; i++)
        PK_CHECK(dirs_equal(o4, ag[i].out));
    PK_CHECK(dir_hash(o4, h) && !strcmp(h, final)); /* --out is the global model */
    PK_CHECK(dir_hash(o0, h) && !strcmp(h, base));  /* log version 0 is the base model */
    PK_CHECK(file_bytes(f4) > 0 && file_bytes(f4) == file_bytes(f0));
    PK_CHECK(!files_equal(f4, f0));
    PK_CHECK(!files_equal(f4, STORIES "/model.safetensors"));
}

/* --quiet: success prints nothing (the home is already up to date). */
static void check_quiet(const coord *c)
{
    char cmd[1024], *out = NULL;
    snprintf(cmd, sizeof cmd, "%s sync --catch-up --quiet --server %s --model %s --home %s/fresh",
             POCKETLLM, c->url, STORIES, g_tmp);
    PK_CHECK_EQ(run_capture(cmd, &out), 0);
    PK_CHECK(out && out[0] == '\0');
    free(out);
}

/* ---- main ------------------------------------------------------------------------------------ */

/* trainable: "" or ",\"trainable\":\"SPEC\"" */
static int write_task_named(const char *base, const char *id, int quorum, const char *trainable)
{
    char hex[65], path[300], json[1024];
    randombytes_buf(g_pool_seed, sizeof g_pool_seed);
    sodium_bin2hex(hex, sizeof hex, g_pool_seed, sizeof g_pool_seed);
    snprintf(json, sizeof json,
             "{\"task_id\":\"%s\",\"base_model_hash\":\"%s\",\"pool_size\":4096,"
             "\"pool_seed\":\"%s\",\"z_kind\":\"gaussian\",\"lr\":0.001,\"eps\":0.001,"
             "\"local_steps\":%d,\"batch_size\":2,\"quorum\":%d,\"deadline_seconds\":60%s}\n",
             id, base, hex, LOCAL_STEPS, quorum, trainable);
    snprintf(path, sizeof path, "%s/task.json", g_tmp);
    return write_string(path, json) == 0;
}

static int write_task(const char *base)
{
    return write_task_named(base, "cli-test", N_AGENTS, "");
}

/* A task that names a trainable set (the coordinator knows the base hash and the spec, never
 * an adapter), on a new coordinator (task cli-NAME, quorum 1, no faults, its own db and
 * capture): a device reports the base hash at the base (a LoRA adapter comes from the spec's
 * seed), uploads, and a fresh home with the same spec (`same`: in another order of its items)
 * replays the log to the device's weights, as does the protocol alone (ref_replay with the
 * spec's mask); a device without the spec is refused. */
static void test_spec_sync(const agent *a, const char *base, const char *name, const char *spec,
                           const char *same)
{
    coord c;
    char args[1400], path[300], home[64], opt[160], task[64], *log = NULL, ref[65] = "";
    report rep, fresh0, fresh, plain;
    memset(&c, 0, sizeof c);
    snprintf(task, sizeof task, "cli-%s", name);
    snprintf(opt, sizeof opt, ",\"trainable\":\"%s\"", spec);
    PK_CHECK(write_task_named(base, task, 1, opt));
    snprintf(path, sizeof path, "%s/capture-%s", g_tmp, name);
    PK_CHECK(mkdir(path, 0700) == 0);
    snprintf(args, sizeof args,
             "--db %s/%s.db --task %s/task.json --capture %s --faults seed=1 2>%s/server-%s.log",
             g_tmp, name, g_tmp, path, g_tmp, name);
    if (!server_start(&c.sv, args)) {
        PK_CHECK(0);
        return;
    }
    c.port = c.sv.port;
    snprintf(c.url, sizeof c.url, "http://127.0.0.1:%d", c.port);
    snprintf(opt, sizeof opt, "--trainable %s", spec);
    snprintf(home, sizeof home, "%s0", name);
    catch_up_ex(&c, home, opt, &fresh0); /* version 0: the base */
    PK_CHECK(fresh0.ok && fresh0.log_version == 0 && !strcmp(fresh0.model_hash, base));
    snprintf(args, sizeof args, "--batch 2 --trainable %s", same);
    FILE *p = sync_start(a, &c, args);
    PK_CHECK(p != NULL);
    sync_finish(p, a, &rep);
    PK_CHECK(rep.ok && rep.uploaded && rep.round_closed && rep.log_version == 1);
    PK_CHECK(strcmp(rep.model_hash, base) != 0);
    snprintf(home, sizeof home, "%s1", name);
    catch_up_ex(&c, home, opt, &fresh);
    PK_CHECK(fresh.ok && fresh.log_version == 1 && !strcmp(fresh.model_hash, rep.model_hash));
    snprintf(home, sizeof home, "%s2", name);
    catch_up_ex(&c, home, "", &plain); /* a device training all weights is refused */
    PK_CHECK(!plain.ok && plain.rc == 1);
    log = fetch_global_log(c.url, 20);
    int entries = 0;
    PK_CHECK(ref_replay(log, spec, ref, &entries));
    PK_CHECK_EQ(entries, 1);
    PK_CHECK(!strcmp(ref, rep.model_hash));
    free(log);
    coord_stop(&c);
}

/* The sync client's model with `--trainable top:1` keeps the frozen prefix (DESIGN 4): the rows
 * of its dataset are computed once, and a reset to the base (each round's start) keeps them; with
 * every tensor trainable there is none. */
static void test_sync_frozen(const agent *a)
{
    pk_store *s = NULL;
    pk_sync_mezo *x = NULL;
    char err[256] = "";
    const char *pass = getenv("POCKETLLM_PASSPHRASE");
    PK_CHECK(pass && pk_store_open(a->home, pass, strlen(pass), &s, err, sizeof err) == PK_OK);
    for (int top = 0; s && top < 2; top++) {
        PK_CHECK(pk_sync_mezo_open(s, STORIES, "d", NULL, top ? "top:1" : "all", 2, 64, &x, err,
                                   sizeof err) == PK_OK);
        pk_model *m = pk_sync_mezo_model(x);
        PK_CHECK_EQ(pk_model_frozen_level(m), top ? 2 * (pk_model_n_layers(m) - 1) : 0);
        pk_sync_model_ops ops = pk_sync_mezo_ops(x);
        float g[2] = {0.0f, 0.0f};
        int64_t nb = 0;
        uint64_t hits = 0, misses = 0;
        size_t bytes = 0;
        for (int r = 0; x && r < 2; r++) {
            PK_CHECK(ops.reset(ops.user) == PK_OK);
            PK_CHECK(ops.grad(ops.user, 77, PK_Z_GAUSSIAN, 1e-3f, &g[r], &nb) == PK_OK);
            PK_CHECK(isfinite(g[r]) && nb == 2);
            PK_CHECK(ops.apply(ops.user, 77, PK_Z_GAUSSIAN, 1e-3f, g[r]) == PK_OK);
        }
        pk_model_frozen_stats(m, &hits, &misses, &bytes);
        if (top) /* 3 examples, 2 a step: the second step takes one row from the store */
            PK_CHECK(misses == 3 && hits == 1 && bytes > 0);
        else
            PK_CHECK(misses == 0 && hits == 0 && bytes == 0);
        pk_sync_mezo_free(x);
        x = NULL;
    }
    pk_store_close(s);
}

static void run_all(const coord *c, const agent *ag, const char *base)
{
    report fresh0, fresh, rep[ROUNDS + 1][N_AGENTS];
    double t0 = pk_time_now();
    catch_up(c, "fresh0", &fresh0); /* before round 1: the base model, log version 0 */
    PK_CHECK(fresh0.ok && fresh0.log_version == 0 && !strcmp(fresh0.model_hash, base));
    check_wrong_model(c, &ag[0], base);
    double t1 = pk_time_now();
    for (int r = 1; r <= ROUNDS; r++)
        run_round(c, ag, r, rep[r]);
    double t2 = pk_time_now();
    PK_CHECK(strcmp(rep[1][0].model_hash, base) != 0);                 /* round 1 moved the model */
    PK_CHECK(strcmp(rep[2][0].model_hash, rep[1][0].model_hash) != 0); /* and round 2 */
    check_dp(rep[ROUNDS]);
    catch_up(c, "fresh", &fresh); /* a fresh home replays the coordinator's log */
    PK_CHECK(fresh.ok);
    PK_CHECK(!fresh.uploaded && fresh.steps == 0);
    PK_CHECK_EQ(fresh.log_version, ROUNDS);
    PK_CHECK(!strcmp(fresh.log_head, rep[ROUNDS][0].log_head));
    PK_CHECK(!strcmp(fresh.model_hash, rep[ROUNDS][0].model_hash));
    check_outputs(ag, base, rep[ROUNDS][0].model_hash);
    check_quiet(c);
    /* and so does this test, from the protocol alone (OpenMP runs in this process only from
     * here on; the only later child, rm, is exec'd at once) */
    char *log = fetch_global_log(c->url, 20), ref[65] = ""; /* faults are on */
    int entries = 0;
    PK_CHECK(ref_replay(log, NULL, ref, &entries));
    PK_CHECK_EQ(entries, ROUNDS);
    PK_CHECK(!strcmp(ref, rep[ROUNDS][0].model_hash));
    free(log);
    printf("times: setup checks %.2f s, %d rounds %.2f s, catch-up and outputs %.2f s\n", t1 - t0,
           ROUNDS, t2 - t1, pk_time_now() - t2);
}

/* Malformed --server URLs are usage errors (exit 2) before anything is opened. */
static void test_bad_urls(void)
{
    static const char *const bad[] = {"http://127.0.0.1:", "http://:8080",    "ftp://host",
                                      "http://host:99999", "http://host:80x", "127.0.0.1:8080"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char cmd[1024];
        snprintf(cmd, sizeof cmd,
                 "%s sync --server '%s' --model %s --catch-up --home %s/nohome 2>/dev/null",
                 POCKETLLM, bad[i], STORIES, g_tmp);
        int rc = run_capture(cmd, NULL);
        if (rc != 2)
            fprintf(stderr, "--server %s: exit %d, want 2\n", bad[i], rc);
        PK_CHECK_EQ(rc, 2);
    }
}

int main(void)
{
    static agent ag[N_AGENTS];
    char base[65] = "", pf[300], opts0[400], cap[300];
    coord c;
    memset(&c, 0, sizeof c);
    if (sodium_init() < 0 || pk_http_global_init() != PK_OK ||
        !make_tmpdir(g_tmp, sizeof g_tmp, "synccli"))
        return 1;
    double t0 = pk_time_now();
    /* three agents run at once on few cores: a spinning OpenMP barrier would starve the rest */
    setenv("OMP_WAIT_POLICY", "passive", 1);
    setenv("POCKETLLM_PASSPHRASE", "env passphrase of agents 1 and 2", 1);
    snprintf(pf, sizeof pf, "%s/agent0.pass", g_tmp);
    snprintf(opts0, sizeof opts0, "--passphrase-file %s", pf);
    snprintf(cap, sizeof cap, "%s/capture", g_tmp);
    test_bad_urls();
    PK_CHECK(dir_hash(STORIES, base));
    PK_CHECK(write_task(base));
    PK_CHECK(mkdir(cap, 0700) == 0);
    PK_CHECK_EQ(write_string(pf, "agent zero's own passphrase\n"), 0);
    PK_CHECK(make_agent(&ag[0], 0, ADA, sizeof ADA / sizeof ADA[0], opts0, "--threads 1"));
    PK_CHECK(make_agent(&ag[1], 1, BO, sizeof BO / sizeof BO[0], "", ""));
    PK_CHECK(make_agent(&ag[2], 2, CY, sizeof CY / sizeof CY[0], "", "--threads 1"));
    int up = pk_test_failures == 0 && coord_start(&c, FAULTS);
    PK_CHECK(up);
    if (up)
        run_all(&c, ag, base);
    coord_stop(&c);
    if (up)
        check_capture(ag);
    if (up) {
        test_spec_sync(&ag[1], base, "lora", "lora:r=4,alpha=8,seed=5", "lora:alpha=8,seed=5,r=4");
        test_spec_sync(&ag[1], base, "top", "top:1", "top:1");
        test_sync_frozen(&ag[1]);
    }
    printf("total %.2f s\n", pk_time_now() - t0);
    rm_rf_if_passed(g_tmp, pk_test_failures);
    pk_http_global_cleanup();
    return PK_TEST_DONE();
}
