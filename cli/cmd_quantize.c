/* cmd_quantize.c: `quantize` (a model as GGUF with block-quantized or 16-bit weights; norms,
 * biases, kept tensors and tensors whose rows do not divide into blocks stay as stored) and
 * `bench generate` (KV-cache decoding speed at batch 1). The formats and the writer are
 * model/'s (pk_model_save_gguf, DESIGN 5). */
#include <cjson/cJSON.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "pk_model.h"

/* ---- quantize ---- */

typedef struct quant_opts {
    cli_common c;
    const char *model;
    const char *out;
    const char *type;
    const char *keep;
} quant_opts;

#define T quant_opts
static const cli_option quant_table[] = {
    {"--model", CLI_STR, CLI_AT(T, model), 0, 0, NULL, "DIR", "model (Hugging Face dir or GGUF)"},
    {"--out", CLI_STR, CLI_AT(T, out), 0, 0, NULL, "DIR", "output directory (model.gguf)"},
    {"--type", CLI_STR, CLI_AT(T, type), 0, 0, NULL, "TYPE",
     "q8_0, q4_0, q4_k, q5_k, q6_k, or f16, bf16, f32"},
    {"--keep", CLI_STR, CLI_AT(T, keep), 0, 0, NULL, "REGEX",
     "tensors (Hugging Face names) kept as stored"},
    CLI_JSON_OPT(T),
    CLI_END,
};
#undef T

static const cli_command quant_cmd = {
    "quantize",
    "quantize --model DIR --out DIR --type q8_0|q4_0|q4_k|q5_k|q6_k|f16|bf16|f32 [--keep REGEX]",
    "Writes DIR/model.gguf (with config.json and the tokenizer files beside it; the config also\n"
    "in the GGUF metadata): every weight matrix, embeddings and LM head included, converted to\n"
    "TYPE. Norms and biases, tensors matching --keep, and tensors whose rows do not divide into\n"
    "TYPE's blocks (32 elements; 256 for q4_k, q5_k, q6_k) stay as stored. Load the result with\n"
    "--model DIR.",
    quant_table,
    0,
    NULL};

/* Why tensor i keeps its stored type: "norm_or_bias", "keep", "blocks", or NULL (converted). */
static const char *kept_why(const pk_tensor_info *ti, pk_dtype want, const regex_t *re)
{
    if (ti->is_bias_or_norm || ti->ndim < 2)
        return "norm_or_bias";
    if (re && regexec(re, ti->name, 0, NULL, 0) == 0)
        return "keep";
    size_t cols = ti->numel / (size_t)ti->shape[0];
    if (cols % pk_dtype_block(want) != 0)
        return "blocks";
    return NULL;
}

/* types[i] for every tensor; the kept ones listed in kept (name -> reason). */
static int quant_plan(const pk_model *m, pk_dtype want, const regex_t *re, pk_dtype *types,
                      cJSON *kept, size_t *n_conv)
{
    size_t nt = pk_model_n_tensors(m);
    *n_conv = 0;
    for (size_t i = 0; i < nt; i++) {
        pk_tensor_info ti;
        if (pk_model_tensor(m, i, &ti) != PK_OK)
            return -1;
        const char *why = kept_why(&ti, want, re);
        types[i] = why ? ti.dtype : want;
        if (why && strcmp(why, "norm_or_bias") != 0)
            cJSON_AddStringToObject(kept, ti.name, why);
        *n_conv += why == NULL;
    }
    return 0;
}

static int quant_report(const quant_opts *o, const pk_model *m, pk_dtype want, size_t n_conv,
                        cJSON *kept)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/model.gguf", o->out);
    pk_model *q = NULL;
    char err[1024] = "";
    pk_status st = pk_model_load(o->out, pk_model_default_params(), &q, err, sizeof err);
    if (st != PK_OK) { /* the file just written must load */
        cli_error(o->c.cmd, "%s", err[0] ? err : pk_status_str(st));
        cJSON_Delete(kept);
        return CLI_ERR;
    }
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "out", path);
    cJSON_AddStringToObject(j, "type", pk_dtype_name(want));
    cJSON_AddNumberToObject(j, "tensors", (double)pk_model_n_tensors(m));
    cJSON_AddNumberToObject(j, "converted", (double)n_conv);
    cJSON_AddItemToObject(j, "kept", kept);
    cJSON_AddNumberToObject(j, "weight_bytes_in", (double)pk_model_weight_bytes(m));
    cJSON_AddNumberToObject(j, "weight_bytes_out", (double)pk_model_weight_bytes(q));
    pk_model_free(q);
    if (o->c.json)
        return cli_json_print(j);
    printf("wrote %s: %zu of %zu tensors as %s, weights %.2f MB -> %.2f MB\n", path, n_conv,
           pk_model_n_tensors(m), pk_dtype_name(want),
           cJSON_GetObjectItem(j, "weight_bytes_in")->valuedouble / 1e6,
           cJSON_GetObjectItem(j, "weight_bytes_out")->valuedouble / 1e6);
    for (const cJSON *k = kept->child; k; k = k->next)
        printf("  kept %s (%s)\n", k->string, k->valuestring);
    cJSON_Delete(j);
    return CLI_OK;
}

