/* test_determinism.c: a forward pass is a pure function of (weights, batch, perturbation, BLAS
 * kernel) (docs/DETERMINISM.md). Logits, losses, log-probs and generation logits are
 * bit-identical under 1, 2 and 3 threads on every model of the test-vector bundle and on a
 * generated OPT model wide enough for several output tiles and LM-head block groups; for a small
 * batch plain and perturbed (both passes, paired), with the default weight blocks and with small
 * ones, and for 320 tokens (two token tiles) and, on llama-tiny, 1280 (the FFN in row chunks).
 * main runs this binary again once per OpenBLAS kernel: OPENBLAS_CORETYPE unset, Haswell and,
 * where the CPU has AVX-512, SkylakeX (the kernel is chosen when OpenBLAS loads). */
#include "pk_model.h"
#include "pk_test.h"
#include "test_util.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "model_impl.h" /* pk_model_set_block_rows, lgroup, lspan */

/* A generated OPT: 192 hidden (3 output tiles of 64), FFN 768, vocabulary 3000 (12 LM-head
 * blocks, more than one group). */
static const char wide_opt_config[] =
    "{\"architectures\": [\"OPTForCausalLM\"], \"model_type\": \"opt\", \"vocab_size\": 3000,"
    " \"hidden_size\": 192, \"num_hidden_layers\": 2, \"num_attention_heads\": 4,"
    " \"ffn_dim\": 768, \"max_position_embeddings\": 64, \"word_embed_proj_dim\": 192,"
    " \"do_layer_norm_before\": true, \"activation_function\": \"relu\", \"enable_bias\": true,"
    " \"pad_token_id\": 1, \"bos_token_id\": 2, \"eos_token_id\": 2,"
    " \"tie_word_embeddings\": true, \"torch_dtype\": \"float32\"}";

/* The same with a wider FFN (2304): its LM-head groups hold 8 blocks when the activations are
 * reserved for 1040 tokens and 4 when reserved for twice that. */
static const char wide_ffn_config[] =
    "{\"architectures\": [\"OPTForCausalLM\"], \"model_type\": \"opt\", \"vocab_size\": 3000,"
    " \"hidden_size\": 192, \"num_hidden_layers\": 2, \"num_attention_heads\": 4,"
    " \"ffn_dim\": 2304, \"max_position_embeddings\": 64, \"word_embed_proj_dim\": 192,"
    " \"do_layer_norm_before\": true, \"activation_function\": \"relu\", \"enable_bias\": true,"
    " \"pad_token_id\": 1, \"bos_token_id\": 2, \"eos_token_id\": 2,"
    " \"tie_word_embeddings\": true, \"torch_dtype\": \"float32\"}";

/* Everything one evaluation outputs, concatenated. */
typedef bytebuf outbuf;

static void put(outbuf *o, const void *src, size_t bytes)
{
    if (bytebuf_put(o, src, bytes) != 0)
        PK_CHECK(!"out of memory");
}

/* A batch of B rows of T tokens (ragged lengths), ids below V. */
typedef struct batch {
    int32_t *ids, *lens, sel_b[32], sel_t[32];
    pk_batch b;
} batch;

static void make_batch(batch *bt, int B, int T, int V)
{
    bt->ids = malloc((size_t)B * T * sizeof *bt->ids);
    bt->lens = malloc((size_t)B * sizeof *bt->lens);
    for (int i = 0; i < B * T; i++)
        bt->ids[i] = (int32_t)(3 + (i * 131 + i / 7) % (V - 3));
    for (int r = 0; r < B; r++) {
        bt->lens[r] = T - (r * 5) % (T / 2);
        bt->sel_b[r] = r;
        bt->sel_t[r] = bt->lens[r] - 1;
    }
    bt->b = (pk_batch){B, T, bt->ids, bt->lens, NULL};
}

/* Generation: a 7-token prompt, then 3 tokens one at a time; the logits after each feed. */
static void eval_gen(pk_model *m, outbuf *o)
{
    int V = pk_model_vocab_size(m);
    pk_gen *g = NULL;
    float *lg = malloc((size_t)V * sizeof *lg);
    int32_t prompt[7] = {2, 17, 250, 33, 99, 4, 100};
    PK_CHECK(pk_gen_create(m, 16, &g) == PK_OK);
    if (g != NULL && lg != NULL) {
        PK_CHECK(pk_gen_feed(g, prompt, 7, NULL, lg) == PK_OK);
        put(o, lg, (size_t)V * sizeof *lg);
        for (int i = 0; i < 3; i++) {
            int32_t next = (int32_t)(5 + 7 * i);
            PK_CHECK(pk_gen_feed(g, &next, 1, NULL, lg) == PK_OK);
            put(o, lg, (size_t)V * sizeof *lg);
        }
    }
    pk_gen_free(g);
    free(lg);
}

