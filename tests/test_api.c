/* test_api.c: libpocketllm's own tests (include/pocketllm.h), on the shipped stories260k: every
 * function, the errors an app meets (wrong passphrase, newer home or seed log, bad input),
 * cancelling a run at a step boundary and resuming it to the same bits, the callbacks, and that
 * the library writes nothing to stdout or stderr (both are redirected to a file for the whole
 * run and must stay empty). Links pk_api, the objects libpocketllm is made of. */
#include "pk_test.h"
#include "pocketllm.h"

#include <fcntl.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char home[128], tmp[64];

#define NOT_WIPED ((pocketllm_status)100) /* open_home: the library left the passphrase */

/* Opens the home with pass (a fresh, writable copy: the library wipes it). */
static pocketllm_status open_home(const char *pass, int create, pocketllm_home **h)
{
    char buf[64];
    snprintf(buf, sizeof buf, "%s", pass);
    pocketllm_home_params p = pocketllm_home_default_params();
    p.create = create;
    p.kdf_opslimit = 1; /* the Argon2id minimum: tests need no brute-force resistance */
    p.kdf_memlimit = 8192;
    pocketllm_status st = pocketllm_home_open(home, buf, strlen(pass), &p, h);
    for (size_t i = 0; i < sizeof buf; i++)
        if (buf[i] != 0 && i < strlen(pass))
            return NOT_WIPED;
    return st;
}

static void test_version_and_args(void)
{
    PK_CHECK_EQ(pocketllm_version(), PK_VERSION_NUMBER);
    char want[32];
    snprintf(want, sizeof want, "%d.%d.%d", PK_VERSION_MAJOR, PK_VERSION_MINOR, PK_VERSION_PATCH);
    PK_CHECK(strcmp(pocketllm_version_string(), want) == 0);
    PK_CHECK(strcmp(pocketllm_status_str(POCKETLLM_ERR_AUTH), "authentication failed") == 0);
    PK_CHECK(strcmp(pocketllm_status_str(POCKETLLM_ERR_CANCELLED), "cancelled") == 0);
    PK_CHECK(strcmp(pocketllm_status_str((pocketllm_status)999), "unknown status") == 0);
    PK_CHECK(pocketllm_errmsg(NULL) != NULL);
    size_t n = 0;
    PK_CHECK_EQ(pocketllm_datasets(NULL, NULL, 0, &n), POCKETLLM_ERR_ARG);
    PK_CHECK_EQ(pocketllm_train(NULL, NULL, NULL), POCKETLLM_ERR_ARG);
    pocketllm_home_close(NULL);
    pocketllm_cancel(NULL);
}

static void test_open_errors(void)
{
    pocketllm_home *h = NULL;
    /* No home and no create: NOTFOUND, a handle that says why. */
    PK_CHECK_EQ(open_home("secret one", 0, &h), POCKETLLM_ERR_NOTFOUND);
    PK_CHECK(h != NULL && strstr(pocketllm_errmsg(h), home) != NULL);
    size_t n = 0;
    PK_CHECK_EQ(pocketllm_datasets(h, NULL, 0, &n), POCKETLLM_ERR_ARG); /* failed handle */
    pocketllm_home_close(h);
    PK_CHECK_EQ(open_home("secret one", 1, &h), POCKETLLM_OK);
    PK_CHECK(strcmp(pocketllm_errmsg(h), "") == 0);
    pocketllm_home_close(h);
    PK_CHECK_EQ(open_home("secret two", 0, &h), POCKETLLM_ERR_AUTH);
    PK_CHECK(strstr(pocketllm_errmsg(h), "wrong passphrase") != NULL);
    pocketllm_home_close(h);
    char empty[1] = "";
    PK_CHECK_EQ(pocketllm_home_open(home, empty, 0, NULL, &h), POCKETLLM_ERR_ARG);
    pocketllm_home_close(h);
}

