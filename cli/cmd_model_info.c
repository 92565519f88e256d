/* cmd_model_info.c: `pocketllm model-info`, what a model directory holds: architecture, shape,
 * parameter count per storage dtype, weight bytes, tokenizer kind and the weights hash that a
 * coordinator's task names as base_model_hash (docs/PROTOCOL.md 2). Loading and hashing are
 * model/'s and mezo/'s; this file only finds the directory and prints. */
#include "cli.h"

#include "pk_mezo.h"
#include "pk_model.h"
#include "pk_tokenizer.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define N_DTYPES 3 /* PK_DTYPE_F32, F16, BF16 */

typedef struct info_opts {
    cli_common c;
    const char *model;
} info_opts;

#define T info_opts
static const cli_option info_table[] = {
    {"--model", CLI_STR, CLI_AT(T, model), 0, 0, NULL, "DIR|FILE",
     "a model directory, or a file in one (model.safetensors, config.json)"},
    CLI_JSON_OPT(T),
    CLI_END,
};
#undef T

static const cli_command info_cmd = {
    "model-info",
    "model-info --model DIR|FILE [--json]",
    "Prints a model's architecture, parameter count, storage dtypes, weight bytes, tokenizer\n"
    "kind and its weights hash (pk_weights_hash): the base_model_hash a coordinator's task\n"
    "file names (docs/PROTOCOL.md shows a task built from it).",
    info_table,
    0,
    "example:\n  pocketllm model-info --model models/stories260k --json"};

typedef struct model_facts {
    char dir[1024];
    const char *tokenizer;      /* sentencepiece | byte-level-bpe | none */
    const char *tokenizer_file; /* the file it was read from, or "" */
    int tokenizer_ok;           /* 1: pk_tokenizer_load accepts it */
    int64_t params, tensors;
    int64_t dtype_params[N_DTYPES];
    char hash[65];
} model_facts;

/* --model may name a file inside a model directory: use its directory. */
static int model_dir_of(const char *cmd, const char *arg, char *dir, size_t n)
{
    struct stat sb;
    if (stat(arg, &sb) != 0) {
        cli_error(cmd, "--model %s: %s", arg, strerror(errno));
        return -1;
    }
    char tmp[1024];
    snprintf(tmp, sizeof tmp, "%s", arg);
    snprintf(dir, n, "%s", S_ISDIR(sb.st_mode) ? arg : dirname(tmp));
    return 0;
}

static int file_in(const char *dir, const char *name)
{
    char p[1200];
    struct stat sb;
    snprintf(p, sizeof p, "%s/%s", dir, name);
    return stat(p, &sb) == 0 && S_ISREG(sb.st_mode);
}

/* 1 if tokenizer.json names a ByteLevel pre-tokenizer or decoder (GPT-2 family). */
static int json_is_byte_level(const char *dir)
{
    char p[1200], buf[65536];
    snprintf(p, sizeof p, "%s/tokenizer.json", dir);
    FILE *f = fopen(p, "rb");
    int found = 0;
    size_t n;
    /* the marker sits near the end (after the vocabulary): scan the whole file in windows */
    while (f && !found && (n = fread(buf, 1, sizeof buf - 1, f)) > 0) {
        buf[n] = '\0';
        found = strstr(buf, "\"ByteLevel\"") != NULL;
        if (n == sizeof buf - 1)
            fseek(f, -16, SEEK_CUR); /* a marker cut by the window is seen in the next one */
    }
    if (f)
        fclose(f);
    return found;
}

/* The tokenizer files in the order pk_tokenizer_load looks for them. */
static void tokenizer_kind(model_facts *mf)
{
    const char *d = mf->dir;
    mf->tokenizer = "none";
    mf->tokenizer_file = "";
    if (file_in(d, "tokenizer.json")) {
        mf->tokenizer = json_is_byte_level(d) ? "byte-level-bpe" : "sentencepiece";
        mf->tokenizer_file = "tokenizer.json";
    } else if (file_in(d, "vocab.json") && file_in(d, "merges.txt")) {
        mf->tokenizer = "byte-level-bpe";
        mf->tokenizer_file = "vocab.json+merges.txt";
    } else if (file_in(d, "tokenizer.model")) {
        mf->tokenizer = "sentencepiece";
        mf->tokenizer_file = "tokenizer.model";
    }
    pk_tokenizer *t = NULL;
    mf->tokenizer_ok = pk_tokenizer_load(d, &t, NULL, 0) == PK_OK;
    pk_tokenizer_free(t);
}

