/* cmd_model.c: the engine commands: forward (raw logits + loss), generate (KV cache, sampling,
 * streaming), make-model (random models of known shapes) and bench forward (throughput against
 * the sgemm roofline). The engine itself is model/pk_model.h. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "passphrase.h"
#include "pk_train.h"
#include "pk_model.h"
#include "pk_store.h"
#include "pk_tokenizer.h"

/* Parses "1,2,3" into an owned array. Returns 0, or -1 with a message. */
static int parse_ids(const char *cmd, const char *s, int32_t **out, int *n)
{
    size_t cap = strlen(s) / 2 + 2;
    int32_t *v = malloc(cap * sizeof *v);
    int k = 0;
    if (!v)
        return -1;
    const char *p = s;
    while (*p) {
        char *end = NULL;
        errno = 0;
        long x = strtol(p, &end, 10);
        if (end == p || errno || x < 0 || x > INT32_MAX || (*end && *end != ',')) {
            cli_error(cmd, "--ids: expected comma-separated non-negative integers, got \"%s\"", s);
            free(v);
            return -1;
        }
        v[k++] = (int32_t)x;
        p = *end ? end + 1 : end;
    }
    if (k == 0) {
        cli_error(cmd, "--ids: empty list");
        free(v);
        return -1;
    }
    *out = v;
    *n = k;
    return 0;
}

static int set_threads(int argc, char **argv)
{
    long long th = 0;
    int r = cli_opt_long(argc, argv, "--threads", &th);
    if (r < 0)
        return -1;
    if (r > 0 && (th < 1 || th > 1024)) {
        cli_error(argv[0], "--threads must be between 1 and 1024");
        return -1;
    }
    pk_threads_set(r > 0 ? (int)th : 0);
    return 0;
}

static int load_model(const char *cmd, const char *dir, pk_model **m)
{
    char err[1024] = "";
    pk_status st = pk_model_load(dir, pk_model_default_params(), m, err, sizeof err);
    if (st != PK_OK) {
        cli_error(cmd, "%s", err[0] ? err : pk_status_str(st));
        return -1;
    }
    return 0;
}

static const char forward_help[] =
    "usage: pocketllm forward --model DIR --ids 1,2,3 [--out FILE] [--threads N]\n"
    "Runs the model on one sequence. Writes the raw little-endian float32 logits [T, vocab] to\n"
    "FILE and prints the mean next-token loss (causal models).\n";

int cmd_forward(int argc, char **argv)
{
    static const char *const tv[] = {"--model", "--ids", "--out", "--threads", NULL};
    if (cli_help(argc, argv, forward_help))
        return CLI_OK;
    if (cli_check(argc, argv, tv, NULL))
        return CLI_USAGE;
    const char *dir = cli_opt(argc, argv, "--model"), *ids_s = cli_opt(argc, argv, "--ids");
    const char *outp = cli_opt(argc, argv, "--out");
    if (!dir || !ids_s) {
        cli_error(argv[0], "--model and --ids are required (see pocketllm forward --help)");
        return CLI_USAGE;
    }
    int32_t *ids = NULL;
    int n = 0, rc = CLI_ERR;
    pk_model *m = NULL;
    float *lg = NULL;
    if (parse_ids(argv[0], ids_s, &ids, &n) != 0)
        return CLI_USAGE;
    if (set_threads(argc, argv) != 0) {
        free(ids);
        return CLI_USAGE;
    }
    if (load_model(argv[0], dir, &m) != 0)
        goto out;
    int V = pk_model_vocab_size(m);
    for (int i = 0; i < n; i++) {
        if (ids[i] >= V) {
            cli_error(argv[0], "--ids: id %d is outside the vocabulary (size %d)", ids[i], V);
            goto out;
        }
    }
    if (n > pk_model_max_positions(m)) {
        cli_error(argv[0], "--ids: %d tokens exceed the model's %d positions", n,
                  pk_model_max_positions(m));
        goto out;
    }
    pk_batch b = {1, n, ids, &n, NULL};
    if (outp) {
        lg = malloc((size_t)n * (size_t)V * sizeof *lg);
        if (!lg) {
            cli_error(argv[0], "out of memory for [%d, %d] logits", n, V);
            goto out;
        }
        pk_status st = pk_model_logits(m, &b, NULL, lg);
        if (st != PK_OK) {
            cli_error(argv[0], "forward failed: %s", pk_status_str(st));
            goto out;
        }
        FILE *f = fopen(outp, "wb");
        size_t cnt = (size_t)n * (size_t)V;
        int ok = f && fwrite(lg, sizeof *lg, cnt, f) == cnt;
        if (f)
            ok = (fclose(f) == 0) && ok;
        if (!ok) {
            cli_error(argv[0], "%s: cannot write: %s", outp, strerror(errno));
            goto out;
        }
    }
    if (pk_model_is_causal(m)) {
        double mean = 0;
        pk_status st = pk_model_loss(m, &b, NULL, NULL, NULL, NULL, &mean);
        if (st != PK_OK) {
            cli_error(argv[0], "forward failed: %s", pk_status_str(st));
            goto out;
        }
        if (n > 1)
            printf("loss %.6f\n", mean);
        else
            printf("loss n/a (one token has no next-token target)\n");
    }
    rc = CLI_OK;
out:
    free(lg);
    free(ids);
    pk_model_free(m);
    return rc;
}

