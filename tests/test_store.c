/* test_store.c: the store on temporary homes: round trips of every table, the importers (all
 * or nothing, line numbers), wrong passphrase (clear error, no byte changed), no plaintext or
 * passphrase on disk after import/reads/forget, every byte flip of every sealed record and
 * every swap -> PK_ERR_AUTH with the rest intact, rekey, and two processes on one home. */
#include "pk_test.h"
#include "store_impl.h" /* the connection, for its synchronous setting */
#include "store_test_util.h"

#include <math.h>
#include <signal.h>
#include <sqlite3.h>
#include <sys/wait.h>

static char home[512];
static char db_path[600];

static pk_store *open_ok(const char *pass)
{
    pk_store *s = NULL;
    char err[512] = "";
    pk_status st = pk_store_open(home, pass, strlen(pass), &s, err, sizeof err);
    if (st != PK_OK)
        fprintf(stderr, "open: %s\n", err);
    PK_CHECK_EQ(st, PK_OK);
    return s;
}

typedef struct collect {
    int n;
    char first[256];
    char last_label[64];
} collect;

static pk_status collect_fn(void *user, const pk_example *ex, int64_t line)
{
    collect *c = user;
    (void)line;
    if (c->n++ == 0)
        snprintf(c->first, sizeof c->first, "%s|%s|%s|%s", ex->text ? ex->text : "-",
                 ex->text2 ? ex->text2 : "-", ex->prompt ? ex->prompt : "-",
                 ex->response ? ex->response : "-");
    snprintf(c->last_label, sizeof c->last_label, "%s", ex->label ? ex->label : "-");
    return PK_OK;
}

static pk_status parse(const char *data, pk_import_format f, int para, collect *c, char *err)
{
    pk_import_opts o = {.format = f, .paragraphs = para};
    memset(c, 0, sizeof *c);
    return pk_import_parse_buffer(data, strlen(data), o, collect_fn, c, err, 256);
}

static void test_parsers(void)
{
    char err[256];
    collect c;
    PK_CHECK_EQ(parse("{\"text\":\"a\\u00e9\\n\\ud83d\\ude00\",\"label\":1}\n\n"
                      "{\"prompt\":\"p\",\"response\":\"r\",\"extra\":[1,{\"x\":null}]}\r\n",
                      PK_IMPORT_JSONL, 0, &c, err),
                PK_OK);
    PK_CHECK_EQ(c.n, 2);
    PK_CHECK(!strcmp(c.first, "a\xc3\xa9\n\xf0\x9f\x98\x80|-|-|-"));
    PK_CHECK_EQ(
        parse("{\"text\":\"x\",\"text2\":\"y\",\"label\":\"pos\"}", PK_IMPORT_JSONL, 0, &c, err),
        PK_OK);
    PK_CHECK(!strcmp(c.first, "x|y|-|-") && !strcmp(c.last_label, "pos"));
    /* Bad lines name their line number. */
    static const char *const bad[] = {
        "{\"text\":\"ok\"}\n{\"text\":\"unterminated}\n",
        "{\"text\":\"ok\"}\n{\"prompt\":\"p\"}\n",
        "{\"text\":\"ok\"}\n[1,2]\n",
        "{\"text\":\"ok\"}\n{\"text\":\"a\\u0000\"}\n",
        "{\"text\":\"ok\"}\n{\"text\":\"a\"} trailing\n",
        "{\"text\":\"ok\"}\n{\"text\":\"a\",\"text\":\"b\"}\n",
        "{\"text\":\"ok\"}\n{\"text\":\"\xff\xfe\"}\n",
        "{\"text\":\"ok\"}\n{\"text\":5}\n",
        "{\"text\":\"ok\"}\n{\"label\":\"x\"}\n",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        PK_CHECK_EQ(parse(bad[i], PK_IMPORT_JSONL, 0, &c, err), PK_ERR_FORMAT);
        PK_CHECK(!strncmp(err, "line 2:", 7));
    }
    /* TXT lines and paragraphs. */
    PK_CHECK_EQ(parse("one\n\n  \ntwo\nthree", PK_IMPORT_TXT, 0, &c, err), PK_OK);
    PK_CHECK_EQ(c.n, 3);
    PK_CHECK_EQ(parse("\n\npara one\nstill one\n\n\npara two\n", PK_IMPORT_TXT, 1, &c, err), PK_OK);
    PK_CHECK_EQ(c.n, 2);
    PK_CHECK(!strcmp(c.first, "para one\nstill one|-|-|-"));
    PK_CHECK_EQ(parse("ok\nbad \xc0\xaf\n", PK_IMPORT_TXT, 0, &c, err), PK_ERR_FORMAT);
    PK_CHECK(!strncmp(err, "line 2:", 7));
    /* CSV with quotes, embedded newlines and commas. */
    PK_CHECK_EQ(
        parse("text,label\n\"a, \"\"quoted\"\"\nline\",1\nplain,0\n", PK_IMPORT_CSV, 0, &c, err),
        PK_OK);
    PK_CHECK_EQ(c.n, 2);
    PK_CHECK(!strcmp(c.first, "a, \"quoted\"\nline|-|-|-"));
    PK_CHECK(!strcmp(c.last_label, "0"));
    PK_CHECK_EQ(parse("text,label\nx,1\ny\n", PK_IMPORT_CSV, 0, &c, err), PK_ERR_FORMAT);
    PK_CHECK(!strncmp(err, "line 3:", 7));
    PK_CHECK_EQ(parse("foo,bar\nx,1\n", PK_IMPORT_CSV, 0, &c, err), PK_ERR_FORMAT);
    PK_CHECK_EQ(parse("text\n\"open\n", PK_IMPORT_CSV, 0, &c, err), PK_ERR_FORMAT);
    PK_CHECK_EQ(parse("", PK_IMPORT_CSV, 0, &c, err), PK_ERR_FORMAT);
    /* A record over the cap is refused, not truncated. */
    size_t big = PK_IMPORT_MAX_RECORD + 10;
    char *huge = malloc(big + 1);
    memset(huge, 'a', big);
    huge[big] = '\0';
    PK_CHECK_EQ(parse(huge, PK_IMPORT_TXT, 0, &c, err), PK_ERR_FORMAT);
    PK_CHECK(strstr(err, "longer than") != NULL);
    free(huge);
}

