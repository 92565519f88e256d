/* test_cli_data.c: the option tables of the store, tokenizer, sync and product commands through
 * the built pocketllm: `data export --out -` writes the JSONL to stdout (the same bytes as a file
 * export, and no file named "-"); options may come before a data sub-command; `plot` with two
 * --run options draws one series per run; a malformed number or an unknown option of a data
 * sub-command exits 2 naming the flag; `--help` of every one of these commands exits 0 and
 * lists each of its options. */
#include "pk_test.h"
#include "test_product_util.h"
#include "test_util.h"

#include <cjson/cJSON.h>
#include <stdarg.h>

#define STORIES PK_SHARED_DIR "/testdata/models/stories260k"

static char tmp[128];  /* the test's temporary directory */
static char home[256]; /* the agent home inside it */

/* Occurrences of needle in s. */
static int count(const char *s, const char *needle)
{
    int n = 0;
    for (const char *p = s ? strstr(s, needle) : NULL; p; p = strstr(p + 1, needle))
        n++;
    return n;
}

static void setup_home(void)
{
    char src[300];
    snprintf(home, sizeof home, "%s/home", tmp);
    snprintf(src, sizeof src, "%s/notes.jsonl", tmp);
    PK_CHECK_EQ(
        write_string(
            src,
            "{\"text\":\"plain words\"}\n"
            "{\"text\":\"q\\\"uote and back\\\\slash\",\"label\":\"pos\"}\n"
            "{\"prompt\":\"tab\\there\",\"response\":\"caf\\u00e9 \\ud83d\\ude00 line\\nbreak\"}\n"
            "{\"text\":\"the cat sat on the mat and the dog sat on the log\"}\n"),
        0);
    PK_CHECK_EQ(
        run_fmt(NULL, RUN_PLAIN, "%s init --home %s --opslimit 1 --memlimit 8192", POCKETLLM, home),
        0);
    PK_CHECK_EQ(run_fmt(NULL, RUN_PLAIN, "%s import %s --dataset notes --home %s --quiet",
                        POCKETLLM, src, home),
                0);
}

/* ---- data export --out - ------------------------------------------------------------------ */

/* Every line of out is a JSON object; returns how many, or -1 if one is not. */
static int jsonl_objects(const char *out, const char *want_text)
{
    int n = 0, seen = 0;
    for (const char *p = out; p && *p; n++) {
        const char *nl = strchr(p, '\n');
        size_t len = nl ? (size_t)(nl - p) : strlen(p);
        cJSON *j = cJSON_ParseWithLength(p, len);
        if (!cJSON_IsObject(j)) {
            cJSON_Delete(j);
            return -1;
        }
        const cJSON *t = cJSON_GetObjectItemCaseSensitive(j, "text");
        seen |= cJSON_IsString(t) && !strcmp(t->valuestring, want_text);
        cJSON_Delete(j);
        p += len + (nl ? 1 : 0);
    }
    return seen ? n : -1;
}

static void test_export_stdout(void)
{
    char *o = NULL, file[300], piped[300], dash[300];
    snprintf(file, sizeof file, "%s/export.jsonl", tmp);
    snprintf(piped, sizeof piped, "%s/piped.jsonl", tmp);
    snprintf(dash, sizeof dash, "%s/-", tmp);
    PK_CHECK_EQ(run_fmt(&o, RUN_PLAIN,
                        "cd %s && %s data export --dataset notes --out - --home %s 2>/dev/null",
                        tmp, POCKETLLM, home),
                0);
    PK_CHECK_EQ(jsonl_objects(o, "q\"uote and back\\slash"), 4);
    PK_CHECK(o && strstr(o, "\"response\":\"caf\xc3\xa9 \xf0\x9f\x98\x80 line\\nbreak\"") != NULL);
    free(o);
    PK_CHECK(file_bytes(dash) < 0); /* no file named "-" */
    /* the same bytes as an export to a file */
    PK_CHECK_EQ(run_fmt(NULL, RUN_PLAIN,
                        "%s data export --dataset notes --out - --home %s >%s 2>/dev/null",
                        POCKETLLM, home, piped),
                0);
    PK_CHECK_EQ(run_fmt(NULL, RUN_PLAIN,
                        "%s data export --dataset notes --out %s --home %s 2>/dev/null", POCKETLLM,
                        file, home),
                0);
    PK_CHECK(file_bytes(file) > 0 && files_equal(file, piped));
    /* options before the sub-command, a value that looks like a sub-command name included */
    PK_CHECK_EQ(
        run_fmt(&o, RUN_PLAIN, "%s data --limit 1 --dataset notes --home %s show", POCKETLLM, home),
        0);
    PK_CHECK(o && count(o, "\n") == 1 && strstr(o, "{\"id\":1,\"text\":\"plain words\"}"));
    free(o);
}

/* ---- usage errors of the data sub-commands ---------------------------------------------- */

/* `pocketllm ARGS` exits 2 and its message names `flag`. */
static void usage_error(const char *args, const char *flag)
{
    char *o = NULL;
    int rc = run_fmt(&o, RUN_PLAIN, "%s %s --home %s 2>&1", POCKETLLM, args, home);
    PK_CHECK_EQ(rc, 2);
    PK_CHECK(o && strstr(o, flag) != NULL);
    if (rc != 2 || !o || !strstr(o, flag))
        fprintf(stderr, "pocketllm %s: exit %d, output: %s\n", args, rc, o ? o : "");
    free(o);
}

