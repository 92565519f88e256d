/* test_tokenizer_cli.c: runs the built `pocketllm tokenize` and `bench tokenize` end to end:
 * JSONL encode/decode round trips (with NUL and non-ASCII text), --add-special, exit codes and
 * messages for bad input. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "pk_test.h"
#include "test_util.h"

#define BIN PK_BUILD_DIR "/cli/pocketllm"
#define TD  PK_SHARED_DIR "/testdata"

static char dir[] = "/tmp/pk_tok_cli_XXXXXX";

static void write_text(const char *name, const char *s)
{
    PK_CHECK(write_at(dir, name, s, strlen(s)) == 0);
}

/* dir/name as text (owned), or NULL. */
static char *read_text(const char *name)
{
    return slurp_at(dir, name, NULL);
}

/* Runs "pocketllm ARGS < in > out 2> err"; returns the exit code. */
static int run(const char *args, const char *in, const char *out)
{
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "%s %s < %s/%s > %s/%s 2> %s/err", BIN, args, dir, in, dir, out, dir);
    int rc = system(cmd);
    return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

/* GPT-2: JSONL text to ids and back, with a NUL, non-ASCII text and a special token. */
static void test_gpt2_round_trip(void)
{
    write_text("in.jsonl", "{\"text\": \"Hello world\"}\n"
                           "{\"id\": 7, \"meta\": {\"text\": 1}, \"text\": \"a\\u0000b caf\\u00e9 "
                           "\\ud83d\\ude00<|endoftext|>\"}\n");
    PK_CHECK_EQ(run("tokenize --model " TD "/tokenizers/gpt2", "in.jsonl", "ids.jsonl"), 0);
    char *o = read_text("ids.jsonl");
    PK_CHECK(o && !strncmp(o, "{\"ids\": [15496, 995]}\n{\"ids\": [64, 188, 65", 40));
    PK_CHECK(o && strstr(o, "50256]}\n") != NULL);
    free(o);
    PK_CHECK_EQ(run("tokenize --decode --model " TD "/tokenizers/gpt2", "ids.jsonl", "dec.jsonl"),
                0);
    o = read_text("dec.jsonl");
    PK_CHECK(o &&
             !strcmp(o, "{\"text\": \"Hello world\"}\n"
                        "{\"text\": \"a\\u0000b caf\xc3\xa9 \xf0\x9f\x98\x80<|endoftext|>\"}\n"));
    if (o)
        fprintf(stderr, "decoded: %s", o);
    free(o);
}

/* SentencePiece with BOS, and --skip-special on decode. */
static void test_sentencepiece(void)
{
    write_text("s.jsonl", "{\"text\": \"Once upon a time\"}\n");
    PK_CHECK_EQ(
        run("tokenize --add-special --model " TD "/models/stories260k", "s.jsonl", "sids.jsonl"),
        0);
    char *o = read_text("sids.jsonl");
    PK_CHECK(o && !strncmp(o, "{\"ids\": [1, 403, 407, ", 22));
    free(o);
    PK_CHECK_EQ(run("tokenize --decode --skip-special --model " TD "/models/stories260k",
                    "sids.jsonl", "sdec.jsonl"),
                0);
    o = read_text("sdec.jsonl");
    PK_CHECK(o && !strcmp(o, "{\"text\": \"Once upon a time\"}\n"));
    free(o);
}

/* The file name holds needle (the command's stderr or stdout). */
static int file_has(const char *name, const char *needle)
{
    char *o = read_text(name);
    int r = o && strstr(o, needle) != NULL;
    free(o);
    return r;
}

/* Errors: malformed line (1), id out of range (1), missing --model (2), bad dir (1). */
static void test_errors(void)
{
    write_text("bad.jsonl", "{\"text\": \"ok\"}\n{\"text\": 5}\n");
    PK_CHECK_EQ(run("tokenize --model " TD "/tokenizers/gpt2", "bad.jsonl", "o"), 1);
    PK_CHECK(file_has("err", "stdin line 2"));
    write_text("badids.jsonl", "{\"ids\": [1, 99999999]}\n");
    PK_CHECK_EQ(run("tokenize --decode --model " TD "/tokenizers/gpt2", "badids.jsonl", "o"), 1);
    PK_CHECK(file_has("err", "ids[1]"));
    PK_CHECK_EQ(run("tokenize", "in.jsonl", "o"), 2);
    PK_CHECK_EQ(run("tokenize --model /nonexistent/m", "in.jsonl", "o"), 1);
    PK_CHECK(file_has("err", "/nonexistent/m"));
    PK_CHECK_EQ(run("tokenize --bogus", "in.jsonl", "o"), 2);
    PK_CHECK_EQ(run("tokenize --help", "in.jsonl", "o"), 0);
    PK_CHECK(file_has("o", "examples:"));
}

/* bench prints one JSON line with the fields. */
static void test_bench(void)
{
    write_text("prose.txt", "The quick brown fox jumps over the lazy dog.\nIt was a good day.\n");
    PK_CHECK_EQ(run("bench tokenize --model " TD "/tokenizers/gpt2 --file PROSE", "in.jsonl", "o"),
                1); /* PROSE does not exist */
    char args[512];
    snprintf(args, sizeof args, "bench tokenize --model %s --file %s/prose.txt --repeat 2",
             TD "/tokenizers/gpt2", dir);
    PK_CHECK_EQ(run(args, "in.jsonl", "o"), 0);
    char *o = read_text("o");
    PK_CHECK(o && strstr(o, "\"mb_per_s\": ") && strstr(o, "\"bytes\": 128,") &&
             strstr(o, "\"tokens\": 36,"));
    if (o)
        fprintf(stderr, "bench: %s", o);
    free(o);
}

int main(void)
{
    if (access(BIN, X_OK) != 0) {
        fprintf(stderr, "test_tokenizer_cli: %s is not built\n", BIN);
        return 1;
    }
    PK_CHECK(mkdtemp(dir) != NULL);
    test_gpt2_round_trip();
    test_sentencepiece();
    test_errors();
    test_bench();
    remove_tree(dir);
    return PK_TEST_DONE();
}
