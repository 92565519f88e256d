/* objective.c: training objectives over tokenized examples (pk_mezo.h): lm, classify and
 * -accuracy, and the deterministic batch order. Token ids are derived from private text, so they
 * are wiped when the objective is freed. */
#include "pk_mezo.h"

#include "pk_crypto.h"

#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_OPTIONS 32

typedef struct tok_seq {
    int32_t *ids;
    int32_t n;
    int32_t start_target; /* lm: first position counted as a target (prompt+response), else 1 */
} tok_seq;

struct pk_objective {
    pk_objective_kind kind;
    int seq_len;
    int causal;
    size_t n;       /* examples */
    tok_seq *ex;    /* lm: the example; classify: the prompt */
    int32_t *label; /* classify: option index per example */
    int n_opt;
    tok_seq opt[MAX_OPTIONS]; /* label words */
    int32_t opt_first[MAX_OPTIONS];
    char opt_word[MAX_OPTIONS][64]; /* label words, trimmed: what the examples' labels match */
    int32_t mask_id;

    /* current selection, as a batch */
    size_t *sel;
    size_t n_sel, cap_sel;
    int32_t *ids, *lengths, *sel_b, *sel_t;
    uint8_t *target;
    double *seq_nll;    /* [cap_np * rows] */
    int32_t *seq_count; /* [cap_np * rows] */
    float *logits;      /* [cap_np * rows * MAX_OPTIONS] */
    int cap_np;         /* evaluations the three above hold (>= 2: a +/- pair) */
    int rows, T;
};

int pk_objective_parse(const char *s, pk_objective_kind *out)
{
    if (!strcmp(s, "lm"))
        *out = PK_OBJ_LM;
    else if (!strcmp(s, "classify"))
        *out = PK_OBJ_CLASSIFY;
    else if (!strcmp(s, "accuracy"))
        *out = PK_OBJ_ACCURACY;
    else
        return -1;
    return 0;
}

const char *pk_objective_name(pk_objective_kind k)
{
    return k == PK_OBJ_CLASSIFY ? "classify" : k == PK_OBJ_ACCURACY ? "accuracy" : "lm";
}

static void seq_free(tok_seq *s)
{
    if (s->ids != NULL) {
        pk_secure_wipe(s->ids, (size_t)s->n * sizeof(int32_t));
        free(s->ids);
    }
    s->ids = NULL;
    s->n = 0;
}

/* Token rows of a selection of n examples: one per option on a causal model (each option
 * scored after the prompt), one per example otherwise (the options' logits at <mask>). */
static size_t sel_rows(const pk_objective *o, size_t n)
{
    return n * (size_t)(o->n_opt > 0 && o->causal ? o->n_opt : 1);
}

/* Frees the selection's buffers, the token ids (example text) wiped first. */
static void sel_free(pk_objective *o)
{
    if (o->ids != NULL)
        pk_secure_wipe(o->ids, sel_rows(o, o->cap_sel) * (size_t)o->seq_len * sizeof(int32_t));
    free(o->sel);
    free(o->ids);
    free(o->lengths);
    free(o->sel_b);
    free(o->sel_t);
    free(o->target);
    free(o->seq_nll);
    free(o->seq_count);
    free(o->logits);
    o->sel = NULL;
    o->ids = NULL;
    o->lengths = o->sel_b = o->sel_t = NULL;
    o->target = NULL;
    o->seq_nll = NULL;
    o->seq_count = NULL;
    o->logits = NULL;
}

void pk_objective_free(pk_objective *o)
{
    if (o == NULL)
        return;
    for (size_t i = 0; i < o->n; i++)
        seq_free(&o->ex[i]);
    for (int k = 0; k < o->n_opt; k++)
        seq_free(&o->opt[k]);
    free(o->ex);
    free(o->label);
    sel_free(o);
    free(o);
}

size_t pk_objective_size(const pk_objective *o)
{
    return o->n;
}