/* Every output of one evaluation of bt under pert (NULL or both passes) into o. */
static void eval_all(pk_model *m, const batch *bt, const pk_perturb *pert, outbuf *o)
{
    int B = bt->b.B, T = bt->b.T, V = pk_model_vocab_size(m), np = pert ? 2 : 1;
    size_t nl = (size_t)np * B * T * V;
    float *lg = malloc(nl * sizeof *lg), sel[2 * 32 * 3];
    int32_t want[3] = {1, 5, V - 1};
    PK_CHECK(lg != NULL);
    if (lg == NULL)
        return;
    PK_CHECK(pk_model_logits(m, &bt->b, pert, lg) == PK_OK);
    put(o, lg, nl * sizeof *lg);
    free(lg);
    PK_CHECK(pk_model_select_logprobs(m, &bt->b, pert, (size_t)B, bt->sel_b, bt->sel_t, 3, want,
                                      sel) == PK_OK);
    put(o, sel, (size_t)np * B * 3 * sizeof *sel);
    if (pk_model_is_causal(m)) {
        double nll[64], mean[2];
        int32_t cnt[64];
        PK_CHECK(pk_model_loss(m, &bt->b, NULL, pert, nll, cnt, mean) == PK_OK);
        put(o, nll, (size_t)np * B * sizeof *nll);
        put(o, cnt, (size_t)np * B * sizeof *cnt);
        put(o, mean, (size_t)np * sizeof *mean);
        if (pert == NULL && B * T < 256)
            eval_gen(m, o);
    }
}

/* One case: outputs at 2 and 3 threads against 1 thread, byte for byte. */
static void check_case(pk_model *m, const char *name, int B, int T, int perturbed, int rows)
{
    batch bt;
    pk_perturb p = {99, 1e-2f, PK_Z_GAUSSIAN, NULL, 1};
    outbuf ref = {NULL, 0, 0};
    make_batch(&bt, B, T, pk_model_vocab_size(m));
    pk_model_set_block_rows(m, rows);
    for (int th = 1; th <= 3; th++) {
        outbuf o = {NULL, 0, 0};
        pk_threads_set(th);
        eval_all(m, &bt, perturbed ? &p : NULL, th == 1 ? &ref : &o);
        PK_CHECK_EQ(pk_threads_get(), th); /* BLAS's one-thread setting stays in our regions */
        if (th > 1) {
            int same = o.n == ref.n && memcmp(o.p, ref.p, o.n) == 0;
            if (!same)
                fprintf(stderr, "%s B=%d T=%d %s, block rows %d: %d threads differ\n", name, B, T,
                        perturbed ? "perturbed" : "plain", rows, th);
            PK_CHECK(same);
        }
        free(o.p);
    }
    free(ref.p);
    free(bt.ids);
    free(bt.lens);
}

/* The model in dir with paired passes on, or NULL (a failed check, and the loader's message). */
static pk_model *load_paired(const char *dir)
{
    char err[512] = "";
    pk_model *m = NULL;
    PK_CHECK(pk_model_load(dir, pk_model_default_params(), &m, err, sizeof err) == PK_OK);
    if (m == NULL) {
        fprintf(stderr, "load %s: %s\n", dir, err);
        return NULL;
    }
    pk_model_set_pairing(m, PK_PAIRING_ON);
    return m;
}

/* check_case on the model in dir, perturbed, at B x T. */
static void check_case_at(const char *dir, const char *name, int B, int T)
{
    pk_model *m = load_paired(dir);
    if (m == NULL)
        return;
    check_case(m, name, B, T, 1, 0);
    pk_model_free(m);
}

/* One model: a small batch plain and perturbed, with the default weight blocks and with blocks of
 * 5 rows (many blocks and output tiles); 320 tokens (2 token tiles); with long = 1, 1280 tokens
 * (5 token tiles, the FFN in row chunks). */
static void check_model(const char *dir, const char *name, int long_batch)
{
    pk_model *m = load_paired(dir);
    if (m == NULL)
        return;
    int T = pk_model_max_positions(m) < 64 ? 32 : 64;
    for (int c = 0; c < 4; c++)
        check_case(m, name, 3, 12, c & 1, c & 2 ? 5 : 0);
    check_case(m, name, 320 / T, T, 1, 0);
    if (long_batch)
        check_case(m, name, 1280 / T, T, 1, 0);
    pk_model_free(m);
}

/* The tiles of a GEMM depend on the batch and the model, not on the activations reserved
 * (which set the LM head's group of blocks and the FFN's row chunks): a 1040-token batch
 * (wide tiles) gives the same bytes in an arena reserved for it and in one reserved for twice
 * as many tokens, whose LM-head group is smaller. */
