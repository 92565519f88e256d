/* gen.c: generation with a KV cache (one sequence, causal models) and the token sampler
 * (greedy, temperature, top-k, top-p) with an explicit deterministic RNG state. Detokenizing and
 * printing are the caller's job. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "model_impl.h"

struct pk_gen {
    pk_model *m;    /* borrowed */
    int max;        /* cache capacity in positions */
    int pos;        /* tokens cached so far */
    float **k, **v; /* [L] -> [max, nkv*hd] */
    float *kbuf, *vbuf;
};

pk_status pk_gen_create(pk_model *m, int max_tokens, pk_gen **out)
{
    *out = NULL;
    const pk_cfg *c = &m->cfg;
    if (c->arch == ARCH_ROBERTA)
        return PK_ERR_UNSUPPORTED;
    if (max_tokens < 1 || max_tokens > c->max_pos)
        return PK_ERR_ARG;
    pk_gen *g = calloc(1, sizeof *g);
    if (!g)
        return PK_ERR_NOMEM;
    size_t per = (size_t)max_tokens * (size_t)c->nkv * (size_t)c->hd;
    g->m = m;
    g->max = max_tokens;
    g->k = calloc((size_t)c->L, sizeof *g->k);
    g->v = calloc((size_t)c->L, sizeof *g->v);
    g->kbuf = malloc(per * (size_t)c->L * 4);
    g->vbuf = malloc(per * (size_t)c->L * 4);
    if (!g->k || !g->v || !g->kbuf || !g->vbuf) {
        pk_gen_free(g);
        return PK_ERR_NOMEM;
    }
    for (int l = 0; l < c->L; l++) {
        g->k[l] = g->kbuf + per * (size_t)l;
        g->v[l] = g->vbuf + per * (size_t)l;
    }
    pk_status st = pk_reserve(m, 1, max_tokens, max_tokens, 1);
    if (st != PK_OK) {
        pk_gen_free(g);
        return st;
    }
    *out = g;
    return PK_OK;
}

void pk_gen_free(pk_gen *g)
{
    if (!g)
        return;
    free(g->k);
    free(g->v);
    free(g->kbuf);
    free(g->vbuf);
    free(g);
}

void pk_gen_reset(pk_gen *g)
{
    g->pos = 0;
}

int pk_gen_pos(const pk_gen *g)
{
    return g->pos;
}

pk_status pk_gen_feed(pk_gen *g, const int32_t *ids, int n, const pk_perturb *pert, float *logits)
{
    if (n < 1)
        return PK_ERR_ARG;
    if (g->pos + n > g->max)
        return PK_ERR_LIMIT;
    int32_t len = n;
    pk_batch b = {1, n, ids, &len, NULL};
    pk_status st = pk_forward_hidden(g->m, &b, pert, g->k, g->v, g->pos);
    if (st != PK_OK)
        return st;
    g->pos += n;
    if (logits) {
        int Hh = pk_head_dim(g->m), V = pk_model_vocab_size(g->m);
        pk_lm_head(g->m, pert, g->m->xn + (size_t)(n - 1) * Hh, 1, NULL, NULL, 0, 0, NULL, logits);
        /* non-finite logits (NaN or inf weights) would be sampled into garbage: say so instead */
        for (int i = 0; i < V; i++)
            if (!isfinite(logits[i]))
                return PK_ERR_NUMERIC;
    }
    return PK_OK;
}

/* ---- sampler ---- */

typedef struct cand {
    float p;
    int32_t id;
} cand;

struct pk_sampler {
    pk_sampler_params p;
    int V;
    uint64_t state;
    cand *c; /* [V] */
};

pk_status pk_sampler_create(pk_sampler_params p, int vocab, pk_sampler **out)
{
    *out = NULL;
    if (vocab < 1 || !(p.top_p > 0.0f) || p.top_k < 0)
        return PK_ERR_ARG;
    pk_sampler *s = calloc(1, sizeof *s);
    if (!s)
        return PK_ERR_NOMEM;
    s->c = malloc((size_t)vocab * sizeof *s->c);
    if (!s->c) {
        free(s);
        return PK_ERR_NOMEM;
    }
    s->p = p;
    s->V = vocab;
    s->state = p.seed ^ 0x9E3779B97F4A7C15ull;
    *out = s;
    return PK_OK;
}

void pk_sampler_free(pk_sampler *s)
{
    if (!s)
        return;
    free(s->c);
    free(s);
}

/* splitmix64 -> uniform double in [0, 1) */
static double next_uniform(uint64_t *st)
{
    uint64_t z = pk_splitmix64(*st);
    *st += 0x9E3779B97F4A7C15ull;
    return (double)(z >> 11) * (1.0 / 9007199254740992.0);
}

static int cmp_cand(const void *a, const void *b)
{
    const cand *x = a, *y = b;
    if (x->p != y->p)
        return x->p > y->p ? -1 : 1;
    return x->id < y->id ? -1 : (x->id > y->id);
}

int32_t pk_sampler_sample(pk_sampler *s, const float *logits)
{
    int V = s->V;
    int32_t best = 0;
    for (int i = 1; i < V; i++)
        best = logits[i] > logits[best] ? i : best;
    if (!(s->p.temperature > 0.0f))
        return best;
    double mx = (double)logits[best], inv_t = 1.0 / (double)s->p.temperature;
    for (int i = 0; i < V; i++) {
        s->c[i].p = (float)exp(((double)logits[i] - mx) * inv_t);
        s->c[i].id = i;
    }
    qsort(s->c, (size_t)V, sizeof *s->c, cmp_cand);
    int n = V;
    if (s->p.top_k > 0 && s->p.top_k < n)
        n = s->p.top_k;
    double total = 0;
    for (int i = 0; i < n; i++)
        total += (double)s->c[i].p;
    if (s->p.top_p < 1.0f) {
        double acc = 0;
        for (int i = 0; i < n; i++) {
            acc += (double)s->c[i].p;
            if (acc >= (double)s->p.top_p * total) {
                n = i + 1;
                total = acc;
                break;
            }
        }
    }
    double u = next_uniform(&s->state) * total, acc = 0;
    for (int i = 0; i < n; i++) {
        acc += (double)s->c[i].p;
        if (u < acc)
            return s->c[i].id;
    }
    return s->c[n - 1].id;
}