static void test_import(pocketllm_home *h)
{
    const char notes[] = "Pip the cat sat on the warm mat.\nPip liked fish and naps in the sun.\n"
                         "One day Pip found a red ball.\n";
    pocketllm_import_params ip = pocketllm_import_default_params();
    int64_t n = -1;
    /* From memory the format must be named. */
    PK_CHECK_EQ(pocketllm_import(h, "notes", notes, strlen(notes), &ip, &n), POCKETLLM_ERR_ARG);
    ip.format = POCKETLLM_FORMAT_TXT;
    PK_CHECK_EQ(pocketllm_import(h, "notes", notes, strlen(notes), &ip, &n), POCKETLLM_OK);
    PK_CHECK_EQ(n, 3);
    /* A bad record: nothing imported, the line named. */
    const char bad[] = "{\"text\": \"fine\"}\n{\"text\": 12\n";
    ip.format = POCKETLLM_FORMAT_JSONL;
    PK_CHECK_EQ(pocketllm_import(h, "bad", bad, strlen(bad), &ip, &n), POCKETLLM_ERR_FORMAT);
    PK_CHECK(strstr(pocketllm_errmsg(h), "line 2") != NULL);
    /* From a file, format from the extension, with progress. */
    char path[300];
    snprintf(path, sizeof path, "%s/more.jsonl", tmp);
    FILE *f = fopen(path, "w");
    PK_CHECK(f != NULL);
    if (f) {
        fputs("{\"text\": \"The ball rolled away.\"}\n{\"text\": \"Pip ran after it.\"}\n", f);
        fclose(f);
    }
    ip = pocketllm_import_default_params();
    PK_CHECK_EQ(pocketllm_import_file(h, "more", path, &ip, &n), POCKETLLM_OK);
    PK_CHECK_EQ(n, 2);
    /* Listing: sized with cap 0, then filled. */
    size_t total = 0;
    PK_CHECK_EQ(pocketllm_datasets(h, NULL, 0, &total), POCKETLLM_OK);
    PK_CHECK_EQ(total, 2); /* "bad" was rolled back */
    pocketllm_dataset d[4];
    PK_CHECK_EQ(pocketllm_datasets(h, d, 1, &total), POCKETLLM_OK);
    PK_CHECK_EQ(total, 2);
    PK_CHECK(strcmp(d[0].name, "more") == 0 && d[0].n_examples == 2);
    PK_CHECK_EQ(pocketllm_datasets(h, d, 4, &total), POCKETLLM_OK);
    PK_CHECK(strcmp(d[1].name, "notes") == 0 && d[1].n_examples == 3 && d[1].sealed_bytes > 0);
}

typedef struct progress_log {
    int calls;
    int64_t last_step;
    int stop_after; /* > 0: return non-zero after this many steps */
    int monotonic;
    int64_t run_id;
} progress_log;

static int on_progress(void *user, const pocketllm_step_info *s)
{
    progress_log *p = user;
    if (s->step != p->last_step + 1)
        p->monotonic = 0;
    p->last_step = s->step;
    p->calls++;
    return p->stop_after > 0 && p->calls >= p->stop_after;
}

static void on_start(void *user, int64_t run_id, int64_t first)
{
    progress_log *p = user;
    p->run_id = run_id;
    p->last_step = first - 1;
}

/* The defaults, training stories260k on "notes" for `steps` steps of batch 2, 24 tokens. */
static pocketllm_train_params notes_run(int64_t steps)
{
    pocketllm_train_params tp = pocketllm_train_default_params();
    tp.model_dir = PK_STORIES_DIR;
    tp.dataset = "notes";
    tp.steps = steps;
    tp.batch = 2;
    tp.seq_len = 24;
    return tp;
}

static pocketllm_train_params small_run(progress_log *pl)
{
    pocketllm_train_params tp = notes_run(6);
    tp.lr = 1e-3f;
    tp.seed = 7;
    tp.progress = on_progress;
    tp.on_start = on_start;
    tp.user = pl;
    memset(pl, 0, sizeof *pl);
    pl->monotonic = 1;
    return tp;
}

/* An uninterrupted run, and the same run stopped by its callback after 3 steps and resumed:
 * the same weights, bit for bit. Returns the first run's id. */