/* ---- generate ---- */

static const char generate_help[] =
    "usage: pocketllm generate (--model DIR | --run ID) (--ids 1,2,3 | --prompt TEXT) --max-new N\n"
    "         [--temperature T] [--top-k K] [--top-p P] [--seed S] [--json] [--ignore-eos]\n"
    "         [--threads N] [--home DIR] [--passphrase-file F]\n"
    "Generates up to N tokens with a KV cache and streams them to stdout (text if the model\n"
    "directory has a tokenizer, else ids). Temperature 0 (default) is greedy. Stops at EOS\n"
    "unless --ignore-eos. With --json the last line is {\"ids\": [...], \"text\": \"...\"}\n"
    "(ids include the prompt).\n"
    "--run ID uses the fine-tuned weights of a training run of the agent home (its base model\n"
    "plus its step log, rebuilt in memory) and the base model's tokenizer.\n"
    "\n"
    "examples:\n"
    "  pocketllm generate --model models/stories260k --prompt \"Once upon a time\" --max-new 40\n"
    "  pocketllm generate --run 1 --prompt \"Pip\" --max-new 40 --temperature 0.8 --seed 7\n";

/* Loads what generate needs (model + optional tokenizer). One place, so `generate --run` can
 * substitute fine-tuned weights after loading. */
static int generate_load(int argc, char **argv, pk_model **m, pk_tokenizer **tok)
{
    const char *dir = cli_opt(argc, argv, "--model"), *run_s = cli_opt(argc, argv, "--run");
    if (!dir == !run_s) {
        cli_error(argv[0], "give exactly one of --model DIR or --run ID (see --help)");
        return CLI_USAGE;
    }
    char err[512] = "";
    pk_train_config cfg;
    if (run_s) {
        long long run = 0;
        if (cli_opt_long(argc, argv, "--run", &run) <= 0 || run < 1) {
            cli_error(argv[0], "--run takes a run id (pocketllm runs list)");
            return CLI_USAGE;
        }
        pk_store *s = NULL;
        int rc = legacy_cli_open_store(argc, argv, &s);
        if (rc != CLI_OK)
            return rc;
        pk_run_info ri;
        pk_status st = pk_run_load_config(s, run, &ri, &cfg, err, sizeof err);
        pk_run_info_clear(&ri);
        if (st == PK_OK)
            st = pk_run_materialize(s, run, m, err, sizeof err);
        pk_store_close(s);
        if (st != PK_OK) {
            cli_error(argv[0], "%s", err[0] ? err : pk_status_str(st));
            return CLI_ERR;
        }
        dir = cfg.model_dir;
    } else if (load_model(argv[0], dir, m) != 0) {
        return CLI_ERR;
    }
    pk_status st = pk_tokenizer_load(dir, tok, err, sizeof err);
    if (st != PK_OK && st != PK_ERR_NOTFOUND) {
        cli_error(argv[0], "%s", err[0] ? err : pk_status_str(st));
        return CLI_ERR;
    }
    return CLI_OK;
}

typedef struct gen_opts {
    long long max_new;
    pk_sampler_params sp;
    int json, ignore_eos;
} gen_opts;