static void test_init_open(void)
{
    char err[512];
    pk_store *s = NULL;
    PK_CHECK_EQ(pk_store_open(home, TEST_PASS, strlen(TEST_PASS), &s, err, sizeof err),
                PK_ERR_NOTFOUND);
    PK_CHECK(s == NULL && strstr(err, "pocketllm init") != NULL);
    PK_CHECK_EQ(pk_store_init(home, TEST_PASS, strlen(TEST_PASS), tiny_params(), err, sizeof err),
                PK_OK);
    PK_CHECK_EQ(pk_store_init(home, TEST_PASS, strlen(TEST_PASS), tiny_params(), err, sizeof err),
                PK_ERR_ARG);
    struct stat st;
    PK_CHECK(stat(home, &st) == 0 && (st.st_mode & 077) == 0);
    /* Wrong passphrase: PK_ERR_AUTH, a clear message, and no byte of the home changed. */
    char before[4096], after[4096];
    dir_snapshot(home, before, sizeof before);
    PK_CHECK_EQ(pk_store_open(home, "wrong", 5, &s, err, sizeof err), PK_ERR_AUTH);
    PK_CHECK(s == NULL && strstr(err, "wrong passphrase") != NULL);
    dir_snapshot(home, after, sizeof after);
    PK_CHECK(!strcmp(before, after));
    if (strcmp(before, after))
        fprintf(stderr, "before %s\nafter  %s\n", before, after);
}

static const char *const secrets[] = {"SECRET-ALPHA-7731", "SECRET-BRAVO-1188",
                                      "SECRET-CHARLIE-4242", "SECRET-DELTA-9090"};

/* Imports secrets into "notes", then CSV "pairs" and paragraph TXT "paras"; bad files add
 * nothing (all or nothing) and name the file and line. */