static int64_t test_train_cancel_resume(pocketllm_home *h)
{
    progress_log pl;
    pocketllm_train_params tp = small_run(&pl);
    pocketllm_train_result a, b, c;
    PK_CHECK_EQ(pocketllm_train(h, &tp, &a), POCKETLLM_OK);
    PK_CHECK_EQ(a.steps_done, 6);
    PK_CHECK_EQ(pl.calls, 6);
    PK_CHECK(pl.monotonic && pl.run_id == a.run_id);
    PK_CHECK(a.last_loss > 0 && a.last_loss < 20 && !a.cancelled);
    PK_CHECK(strlen(a.weights_hash) == 64);

    tp = small_run(&pl);
    pl.stop_after = 3;
    PK_CHECK_EQ(pocketllm_train(h, &tp, &b), POCKETLLM_ERR_CANCELLED);
    PK_CHECK_EQ(b.steps_done, 3);
    PK_CHECK(b.cancelled && b.run_id != a.run_id);
    PK_CHECK(strstr(pocketllm_errmsg(h), "cancelled") != NULL);
    PK_CHECK(strcmp(b.weights_hash, a.weights_hash) != 0);

    /* Resumed on one thread (the run began on two): the same bits (DESIGN 10). */
    int threads = pocketllm_set_threads(0);
    PK_CHECK_EQ(pocketllm_set_threads(1), 1);
    pocketllm_train_params rp = pocketllm_train_default_params();
    rp.resume_run = b.run_id;
    PK_CHECK_EQ(pocketllm_train(h, &rp, &c), POCKETLLM_OK);
    PK_CHECK_EQ(pocketllm_set_threads(threads), threads);
    PK_CHECK_EQ(c.run_id, b.run_id);
    PK_CHECK_EQ(c.steps_done, 6);
    PK_CHECK(strcmp(c.weights_hash, a.weights_hash) == 0);
    /* Bad settings come back as errors with a message. */
    tp = small_run(&pl);
    tp.schedule = "sideways";
    PK_CHECK_EQ(pocketllm_train(h, &tp, &c), POCKETLLM_ERR_ARG);
    PK_CHECK(strstr(pocketllm_errmsg(h), "sideways") != NULL);
    tp = small_run(&pl);
    tp.lr_guard = 3; /* 0, 1 or 2 */
    PK_CHECK_EQ(pocketllm_train(h, &tp, &c), POCKETLLM_ERR_ARG);
    PK_CHECK(strstr(pocketllm_errmsg(h), "lr_guard 3") != NULL);
    tp = small_run(&pl);
    tp.fzoo_baseline = "median"; /* unperturbed or mean */
    PK_CHECK_EQ(pocketllm_train(h, &tp, &c), POCKETLLM_ERR_ARG);
    PK_CHECK(strstr(pocketllm_errmsg(h), "fzoo_baseline 'median'") != NULL);
    tp = small_run(&pl);
    tp.dataset = "nope";
    PK_CHECK_EQ(pocketllm_train(h, &tp, &c), POCKETLLM_ERR_NOTFOUND);
    return a.run_id;
}

/* pocketllm_cancel from another thread stops a long run at a step boundary. */
typedef struct canceller {
    pocketllm_home *h;
    atomic_int stepped;
} canceller;

static int count_step(void *user, const pocketllm_step_info *s)
{
    (void)s;
    atomic_store(&((canceller *)user)->stepped, 1);
    return 0;
}

static void *cancel_thread(void *arg)
{
    canceller *c = arg;
    while (!atomic_load(&c->stepped))
        usleep(1000);
    pocketllm_cancel(c->h);
    return NULL;
}

static void test_cancel_thread(pocketllm_home *h)
{
    canceller c = {h, 0};
    pocketllm_train_params tp = notes_run(100000);
    tp.progress = count_step;
    tp.user = &c;
    pthread_t th;
    PK_CHECK(pthread_create(&th, NULL, cancel_thread, &c) == 0);
    pocketllm_train_result r;
    PK_CHECK_EQ(pocketllm_train(h, &tp, &r), POCKETLLM_ERR_CANCELLED);
    pthread_join(th, NULL);
    PK_CHECK(r.steps_done >= 1 && r.steps_done < 100000 && r.cancelled);
}

/* pocketllm_cancel during lr_auto's search (before the run exists): the search stops between
 * two of its steps and no run is created. The cancel comes 200 ms in; the search (fzoo at 64
 * perturbations, 70 steps) takes seconds here and far longer under emulation, and a cancel
 * that came after it would stop the run instead (a run id, no search message). */