static int gen_parse(int argc, char **argv, gen_opts *o)
{
    double temp = 0, top_p = 1;
    long long top_k = 0, seed = 0;
    o->max_new = -1;
    if (cli_opt_long(argc, argv, "--max-new", &o->max_new) < 0 ||
        cli_opt_double(argc, argv, "--temperature", &temp) < 0 ||
        cli_opt_double(argc, argv, "--top-p", &top_p) < 0 ||
        cli_opt_long(argc, argv, "--top-k", &top_k) < 0 ||
        cli_opt_long(argc, argv, "--seed", &seed) < 0)
        return -1;
    if (o->max_new < 0) {
        cli_error(argv[0], "--max-new N is required (N >= 0)");
        return -1;
    }
    if (temp < 0 || !(top_p > 0 && top_p <= 1) || top_k < 0) {
        cli_error(argv[0], "need --temperature >= 0, 0 < --top-p <= 1, --top-k >= 0");
        return -1;
    }
    o->sp.temperature = (float)temp;
    o->sp.top_p = (float)top_p;
    o->sp.top_k = (int)top_k;
    o->sp.seed = (uint64_t)seed;
    o->json = cli_flag(argc, argv, "--json");
    o->ignore_eos = cli_flag(argc, argv, "--ignore-eos");
    return 0;
}

static int prompt_ids(int argc, char **argv, const pk_tokenizer *tok, const pk_model *m,
                      int32_t **ids, int *n)
{
    const char *ids_s = cli_opt(argc, argv, "--ids"), *prompt = cli_opt(argc, argv, "--prompt");
    if (!!ids_s == !!prompt) {
        cli_error(argv[0], "give exactly one of --ids or --prompt");
        return CLI_USAGE;
    }
    if (ids_s)
        return parse_ids(argv[0], ids_s, ids, n) == 0 ? CLI_OK : CLI_USAGE;
    if (!tok) {
        cli_error(argv[0], "--prompt needs tokenizer files in the model directory; use --ids");
        return CLI_ERR;
    }
    size_t k = 0;
    if (pk_tokenizer_encode(tok, prompt, strlen(prompt), 1, ids, &k) != PK_OK) {
        cli_error(argv[0], "cannot tokenize the prompt");
        return CLI_ERR;
    }
    if (k == 0) { /* empty prompt without BOS: start from BOS if the model has one */
        free(*ids);
        *ids = malloc(sizeof **ids);
        if (!*ids || pk_model_bos_id(m) < 0) {
            cli_error(argv[0], "empty prompt and the model has no BOS token");
            return CLI_ERR;
        }
        (*ids)[0] = pk_model_bos_id(m);
        k = 1;
    }
    *n = (int)k;
    return CLI_OK;
}