static void check_reservation(const char *dir)
{
    pk_model *m = load_paired(dir);
    if (m == NULL)
        return;
    batch bt;
    pk_perturb p = {99, 1e-2f, PK_Z_GAUSSIAN, NULL, 1};
    outbuf ref = {NULL, 0, 0}, o = {NULL, 0, 0};
    pk_threads_set(2);
    make_batch(&bt, 20, 52, pk_model_vocab_size(m));
    PK_CHECK(pk_model_reserve(m, 20, 52) == PK_OK);
    int g_exact = m->lgroup;
    eval_all(m, &bt, &p, &ref);
    PK_CHECK(pk_model_reserve(m, 40, 52) == PK_OK);
    int g_large = m->lgroup;
    eval_all(m, &bt, &p, &o);
    fprintf(stderr, "reserved for 1040 / 2080 tokens: LM-head groups of %d / %d blocks (span %d)\n",
            g_exact, g_large, m->lspan);
    PK_CHECK(g_exact != g_large); /* the case this checks */
    PK_CHECK(o.n == ref.n && memcmp(o.p, ref.p, o.n) == 0);
    free(o.p);
    free(ref.p);
    free(bt.ids);
    free(bt.lens);
    pk_model_free(m);
}

/* 1 if word occurs in s, ignoring ASCII case (OPENBLAS_CORETYPE is read that way). */
static int has_word(const char *s, const char *word)
{
    size_t n = strlen(word);
    for (; *s; s++) {
        size_t i = 0;
        while (i < n && s[i] && tolower((unsigned char)s[i]) == tolower((unsigned char)word[i]))
            i++;
        if (i == n)
            return 1;
    }
    return 0;
}

static int run_checks(const char *core)
{
    char kernel[256];
    pk_model_kernel(kernel, sizeof kernel);
    fprintf(stderr, "OPENBLAS_CORETYPE=%s: kernel %s\n", core[0] ? core : "(unset)", kernel);
    if (core[0]) /* OpenBLAS took the variable */
        PK_CHECK(has_word(kernel, core));
    static const char *const models[] = {"llama-tiny", "llama-tiny-f16", "qwen2-tiny", "opt-tiny",
                                         "gpt2-tiny",  "roberta-tiny",   "stories260k"};
    for (size_t i = 0; i < sizeof models / sizeof models[0]; i++) {
        char dir[1024];
        snprintf(dir, sizeof dir, "%s/testdata/models/%s", PK_SHARED_DIR, models[i]);
        check_model(dir, models[i], i == 0); /* llama-tiny at length */
    }
    char tmp[256], err[512] = "";
    PK_CHECK(make_tmpdir(tmp, sizeof tmp, "determinism"));
    PK_CHECK(pk_model_make(wide_opt_config, strlen(wide_opt_config), tmp, PK_DTYPE_F32, 7, err,
                           sizeof err) == PK_OK);
    check_model(tmp, "generated opt (H 192, V 3000)", 0);
    /* 2048 tokens: wide token and output tiles, the FFN in row chunks, and LM-head tiles of
     * several blocks (the loss's 1500-odd gathered rows and the logits' 2048) */
    check_case_at(tmp, "generated opt (H 192, V 3000)", 32, 64);
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp);
    PK_CHECK(system(cmd) == 0);
    PK_CHECK(make_tmpdir(tmp, sizeof tmp, "determinism"));
    PK_CHECK(pk_model_make(wide_ffn_config, strlen(wide_ffn_config), tmp, PK_DTYPE_F32, 7, err,
                           sizeof err) == PK_OK);
    check_reservation(tmp);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp);
    PK_CHECK(system(cmd) == 0);
    return PK_TEST_DONE();
}

/* This binary again with OPENBLAS_CORETYPE set to core ("" = unset); its exit status. */
static int run_kernel(const char *core)
{
    pid_t pid = fork();
    if (pid == 0) {
        if (core[0])
            setenv("OPENBLAS_CORETYPE", core, 1);
        else
            unsetenv("OPENBLAS_CORETYPE");
        execl("/proc/self/exe", "test_determinism", "kernel", core, (char *)NULL);
        _exit(127);
    }
    int st = 0;
    if (pid < 0 || waitpid(pid, &st, 0) != pid)
        return -1;
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

int main(int argc, char **argv)
{
    if (argc > 2 && !strcmp(argv[1], "kernel"))
        return run_checks(argv[2]);
    PK_CHECK_EQ(run_kernel(""), 0);
    PK_CHECK_EQ(run_kernel("Haswell"), 0);
    if (cpu_has_avx512())
        PK_CHECK_EQ(run_kernel("SkylakeX"), 0);
    else
        fprintf(stderr, "note: this CPU has no AVX-512: the SkylakeX kernel is not tested\n");
    return PK_TEST_DONE();
}