static int quant_parse_type(const quant_opts *o, pk_dtype *want)
{
    static const char *const ok[] = {"q8_0", "q4_0", "q4_k", "q5_k", "q6_k", "f16", "bf16", "f32"};
    for (size_t i = 0; o->type && i < sizeof ok / sizeof ok[0]; i++) {
        if (strcmp(o->type, ok[i]) == 0)
            return pk_dtype_parse(o->type, want);
    }
    cli_error(o->c.cmd, "--type: expected q8_0, q4_0, q4_k, q5_k, q6_k, f16, bf16 or f32, got '%s'",
              o->type ? o->type : "");
    return -1;
}

int cmd_quantize(int argc, char **argv)
{
    quant_opts o = {0};
    int rc = cli_parse(&quant_cmd, argc, argv, &o);
    if (rc != 0)
        return rc < 0 ? CLI_OK : rc;
    const char *cmd = o.c.cmd;
    pk_dtype want;
    if (!o.model || !o.out || !o.type) {
        cli_error(cmd, "--model, --out and --type are required (see --help)");
        return CLI_USAGE;
    }
    if (quant_parse_type(&o, &want) != 0)
        return CLI_USAGE;
    regex_t re;
    if (o.keep && regcomp(&re, o.keep, REG_EXTENDED | REG_NOSUB) != 0) {
        cli_error(cmd, "--keep: invalid regular expression '%s'", o.keep);
        return CLI_USAGE;
    }
    pk_model *m = NULL;
    char err[1024] = "";
    pk_status st = pk_model_load(o.model, pk_model_default_params(), &m, err, sizeof err);
    pk_dtype *types = m ? calloc(pk_model_n_tensors(m) + 1, sizeof *types) : NULL;
    cJSON *kept = cJSON_CreateObject();
    rc = CLI_ERR;
    if (st != PK_OK) {
        cli_error(cmd, "--model: %s", err[0] ? err : pk_status_str(st));
        goto out;
    }
    size_t n_conv = 0;
    if (!types || !kept || quant_plan(m, want, o.keep ? &re : NULL, types, kept, &n_conv) != 0) {
        cli_error(cmd, "out of memory");
        goto out;
    }
    st = pk_model_save_gguf(m, o.out, types, err, sizeof err);
    if (st != PK_OK) {
        cli_error(cmd, "--out: %s", err[0] ? err : pk_status_str(st));
        goto out;
    }
    rc = quant_report(&o, m, want, n_conv, kept);
    kept = NULL; /* owned by the report */
out:
    cJSON_Delete(kept);
    free(types);
    pk_model_free(m);
    if (o.keep)
        regfree(&re);
    return rc;
}

/* ---- bench generate ---- */

typedef struct benchg_opts {
    cli_common c;
    const char *model;
    int prompt, tokens, reps;
} benchg_opts;

#define T benchg_opts
static const cli_option benchg_table[] = {
    {"--model", CLI_STR, CLI_AT(T, model), 0, 0, NULL, "DIR", "model (Hugging Face dir or GGUF)"},
    {"--prompt", CLI_INT, CLI_AT(T, prompt), 1, 1 << 20, NULL, "P", "prompt tokens"},
    {"--tokens", CLI_INT, CLI_AT(T, tokens), 1, 1 << 20, NULL, "N", "generated tokens"},
    {"--reps", CLI_INT, CLI_AT(T, reps), 1, 1000, NULL, "R", "timed repetitions (median)"},
    CLI_THREADS_OPT(T),
    CLI_END,
};
#undef T