static void import_files(pk_store *s, const char *tmpdir)
{
    char serr[512] = ""; /* what the store says on failure */
    char path[700], data[1024];
    int64_t n = 0, ds = 0, cnt = 0;
    snprintf(path, sizeof path, "%s/in.jsonl", tmpdir);
    snprintf(data, sizeof data,
             "{\"text\":\"%s\",\"label\":\"a\"}\n{\"prompt\":\"%s\",\"response\":\"%s\"}\n"
             "{\"text\":\"%s plain\"}\n",
             secrets[0], secrets[1], secrets[2], secrets[3]);
    write_text(path, data);
    pk_import_opts o = {.format = PK_IMPORT_AUTO, .paragraphs = 0};
    PK_CHECK_EQ(pk_store_import(s, path, "notes", o, &n, serr, sizeof serr), PK_OK);
    PK_CHECK_EQ(n, 3);
    /* All or nothing: a bad third line adds nothing (the dataset stays at 3). */
    snprintf(path, sizeof path, "%s/bad.jsonl", tmpdir);
    write_text(path, "{\"text\":\"new one\"}\n{\"text\":\"new two\"}\n{\"text\":oops}\n");
    PK_CHECK_EQ(pk_store_import(s, path, "notes", o, &n, serr, sizeof serr), PK_ERR_FORMAT);
    PK_CHECK(strstr(serr, "bad.jsonl: line 3") != NULL);
    PK_CHECK_EQ(pk_store_dataset_id(s, "notes", &ds, serr, sizeof serr), PK_OK);
    PK_CHECK_EQ(pk_store_example_count(s, ds, &cnt, serr, sizeof serr), PK_OK);
    PK_CHECK_EQ(cnt, 3);
    /* A failed import into a new dataset leaves no dataset behind. */
    PK_CHECK_EQ(pk_store_import(s, path, "fresh", o, &n, serr, sizeof serr), PK_ERR_FORMAT);
    PK_CHECK_EQ(pk_store_dataset_id(s, "fresh", &ds, serr, sizeof serr), PK_ERR_NOTFOUND);
    PK_CHECK_EQ(pk_store_import(s, "/nonexistent/x.jsonl", "fresh", o, &n, serr, sizeof serr),
                PK_ERR_IO);
    PK_CHECK(strstr(serr, "/nonexistent/x.jsonl") != NULL);
    snprintf(path, sizeof path, "%s/in.dat", tmpdir);
    write_text(path, "x\n");
    PK_CHECK_EQ(pk_store_import(s, path, "fresh", o, &n, serr, sizeof serr), PK_ERR_ARG);
    /* CSV and TXT into other datasets. */
    snprintf(path, sizeof path, "%s/in.csv", tmpdir);
    write_text(path, "text,text2,label\nhello,world,1\n\"multi\nline\",,0\n");
    PK_CHECK_EQ(pk_store_import(s, path, "pairs", o, &n, serr, sizeof serr), PK_OK);
    PK_CHECK_EQ(n, 2);
    snprintf(path, sizeof path, "%s/in.txt", tmpdir);
    write_text(path, "first para\nmore\n\nsecond para\n");
    pk_import_opts po = {.format = PK_IMPORT_TXT, .paragraphs = 1};
    PK_CHECK_EQ(pk_store_import(s, path, "paras", po, &n, serr, sizeof serr), PK_OK);
    PK_CHECK_EQ(n, 2);
}

/* Reads "notes" back and lists the datasets; the ids of "notes" go to *ids (owned, n of them). */
static void read_back(pk_store *s, int64_t ds, int64_t **ids, int64_t *n)
{
    PK_CHECK_EQ(pk_store_example_ids(s, ds, ids, n, NULL, 0), PK_OK);
    PK_CHECK_EQ(*n, 3);
    for (int64_t i = 0; i < *n; i++) {
        pk_example *e = NULL;
        PK_CHECK_EQ(pk_store_example_get(s, ds, (*ids)[i], &e, NULL, 0), PK_OK);
        if (!e)
            continue;
        PK_CHECK_EQ(e->id, (*ids)[i]);
        if (i == 0)
            PK_CHECK(!strcmp(e->text, secrets[0]) && !strcmp(e->label, "a") && !e->prompt);
        if (i == 1)
            PK_CHECK(!strcmp(e->prompt, secrets[1]) && !strcmp(e->response, secrets[2]) &&
                     !e->text);
        pk_example_free(e);
    }
    pk_dataset_info *dl = NULL;
    size_t nd = 0;
    PK_CHECK_EQ(pk_store_dataset_list(s, &dl, &nd, NULL, 0), PK_OK);
    PK_CHECK_EQ(nd, 3);
    if (nd == 3)
        PK_CHECK(!strcmp(dl[0].name, "notes") && dl[0].n_examples == 3 && dl[0].sealed_bytes > 0 &&
                 !strcmp(dl[1].name, "pairs") && !strcmp(dl[2].name, "paras"));
    free(dl);
}

/* No secret and no passphrase in any file of the home (nor in SQLite's temp dir when closed). */
static void check_no_plaintext(pk_store *s)
{
    for (size_t i = 0; i < 4; i++) /* while open: db, -wal, -shm */
        PK_CHECK_EQ(dir_has(home, secrets[i], strlen(secrets[i])), 0);
    PK_CHECK_EQ(dir_has(home, TEST_PASS, strlen(TEST_PASS)), 0);
    pk_store_close(s);
    for (size_t i = 0; i < 4; i++) {
        PK_CHECK_EQ(dir_has(home, secrets[i], strlen(secrets[i])), 0);
        PK_CHECK_EQ(dir_has(getenv("SQLITE_TMPDIR"), secrets[i], strlen(secrets[i])), 0);
    }
    PK_CHECK_EQ(dir_has(home, TEST_PASS, strlen(TEST_PASS)), 0);
}

