/* test_tokenizer_cli.c: runs the built `pocketllm tokenize` and `bench tokenize` end to end:
 * JSONL encode/decode round trips (with NUL and non-ASCII text), --add-special, exit codes and
 * messages for bad input. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "pk_test.h"

#define BIN PK_BUILD_DIR "/cli/pocketllm"
#define TD  PK_SHARED_DIR "/testdata"

static char dir[] = "/tmp/pk_tok_cli_XXXXXX";

static void write_text(const char *name, const char *s)
{
    char p[256];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    FILE *f = fopen(p, "wb");
    PK_CHECK(f != NULL);
    if (f) {
        fputs(s, f);
        fclose(f);
    }
}

static char *read_text(const char *name)
{
    char p[256];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    FILE *f = fopen(p, "rb");
    if (!f)
        return NULL;
    static char buf[1 << 16];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    buf[n] = 0;
    fclose(f);
    return buf;
}

/* Runs "pocketllm ARGS < in > out 2> err"; returns the exit code. */
static int run(const char *args, const char *in, const char *out)
{
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "%s %s < %s/%s > %s/%s 2> %s/err", BIN, args, dir, in, dir, out, dir);
    int rc = system(cmd);
    return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

int main(void)
{
    if (access(BIN, X_OK) != 0) {
        fprintf(stderr, "test_tokenizer_cli: %s is not built\n", BIN);
        return 1;
    }
    PK_CHECK(mkdtemp(dir) != NULL);
    write_text("in.jsonl", "{\"text\": \"Hello world\"}\n"
                           "{\"id\": 7, \"meta\": {\"text\": 1}, \"text\": \"a\\u0000b caf\\u00e9 "
                           "\\ud83d\\ude00<|endoftext|>\"}\n");
    PK_CHECK_EQ(run("tokenize --model " TD "/tokenizers/gpt2", "in.jsonl", "ids.jsonl"), 0);
    char *o = read_text("ids.jsonl");
    PK_CHECK(o && !strncmp(o, "{\"ids\": [15496, 995]}\n{\"ids\": [64, 188, 65", 40));
    PK_CHECK(o && strstr(o, "50256]}\n") != NULL);
    PK_CHECK_EQ(run("tokenize --decode --model " TD "/tokenizers/gpt2", "ids.jsonl", "dec.jsonl"),
                0);
    o = read_text("dec.jsonl");
    PK_CHECK(o &&
             !strcmp(o, "{\"text\": \"Hello world\"}\n"
                        "{\"text\": \"a\\u0000b caf\xc3\xa9 \xf0\x9f\x98\x80<|endoftext|>\"}\n"));
    if (o)
        fprintf(stderr, "decoded: %s", o);

    /* SentencePiece with BOS, and --skip-special on decode */
    write_text("s.jsonl", "{\"text\": \"Once upon a time\"}\n");
    PK_CHECK_EQ(
        run("tokenize --add-special --model " TD "/models/stories260k", "s.jsonl", "sids.jsonl"),
        0);
    o = read_text("sids.jsonl");
    PK_CHECK(o && !strncmp(o, "{\"ids\": [1, 403, 407, ", 22));
    PK_CHECK_EQ(run("tokenize --decode --skip-special --model " TD "/models/stories260k",
                    "sids.jsonl", "sdec.jsonl"),
                0);
    o = read_text("sdec.jsonl");
    PK_CHECK(o && !strcmp(o, "{\"text\": \"Once upon a time\"}\n"));

    /* errors: malformed line (1), id out of range (1), missing --model (2), bad dir (1) */
    write_text("bad.jsonl", "{\"text\": \"ok\"}\n{\"text\": 5}\n");
    PK_CHECK_EQ(run("tokenize --model " TD "/tokenizers/gpt2", "bad.jsonl", "o"), 1);
    o = read_text("err");
    PK_CHECK(o && strstr(o, "stdin line 2") != NULL);
    write_text("badids.jsonl", "{\"ids\": [1, 99999999]}\n");
    PK_CHECK_EQ(run("tokenize --decode --model " TD "/tokenizers/gpt2", "badids.jsonl", "o"), 1);
    o = read_text("err");
    PK_CHECK(o && strstr(o, "ids[1]") != NULL);
    PK_CHECK_EQ(run("tokenize", "in.jsonl", "o"), 2);
    PK_CHECK_EQ(run("tokenize --model /nonexistent/m", "in.jsonl", "o"), 1);
    o = read_text("err");
    PK_CHECK(o && strstr(o, "/nonexistent/m") != NULL);
    PK_CHECK_EQ(run("tokenize --bogus", "in.jsonl", "o"), 2);
    PK_CHECK_EQ(run("tokenize --help", "in.jsonl", "o"), 0);
    o = read_text("o");
    PK_CHECK(o && strstr(o, "examples:") != NULL);

    /* bench prints one JSON line with the fields */
    write_text("prose.txt", "The quick brown fox jumps over the lazy dog.\nIt was a good day.\n");
    PK_CHECK_EQ(run("bench tokenize --model " TD "/tokenizers/gpt2 --file PROSE", "in.jsonl", "o"),
                1); /* PROSE does not exist */
    char args[512];
    snprintf(args, sizeof args, "bench tokenize --model %s --file %s/prose.txt --repeat 2",
             TD "/tokenizers/gpt2", dir);
    PK_CHECK_EQ(run(args, "in.jsonl", "o"), 0);
    o = read_text("o");
    PK_CHECK(o && strstr(o, "\"mb_per_s\": ") && strstr(o, "\"bytes\": 128,") &&
             strstr(o, "\"tokens\": 36,"));
    if (o)
        fprintf(stderr, "bench: %s", o);

    const char *names[] = {"in.jsonl",   "ids.jsonl",  "dec.jsonl", "s.jsonl",
                           "sids.jsonl", "sdec.jsonl", "bad.jsonl", "badids.jsonl",
                           "o",          "err",        "prose.txt"};
    char p[256];
    for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
        snprintf(p, sizeof p, "%s/%s", dir, names[i]);
        unlink(p);
    }
    rmdir(dir);
    return PK_TEST_DONE();
}