static const cli_command benchg_cmd = {
    "bench generate",
    "bench generate --model DIR [--prompt P] [--tokens N] [--reps R] [--threads N]",
    "Times batch-1 generation with the KV cache: a prompt of P fixed ids, then N greedy tokens\n"
    "one at a time. Prints one JSON line: tokens_per_s (decode, median of R runs, with min and\n"
    "max), prefill_s, peak_rss_bytes, weight_bytes.",
    benchg_table,
    0,
    NULL};

static int cmp_dbl(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* One run: prefill, then n greedy steps; *decode_s the decode time. */
static pk_status benchg_run(pk_gen *g, const int32_t *ids, int p, int n, float *logits, int V,
                            double *prefill_s, double *decode_s)
{
    pk_gen_reset(g);
    double t0 = pk_time_now();
    pk_status st = pk_gen_feed(g, ids, p, NULL, logits);
    double t1 = pk_time_now();
    for (int k = 0; st == PK_OK && k < n; k++) {
        int32_t best = 0;
        for (int v = 1; v < V; v++)
            best = logits[v] > logits[best] ? v : best;
        st = pk_gen_feed(g, &best, 1, NULL, logits);
    }
    *prefill_s = t1 - t0;
    *decode_s = pk_time_now() - t1;
    return st;
}

static int benchg_print(const benchg_opts *o, const pk_model *m, double *dec, double prefill)
{
    qsort(dec, (size_t)o->reps, sizeof *dec, cmp_dbl);
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "model", o->model);
    cJSON_AddStringToObject(j, "arch", pk_model_arch(m));
    cJSON_AddNumberToObject(j, "threads", pk_threads_get());
    cJSON_AddNumberToObject(j, "prompt", o->prompt);
    cJSON_AddNumberToObject(j, "tokens", o->tokens);
    cli_json_add_rounded(j, "tokens_per_s", o->tokens / dec[o->reps / 2], 1);
    cli_json_add_rounded(j, "tokens_per_s_min", o->tokens / dec[o->reps - 1], 1);
    cli_json_add_rounded(j, "tokens_per_s_max", o->tokens / dec[0], 1);
    cli_json_add_rounded(j, "prefill_s", prefill, 4);
    cJSON_AddNumberToObject(j, "peak_rss_bytes", (double)pk_peak_rss_bytes());
    cJSON_AddNumberToObject(j, "weight_bytes", (double)pk_model_weight_bytes(m));
    return cli_json_print(j);
}

int cmd_bench_generate(int argc, char **argv)
{
    benchg_opts o = {.prompt = 16, .tokens = 64, .reps = 5};
    int rc = cli_parse(&benchg_cmd, argc, argv, &o);
    if (rc != 0)
        return rc < 0 ? CLI_OK : rc;
    if (!o.model) {
        cli_error(o.c.cmd, "--model is required (see --help)");
        return CLI_USAGE;
    }
    cli_apply_threads(&o.c);
    pk_model *m = NULL;
    pk_gen *g = NULL;
    char err[1024] = "";
    pk_status st = pk_model_load(o.model, pk_model_default_params(), &m, err, sizeof err);
    int V = m ? pk_model_vocab_size(m) : 1, total = o.prompt + o.tokens;
    if (st == PK_OK && total > pk_model_max_positions(m)) {
        snprintf(err, sizeof err, "--prompt + --tokens = %d exceeds the model's %d positions",
                 total, pk_model_max_positions(m));
        st = PK_ERR_ARG;
    }
    if (st == PK_OK)
        st = pk_gen_create(m, total, &g);
    float *logits = malloc((size_t)V * sizeof *logits);
    int32_t *ids = malloc((size_t)o.prompt * sizeof *ids);
    double *dec = malloc((size_t)(o.reps + 1) * sizeof *dec), prefill = 0;
    if (st == PK_OK && (!logits || !ids || !dec))
        st = PK_ERR_NOMEM;
    for (int i = 0; st == PK_OK && i < o.prompt; i++)
        ids[i] = (int32_t)((i * 7919 + 13) % V);
    for (int r = -1; st == PK_OK && r < o.reps; r++) /* run -1 warms up (page-in, reserve) */
        st = benchg_run(g, ids, o.prompt, o.tokens, logits, V, &prefill, &dec[r < 0 ? 0 : r]);
    if (st != PK_OK)
        cli_error(o.c.cmd, "%s", err[0] ? err : pk_status_str(st));
    rc = st == PK_OK ? benchg_print(&o, m, dec, prefill) : CLI_ERR;
    free(logits);
    free(ids);
    free(dec);
    pk_gen_free(g);
    pk_model_free(m);
    return rc;
}