static void test_import_and_plaintext(const char *tmpdir)
{
    int64_t n = 0, ds = 0, *ids = NULL;
    pk_store *s = open_ok(TEST_PASS);
    if (!s)
        return;
    import_files(s, tmpdir);
    PK_CHECK_EQ(pk_store_dataset_id(s, "notes", &ds, NULL, 0), PK_OK);
    read_back(s, ds, &ids, &n);
    /* Forget one example, then check nothing readable is left on disk anywhere. */
    int64_t forgotten = ids[2];
    PK_CHECK_EQ(pk_store_example_forget(s, forgotten, NULL, 0), PK_OK);
    PK_CHECK_EQ(pk_store_example_forget(s, forgotten, NULL, 0), PK_ERR_NOTFOUND);
    pk_example *gone = NULL;
    PK_CHECK_EQ(pk_store_example_get(s, ds, forgotten, &gone, NULL, 0), PK_ERR_NOTFOUND);
    free(ids);
    check_no_plaintext(s);
}

/* Raw access to the sealed rows, as an attacker with the file would have. */
typedef struct row {
    char table[16];
    char key[64]; /* WHERE clause identifying the row */
    char col[16];
} row;

static int list_sealed(row *rows, int max)
{
    sqlite3 *db = NULL;
    sqlite3_stmt *q = NULL;
    int n = 0;
    sqlite3_open(db_path, &db);
    sqlite3_prepare_v2(db,
                       "SELECT 'examples', 'id=' || id, 'record' FROM examples UNION ALL "
                       "SELECT 'checkpoints', 'run_id=' || run_id || ' AND step=' || step, "
                       "'record' FROM checkpoints UNION ALL "
                       "SELECT 'identity', 'id=1', 'sealed_secret' FROM identity UNION ALL "
                       "SELECT 'keyring', 'id=1', 'keycheck' FROM keyring",
                       -1, &q, NULL);
    while (n < max && sqlite3_step(q) == SQLITE_ROW) {
        snprintf(rows[n].table, sizeof rows[n].table, "%s", sqlite3_column_text(q, 0));
        snprintf(rows[n].key, sizeof rows[n].key, "%s", sqlite3_column_text(q, 1));
        snprintf(rows[n].col, sizeof rows[n].col, "%s", sqlite3_column_text(q, 2));
        n++;
    }
    sqlite3_finalize(q);
    sqlite3_close(db);
    return n;
}

static int get_blob(const row *r, unsigned char *out, int cap)
{
    sqlite3 *db = NULL;
    sqlite3_stmt *q = NULL;
    char sql[256];
    int n = -1;
    snprintf(sql, sizeof sql, "SELECT %s FROM %s WHERE %s", r->col, r->table, r->key);
    sqlite3_open(db_path, &db);
    sqlite3_busy_timeout(db, 5000);
    sqlite3_prepare_v2(db, sql, -1, &q, NULL);
    if (sqlite3_step(q) == SQLITE_ROW && sqlite3_column_bytes(q, 0) <= cap) {
        n = sqlite3_column_bytes(q, 0);
        memcpy(out, sqlite3_column_blob(q, 0), (size_t)n);
    }
    sqlite3_finalize(q);
    sqlite3_close(db);
    return n;
}

static void put_blob(const row *r, const unsigned char *b, int n)
{
    sqlite3 *db = NULL;
    sqlite3_stmt *q = NULL;
    char sql[256];
    snprintf(sql, sizeof sql, "UPDATE %s SET %s = ? WHERE %s", r->table, r->col, r->key);
    sqlite3_open(db_path, &db);
    sqlite3_busy_timeout(db, 5000);
    sqlite3_exec(db, "PRAGMA synchronous = OFF", NULL, NULL, NULL); /* speed; not under test */
    sqlite3_prepare_v2(db, sql, -1, &q, NULL);
    sqlite3_bind_blob(q, 1, b, n, SQLITE_STATIC);
    PK_CHECK_EQ(sqlite3_step(q), SQLITE_DONE);
    sqlite3_finalize(q);
    sqlite3_close(db);
}

/* Reads every sealed row through the API: examples, checkpoints, identity (via a signature),
 * and the keycheck (via open). Returns a bit mask of rows that FAILED with PK_ERR_AUTH, and -1
 * if any failed otherwise. */