int cmd_generate(int argc, char **argv)
{
    static const char *const tv[] = {
        "--model",       "--run",   "--ids",  "--prompt",  "--max-new",         "--top-k",
        "--temperature", "--top-p", "--seed", "--threads", "--passphrase-file", NULL};
    static const char *const fl[] = {"--json", "--ignore-eos", NULL};
    if (cli_help(argc, argv, generate_help))
        return CLI_OK;
    if (cli_check(argc, argv, tv, fl))
        return CLI_USAGE;
    gen_opts o;
    if (gen_parse(argc, argv, &o) != 0 || set_threads(argc, argv) != 0)
        return CLI_USAGE;
    pk_model *m = NULL;
    pk_tokenizer *tok = NULL;
    pk_tokenizer_stream *ts = NULL;
    pk_gen *g = NULL;
    pk_sampler *smp = NULL;
    int32_t *ids = NULL, *all = NULL;
    float *logits = NULL;
    int n = 0, rc = generate_load(argc, argv, &m, &tok);
    if (rc != CLI_OK)
        goto out;
    rc = prompt_ids(argc, argv, tok, m, &ids, &n);
    if (rc != CLI_OK)
        goto out;
    rc = CLI_ERR;
    int V = pk_model_vocab_size(m), maxp = pk_model_max_positions(m);
    for (int i = 0; i < n; i++) {
        if (ids[i] >= V) {
            cli_error(argv[0], "prompt id %d is outside the vocabulary (size %d)", ids[i], V);
            goto out;
        }
    }
    long long total = n + o.max_new;
    if (total > maxp) {
        cli_error(argv[0], "prompt (%d) + --max-new (%lld) exceeds the model's %d positions", n,
                  o.max_new, maxp);
        goto out;
    }
    pk_status st = pk_gen_create(m, (int)total, &g);
    if (st == PK_OK)
        st = pk_sampler_create(o.sp, V, &smp);
    if (st == PK_OK && tok)
        st = pk_tokenizer_stream_new(tok, 1, &ts);
    all = malloc((size_t)total * sizeof *all);
    logits = malloc((size_t)V * sizeof *logits);
    if (st != PK_OK || !all || !logits) {
        cli_error(argv[0], "cannot start generation: %s",
                  pk_status_str(st != PK_OK ? st : PK_ERR_NOMEM));
        goto out;
    }
    memcpy(all, ids, (size_t)n * sizeof *all);
    int na = n, eos = pk_model_eos_id(m);
    st = pk_gen_feed(g, ids, n, NULL, logits);
    for (long long i = 0; st == PK_OK && i < o.max_new; i++) {
        int32_t t = pk_sampler_sample(smp, logits);
        all[na++] = t;
        if (ts) {
            const char *bytes = NULL;
            size_t bl = 0;
            if (pk_tokenizer_stream_push(ts, t, &bytes, &bl) == PK_OK && bl)
                fwrite(bytes, 1, bl, stdout);
        } else {
            printf("%s%d", i ? " " : "", t);
        }
        fflush(stdout);
        if (t == eos && !o.ignore_eos)
            break;
        if (i + 1 < o.max_new)
            st = pk_gen_feed(g, &t, 1, NULL, logits);
    }
    if (st != PK_OK) {
        cli_error(argv[0], "generation failed: %s", pk_status_str(st));
        goto out;
    }
    if (ts) {
        const char *bytes = NULL;
        size_t bl = 0;
        if (pk_tokenizer_stream_flush(ts, &bytes, &bl) == PK_OK && bl)
            fwrite(bytes, 1, bl, stdout);
    }
    putchar('\n');
    if (o.json) {
        printf("{\"ids\": [");
        for (int i = 0; i < na; i++)
            printf("%s%d", i ? ", " : "", all[i]);
        printf("], \"text\": ");
        char *text = NULL;
        size_t tl = 0;
        if (tok && pk_tokenizer_decode(tok, all, (size_t)na, 1, &text, &tl) == PK_OK)
            cli_json_str(stdout, text, tl);
        else
            printf("null");
        free(text);
        printf("}\n");
    }
    rc = CLI_OK;
out:
    free(logits);
    free(all);
    free(ids);
    pk_tokenizer_stream_free(ts);
    pk_sampler_free(smp);
    pk_gen_free(g);
    pk_tokenizer_free(tok);
    pk_model_free(m);
    return rc;
}

/* ---- make-model ---- */

typedef struct preset {
    const char *arch, *name;
    /* llama/qwen2: V H L nh nkv I maxpos hd(0=H/nh); opt: V H L nh - ffn maxpos proj;
     * gpt2: V H L nh - inner npos; roberta: V H L nh - I maxpos */
    int V, H, L, nh, nkv, I, maxpos, extra;
    int flag; /* opt: 1 = post-LN; llama: 1 = llama3 rope_scaling, 2 = tied */
} preset;

static const preset presets[] = {
    {"opt", "opt-125m", 50272, 768, 12, 12, 0, 3072, 2048, 768, 0},
    {"opt", "opt-350m", 50272, 1024, 24, 16, 0, 4096, 2048, 512, 1},
    {"opt", "opt-1.3b", 50272, 2048, 24, 32, 0, 8192, 2048, 2048, 0},
    {"opt", "tiny", 1000, 64, 2, 4, 0, 128, 64, 64, 0},
    {"opt", "tiny-postln", 1000, 64, 2, 4, 0, 128, 64, 32, 1},
    {"gpt2", "gpt2-124m", 50257, 768, 12, 12, 0, 3072, 1024, 0, 0},
    {"gpt2", "tiny", 1000, 64, 2, 4, 0, 256, 64, 0, 0},
    {"roberta", "roberta-large", 50265, 1024, 24, 16, 0, 4096, 514, 0, 0},
    {"roberta", "roberta-base", 50265, 768, 12, 12, 0, 3072, 514, 0, 0},
    {"roberta", "tiny", 1000, 64, 2, 4, 0, 128, 66, 0, 0},
    {"llama", "llama-1b-like", 128256, 2048, 16, 32, 8, 8192, 131072, 64, 3},
    {"llama", "tiny", 1000, 64, 2, 4, 2, 160, 64, 0, 0},
    {"llama", "tiny-rope3", 1000, 64, 2, 4, 2, 160, 256, 16, 3},
    {"llama", "smollm2-135m", 49152, 576, 30, 9, 3, 1536, 8192, 0, 2},
    {"qwen2", "qwen2-0.5b-like", 151936, 896, 24, 14, 2, 4864, 32768, 0, 2},
    {"qwen2", "tiny", 1000, 64, 2, 4, 2, 160, 64, 0, 2},
};