static void test_usage_errors(void)
{
    usage_error("data show --dataset notes --limit ten", "--limit");
    usage_error("data show --dataset notes --limit=-1", "--limit");
    usage_error("data forget --id 1.5", "--id");
    usage_error("data list --bogus", "--bogus");
    usage_error("data export --dataset notes --out - --limit 3", "--limit");
    usage_error("data --frob list", "--frob");
    usage_error("data frobnicate", "frobnicate");
    usage_error("plot --run 1 --run one --out x.svg", "--run");
    PK_CHECK_EQ(run_fmt(NULL, RUN_PLAIN, "%s data 2>/dev/null", POCKETLLM), 2);
}

/* ---- plot with several runs ---------------------------------------------------------------- */

static void test_plot_runs(void)
{
    char svg[300], *o = NULL;
    snprintf(svg, sizeof svg, "%s/runs.svg", tmp);
    for (int i = 0; i < 2; i++)
        PK_CHECK_EQ(run_fmt(NULL, RUN_PLAIN,
                            "%s train --model %s --dataset notes --steps 3 --batch 2 --seq-len 16 "
                            "--lr %s --threads 1 --quiet --home %s >/dev/null",
                            POCKETLLM, STORIES, i ? "1e-3" : "1e-4", home),
                    0);
    PK_CHECK_EQ(run_fmt(NULL, RUN_PLAIN, "%s plot --run 1 --run 2 --out %s --home %s", POCKETLLM,
                        svg, home),
                0);
    PK_CHECK_EQ(run_fmt(&o, RUN_PLAIN, "cat %s", svg), 0);
    PK_CHECK_EQ(count(o, "<path "), 2);
    PK_CHECK_EQ(count(o, "<path id=\"run-1\""), 1);
    PK_CHECK_EQ(count(o, "<path id=\"run-2\""), 1);
    PK_CHECK(count(o, ">run 1</text>") == 1 && count(o, ">run 2</text>") == 1); /* the legend */
    free(o);
    /* one run: the plot as before (raw and smoothed train loss, eval points) */
    PK_CHECK_EQ(
        run_fmt(NULL, RUN_PLAIN, "%s plot --run 2 --out %s --home %s", POCKETLLM, svg, home), 0);
    PK_CHECK_EQ(run_fmt(&o, RUN_PLAIN, "cat %s", svg), 0);
    PK_CHECK(o && strstr(o, "id=\"train-loss-raw\"") && strstr(o, "id=\"train-loss\"") &&
             strstr(o, "id=\"eval-loss\""));
    free(o);
    /* a run without steps among several: an error, and no file */
    snprintf(svg, sizeof svg, "%s/none.svg", tmp);
    PK_CHECK_EQ(run_fmt(NULL, RUN_PLAIN, "%s plot --run 1 --run 99 --out %s --home %s 2>/dev/null",
                        POCKETLLM, svg, home),
                1);
    PK_CHECK(file_bytes(svg) < 0);
}

/* ---- --help lists every option -------------------------------------------------------------- */

typedef struct help_case {
    const char *cmd;
    const char *opts; /* space-separated */
} help_case;

static const help_case helps[] = {
    {"init", "--home --passphrase-file --opslimit --memlimit"},
    {"import", "--dataset --format --paragraphs --json --quiet --home --passphrase-file"},
    {"data list", "--json --home --passphrase-file"},
    {"data show", "--dataset --limit --home --passphrase-file"},
    {"data forget", "--dataset --id --home --passphrase-file"},
    {"data export", "--dataset --out --home --passphrase-file"},
    {"rekey", "--home --passphrase-file --new-passphrase-file --opslimit --memlimit"},
    {"bench store", "--examples --opslimit --memlimit --home"},
    {"tokenize", "--model --add-special --decode --skip-special --home"},
    {"bench tokenize", "--model --file --repeat --per-line --home"},
    {"sync", "--server --model --dataset --task --dp-clip --dp-noise --dp-delta --wait --batch "
             "--seq-len --trainable --catch-up --out --threads --json --quiet --home "
             "--passphrase-file"},
    {"plot", "--run --out --home --passphrase-file"},
    {"pull", "--revision --endpoint --out --retries --json --quiet --home"},
    {"export", "--run --out --dtype --seed-log --home --passphrase-file"},
};

/* An option row of a generated help: "\n  --name" then its placeholder or help text. */
static int lists_option(const char *help, const char *name, size_t len)
{
    for (const char *p = strstr(help, "\n  --"); p; p = strstr(p + 1, "\n  --"))
        if (!strncmp(p + 3, name, len) && (p[3 + len] == ' ' || p[3 + len] == '\n'))
            return 1;
    return 0;
}

static void test_help(void)
{
    for (size_t i = 0; i < sizeof helps / sizeof helps[0]; i++) {
        char *o = NULL;
        PK_CHECK_EQ(run_fmt(&o, RUN_PLAIN, "%s %s --help", POCKETLLM, helps[i].cmd), 0);
        PK_CHECK(o && !strncmp(o, "usage: pocketllm ", 17));
        for (const char *p = helps[i].opts; *p;) {
            size_t len = strcspn(p, " ");
            int ok = o && lists_option(o, p, len);
            PK_CHECK(ok);
            if (!ok)
                fprintf(stderr, "pocketllm %s --help lacks %.*s\n", helps[i].cmd, (int)len, p);
            p += len + (p[len] == ' ');
        }
        free(o);
    }
    char *o = NULL;
    PK_CHECK_EQ(run_fmt(&o, RUN_PLAIN, "%s data --help", POCKETLLM), 0);
    PK_CHECK(o && strstr(o, "data list") && strstr(o, "data show") && strstr(o, "data forget") &&
             strstr(o, "data export"));
    free(o);
}

int main(void)
{
    PK_CHECK(cli_test_env("test cli data passphrase", tmp, sizeof tmp, "clidata"));
    setup_home();
    test_export_stdout();
    test_usage_errors();
    test_plot_runs();
    test_help();
    rm_rf(tmp);
    return PK_TEST_DONE();
}