static void *cancel_later(void *arg)
{
    usleep(200000);
    pocketllm_cancel(arg);
    return NULL;
}

static void test_cancel_search(pocketllm_home *h)
{
    pocketllm_train_params tp = notes_run(1000);
    tp.lr_auto = 1;
    tp.estimator = "fzoo";
    tp.perturbations = 64;
    pthread_t th;
    PK_CHECK(pthread_create(&th, NULL, cancel_later, h) == 0);
    pocketllm_train_result r;
    PK_CHECK_EQ(pocketllm_train(h, &tp, &r), POCKETLLM_ERR_CANCELLED);
    pthread_join(th, NULL);
    PK_CHECK(r.run_id == 0 && r.steps_done == 0);
    PK_CHECK(strstr(pocketllm_errmsg(h), "learning-rate search") != NULL);
}

static void test_eval(pocketllm_home *h, int64_t run)
{
    pocketllm_eval_params ep = pocketllm_eval_default_params();
    pocketllm_eval_result base, tuned;
    ep.dataset = "notes";
    ep.model_dir = PK_STORIES_DIR;
    PK_CHECK_EQ(pocketllm_eval(h, &ep, &base), POCKETLLM_OK);
    PK_CHECK_EQ(base.examples, 3);
    PK_CHECK(base.loss > 0 && base.loss < 20 && base.objective == POCKETLLM_OBJECTIVE_LM);
    ep.model_dir = NULL;
    ep.run_id = run;
    PK_CHECK_EQ(pocketllm_eval(h, &ep, &tuned), POCKETLLM_OK);
    PK_CHECK(tuned.loss > 0 && tuned.loss != base.loss); /* the run's weights, not the base */
    ep.run_id = 999;
    PK_CHECK_EQ(pocketllm_eval(h, &ep, &tuned), POCKETLLM_ERR_NOTFOUND);
}

typedef struct token_log {
    char text[512];
    size_t len;
    int tokens;
} token_log;

static int on_token(void *user, int32_t id, const char *bytes, size_t len)
{
    token_log *t = user;
    if (id >= 0)
        t->tokens++;
    if (t->len + len < sizeof t->text) {
        memcpy(t->text + t->len, bytes, len);
        t->len += len;
        t->text[t->len] = '\0';
    }
    return 0;
}

static void test_generate(pocketllm_home *h, int64_t run)
{
    pocketllm_generate_params gp = pocketllm_generate_default_params();
    token_log tl;
    memset(&tl, 0, sizeof tl);
    char out[512], again[512], small[8];
    int n = 0;
    gp.model_dir = PK_STORIES_DIR;
    gp.prompt = "Once upon a time";
    gp.max_new = 12;
    gp.ignore_eos = 1;
    gp.on_token = on_token;
    gp.user = &tl;
    PK_CHECK_EQ(pocketllm_generate(h, &gp, out, sizeof out, &n), POCKETLLM_OK);
    PK_CHECK_EQ(n, 12);
    PK_CHECK_EQ(tl.tokens, 12);
    PK_CHECK(strlen(out) > 0 && strcmp(out, tl.text) == 0); /* the callback saw the same text */
    gp.on_token = NULL;
    PK_CHECK_EQ(pocketllm_generate(h, &gp, again, sizeof again, &n), POCKETLLM_OK);
    PK_CHECK(strcmp(out, again) == 0); /* greedy: deterministic */
    PK_CHECK_EQ(pocketllm_generate(h, &gp, small, sizeof small, &n), POCKETLLM_OK);
    PK_CHECK(strlen(small) == sizeof small - 1 && strncmp(small, out, sizeof small - 1) == 0);
    gp.model_dir = NULL;
    gp.run_id = run;
    PK_CHECK_EQ(pocketllm_generate(h, &gp, again, sizeof again, &n), POCKETLLM_OK);
    PK_CHECK_EQ(n, 12);
    gp.run_id = 999; /* no such run: an error, not a read of its settings */
    PK_CHECK_EQ(pocketllm_generate(h, &gp, again, sizeof again, &n), POCKETLLM_ERR_NOTFOUND);
    PK_CHECK(strstr(pocketllm_errmsg(h), "999") != NULL);
    gp.run_id = run;
    gp.max_new = 1 << 20;
    PK_CHECK_EQ(pocketllm_generate(h, &gp, again, sizeof again, &n), POCKETLLM_ERR_ARG);
    PK_CHECK(strstr(pocketllm_errmsg(h), "positions") != NULL);
}