static long long read_all_rows(const row *rows, int n, int reopen_keyring)
{
    long long failed = 0;
    pk_store *s = NULL;
    char err[256];
    pk_status st = pk_store_open(home, TEST_PASS, strlen(TEST_PASS), &s, err, sizeof err);
    for (int i = 0; i < n; i++) {
        if (!strcmp(rows[i].table, "keyring")) {
            if (st == PK_ERR_AUTH)
                failed |= 1ll << i;
            else if (st != PK_OK)
                return -1;
        }
    }
    if (st != PK_OK)
        return (reopen_keyring && st == PK_ERR_AUTH) ? failed : -1;
    for (int i = 0; i < n; i++) {
        const row *r = &rows[i];
        pk_status rs = PK_OK;
        if (!strcmp(r->table, "examples")) {
            int64_t id = atoll(r->key + 3), ds = 0;
            pk_example *e = NULL;
            rs = pk_store_example_dataset(s, id, &ds, NULL, 0);
            if (rs == PK_OK)
                rs = pk_store_example_get(s, ds, id, &e, NULL, 0);
            pk_example_free(e);
        } else if (!strcmp(r->table, "checkpoints")) {
            int64_t run = 0, step = 0, at = 0;
            void *b = NULL;
            size_t len = 0;
            sscanf(r->key, "run_id=%lld AND step=%lld", (long long *)&run, (long long *)&step);
            rs = pk_store_checkpoint_get(s, run, step, &at, &b, &len, NULL, 0);
            pk_store_blob_free(b, len);
        } else if (!strcmp(r->table, "identity")) {
            uint8_t sig[64];
            rs = pk_store_identity_sign(s, "m", 1, sig, NULL, 0);
        }
        if (rs == PK_ERR_AUTH)
            failed |= 1ll << i;
        else if (rs != PK_OK)
            failed = -1;
        if (failed < 0)
            break;
    }
    pk_store_close(s);
    return failed;
}

static void test_tamper(void)
{
    pk_store *s = open_ok(TEST_PASS);
    int64_t run = 0, ds = 0;
    if (!s)
        return;
    PK_CHECK_EQ(pk_store_dataset_id(s, "pairs", &ds, NULL, 0), PK_OK);
    PK_CHECK_EQ(pk_store_run_create(s, ds, "{}", "00", 10, &run, NULL, 0), PK_OK);
    PK_CHECK_EQ(pk_store_checkpoint_put(s, run, 3, "weights!", 8, NULL, 0), PK_OK);
    pk_store_close(s);
    row rows[40];
    int n = list_sealed(rows, 40);
    PK_CHECK(n >= 9 && n < 40);
    PK_CHECK_EQ(read_all_rows(rows, n, 0), 0);
    unsigned char orig[512], mod[512];
    int bad_flips = 0, flips = 0;
    for (int i = 0; i < n; i++) {
        int len = get_blob(&rows[i], orig, sizeof orig);
        PK_CHECK(len > (int)PK_RECORD_OVERHEAD);
        for (int b = 0; b < len; b++) {
            memcpy(mod, orig, (size_t)len);
            mod[b] ^= (unsigned char)(1u << (b % 8));
            put_blob(&rows[i], mod, len);
            long long f = read_all_rows(rows, n, 1);
            flips++;
            /* Exactly row i fails (the keycheck makes the whole open fail: that is the point). */
            if (f != (1ll << i))
                bad_flips++;
        }
        put_blob(&rows[i], orig, len);
    }
    PK_CHECK_EQ(bad_flips, 0);
    fprintf(stderr, "tamper: %d single-byte flips over %d sealed records\n", flips, n);
    /* Every swap of two example records, or of an example with a checkpoint. */
    int bad_swaps = 0, swaps = 0;
    for (int i = 0; i < n; i++) {
        for (int j = i + 1; j < n; j++) {
            if (strcmp(rows[i].table, "examples") && strcmp(rows[j].table, "examples"))
                continue;
            int li = get_blob(&rows[i], orig, sizeof orig),
                lj = get_blob(&rows[j], mod, sizeof mod);
            put_blob(&rows[i], mod, lj);
            put_blob(&rows[j], orig, li);
            long long f = read_all_rows(rows, n, 1);
            swaps++;
            long long want = (1ll << i) | (1ll << j);
            if (!strcmp(rows[j].table, "keyring"))
                want = 1ll << j; /* the open itself fails */
            if (f != want) {
                bad_swaps++;
                fprintf(stderr, "swap %s/%s: mask %llx want %llx\n", rows[i].key, rows[j].key,
                        (unsigned long long)f, (unsigned long long)want);
            }
            put_blob(&rows[i], orig, li);
            put_blob(&rows[j], mod, lj);
        }
    }
    PK_CHECK_EQ(bad_swaps, 0);
    PK_CHECK_EQ(read_all_rows(rows, n, 0), 0);
    fprintf(stderr, "tamper: %d swaps\n", swaps);
}