static int preset_config(const preset *p, char *buf, size_t n, const char *dtype)
{
    const char *tdt = !strcmp(dtype, "F32")   ? "float32"
                      : !strcmp(dtype, "F16") ? "float16"
                                              : "bfloat16";
    if (!strcmp(p->arch, "opt"))
        return snprintf(
            buf, n,
            "{\n  \"architectures\": [\"OPTForCausalLM\"],\n  \"model_type\": \"opt\",\n"
            "  \"vocab_size\": %d,\n  \"hidden_size\": %d,\n  \"num_hidden_layers\": %d,\n"
            "  \"num_attention_heads\": %d,\n  \"ffn_dim\": %d,\n"
            "  \"max_position_embeddings\": %d,\n  \"word_embed_proj_dim\": %d,\n"
            "  \"do_layer_norm_before\": %s,\n  \"activation_function\": \"relu\",\n"
            "  \"enable_bias\": true,\n  \"pad_token_id\": 1,\n  \"bos_token_id\": 2,\n"
            "  \"eos_token_id\": 2,\n  \"tie_word_embeddings\": true,\n"
            "  \"torch_dtype\": \"%s\"\n}\n",
            p->V, p->H, p->L, p->nh, p->I, p->maxpos, p->extra, p->flag ? "false" : "true", tdt);
    if (!strcmp(p->arch, "gpt2"))
        return snprintf(
            buf, n,
            "{\n  \"architectures\": [\"GPT2LMHeadModel\"],\n  \"model_type\": \"gpt2\",\n"
            "  \"vocab_size\": %d,\n  \"n_embd\": %d,\n  \"n_layer\": %d,\n"
            "  \"n_head\": %d,\n  \"n_inner\": %d,\n  \"n_positions\": %d,\n"
            "  \"activation_function\": \"gelu_new\",\n  \"layer_norm_epsilon\": 1e-05,\n"
            "  \"bos_token_id\": %d,\n  \"eos_token_id\": %d,\n"
            "  \"tie_word_embeddings\": true,\n  \"torch_dtype\": \"%s\"\n}\n",
            p->V, p->H, p->L, p->nh, p->I, p->maxpos, p->V - 1, p->V - 1, tdt);
    if (!strcmp(p->arch, "roberta"))
        return snprintf(buf, n,
                        "{\n  \"architectures\": [\"RobertaForMaskedLM\"],\n"
                        "  \"model_type\": \"roberta\",\n  \"vocab_size\": %d,\n"
                        "  \"hidden_size\": %d,\n  \"num_hidden_layers\": %d,\n"
                        "  \"num_attention_heads\": %d,\n  \"intermediate_size\": %d,\n"
                        "  \"max_position_embeddings\": %d,\n  \"type_vocab_size\": 1,\n"
                        "  \"hidden_act\": \"gelu\",\n  \"layer_norm_eps\": 1e-05,\n"
                        "  \"pad_token_id\": 1,\n  \"bos_token_id\": 0,\n  \"eos_token_id\": 2,\n"
                        "  \"tie_word_embeddings\": true,\n  \"torch_dtype\": \"%s\"\n}\n",
                        p->V, p->H, p->L, p->nh, p->I, p->maxpos, tdt);
    int qwen = !strcmp(p->arch, "qwen2");
    char hd[64] = "", rope[256] = "null";
    if (p->extra)
        snprintf(hd, sizeof hd, "  \"head_dim\": %d,\n", p->extra);
    if (p->flag & 1)
        snprintf(rope, sizeof rope,
                 "{\"rope_type\": \"llama3\", \"factor\": %s, \"low_freq_factor\": 1.0, "
                 "\"high_freq_factor\": 4.0, \"original_max_position_embeddings\": %d}",
                 p->maxpos > 1000 ? "32.0" : "4.0", p->maxpos > 1000 ? 8192 : 32);
    return snprintf(buf, n,
                    "{\n  \"architectures\": [\"%s\"],\n  \"model_type\": \"%s\",\n"
                    "  \"vocab_size\": %d,\n  \"hidden_size\": %d,\n  \"num_hidden_layers\": %d,\n"
                    "  \"num_attention_heads\": %d,\n  \"num_key_value_heads\": %d,\n%s"
                    "  \"intermediate_size\": %d,\n  \"max_position_embeddings\": %d,\n"
                    "  \"hidden_act\": \"silu\",\n  \"rms_norm_eps\": 1e-05,\n"
                    "  \"rope_theta\": %s,\n  \"rope_scaling\": %s,\n"
                    "  \"tie_word_embeddings\": %s,\n  \"bos_token_id\": 1,\n"
                    "  \"eos_token_id\": 2,\n  \"torch_dtype\": \"%s\"\n}\n",
                    qwen ? "Qwen2ForCausalLM" : "LlamaForCausalLM", p->arch, p->V, p->H, p->L,
                    p->nh, p->nkv, hd, p->I, p->maxpos,
                    qwen ? "1000000.0" : (p->maxpos > 1000 ? "500000.0" : "10000.0"), rope,
                    (p->flag & 2) ? "true" : "false", tdt);
}