/* Encodes text and appends to s (growing). */
static pk_status append_text(const pk_tokenizer *tok, const char *text, int add_special, tok_seq *s)
{
    int32_t *ids = NULL;
    size_t n = 0;
    pk_status st = pk_tokenizer_encode(tok, text, strlen(text), add_special, &ids, &n);
    if (st != PK_OK)
        return st;
    int32_t *grown = realloc(s->ids, ((size_t)s->n + n + 1) * sizeof(int32_t));
    if (grown == NULL) {
        free(ids);
        return PK_ERR_NOMEM;
    }
    s->ids = grown;
    memcpy(s->ids + s->n, ids, n * sizeof(int32_t));
    s->n += (int32_t)n;
    pk_secure_wipe(ids, n * sizeof(int32_t));
    free(ids);
    return PK_OK;
}

/* A classify template must place the example ({text}) and may place a second text ({text2});
 * any other {name} is a typo that would reach the model verbatim, so it is refused. */
static pk_status check_template(const char *tpl, char *err, size_t errlen)
{
    if (strstr(tpl, "{text}") == NULL) {
        pk_seterr(err, errlen, "the template \"%s\" has no {text} (where the example goes)", tpl);
        return PK_ERR_ARG;
    }
    for (const char *p = strchr(tpl, '{'); p != NULL; p = strchr(p + 1, '{')) {
        size_t n = strspn(p + 1, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_");
        if (n == 0 || p[1 + n] != '}')
            continue; /* a literal brace, not a placeholder */
        if ((n == 4 && !strncmp(p + 1, "text", 4)) || (n == 5 && !strncmp(p + 1, "text2", 5)))
            continue;
        pk_seterr(err, errlen,
                  "the template has an unknown placeholder {%.*s} (known: {text}, "
                  "{text2})",
                  (int)n, p + 1);
        return PK_ERR_ARG;
    }
    return PK_OK;
}

/* template with {text} and {text2} substituted; owned result (free()). */
static char *fill_template(const char *tpl, const char *text, const char *text2)
{
    size_t cap = strlen(tpl) + 1;
    for (const char *p = tpl; (p = strstr(p, "{text")) != NULL; p++)
        cap += (text ? strlen(text) : 0) + (text2 ? strlen(text2) : 0);
    char *out = malloc(cap);
    if (out == NULL)
        return NULL;
    size_t o = 0;
    for (const char *p = tpl; *p;) {
        if (!strncmp(p, "{text}", 6)) {
            size_t l = text ? strlen(text) : 0;
            memcpy(out + o, text ? text : "", l);
            o += l;
            p += 6;
        } else if (!strncmp(p, "{text2}", 7)) {
            size_t l = text2 ? strlen(text2) : 0;
            memcpy(out + o, text2 ? text2 : "", l);
            o += l;
            p += 7;
        } else {
            out[o++] = *p++;
        }
    }
    out[o] = 0;
    return out;
}

static void trim_copy(const char *s, size_t n, char *out, size_t cap)
{
    while (n > 0 && isspace((unsigned char)*s)) {
        s++;
        n--;
    }
    while (n > 0 && isspace((unsigned char)s[n - 1]))
        n--;
    if (n >= cap)
        n = cap - 1;
    memcpy(out, s, n);
    out[n] = 0;
}

static int label_index(const pk_objective *o, const char *label)
{
    char t[64];
    trim_copy(label, strlen(label), t, sizeof t);
    for (int k = 0; k < o->n_opt; k++)
        if (!strcmp(t, o->opt_word[k]))
            return k;
    char *end = NULL;
    long v = strtol(t, &end, 10);
    if (end != t && *end == 0 && v >= 0 && v < o->n_opt)
        return (int)v;
    if (o->n_opt == 2 && (!strcmp(t, "true") || !strcmp(t, "false")))
        return !strcmp(t, "true") ? 1 : 0;
    return -1;
}

/* The label words of a classify objective: "w1,w2,..." into opt[] (tokens, first token) and
 * opt_word[] (trimmed, for matching the examples' labels). */
static pk_status parse_labels(pk_objective *o, const pk_tokenizer *tok, const char *labels,
                              char *err, size_t errlen)
{
    for (const char *s = labels;;) {
        const char *c = strchr(s, ',');
        size_t l = c ? (size_t)(c - s) : strlen(s);
        if (o->n_opt == MAX_OPTIONS || l == 0 || l >= 64) {
            pk_seterr(err, errlen, "label words '%s': 2..%d comma-separated words of < 64 bytes",
                      labels, MAX_OPTIONS);
            return PK_ERR_ARG;
        }
        char w[64];
        memcpy(w, s, l);
        w[l] = 0;
        trim_copy(w, l, o->opt_word[o->n_opt], sizeof o->opt_word[0]);
        /* a label word keeps its leading space (" great"): that is how it follows the prompt */
        pk_status st = append_text(tok, w, 0, &o->opt[o->n_opt]);
        if (st != PK_OK)
            return st;
        if (o->opt[o->n_opt].n == 0) {
            pk_seterr(err, errlen, "label word '%s' encodes to no token", w);
            return PK_ERR_ARG;
        }
        o->opt_first[o->n_opt] = o->opt[o->n_opt].ids[0];
        o->n_opt++;
        if (c == NULL)
            break;
        s = c + 1;
    }
    if (o->n_opt < 2) {
        pk_seterr(err, errlen, "label words '%s': need at least two", labels);
        return PK_ERR_ARG;
    }
    return PK_OK;
}

/* What the objective kind needs of the model and the parameters; classify: the label words. */
static pk_status check_kind(pk_objective *o, const pk_model *m, const pk_tokenizer *tok,
                            pk_objective_params p, char *err, size_t errlen)
{
    if (p.kind == PK_OBJ_LM) {
        if (!o->causal) {
            pk_seterr(err, errlen, "objective lm needs a causal model (this one is %s)",
                      pk_model_arch(m));
            return PK_ERR_ARG;
        }
        return PK_OK;
    }
    if (p.labels == NULL || p.template_ == NULL) {
        pk_seterr(err, errlen, "objective %s needs a prompt template and label words",
                  pk_objective_name(p.kind));
        return PK_ERR_ARG;
    }
    pk_status st = check_template(p.template_, err, errlen);
    if (st != PK_OK)
        return st;
    if (!o->causal && (strstr(p.template_, "<mask>") == NULL || o->mask_id < 0)) {
        pk_seterr(err, errlen, "the prompt template must contain <mask> for %s (a masked LM)",
                  pk_model_arch(m));
        return PK_ERR_ARG;
    }
    return parse_labels(o, tok, p.labels, err, errlen);
}

/* lm: the example's text (prompt + response: targets from the response on) into s, at most
 * seq_len tokens. *keep = 0 for an example with nothing to predict (s is then empty). */
static pk_status encode_lm(const pk_objective *o, const pk_tokenizer *tok, const pk_example *e,
                           tok_seq *s, int *keep)
{
    pk_status st = PK_OK;
    *keep = 0;
    if (e->prompt != NULL && e->response != NULL) {
        st = append_text(tok, e->prompt, 1, s);
        if (st == PK_OK) {
            s->start_target = s->n;
            st = append_text(tok, e->response, 0, s);
        }
    } else if (e->text != NULL) {
        st = append_text(tok, e->text, 1, s);
        if (st == PK_OK && e->text2 != NULL) {
            st = append_text(tok, " ", 0, s);
            if (st == PK_OK)
                st = append_text(tok, e->text2, 0, s);
        }
    } else {
        return PK_OK;
    }
    if (st != PK_OK)
        return st;
    if (s->n > o->seq_len)
        s->n = o->seq_len;
    if (s->n < 2 || s->start_target >= s->n) {
        seq_free(s);
        return PK_OK;
    }
    *keep = 1;
    return PK_OK;
}

/* Fits a prompt into the room the label words leave: keeps the first token (BOS) and the end
 * of the prompt, where the cue is; a masked LM's <mask> must survive. */
static pk_status fit_prompt(const pk_objective *o, const pk_example *e, tok_seq *s, char *err,
                            size_t errlen)
{
    int maxopt = 0;
    for (int k = 0; k < o->n_opt; k++)
        maxopt = o->opt[k].n > maxopt ? o->opt[k].n : maxopt;
    int room = o->causal ? o->seq_len - maxopt : o->seq_len;
    if (room < 2) {
        pk_seterr(err, errlen, "a sequence length of %d tokens leaves no room for the prompt",
                  o->seq_len);
        return PK_ERR_ARG;
    }
    if (s->n > room) {
        int drop = s->n - room;
        memmove(s->ids + 1, s->ids + 1 + drop, (size_t)(room - 1) * sizeof(int32_t));
        s->n = room;
    }
    if (o->causal)
        return PK_OK;
    int found = 0;
    for (int t = 0; t < s->n; t++)
        found |= s->ids[t] == o->mask_id;
    if (!found) {
        pk_seterr(err, errlen, "example %lld: the <mask> token was truncated away",
                  (long long)e->id);
        return PK_ERR_ARG;
    }
    return PK_OK;
}

/* classify / accuracy: the example's label as an option index into *label, and its prompt (the
 * template filled with its text) into s. */
static pk_status encode_prompt(const pk_objective *o, const pk_tokenizer *tok,
                               pk_objective_params p, const pk_example *e, tok_seq *s,
                               int32_t *label, char *err, size_t errlen)
{
    if (e->label == NULL) {
        pk_seterr(err, errlen, "example %lld has no label (objective %s)", (long long)e->id,
                  pk_objective_name(p.kind));
        return PK_ERR_FORMAT;
    }
    int li = label_index(o, e->label);
    if (li < 0) {
        pk_seterr(err, errlen, "example %lld: label '%s' is not one of the label words '%s'",
                  (long long)e->id, e->label, p.labels);
        return PK_ERR_FORMAT;
    }
    *label = li;
    char *prompt = fill_template(p.template_, e->text ? e->text : e->prompt, e->text2);
    if (prompt == NULL)
        return PK_ERR_NOMEM;
    pk_status st = append_text(tok, prompt, 1, s);
    pk_secure_wipe(prompt, strlen(prompt));
    free(prompt);
    if (st != PK_OK)
        return st;
    return fit_prompt(o, e, s, err, errlen);
}

/* An empty objective for n examples with the model's shape facts. */
static pk_objective *objective_alloc(const pk_model *m, const pk_tokenizer *tok,
                                     pk_objective_params p, size_t n)
{
    pk_objective *o = calloc(1, sizeof *o);
    if (o == NULL)
        return NULL;
    o->kind = p.kind;
    o->seq_len = p.seq_len > 0 ? p.seq_len : 128;
    if (o->seq_len > pk_model_max_positions(m))
        o->seq_len = pk_model_max_positions(m);
    o->causal = pk_model_is_causal(m);
    o->mask_id = pk_tokenizer_mask(tok);
    o->ex = calloc(n ? n : 1, sizeof *o->ex);
    o->label = calloc(n ? n : 1, sizeof *o->label);
    if (o->ex == NULL || o->label == NULL) {
        pk_objective_free(o);
        return NULL;
    }
    return o;
}

pk_status pk_objective_new(const pk_model *m, const pk_tokenizer *tok, pk_objective_params p,
                           pk_example *const *examples, size_t n, pk_objective **out, char *err,
                           size_t errlen)
{
    *out = NULL;
    /* ids past the embedding rows would index out of the model: refuse the pair up front */
    if (pk_tokenizer_vocab_size(tok) > (size_t)pk_model_vocab_size(m)) {
        pk_seterr(err, errlen,
                  "the tokenizer has %zu ids but the model's vocabulary has %d: they do not "
                  "belong together",
                  pk_tokenizer_vocab_size(tok), pk_model_vocab_size(m));
        return PK_ERR_ARG;
    }
    pk_objective *o = objective_alloc(m, tok, p, n);
    if (o == NULL)
        return PK_ERR_NOMEM;
    pk_status st = check_kind(o, m, tok, p, err, errlen);
    size_t kept = 0;
    for (size_t i = 0; st == PK_OK && i < n; i++) {
        tok_seq *s = &o->ex[kept];
        int keep = 1;
        memset(s, 0, sizeof *s);
        s->start_target = 1;
        if (p.kind == PK_OBJ_LM)
            st = encode_lm(o, tok, examples[i], s, &keep);
        else
            st = encode_prompt(o, tok, p, examples[i], s, &o->label[kept], err, errlen);
        kept += st == PK_OK && keep;
    }
    if (st == PK_OK && kept == 0) {
        pk_seterr(err, errlen, "no usable example (need at least 2 tokens of text each)");
        st = PK_ERR_ARG;
    }
    if (st != PK_OK) {
        o->n = n; /* free every slot: those past the failed one are still zeroed */
        pk_objective_free(o);
        return st;
    }
    o->n = kept;
    *out = o;
    return PK_OK;
}

static pk_status ensure_cap(pk_objective *o, size_t n)
{
    if (n <= o->cap_sel)
        return PK_OK;
    size_t rows = sel_rows(o, n);
    size_t T = (size_t)o->seq_len;
    sel_free(o);
    o->sel = malloc(n * sizeof(size_t));
    o->ids = malloc(rows * T * sizeof(int32_t));
    o->lengths = malloc(rows * sizeof(int32_t));
    o->sel_b = malloc(rows * sizeof(int32_t));
    o->sel_t = malloc(rows * sizeof(int32_t));
    o->target = malloc(rows * T);
    /* at least doubled: a pk_perturb with both = 1 returns the + and the - pass's */
    size_t np = o->cap_np > 2 ? (size_t)o->cap_np : 2;
    o->seq_nll = malloc(np * rows * sizeof(double));
    o->seq_count = malloc(np * rows * sizeof(int32_t));
    o->logits = malloc(np * rows * MAX_OPTIONS * sizeof(float));
    o->cap_np = (int)np;
    o->cap_sel = n;
    if (!o->sel || !o->ids || !o->lengths || !o->sel_b || !o->sel_t || !o->target || !o->seq_nll ||
        !o->seq_count || !o->logits) {
        o->cap_sel = 0;
        return PK_ERR_NOMEM;
    }
    return PK_OK;
}

size_t pk_objective_row_tokens(const pk_objective *o)
{
    int per_option = o->kind != PK_OBJ_LM && o->causal;
    size_t n = 0;
    for (size_t i = 0; i < o->n; i++) {
        for (int k = 0; k < (per_option ? o->n_opt : 1); k++)
            n += (size_t)o->ex[i].n + (per_option ? (size_t)o->opt[k].n : 0);
    }
    return n;
}

pk_status pk_objective_freeze_prefix(const pk_objective *o, pk_model *m, const uint8_t *trainable)
{
    if (o == NULL || m == NULL)
        return PK_ERR_ARG;
    size_t cap = pk_model_frozen_cap(pk_model_weight_bytes(m));
    size_t H = (size_t)pk_model_hidden_size(m);
    size_t need = pk_objective_row_tokens(o) * (H * sizeof(float) + 2 * sizeof(int32_t));
    int level = need <= cap ? pk_model_trainable_level(m, trainable) : 0;
    return pk_model_freeze_prefix(m, level, cap);
}

pk_status pk_objective_select(pk_objective *o, const size_t *idx, size_t n)
{
    pk_status st = ensure_cap(o, n);
    if (st != PK_OK)
        return st;
    int rows_per = (o->kind != PK_OBJ_LM && o->causal) ? o->n_opt : 1;
    int T = 1;
    for (size_t i = 0; i < n; i++) {
        PK_ASSERT(idx[i] < o->n);
        const tok_seq *s = &o->ex[idx[i]];
        for (int k = 0; k < rows_per; k++) {
            int len = s->n + ((o->kind != PK_OBJ_LM && o->causal) ? o->opt[k].n : 0);
            T = len > T ? len : T;
        }
    }
    o->T = T;
    o->rows = (int)n * rows_per;
    memcpy(o->sel, idx, n * sizeof(size_t));
    o->n_sel = n;
    for (size_t i = 0; i < n; i++) {
        const tok_seq *s = &o->ex[idx[i]];
        for (int k = 0; k < rows_per; k++) {
            size_t r = i * (size_t)rows_per + (size_t)k;
            int32_t *row = o->ids + r * (size_t)T;
            uint8_t *tg = o->target + r * (size_t)T;
            memset(tg, 0, (size_t)T);
            memcpy(row, s->ids, (size_t)s->n * sizeof(int32_t));
            int len = s->n;
            if (o->kind == PK_OBJ_LM) {
                for (int t = s->start_target; t < s->n; t++)
                    tg[t] = 1;
            } else if (o->causal) {
                memcpy(row + len, o->opt[k].ids, (size_t)o->opt[k].n * sizeof(int32_t));
                for (int t = len; t < len + o->opt[k].n; t++)
                    tg[t] = 1;
                len += o->opt[k].n;
            } else {
                int mpos = 0;
                for (int t = 0; t < len; t++)
                    if (row[t] == o->mask_id)
                        mpos = t;
                o->sel_b[r] = (int32_t)r;
                o->sel_t[r] = mpos;
            }
            for (int t = len; t < T; t++)
                row[t] = row[0]; /* padding: ignored past lengths[r] */
            o->lengths[r] = len;
        }
    }
    return PK_OK;
}

/* The buffers of the selection made to hold np evaluations' outputs. */
static pk_status ensure_np(pk_objective *o, int np)
{
    if (np <= o->cap_np)
        return PK_OK;
    size_t rows = sel_rows(o, o->cap_sel), n = (size_t)np;
    double *nll = realloc(o->seq_nll, n * rows * sizeof(double));
    if (nll != NULL)
        o->seq_nll = nll;
    int32_t *cnt = realloc(o->seq_count, n * rows * sizeof(int32_t));
    if (cnt != NULL)
        o->seq_count = cnt;
    float *lg = realloc(o->logits, n * rows * MAX_OPTIONS * sizeof(float));
    if (lg != NULL)
        o->logits = lg;
    if (nll == NULL || cnt == NULL || lg == NULL)
        return PK_ERR_NOMEM; /* the old buffers stay, still cap_np long */
    o->cap_np = np;
    return PK_OK;
}

/* The loss of the current selection for every evaluation of sw (NULL: one unperturbed), as
 * pk_objective_loss documents for one. */
static pk_status obj_loss(pk_objective *o, pk_model *m, const pk_sweep *sw, double *loss,
                          double *acc, double *tokens)
{
    pk_batch b = {o->rows, o->T, o->ids, o->lengths, NULL};
    int np = pk_sweep_evals(sw);
    if (o->n_sel == 0)
        return PK_ERR_ARG;
    pk_status st = ensure_np(o, np);
    if (st != PK_OK)
        return st;
    if (o->kind == PK_OBJ_LM) {
        st = pk_model_loss_sweep(m, &b, o->target, sw, NULL, o->seq_count, loss);
        if (st != PK_OK)
            return st;
        double cnt = 0;
        for (int r = 0; r < o->rows; r++)
            cnt += o->seq_count[r];
        for (int k = 0; acc && k < np; k++)
            acc[k] = (double)NAN;
        if (tokens)
            *tokens = cnt;
        return PK_OK;
    }
    int K = o->n_opt;
    size_t per = o->n_sel * (size_t)K; /* scores per pass */
    if (o->causal) {
        st = pk_model_loss_sweep(m, &b, o->target, sw, o->seq_nll, o->seq_count, NULL);
        if (st != PK_OK)
            return st;
        for (int r = 0; r < np * o->rows; r++)
            o->logits[r] =
                (float)(-o->seq_nll[r] / (double)(o->seq_count[r] > 0 ? o->seq_count[r] : 1));
    } else {
        st = pk_model_select_sweep(m, &b, sw, (size_t)o->rows, o->sel_b, o->sel_t, (size_t)K,
                                   o->opt_first, 0, o->logits);
        if (st != PK_OK)
            return st;
    }
    /* causal: logits[i*K + k] is row i*K+k's score; roberta: row i's K label logits. Same layout.
     */
    for (int p = 0; p < np; p++) {
        double ce = 0, correct = 0;
        for (size_t i = 0; i < o->n_sel; i++) {
            const float *sc = o->logits + (size_t)p * per + i * (size_t)K;
            int y = o->label[o->sel[i]];
            double mx = (double)sc[0];
            int arg = 0;
            for (int k = 1; k < K; k++)
                if ((double)sc[k] > mx) {
                    mx = (double)sc[k];
                    arg = k;
                }
            double z = 0;
            for (int k = 0; k < K; k++)
                z += exp((double)sc[k] - mx);
            ce += -((double)sc[y] - mx - log(z));
            correct += arg == y;
        }
        double a = correct / (double)o->n_sel;
        loss[p] = o->kind == PK_OBJ_ACCURACY ? -a : ce / (double)o->n_sel;
        if (acc)
            acc[p] = a;
    }
    if (tokens)
        *tokens = (double)o->n_sel;
    return PK_OK;
}

pk_status pk_objective_loss(pk_objective *o, pk_model *m, const pk_perturb *pert, double *loss,
                            double *acc, double *tokens)
{
    pk_sweep s;
    memset(&s, 0, sizeof s);
    if (pert)
        s.pert = *pert;
    return obj_loss(o, m, pert ? &s : NULL, loss, acc, tokens);
}

pk_status pk_objective_loss_fn(void *user, pk_model *m, int micro, const pk_perturb *pert,
                               double *loss)
{
    (void)micro;
    return pk_objective_loss(user, m, pert, loss, NULL, NULL);
}

pk_status pk_objective_loss_sweep(pk_objective *o, pk_model *m, const pk_sweep *s, double *loss)
{
    return obj_loss(o, m, s, loss, NULL, NULL);
}

pk_status pk_objective_eval(pk_objective *o, pk_model *m, size_t B, double *loss, double *acc)
{
    double sum = 0, w = 0, asum = 0;
    size_t *idx = malloc((B ? B : 1) * sizeof(size_t));
    if (idx == NULL)
        return PK_ERR_NOMEM;
    pk_status st = PK_OK;
    for (size_t s = 0; s < o->n; s += B) {
        size_t n = o->n - s < B ? o->n - s : B;
        for (size_t j = 0; j < n; j++)
            idx[j] = s + j;
        st = pk_objective_select(o, idx, n);
        if (st != PK_OK)
            break;
        double l = 0, a = 0, t = 0;
        st = pk_objective_loss(o, m, NULL, &l, &a, &t);
        if (st != PK_OK)
            break;
        sum += l * t;
        w += t;
        asum += a * (double)n;
    }
    free(idx);
    if (st != PK_OK)
        return st;
    *loss = w > 0 ? sum / w : (double)NAN;
    *acc = o->kind == PK_OBJ_LM ? (double)NAN : asum / (double)o->n;
    return PK_OK;
}

static uint64_t mix64(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

pk_status pk_batch_indices(uint64_t run_seed, int64_t step, int micro, int n_micro,
                           size_t n_examples, size_t B, size_t *idx)
{
    if (n_examples == 0)
        return PK_ERR_ARG;
    uint64_t pos = ((uint64_t)step * (uint64_t)n_micro + (uint64_t)micro) * (uint64_t)B;
    size_t *perm = malloc(n_examples * sizeof(size_t));
    if (perm == NULL)
        return PK_ERR_NOMEM;
    uint64_t cur_epoch = UINT64_MAX;
    for (size_t b = 0; b < B; b++, pos++) {
        uint64_t epoch = pos / n_examples;
        if (epoch != cur_epoch) {
            cur_epoch = epoch;
            uint64_t r = mix64(run_seed ^ 0x62617463686f7264ull) ^ mix64(epoch); /* "batchord" */
            for (size_t i = 0; i < n_examples; i++)
                perm[i] = i;
            for (size_t i = n_examples; i > 1; i--) {
                r = mix64(r);
                size_t j = (size_t)(r % (uint64_t)i);
                size_t t = perm[i - 1];
                perm[i - 1] = perm[j];
                perm[j] = t;
            }
        }
        idx[b] = perm[pos % n_examples];
    }
    free(perm);
    return PK_OK;
}

/* pk_batch_indices over the first n_examples examples of o (idx [B] gets the indices), then
 * pk_objective_select of them. */
static pk_status select_step(pk_objective *o, uint64_t run_seed, int64_t step, int micro,
                             int n_micro, size_t n_examples, size_t B, size_t *idx)
{
    pk_status st = pk_batch_indices(run_seed, step, micro, n_micro, n_examples, B, idx);
    return st == PK_OK ? pk_objective_select(o, idx, B) : st;
}

/* Selects micro-batch `micro` of b's step. */
static pk_status batches_select(const pk_objective_batches *b, int micro)
{
    return select_step(b->obj, b->run_seed, b->step, micro, b->n_micro, b->n_examples, b->batch,
                       b->idx);
}

static pk_status batches_loss(void *user, pk_model *m, int micro, const pk_perturb *pert,
                              double *loss)
{
    pk_objective_batches *b = user;
    pk_status st = batches_select(b, micro);
    return st == PK_OK ? pk_objective_loss(b->obj, m, pert, loss, NULL, NULL) : st;
}

static pk_status batches_sweep(void *user, pk_model *m, int micro, const pk_sweep *s, double *loss)
{
    pk_objective_batches *b = user;
    pk_status st = batches_select(b, micro);
    return st == PK_OK ? pk_objective_loss_sweep(b->obj, m, s, loss) : st;
}

pk_mezo_loss pk_objective_batches_loss(pk_objective_batches *b)
{
    pk_mezo_loss l = {batches_loss, batches_sweep, b};
    return l;
}

pk_status pk_objective_step_grad(pk_objective *o, pk_model *m, const uint8_t *trainable,
                                 uint64_t shuffle_seed, int64_t step, size_t batch, uint64_t seed,
                                 pk_z_kind kind, float eps, float *g, int64_t *n_examples)
{
    size_t idx[1024];
    double gd = 0, lp = 0, lm = 0;
    size_t B = batch < 1024 ? batch : 1024;
    pk_status st = select_step(o, shuffle_seed, step, 0, 1, pk_objective_size(o), B, idx);
    if (st == PK_OK)
        st = pk_mezo_projected_grad(m, trainable, seed, kind, eps, 1, pk_objective_loss_fn, o, &gd,
                                    &lp, &lm);
    if (st != PK_OK)
        return st;
    *g = (float)gd;
    *n_examples = (int64_t)B;
    return PK_OK;
}