/* A run's step log (duplicate steps and unknown runs refused), status, listing and evals. */
static void check_run_log(pk_store *s, int64_t run)
{
    int64_t *ids = NULL, n = 0;
    pk_step_row rows[2] = {{0, 0, 0xfedcba9876543210ull, 0.5f, 1.f, 2.f, 1e-6f, 1e-3f},
                           {0, 1, 7, -0.25f, 3.f, 4.f, 1e-6f, 1e-3f}};
    PK_CHECK_EQ(pk_store_steps_append(s, run, rows, 2, NULL, 0), PK_OK);
    rows[0].step = rows[1].step = 1;
    PK_CHECK_EQ(pk_store_steps_append(s, run, rows, 2, NULL, 0), PK_OK);
    PK_CHECK_EQ(pk_store_steps_append(s, run, rows, 2, NULL, 0), PK_ERR_DB);  /* duplicate step */
    PK_CHECK_EQ(pk_store_steps_append(s, 9999, rows, 1, NULL, 0), PK_ERR_DB); /* no such run (FK) */
    /* the step log commits at synchronous=NORMAL, and the connection is FULL (2) again after it,
     * whether the append failed or not (DESIGN 6) */
    sqlite3_stmt *q = NULL;
    PK_CHECK_EQ(sqlite3_prepare_v2(s->db, "PRAGMA synchronous", -1, &q, NULL), SQLITE_OK);
    PK_CHECK_EQ(sqlite3_step(q), SQLITE_ROW);
    PK_CHECK_EQ(sqlite3_column_int(q, 0), 2);
    sqlite3_finalize(q);
    pk_run_info ri;
    PK_CHECK_EQ(pk_store_run_get(s, run, &ri, NULL, 0), PK_OK);
    PK_CHECK_EQ(ri.steps_done, 2);
    PK_CHECK(!strcmp(ri.status, "running") && !strcmp(ri.config_json, "{\"lr\":1e-6}"));
    pk_run_info_clear(&ri);
    PK_CHECK_EQ(pk_store_run_set_status(s, run, "done", NULL, 0), PK_OK);
    PK_CHECK_EQ(pk_store_run_get(s, run, &ri, NULL, 0), PK_OK);
    PK_CHECK(!strcmp(ri.status, "done"));
    pk_run_info_clear(&ri);
    pk_step_row *got = NULL;
    size_t ng = 0;
    PK_CHECK_EQ(pk_store_steps_read(s, run, 0, 10, &got, &ng, NULL, 0), PK_OK);
    PK_CHECK_EQ(ng, 4);
    if (ng == 4)
        PK_CHECK(got[0].seed == 0xfedcba9876543210ull && got[1].g == -0.25f && got[3].step == 1 &&
                 got[3].q_index == 1);
    free(got);
    PK_CHECK_EQ(pk_store_run_list(s, &ids, &n, NULL, 0), PK_OK);
    PK_CHECK(n >= 1 && ids[0] == run);
    free(ids);
    PK_CHECK_EQ(pk_store_eval_append(s, run, 0, 2.5, (double)NAN, NULL, 0), PK_OK);
    PK_CHECK_EQ(pk_store_eval_append(s, run, 10, 2.0, 0.75, NULL, 0), PK_OK);
    int64_t *es = NULL;
    double *el = NULL, *ea = NULL;
    size_t ne = 0;
    PK_CHECK_EQ(pk_store_eval_read(s, run, &es, &el, &ea, &ne, NULL, 0), PK_OK);
    PK_CHECK(ne == 2 && es[1] == 10 && el[0] == 2.5 && isnan(ea[0]) && ea[1] == 0.75);
    free(es), free(el), free(ea);
}

/* Checkpoints: the newest at or below max_step. */
static void check_checkpoints(pk_store *s, int64_t run)
{
    float w1[3] = {1, 2, 3}, w2[3] = {4, 5, 6};
    PK_CHECK_EQ(pk_store_checkpoint_put(s, run, 5, w1, sizeof w1, NULL, 0), PK_OK);
    PK_CHECK_EQ(pk_store_checkpoint_put(s, run, 9, w2, sizeof w2, NULL, 0), PK_OK);
    void *b = NULL;
    size_t bl = 0;
    int64_t at = 0;
    PK_CHECK_EQ(pk_store_checkpoint_get(s, run, 8, &at, &b, &bl, NULL, 0), PK_OK);
    PK_CHECK(at == 5 && bl == sizeof w1 && !memcmp(b, w1, bl));
    pk_store_blob_free(b, bl);
    PK_CHECK_EQ(pk_store_checkpoint_get(s, run, 4, &at, &b, &bl, NULL, 0), PK_ERR_NOTFOUND);
}