/* What on_sequence saw: the whole sequence's ids and text (has_text 0: text was NULL). */
typedef struct seq_log {
    int32_t ids[128];
    size_t n;
    char text[512];
    int has_text, calls, null_bytes, tokens;
} seq_log;

static void on_sequence(void *user, const int32_t *ids, size_t n, const char *text, size_t len)
{
    seq_log *q = user;
    q->calls++;
    q->n = n;
    memcpy(q->ids, ids, (n < 128 ? n : 128) * sizeof *ids);
    q->has_text = text != NULL;
    snprintf(q->text, sizeof q->text, "%.*s", (int)len, text ? text : "");
}

static int seq_token(void *user, int32_t id, const char *bytes, size_t len)
{
    seq_log *q = user;
    (void)len;
    q->null_bytes += bytes == NULL;
    q->tokens += id >= 0;
    return 0;
}

static pocketllm_generate_params seq_params(seq_log *q, const char *dir)
{
    pocketllm_generate_params gp = pocketllm_generate_default_params();
    memset(q, 0, sizeof *q);
    gp.model_dir = dir;
    gp.max_new = 16;
    gp.ignore_eos = 1;
    gp.on_token = seq_token;
    gp.on_sequence = on_sequence;
    gp.user = q;
    return gp;
}

/* The prompt as token ids gives what the same prompt as text gives; the whole sequence (prompt
 * ids, then the generated ones) reaches on_sequence; bad ids are refused. */
static void test_generate_ids(pocketllm_home *h)
{
    seq_log a, b;
    char out_a[512], out_b[512];
    int n = 0;
    pocketllm_generate_params gp = seq_params(&a, PK_STORIES_DIR);
    gp.prompt = "Once upon a time";
    PK_CHECK_EQ(pocketllm_generate(h, &gp, out_a, sizeof out_a, &n), POCKETLLM_OK);
    PK_CHECK_EQ(n, 16);
    PK_CHECK(a.calls == 1 && a.has_text && a.n > 16 && a.null_bytes == 0);
    size_t np = a.n - 16; /* the prompt's ids (BOS first) */
    PK_CHECK(np >= 2 && strncmp(a.text, "Once upon a time", 16) == 0);
    PK_CHECK(strstr(a.text, out_a) != NULL); /* the whole text ends with the generated one */
    int32_t prompt[64];
    memcpy(prompt, a.ids, np * sizeof *prompt);
    gp = seq_params(&b, PK_STORIES_DIR);
    gp.prompt = NULL;
    gp.prompt_ids = prompt;
    gp.n_prompt_ids = np;
    PK_CHECK_EQ(pocketllm_generate(h, &gp, out_b, sizeof out_b, &n), POCKETLLM_OK);
    PK_CHECK(strcmp(out_a, out_b) == 0 && strcmp(a.text, b.text) == 0);
    PK_CHECK(b.n == a.n && memcmp(a.ids, b.ids, a.n * sizeof *a.ids) == 0);
    /* Ids outside the vocabulary (stories260k has 512), none at all. */
    int32_t bad[2] = {1, 512};
    gp.prompt_ids = bad;
    gp.n_prompt_ids = 2;
    PK_CHECK_EQ(pocketllm_generate(h, &gp, out_b, sizeof out_b, &n), POCKETLLM_ERR_ARG);
    PK_CHECK(strstr(pocketllm_errmsg(h), "512 is outside the vocabulary") != NULL);
    bad[1] = -3;
    PK_CHECK_EQ(pocketllm_generate(h, &gp, out_b, sizeof out_b, &n), POCKETLLM_ERR_ARG);
    gp.n_prompt_ids = 0;
    PK_CHECK_EQ(pocketllm_generate(h, &gp, out_b, sizeof out_b, &n), POCKETLLM_ERR_ARG);
    PK_CHECK_EQ(b.calls, 1); /* a failed call never reports a sequence */
}