static pk_status count_params(const pk_model *m, model_facts *mf)
{
    mf->tensors = (int64_t)pk_model_n_tensors(m);
    for (size_t i = 0; i < pk_model_n_tensors(m); i++) {
        pk_tensor_info ti;
        pk_status st = pk_model_tensor(m, i, &ti);
        if (st != PK_OK)
            return st;
        mf->params += (int64_t)ti.numel;
        if ((int)ti.dtype >= 0 && (int)ti.dtype < N_DTYPES)
            mf->dtype_params[ti.dtype] += (int64_t)ti.numel;
    }
    return pk_weights_hash(m, mf->hash);
}

static int print_json(const pk_model *m, const model_facts *mf)
{
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "model", mf->dir);
    cJSON_AddStringToObject(j, "architecture", pk_model_arch(m));
    cJSON_AddNumberToObject(j, "parameters", (double)mf->params);
    cJSON_AddNumberToObject(j, "tensors", (double)mf->tensors);
    cJSON *dt = cJSON_AddObjectToObject(j, "dtypes");
    for (int d = 0; d < N_DTYPES; d++)
        if (mf->dtype_params[d] > 0)
            cJSON_AddNumberToObject(dt, pk_dtype_name((pk_dtype)d), (double)mf->dtype_params[d]);
    cJSON_AddNumberToObject(j, "weight_bytes", (double)pk_model_weight_bytes(m));
    cJSON_AddNumberToObject(j, "layers", pk_model_n_layers(m));
    cJSON_AddNumberToObject(j, "hidden_size", pk_model_hidden_size(m));
    cJSON_AddNumberToObject(j, "vocab_size", pk_model_vocab_size(m));
    cJSON_AddNumberToObject(j, "max_positions", pk_model_max_positions(m));
    cJSON_AddStringToObject(j, "tokenizer", mf->tokenizer);
    cJSON_AddStringToObject(j, "tokenizer_file", mf->tokenizer_file);
    cJSON_AddBoolToObject(j, "tokenizer_loads", mf->tokenizer_ok);
    cJSON_AddStringToObject(j, "weights_hash", mf->hash);
    return cli_json_print(j);
}

static void print_text(const pk_model *m, const model_facts *mf)
{
    printf("model          %s\n", mf->dir);
    printf("architecture   %s, %d layers, hidden %d, vocabulary %d, up to %d positions\n",
           pk_model_arch(m), pk_model_n_layers(m), pk_model_hidden_size(m), pk_model_vocab_size(m),
           pk_model_max_positions(m));
    printf("parameters     %lld in %lld tensors (", (long long)mf->params, (long long)mf->tensors);
    const char *sep = "";
    for (int d = 0; d < N_DTYPES; d++)
        if (mf->dtype_params[d] > 0) {
            printf("%s%s %lld", sep, pk_dtype_name((pk_dtype)d), (long long)mf->dtype_params[d]);
            sep = ", ";
        }
    printf(")\nweight bytes   %zu\n", pk_model_weight_bytes(m));
    printf("tokenizer      %s%s%s%s\n", mf->tokenizer, mf->tokenizer_file[0] ? " (" : "",
           mf->tokenizer_file, mf->tokenizer_file[0] ? ")" : "");
    if (!mf->tokenizer_ok && mf->tokenizer_file[0])
        printf("               (pocketllm cannot load it)\n");
    printf("weights hash   %s\n", mf->hash);
    printf("               (the base_model_hash of a coordinator task for this model)\n");
}

int cmd_model_info(int argc, char **argv)
{
    info_opts o = {0};
    int rc = cli_parse(&info_cmd, argc, argv, &o);
    if (rc != 0)
        return rc < 0 ? CLI_OK : rc;
    if (!o.model) {
        cli_error(o.c.cmd, "--model DIR|FILE is required");
        return CLI_USAGE;
    }
    model_facts mf;
    memset(&mf, 0, sizeof mf);
    if (model_dir_of(o.c.cmd, o.model, mf.dir, sizeof mf.dir) != 0)
        return CLI_ERR;
    char err[1024] = "";
    pk_model *m = NULL;
    pk_model_params mp = pk_model_default_params();
    mp.read_only = 1; /* nothing is written: no copy-on-write pages */
    pk_status st = pk_model_load(mf.dir, mp, &m, err, sizeof err);
    if (st == PK_OK)
        st = count_params(m, &mf);
    if (st != PK_OK) {
        cli_error(o.c.cmd, "--model %s: %s", o.model, err[0] ? err : pk_status_str(st));
        pk_model_free(m);
        return CLI_ERR;
    }
    tokenizer_kind(&mf);
    if (o.c.json)
        rc = print_json(m, &mf);
    else
        print_text(m, &mf);
    pk_model_free(m);
    return rc;
}