/* State keys overwrite; the outbox is idempotent per key and drains in order. */
static void check_state_and_outbox(pk_store *s)
{
    char *v = NULL, *k = NULL;
    PK_CHECK_EQ(pk_store_state_get(s, "server", &v, NULL, 0), PK_ERR_NOTFOUND);
    PK_CHECK_EQ(pk_store_state_set(s, "server", "http://x", NULL, 0), PK_OK);
    PK_CHECK_EQ(pk_store_state_set(s, "server", "http://y", NULL, 0), PK_OK);
    PK_CHECK_EQ(pk_store_state_get(s, "server", &v, NULL, 0), PK_OK);
    PK_CHECK(v && !strcmp(v, "http://y"));
    free(v);
    PK_CHECK_EQ(pk_store_outbox_put(s, "k1", "{\"a\":1}", NULL, 0), PK_OK);
    PK_CHECK_EQ(pk_store_outbox_put(s, "k2", "{\"a\":2}", NULL, 0), PK_OK);
    PK_CHECK_EQ(pk_store_outbox_put(s, "k1", "{\"dup\":1}", NULL, 0), PK_OK); /* idempotent */
    PK_CHECK_EQ(pk_store_outbox_peek(s, &k, &v, NULL, 0), PK_OK);
    PK_CHECK(k && v && !strcmp(k, "k1") && !strcmp(v, "{\"a\":1}"));
    free(k), free(v);
    PK_CHECK_EQ(pk_store_outbox_done(s, "k1", NULL, 0), PK_OK);
    PK_CHECK_EQ(pk_store_outbox_peek(s, &k, &v, NULL, 0), PK_OK);
    PK_CHECK(k && !strcmp(k, "k2"));
    free(k), free(v);
    PK_CHECK_EQ(pk_store_outbox_done(s, "k2", NULL, 0), PK_OK);
    PK_CHECK_EQ(pk_store_outbox_peek(s, &k, &v, NULL, 0), PK_ERR_NOTFOUND);
}

static void test_runs_and_sync(void)
{
    pk_store *s = open_ok(TEST_PASS);
    if (!s)
        return;
    int64_t run = 0;
    PK_CHECK_EQ(pk_store_run_create(s, 0, "{\"lr\":1e-6}", "ab", 100, &run, NULL, 0), PK_OK);
    check_run_log(s, run);
    check_checkpoints(s, run);
    check_state_and_outbox(s);
    /* Identity: signatures verify against the public key. */
    uint8_t pk[32], sig[64];
    PK_CHECK_EQ(pk_store_identity_public(s, pk, NULL, 0), PK_OK);
    PK_CHECK_EQ(pk_store_identity_sign(s, "body", 4, sig, NULL, 0), PK_OK);
    PK_CHECK_EQ(pk_sign_verify(pk, "body", 4, sig), PK_OK);
    PK_CHECK_EQ(pk_sign_verify(pk, "bodY", 4, sig), PK_ERR_AUTH);
    /* Forget a dataset used by a run: the run keeps its log, dataset id 0. */
    int64_t ds = 0, run2 = 0;
    pk_run_info ri;
    PK_CHECK_EQ(pk_store_dataset_id(s, "paras", &ds, NULL, 0), PK_OK);
    PK_CHECK_EQ(pk_store_run_create(s, ds, "{}", "cd", 1, &run2, NULL, 0), PK_OK);
    PK_CHECK_EQ(pk_store_dataset_forget(s, "paras", NULL, 0), PK_OK);
    PK_CHECK_EQ(pk_store_dataset_forget(s, "paras", NULL, 0), PK_ERR_NOTFOUND);
    PK_CHECK_EQ(pk_store_run_get(s, run2, &ri, NULL, 0), PK_OK);
    PK_CHECK_EQ(ri.dataset_id, 0);
    pk_run_info_clear(&ri);
    pk_store_close(s);
}

static void test_rekey(void)
{
    pk_store *s = open_ok(TEST_PASS);
    uint8_t pk1[32], pk2[32], sig[64];
    char err[256];
    if (!s)
        return;
    PK_CHECK_EQ(pk_store_identity_public(s, pk1, NULL, 0), PK_OK);
    PK_CHECK_EQ(pk_store_rekey(s, "new pass", 8, tiny_params(), NULL, 0), PK_OK);
    /* The handle keeps working with the new keys. */
    int64_t ds = 0, *ids = NULL, n = 0;
    PK_CHECK_EQ(pk_store_dataset_id(s, "notes", &ds, NULL, 0), PK_OK);
    PK_CHECK_EQ(pk_store_example_ids(s, ds, &ids, &n, NULL, 0), PK_OK);
    pk_example *e = NULL;
    PK_CHECK(n == 2);
    if (n)
        PK_CHECK_EQ(pk_store_example_get(s, ds, ids[0], &e, NULL, 0), PK_OK);
    PK_CHECK(e && !strcmp(e->text, secrets[0]));
    pk_example_free(e);
    pk_store_close(s);
    s = NULL;
    PK_CHECK_EQ(pk_store_open(home, TEST_PASS, strlen(TEST_PASS), &s, err, sizeof err),
                PK_ERR_AUTH);
    s = open_ok("new pass");
    if (!s) {
        free(ids);
        return;
    }
    PK_CHECK_EQ(pk_store_example_get(s, ds, ids[1], &e, NULL, 0), PK_OK);
    PK_CHECK(e && !strcmp(e->prompt, secrets[1]));
    pk_example_free(e);
    PK_CHECK_EQ(pk_store_identity_public(s, pk2, NULL, 0), PK_OK);
    PK_CHECK(!memcmp(pk1, pk2, 32));
    PK_CHECK_EQ(pk_store_identity_sign(s, "x", 1, sig, NULL, 0), PK_OK);
    PK_CHECK_EQ(pk_sign_verify(pk1, "x", 1, sig), PK_OK);
    PK_CHECK_EQ(pk_store_rekey(s, TEST_PASS, strlen(TEST_PASS), tiny_params(), NULL, 0), PK_OK);
    pk_store_close(s);
    free(ids);
}