/* A model directory without tokenizer files: ids in, ids out (bytes NULL, no text), the same
 * ids as the model with its tokenizer; a text prompt is refused. */
static void test_generate_no_tokenizer(pocketllm_home *h)
{
    char dir[300], src[400], dst[400];
    snprintf(dir, sizeof dir, "%s/no-tokenizer", tmp);
    PK_CHECK(mkdir(dir, 0700) == 0);
    static const char *const files[] = {"config.json", "model.safetensors"};
    for (int i = 0; i < 2; i++) {
        snprintf(src, sizeof src, "%s/%s", PK_STORIES_DIR, files[i]);
        snprintf(dst, sizeof dst, "%s/%s", dir, files[i]);
        PK_CHECK(symlink(src, dst) == 0);
    }
    seq_log with, without;
    char out[512] = "x";
    int n = 0;
    int32_t prompt[3] = {1, 403, 407};
    pocketllm_generate_params gp = seq_params(&with, PK_STORIES_DIR);
    gp.prompt_ids = prompt;
    gp.n_prompt_ids = 3;
    PK_CHECK_EQ(pocketllm_generate(h, &gp, out, sizeof out, &n), POCKETLLM_OK);
    gp = seq_params(&without, dir);
    gp.prompt_ids = prompt;
    gp.n_prompt_ids = 3;
    PK_CHECK_EQ(pocketllm_generate(h, &gp, out, sizeof out, &n), POCKETLLM_OK);
    PK_CHECK_EQ(n, 16);
    PK_CHECK(strcmp(out, "") == 0 && !without.has_text && without.calls == 1);
    PK_CHECK(without.null_bytes == 16 && without.tokens == 16 && with.null_bytes == 0);
    PK_CHECK(without.n == 19 && with.n == 19);
    PK_CHECK(memcmp(with.ids, without.ids, 19 * sizeof *with.ids) == 0);
    gp.prompt_ids = NULL;
    gp.prompt = "Once";
    PK_CHECK_EQ(pocketllm_generate(h, &gp, out, sizeof out, &n), POCKETLLM_ERR_ARG);
    PK_CHECK(strstr(pocketllm_errmsg(h), "no tokenizer files") != NULL);
}

/* Sampling (temperature, top-k, top-p) is a function of the seed alone: the same sequence on one
 * thread and on two, another with another seed, neither the greedy one. */
static void test_generate_sampling(pocketllm_home *h)
{
    seq_log t1, t2, other, greedy;
    char o1[512], o2[512], oo[512], og[512];
    pocketllm_generate_params gp;
    seq_log *logs[4] = {&t1, &t2, &other, &greedy};
    char *outs[4] = {o1, o2, oo, og};
    int threads = pocketllm_set_threads(0);
    for (int k = 0; k < 4; k++) {
        gp = seq_params(logs[k], PK_STORIES_DIR);
        gp.prompt = "Pip";
        gp.max_new = 24;
        gp.temperature = k < 3 ? 0.9f : 0.0f;
        gp.top_k = 40;
        gp.top_p = 0.95f;
        gp.seed = k == 2 ? 8 : 7;
        PK_CHECK_EQ(pocketllm_set_threads(k == 0 ? 1 : 2), k == 0 ? 1 : 2);
        PK_CHECK_EQ(pocketllm_generate(h, &gp, outs[k], 512, NULL), POCKETLLM_OK);
    }
    PK_CHECK_EQ(pocketllm_set_threads(threads), threads);
    PK_CHECK(t1.n == t2.n && t1.n > 2 && memcmp(t1.ids, t2.ids, t1.n * sizeof *t1.ids) == 0);
    PK_CHECK(strcmp(o1, o2) == 0 && strcmp(t1.text, t2.text) == 0);
    PK_CHECK(other.n != t1.n || memcmp(other.ids, t1.ids, t1.n * sizeof *t1.ids) != 0);
    PK_CHECK(greedy.n != t1.n || memcmp(greedy.ids, t1.ids, t1.n * sizeof *t1.ids) != 0);
}