static const char make_help[] =
    "usage: pocketllm make-model --arch opt|gpt2|roberta|llama|qwen2 --preset NAME --out DIR\n"
    "         [--dtype f32|f16|bf16] [--seed S]\n"
    "Writes config.json + model.safetensors with random weights (deterministic for a seed).\n"
    "Presets: opt: opt-125m opt-350m opt-1.3b tiny tiny-postln; gpt2: gpt2-124m tiny;\n"
    "roberta: roberta-large roberta-base tiny; llama: llama-1b-like tiny tiny-rope3;\n"
    "qwen2: qwen2-0.5b-like tiny.\n";

int cmd_make_model(int argc, char **argv)
{
    static const char *const tv[] = {"--arch", "--preset", "--out", "--dtype", "--seed", NULL};
    if (cli_help(argc, argv, make_help))
        return CLI_OK;
    if (cli_check(argc, argv, tv, NULL))
        return CLI_USAGE;
    const char *arch = cli_opt(argc, argv, "--arch"), *name = cli_opt(argc, argv, "--preset");
    const char *out = cli_opt(argc, argv, "--out"), *dts = cli_opt(argc, argv, "--dtype");
    long long seed = 0;
    pk_dtype dt = PK_DTYPE_F32;
    if (!arch || !name || !out) {
        cli_error(argv[0], "--arch, --preset and --out are required (see --help)");
        return CLI_USAGE;
    }
    if (cli_opt_long(argc, argv, "--seed", &seed) < 0)
        return CLI_USAGE;
    if (dts && pk_dtype_parse(dts, &dt) != 0) {
        cli_error(argv[0], "--dtype: unknown dtype \"%s\" (f32, f16, bf16)", dts);
        return CLI_USAGE;
    }
    const preset *p = NULL;
    for (size_t i = 0; i < sizeof presets / sizeof presets[0]; i++) {
        if (!strcmp(presets[i].arch, arch) && !strcmp(presets[i].name, name))
            p = &presets[i];
    }
    if (!p) {
        cli_error(argv[0], "no preset \"%s\" for --arch %s (see --help)", name, arch);
        return CLI_USAGE;
    }
    char cfg[4096], err[1024] = "";
    int len = preset_config(p, cfg, sizeof cfg, pk_dtype_name(dt));
    pk_status st = pk_model_make(cfg, (size_t)len, out, dt, (uint64_t)seed, err, sizeof err);
    if (st != PK_OK) {
        cli_error(argv[0], "%s", err[0] ? err : pk_status_str(st));
        return CLI_ERR;
    }
    return CLI_OK;
}

/* ---- bench forward ---- */

static const char bench_help[] =
    "usage: pocketllm bench forward --model DIR --batch B --seq T [--threads N] [--reps R]\n"
    "Times the training forward pass (all linear layers + LM head loss over B*T tokens) and\n"
    "cblas_sgemm on the model's own GEMM shapes with the same threads. Prints one JSON line:\n"
    "tokens_per_s, gflops_achieved, gflops_sgemm, peak_rss_bytes, weight_bytes (+ details).\n"
    "gflops counts only the linear layers and LM head (2 * tokens * weights).\n";