/* Two processes: one holds the write lock longer than the busy timeout -> PK_ERR_BUSY with a
 * clear message; two importers at once both succeed (they wait), and the counts add up. */
static void test_two_processes(const char *tmpdir)
{
    char serr[512] = ""; /* what the store says on failure */
    char path[700];
    snprintf(path, sizeof path, "%s/many.txt", tmpdir);
    write_lines(path, 3000, "line ", " of a concurrent import");
    pid_t kids[2];
    for (int k = 0; k < 2; k++) {
        kids[k] = fork();
        if (kids[k] == 0) {
            pk_store *s = NULL;
            char err[256], name[16];
            int64_t n = 0;
            snprintf(name, sizeof name, "conc%d", k);
            pk_import_opts o = {.format = PK_IMPORT_TXT, .paragraphs = 0};
            if (pk_store_open(home, TEST_PASS, strlen(TEST_PASS), &s, err, sizeof err) != PK_OK)
                _exit(3);
            pk_status st = pk_store_import(s, path, name, o, &n, serr, sizeof serr);
            pk_store_close(s);
            _exit(st == PK_OK && n == 3000 ? 0 : st == PK_ERR_BUSY ? 2 : 1);
        }
    }
    for (int k = 0; k < 2; k++) {
        int ws = 0;
        waitpid(kids[k], &ws, 0);
        PK_CHECK(WIFEXITED(ws) && (WEXITSTATUS(ws) == 0 || WEXITSTATUS(ws) == 2));
    }
    /* A raw writer holding the lock: the store says busy after its timeout. */
    sqlite3 *db = NULL;
    sqlite3_open(db_path, &db);
    PK_CHECK_EQ(sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL), SQLITE_OK);
    pk_store *s = open_ok(TEST_PASS); /* readers never wait for writers (WAL) */
    if (s) {
        int64_t n = 0;
        pk_import_opts o = {.format = PK_IMPORT_TXT, .paragraphs = 0};
        PK_CHECK_EQ(pk_store_import(s, path, "blocked", o, &n, serr, sizeof serr), PK_ERR_BUSY);
        PK_CHECK(strstr(serr, "busy") != NULL);
        pk_store_close(s);
    }
    sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
    sqlite3_close(db);
    s = open_ok(TEST_PASS);
    int64_t ds = 0, c0 = 0, c1 = 0;
    if (s && pk_store_dataset_id(s, "conc0", &ds, serr, sizeof serr) == PK_OK)
        PK_CHECK(pk_store_example_count(s, ds, &c0, serr, sizeof serr) == PK_OK && c0 == 3000);
    if (s && pk_store_dataset_id(s, "conc1", &ds, serr, sizeof serr) == PK_OK)
        PK_CHECK(pk_store_example_count(s, ds, &c1, serr, sizeof serr) == PK_OK && c1 == 3000);
    PK_CHECK(c0 + c1 >= 3000);
    PK_CHECK_EQ(pk_store_dataset_id(s, "blocked", &ds, serr, sizeof serr), PK_ERR_NOTFOUND);
    pk_store_close(s);
}

int main(void)
{
    char tmp[256], sqltmp[300];
    PK_CHECK_EQ(pk_crypto_global_init(), PK_OK);
    make_tmp_home(tmp, sizeof tmp, "store");
    snprintf(sqltmp, sizeof sqltmp, "%s/sqltmp", tmp);
    mkdir(sqltmp, 0700);
    setenv("SQLITE_TMPDIR", sqltmp, 1); /* any SQLite temp file lands here, and is scanned */
    snprintf(home, sizeof home, "%s/home/agent", tmp);
    pk_store_db_path(home, db_path, sizeof db_path);
    test_parsers();
    test_init_open();
    test_import_and_plaintext(tmp);
    test_tamper();
    test_runs_and_sync();
    test_rekey();
    test_two_processes(tmp);
    rm_rf(tmp);
    return PK_TEST_DONE();
}