/* A handle of no home generates from a model directory; a run needs a home. */
static void test_generate_no_home(int64_t run)
{
    pocketllm_home *h = NULL;
    PK_CHECK_EQ(pocketllm_home_open_none(&h), POCKETLLM_OK);
    PK_CHECK(h != NULL);
    seq_log q;
    char out[512];
    int n = 0;
    pocketllm_generate_params gp = seq_params(&q, PK_STORIES_DIR);
    gp.prompt = "Pip";
    PK_CHECK_EQ(pocketllm_generate(h, &gp, out, sizeof out, &n), POCKETLLM_OK);
    PK_CHECK(n == 16 && strlen(out) > 0 && strcmp(pocketllm_errmsg(h), "") == 0);
    gp.model_dir = NULL;
    gp.run_id = run;
    PK_CHECK_EQ(pocketllm_generate(h, &gp, out, sizeof out, &n), POCKETLLM_ERR_ARG);
    PK_CHECK(strstr(pocketllm_errmsg(h), "no agent home") != NULL);
    size_t total = 0;
    PK_CHECK_EQ(pocketllm_datasets(h, NULL, 0, &total), POCKETLLM_ERR_ARG);
    pocketllm_home_close(h);
    PK_CHECK_EQ(pocketllm_home_open_none(NULL), POCKETLLM_ERR_ARG);
}

/* Export a seed log, check it, and refuse one that says it is a newer format. */
static void test_seedlog(pocketllm_home *h, int64_t run)
{
    char path[300], newer[300], line[512];
    size_t bytes = 0;
    int64_t rows = 0;
    snprintf(path, sizeof path, "%s/run.seedlog", tmp);
    snprintf(newer, sizeof newer, "%s/newer.seedlog", tmp);
    PK_CHECK_EQ(pocketllm_export_seedlog(h, run, path, &bytes), POCKETLLM_OK);
    struct stat sb;
    PK_CHECK(stat(path, &sb) == 0 && (size_t)sb.st_size == bytes && bytes > 0);
    PK_CHECK((sb.st_mode & 077) == 0);
    PK_CHECK_EQ(pocketllm_seedlog_check(h, path, &rows), POCKETLLM_OK);
    PK_CHECK_EQ(rows, 6);
    PK_CHECK_EQ(pocketllm_export_seedlog(h, 999, path, &bytes), POCKETLLM_ERR_NOTFOUND);
    FILE *in = fopen(path, "r"), *out = fopen(newer, "w");
    PK_CHECK(in && out);
    int first = 1;
    while (in && out && fgets(line, sizeof line, in)) {
        fputs(first ? "pocketllm-seedlog 2\n" : line, out);
        first = 0;
    }
    if (in)
        fclose(in);
    if (out)
        fclose(out);
    PK_CHECK_EQ(pocketllm_seedlog_check(h, newer, &rows), POCKETLLM_ERR_UNSUPPORTED);
    const char *m = pocketllm_errmsg(h);
    PK_CHECK(strstr(m, "version 2") != NULL && strstr(m, "(1)") != NULL);
}

static void test_forget(pocketllm_home *h)
{
    int64_t runs[8];
    size_t n = 0, total = 0;
    PK_CHECK_EQ(pocketllm_dataset_forget(h, "more", 0, runs, 8, &n), POCKETLLM_OK);
    PK_CHECK_EQ(n, 0);
    PK_CHECK_EQ(pocketllm_dataset_forget(h, "more", 0, runs, 8, &n), POCKETLLM_ERR_NOTFOUND);
    PK_CHECK(strstr(pocketllm_errmsg(h), "more") != NULL);
    /* notes carries the runs trained on it: named without with_runs, deleted with it. */
    PK_CHECK_EQ(pocketllm_dataset_forget(h, "notes", 1, runs, 1, &n), POCKETLLM_OK);
    PK_CHECK(n >= 3 && runs[0] >= 1);
    PK_CHECK_EQ(pocketllm_datasets(h, NULL, 0, &total), POCKETLLM_OK);
    PK_CHECK_EQ(total, 0);
}

static void test_sync_unreachable(pocketllm_home *h)
{
    pocketllm_sync_params sp = pocketllm_sync_default_params();
    pocketllm_sync_result r;
    sp.model_dir = PK_STORIES_DIR;
    sp.catch_up = 1;
    PK_CHECK_EQ(pocketllm_sync(h, &sp, &r), POCKETLLM_ERR_ARG); /* no server */
    sp.server = "http://127.0.0.1:1";
    sp.timeout_s = 2;
    PK_CHECK_EQ(pocketllm_sync(h, &sp, &r), POCKETLLM_ERR_HTTP);
    PK_CHECK(strlen(pocketllm_errmsg(h)) > 0);
}