int cmd_bench_forward(int argc, char **argv)
{
    static const char *const tv[] = {"--model", "--batch", "--seq", "--threads", "--reps", NULL};
    if (cli_help(argc, argv, bench_help))
        return CLI_OK;
    if (cli_check(argc, argv, tv, NULL))
        return CLI_USAGE;
    const char *dir = cli_opt(argc, argv, "--model");
    long long B = 0, T = 0, reps = 3;
    if (!dir || cli_opt_long(argc, argv, "--batch", &B) <= 0 ||
        cli_opt_long(argc, argv, "--seq", &T) <= 0 ||
        cli_opt_long(argc, argv, "--reps", &reps) < 0 || B < 1 || T < 2 || B * T > (1 << 24) ||
        reps < 1) {
        cli_error(argv[0], "--model DIR --batch B (>= 1) --seq T (>= 2) are required");
        return CLI_USAGE;
    }
    if (set_threads(argc, argv) != 0)
        return CLI_USAGE;
    pk_model *m = NULL;
    int rc = CLI_ERR;
    size_t N = (size_t)(B * T);
    int32_t *ids = malloc(N * sizeof *ids), *lens = malloc((size_t)B * sizeof *lens);
    if (!ids || !lens || load_model(argv[0], dir, &m) != 0)
        goto out;
    if (T > pk_model_max_positions(m)) {
        cli_error(argv[0], "--seq %lld exceeds the model's %d positions", T,
                  pk_model_max_positions(m));
        goto out;
    }
    int V = pk_model_vocab_size(m);
    uint64_t s = 88172645463325252ull;
    for (size_t i = 0; i < N; i++) {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        ids[i] = (int32_t)(s % (uint64_t)V);
    }
    for (long long b = 0; b < B; b++)
        lens[b] = (int32_t)T;
    pk_batch batch = {(int)B, (int)T, ids, lens, NULL};
    int causal = pk_model_is_causal(m);
    int32_t sb = 0, stt = 0, one = 0;
    float outv = 0;
    double best = 1e30, loss = 0, gs = 0;
    size_t rss = 0;
    /* forward reps (the first run of round 0 is a warm-up: reservation, page-in), peak RSS, then
     * the sgemm roofline, then forward again: best of each, so load from other processes hurts
     * both sides alike */
    for (int round = 0; round < 2; round++) {
        for (long long r = 0; r <= reps; r++) {
            if (round == 1 && r == 0)
                continue;
            double t0 = pk_time_now();
            pk_status st =
                causal ? pk_model_loss(m, &batch, NULL, NULL, NULL, NULL, &loss)
                       : pk_model_select_logits(m, &batch, NULL, 1, &sb, &stt, 1, &one, &outv);
            double dt = pk_time_now() - t0;
            if (st != PK_OK) {
                cli_error(argv[0], "forward failed: %s", pk_status_str(st));
                goto out;
            }
            if (r > 0 && dt < best)
                best = dt;
        }
        if (round == 0) {
            rss = pk_peak_rss_bytes(); /* before the sgemm bench allocates its operands */
            gs = pk_model_bench_sgemm(m, (int)B, (int)T, (int)reps);
        }
    }
    double flops = pk_model_forward_flops(m, (int)B, (int)T);
    if (!causal) /* roberta bench only runs the head at one position */
        flops -= 2.0 * (double)N * (double)V * pk_model_hidden_size(m);
    printf("{\"model\": \"%s\", \"arch\": \"%s\", \"batch\": %lld, \"seq\": %lld, \"threads\": %d, "
           "\"tokens_per_s\": %.1f, \"gflops_achieved\": %.2f, \"gflops_sgemm\": %.2f, "
           "\"ratio\": %.3f, \"forward_s\": %.4f, \"peak_rss_bytes\": %zu, \"weight_bytes\": %zu, "
           "\"rss_over_weights\": %.3f, \"activation_bytes\": %zu}\n",
           dir, pk_model_arch(m), B, T, pk_threads_get(), (double)N / best, flops / best / 1e9, gs,
           gs > 0 ? flops / best / 1e9 / gs : 0.0, best, rss, pk_model_weight_bytes(m),
           (double)rss / (double)pk_model_weight_bytes(m), pk_model_activation_bytes(m));
    rc = CLI_OK;
out:
    free(ids);
    free(lens);
    pk_model_free(m);
    return rc;
}