/* The log callback gets the library's warnings: a home open to other users is one. */
typedef struct log_seen {
    int warnings;
    char last[512];
} log_seen;

static void on_log(pocketllm_log_level level, const char *msg, void *user)
{
    log_seen *s = user;
    if (level >= POCKETLLM_LOG_WARN)
        s->warnings++;
    snprintf(s->last, sizeof s->last, "%s", msg);
}

static void test_log_and_newer_home(void)
{
    log_seen seen;
    memset(&seen, 0, sizeof seen);
    pocketllm_set_log(on_log, &seen, POCKETLLM_LOG_WARN);
    PK_CHECK(chmod(home, 0755) == 0);
    pocketllm_home *h = NULL;
    PK_CHECK_EQ(open_home("secret one", 0, &h), POCKETLLM_OK);
    pocketllm_home_close(h);
    PK_CHECK(seen.warnings >= 1 && strstr(seen.last, "0700") != NULL);
    pocketllm_set_log(NULL, NULL, POCKETLLM_LOG_WARN);
    /* A home written by a newer PocketLLM: refused, naming both versions. */
    char db[300];
    snprintf(db, sizeof db, "%s/pocketllm.db", home);
    sqlite3 *q = NULL;
    PK_CHECK(sqlite3_open(db, &q) == SQLITE_OK);
    PK_CHECK(sqlite3_exec(q, "PRAGMA user_version = 99", NULL, NULL, NULL) == SQLITE_OK);
    sqlite3_close(q);
    PK_CHECK_EQ(open_home("secret one", 0, &h), POCKETLLM_ERR_UNSUPPORTED);
    const char *m = pocketllm_errmsg(h);
    PK_CHECK(strstr(m, "99") != NULL && strstr(m, "newer") != NULL);
    pocketllm_home_close(h);
}

int main(void)
{
    snprintf(tmp, sizeof tmp, "/tmp/pk_test_api_XXXXXX");
    if (!mkdtemp(tmp))
        return 1;
    snprintf(home, sizeof home, "%s/home", tmp);
    /* Everything the library might print lands here and must stay empty. */
    char capture[300];
    snprintf(capture, sizeof capture, "%s/output", tmp);
    fflush(stdout);
    fflush(stderr);
    int saved_out = dup(1), saved_err = dup(2);
    int cap = open(capture, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    dup2(cap, 1);
    dup2(cap, 2);
    close(cap);

    test_version_and_args();
    test_open_errors();
    pocketllm_home *h = NULL;
    pocketllm_status st = open_home("secret one", 0, &h);
    if (st == POCKETLLM_OK) {
        test_import(h);
        int64_t run = test_train_cancel_resume(h);
        test_cancel_thread(h);
        test_cancel_search(h);
        test_eval(h, run);
        test_generate(h, run);
        test_generate_ids(h);
        test_generate_no_tokenizer(h);
        test_generate_sampling(h);
        test_generate_no_home(run);
        test_seedlog(h, run);
        test_forget(h);
        test_sync_unreachable(h);
    }
    pocketllm_home_close(h);
    test_log_and_newer_home();

    fflush(stdout);
    fflush(stderr);
    dup2(saved_out, 1);
    dup2(saved_err, 2);
    PK_CHECK_EQ(st, POCKETLLM_OK);
    struct stat sb;
    PK_CHECK(stat(capture, &sb) == 0);
    if (sb.st_size != 0) { /* the library printed (or a check failed): show what */
        char cmd[400];
        snprintf(cmd, sizeof cmd, "cat %s >&2", capture);
        if (system(cmd) != 0)
            fprintf(stderr, "(could not show %s)\n", capture);
    }
    PK_CHECK_EQ(sb.st_size, 0);
    char rm[300];
    snprintf(rm, sizeof rm, "rm -rf %s", tmp);
    if (system(rm) != 0)
        fprintf(stderr, "could not remove %s\n", tmp);
    return PK_TEST_DONE();
}
