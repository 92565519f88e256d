/* seedlog.c: seed-log files (pk_mezo.h). A seed log is everything needed to rebuild fine-tuned
 * weights from the base model: a few header lines and one line per step-log row. Format
 * (text, '\n' line ends, fields separated by one space):
 *
 *   pocketllm-seedlog 1
 *   base_hash <64 hex digits: pk_weights_hash of the base model>
 *   z gaussian|rademacher
 *   weight_decay <C99 hex float>
 *   trainable <spec: all | bitfit | a regex; rest of the line>
 *   [estimator fzoo|hizoo]             optional lines, written only when not the default
 *   [perturbations <N>]                (spsa without layer sampling), so older files and
 *   [fzoo_baseline mean]               files of plain runs read as before; replay applies
 *   [hessian_smooth <C99 hex float>]
 *   [hessian_every <K>]                the rows with pk_mezo_replay_ex under them
 *   [perturb_layers <K>]
 *   [perturb_stages <K>]
 *   [rounding stochastic|nearest]      16-bit weights' update rounding: always written now; a
 *                                      file without it predates stochastic rounding and
 *                                      replays rounding to nearest, as it was made
 *   steps <number of rows>
 *   <step> <q_index> <seed, decimal u64> <g> <lr> <eps> <loss_plus> <loss_minus>
 *   ...
 *
 * Floats are C99 hex floats ("%a"), so a round trip is exact; readers also accept decimal. Rows
 * are applied in file order with pk_mezo_update(seed, z, lr, g, weight_decay).
 *
 * A chained run (DESIGN 13) adds, before "steps", one optional line per ancestor, root first:
 *   parent steps <S> rows <R> z gaussian|rademacher weight_decay <hex float>
 *          [estimator fzoo|hizoo] [perturbations <N>] [fzoo_baseline mean]
 *          [hessian_smooth <hex float>]
 *          [hessian_every <K>] [perturb_layers <K>] [perturb_stages <K>]
 *          trainable <spec>                                               (one line)
 * and its R rows come after the "steps" line, ahead of the run's own: ancestor by ancestor,
 * each under its own settings, then the run's. A reader without chains refuses such a file
 * (it wants "steps" after "trainable") rather than replaying part of it.
 * Parent lines, version 2: the bracketed estimator fields (the same keys and values as the
 * log's own optional lines, in that order) are written only for an ancestor that did not train
 * with plain spsa, so a version-1 parent line (plain MeZO, written before they existed) is
 * still a valid line and reads as spsa, and a chain of plain ancestors is written byte for byte
 * as before. A version-1 reader refuses a version-2 line (it wants "trainable" after
 * weight_decay) instead of replaying the ancestor under the wrong estimator. */
#include "pk_mezo.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SEEDLOG_VERSION 1 /* the format this file writes and reads */

/* hessian_every K (hizoo's Hessian update interval, train --hessian-every) is written only when
 * above 1, so a log of every-step hizoo reads and is written as before the option. Replay does
 * not need it (a step without the Hessian update logged its weight rows only, and
 * pk_mezo_replay_ex follows the rows); the reader checks the rows against it: Hessian rows on
 * the steps with step % K == 0 only. */

void pk_seedlog_clear(pk_seedlog *log)
{
    if (log == NULL)
        return;
    free(log->rows);
    log->rows = NULL;
    log->n_rows = 0;
    for (size_t i = 0; i < log->n_parents; i++)
        free(log->parents[i].rows);
    free(log->parents);
    log->parents = NULL;
    log->n_parents = 0;
}

static const char *z_name(pk_z_kind z)
{
    return z == PK_Z_RADEMACHER ? "rademacher" : "gaussian";
}

static void write_rows(FILE *f, const pk_step_row *rows, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        const pk_step_row *r = &rows[i];
        fprintf(f, "%" PRId64 " %d %" PRIu64 " %a %a %a %a %a\n", r->step, (int)r->q_index, r->seed,
                (double)r->g, (double)r->lr, (double)r->eps, (double)r->loss_plus,
                (double)r->loss_minus);
    }
}

/* The optional estimator settings, none for plain spsa: one per line in the header (sep '\n'),
 * or as fields of a parent line (sep ' ', each after a space). */
static void write_estimator_fields(FILE *f, pk_estimator e, int perturbations, int fzoo_mean,
                                   float smooth, int every, int layers, int stages, char sep)
{
    const char *pre = sep == ' ' ? " " : "";
    char end[2] = {sep == ' ' ? 0 : sep, 0};
    if (e != PK_EST_SPSA)
        fprintf(f, "%sestimator %s%s", pre, pk_estimator_name(e), end);
    if (e == PK_EST_FZOO)
        fprintf(f, "%sperturbations %d%s", pre, perturbations, end);
    if (e == PK_EST_FZOO && fzoo_mean)
        fprintf(f, "%sfzoo_baseline mean%s", pre, end);
    if (e == PK_EST_HIZOO)
        fprintf(f, "%shessian_smooth %a%s", pre, (double)smooth, end);
    if (e == PK_EST_HIZOO && every > 1)
        fprintf(f, "%shessian_every %d%s", pre, every, end);
    if (layers > 0)
        fprintf(f, "%sperturb_layers %d%s", pre, layers, end);
    if (stages > 0)
        fprintf(f, "%sperturb_stages %d%s", pre, stages, end);
}

static void write_estimator(FILE *f, const pk_seedlog *log)
{
    write_estimator_fields(f, log->estimator, log->perturbations, log->fzoo_mean,
                           log->hessian_smooth, log->hessian_every, log->perturb_layers,
                           log->perturb_stages, '\n');
    fprintf(f, "rounding %s\n", pk_rounding_name(log->rounding));
}

pk_status pk_seedlog_write(const char *path, const pk_seedlog *log, char *err, size_t errlen)
{
    pk_out o; /* PATH.tmp renamed over PATH; /dev/stdout and the like written through */
    pk_status st = pk_out_open(&o, path, 1, err, errlen);
    if (st != PK_OK)
        return st;
    FILE *f = o.f;
    fprintf(f, "pocketllm-seedlog 1\nbase_hash %s\nz %s\nweight_decay %a\ntrainable %s\n",
            log->base_hash, z_name(log->z), (double)log->weight_decay, log->trainable);
    write_estimator(f, log);
    for (size_t i = 0; i < log->n_parents; i++) {
        const pk_seedlog_segment *p = &log->parents[i];
        fprintf(f, "parent steps %" PRId64 " rows %zu z %s weight_decay %a", p->steps, p->n_rows,
                z_name(p->z), (double)p->weight_decay);
        write_estimator_fields(f, p->estimator, p->perturbations, p->fzoo_mean, p->hessian_smooth,
                               p->hessian_every, p->perturb_layers, p->perturb_stages, ' ');
        fprintf(f, " trainable %s\n", p->trainable);
    }
    fprintf(f, "steps %zu\n", log->n_rows);
    for (size_t i = 0; i < log->n_parents; i++)
        write_rows(f, log->parents[i].rows, log->parents[i].n_rows);
    write_rows(f, log->rows, log->n_rows);
    return pk_out_commit(&o, err, errlen);
}

static int read_line(FILE *f, char *buf, size_t n)
{
    if (fgets(buf, (int)n, f) == NULL)
        return -1;
    size_t l = strlen(buf);
    if (l == 0 || buf[l - 1] != '\n')
        return -1; /* too long or truncated */
    buf[l - 1] = 0;
    return 0;
}

static int parse_float(const char *s, float *out)
{
    char *end = NULL;
    errno = 0;
    double v = strtod(s, &end);
    if (end == s || *end != 0 || errno != 0)
        return -1;
    *out = (float)v;
    return 0;
}

/* A file being read: the stream, its name and the number of the line last read. */
typedef struct reader {
    FILE *f;
    const char *path;
    int ln;
    char line[1024];
} reader;

static int next_line(reader *r)
{
    r->ln++;
    return read_line(r->f, r->line, sizeof r->line);
}

/* The six header lines; *nrows the row count they announce. */
static int in_range(float v, double lo, double hi)
{
    return isfinite(v) && (double)v >= lo && (double)v <= hi;
}

/* An optional estimator line: 1 if it was one (parsed into out), 0 if not, -1 if malformed. */
static int optional_line(const char *l, pk_seedlog *out)
{
    char *end = NULL;
    long v = 0;
    if (!strncmp(l, "estimator ", 10))
        return pk_estimator_parse(l + 10, &out->estimator) == 0 ? 1 : -1;
    if (!strncmp(l, "rounding ", 9))
        return pk_rounding_parse(l + 9, &out->rounding) == 0 ? 1 : -1;
    if (!strncmp(l, "fzoo_baseline ", 14)) { /* written only as "mean" */
        out->fzoo_mean = !strcmp(l + 14, "mean");
        return out->fzoo_mean ? 1 : -1;
    }
    if (!strncmp(l, "hessian_smooth ", 15))
        return parse_float(l + 15, &out->hessian_smooth) == 0 &&
                       in_range(out->hessian_smooth, 1e-30, 0.999999)
                   ? 1
                   : -1;
    int which = !strncmp(l, "perturbations ", 14)    ? 14
                : !strncmp(l, "perturb_layers ", 15) ? 15
                : !strncmp(l, "perturb_stages ", 15) ? 16
                : !strncmp(l, "hessian_every ", 14)  ? -14
                                                     : 0;
    if (which == 0)
        return 0;
    int at = which < 0 ? -which : which == 16 ? 15 : which;
    long hi = which < 0 ? PK_HESSIAN_EVERY_MAX : which == 16 ? 8192 : 4096;
    v = strtol(l + at, &end, 10);
    if (end == l + at || *end != 0 || v < 1 || v > hi)
        return -1;
    if (which == 14)
        out->perturbations = (int)v;
    else if (which == 15)
        out->perturb_layers = (int)v;
    else if (which == 16)
        out->perturb_stages = (int)v;
    else
        out->hessian_every = (int)v;
    return 1;
}

/* 1 if the settings belong to another estimator, or an estimator lacks its setting (fzoo its
 * perturbations, hizoo its hessian_smooth; hessian_every is hizoo's only, fzoo_baseline
 * fzoo's), or both kinds of layer sampling are set. */
static int settings_clash(const pk_seedlog *o)
{
    return (o->estimator == PK_EST_FZOO) != (o->perturbations > 0) ||
           (o->fzoo_mean && o->estimator != PK_EST_FZOO) ||
           (o->estimator == PK_EST_HIZOO) != (o->hessian_smooth > 0.0f) ||
           (o->hessian_every > 0 && o->estimator != PK_EST_HIZOO) ||
           (o->perturb_layers > 0 && o->perturb_stages > 0);
}

/* The estimator fields of a parent line, from p up to " trainable ": each "key value" as the
 * log's own optional line would be, into seg. 0, or -1 if one is malformed or unknown. */
static int parent_estimator(const char *p, const char **trainable, pk_seedlog_segment *seg)
{
    pk_seedlog opt;
    char kv[128];
    memset(&opt, 0, sizeof opt);
    while (strncmp(p, "trainable ", 10) != 0) {
        size_t k = strcspn(p, " ");
        size_t v = p[k] == ' ' ? strcspn(p + k + 1, " ") : 0;
        if (k == 0 || v == 0 || k + 1 + v >= sizeof kv || p[k + 1 + v] != ' ')
            return -1;
        snprintf(kv, sizeof kv, "%.*s", (int)(k + 1 + v), p);
        if (optional_line(kv, &opt) != 1)
            return -1;
        p += k + 1 + v + 1;
    }
    if (settings_clash(&opt))
        return -1;
    seg->estimator = opt.estimator;
    seg->perturbations = opt.perturbations;
    seg->fzoo_mean = opt.fzoo_mean;
    seg->hessian_smooth = opt.hessian_smooth;
    seg->hessian_every = opt.hessian_every;
    seg->perturb_layers = opt.perturb_layers;
    seg->perturb_stages = opt.perturb_stages;
    *trainable = p + 10;
    return 0;
}

/* "parent steps S rows R z KIND weight_decay F [estimator fields] trainable SPEC": one more
 * ancestor segment. */
static pk_status parse_parent(reader *r, pk_seedlog *out, char *err, size_t errlen)
{
    long long steps = -1;
    unsigned long long rows = 0;
    char z[16] = "", wd[64] = "";
    int at = 0;
    const char *spec = NULL;
    pk_seedlog_segment seg;
    memset(&seg, 0, sizeof seg);
    int ok = sscanf(r->line, "parent steps %lld rows %llu z %15s weight_decay %63s %n", &steps,
                    &rows, z, wd, &at) == 4 &&
             at > 0 && parent_estimator(r->line + at, &spec, &seg) == 0 && spec[0] != 0 &&
             strlen(spec) < sizeof seg.trainable && steps >= 0 && rows <= (1ull << 32) &&
             out->n_parents < 4096 && (!strcmp(z, "gaussian") || !strcmp(z, "rademacher")) &&
             parse_float(wd, &seg.weight_decay) == 0 && in_range(seg.weight_decay, 0, 100);
    if (!ok) {
        pk_seterr(
            err, errlen,
            "%s:%d: want 'parent steps S rows R z KIND weight_decay F [estimator E "
            "perturbations N fzoo_baseline mean hessian_smooth H hessian_every K perturb_layers K "
            "perturb_stages K] "
            "trainable SPEC'",
            r->path, r->ln);
        return PK_ERR_FORMAT;
    }
    pk_seedlog_segment *v = realloc(out->parents, (out->n_parents + 1) * sizeof *v);
    if (v == NULL)
        return PK_ERR_NOMEM;
    out->parents = v;
    seg.z = !strcmp(z, "rademacher") ? PK_Z_RADEMACHER : PK_Z_GAUSSIAN;
    seg.steps = steps;
    seg.n_rows = (size_t)rows; /* the rows themselves come after the "steps" line */
    strcpy(seg.trainable, spec);
    out->parents[out->n_parents++] = seg;
    return PK_OK;
}

static pk_status parse_header(reader *r, pk_seedlog *out, unsigned long long *nrows, char *err,
                              size_t errlen)
{
    const char *l = r->line;
    int first = next_line(r) == 0;
    if (!first || strcmp(l, "pocketllm-seedlog 1") != 0) {
        unsigned long v = 0;
        char tail = 0;
        /* A later format is refused by name, not mistaken for a broken file. */
        if (first && sscanf(l, "pocketllm-seedlog %lu%c", &v, &tail) == 1 && v > SEEDLOG_VERSION) {
            pk_seterr(err, errlen,
                      "%s: seed log format version %lu is newer than this pocketllm's (%d): "
                      "upgrade pocketllm to replay it",
                      r->path, v, SEEDLOG_VERSION);
            return PK_ERR_UNSUPPORTED;
        }
        pk_seterr(err, errlen, "%s:1: not a pocketllm seed log (want 'pocketllm-seedlog 1')",
                  r->path);
        return PK_ERR_FORMAT;
    }
    if (next_line(r) != 0 || strncmp(l, "base_hash ", 10) != 0 || strlen(l + 10) != 64 ||
        strspn(l + 10, "0123456789abcdef") != 64) {
        pk_seterr(err, errlen, "%s:%d: want 'base_hash <64 hex digits>'", r->path, r->ln);
        return PK_ERR_FORMAT;
    }
    memcpy(out->base_hash, l + 10, 65);
    if (next_line(r) != 0 || (strcmp(l, "z gaussian") != 0 && strcmp(l, "z rademacher") != 0)) {
        pk_seterr(err, errlen, "%s:%d: want 'z gaussian' or 'z rademacher'", r->path, r->ln);
        return PK_ERR_FORMAT;
    }
    out->z = !strcmp(l, "z rademacher") ? PK_Z_RADEMACHER : PK_Z_GAUSSIAN;
    if (next_line(r) != 0 || strncmp(l, "weight_decay ", 13) != 0 ||
        parse_float(l + 13, &out->weight_decay) != 0 || !in_range(out->weight_decay, 0, 100)) {
        pk_seterr(err, errlen, "%s:%d: want 'weight_decay <float in [0, 100]>'", r->path, r->ln);
        return PK_ERR_FORMAT;
    }
    if (next_line(r) != 0 || strncmp(l, "trainable ", 10) != 0 ||
        strlen(l + 10) >= sizeof out->trainable || l[10] == 0) {
        pk_seterr(err, errlen, "%s:%d: want 'trainable <spec>' (< 256 bytes)", r->path, r->ln);
        return PK_ERR_FORMAT;
    }
    strcpy(out->trainable, l + 10);
    char *end = NULL;
    int got = next_line(r);
    while (got == 0) {
        int opt = optional_line(l, out);
        if (opt < 0) {
            pk_seterr(err, errlen, "%s:%d: bad estimator setting '%s'", r->path, r->ln, l);
            return PK_ERR_FORMAT;
        }
        if (opt == 0 && strncmp(l, "parent ", 7) != 0)
            break;
        if (opt == 0) {
            pk_status st = parse_parent(r, out, err, errlen);
            if (st != PK_OK)
                return st;
        }
        got = next_line(r);
    }
    if (settings_clash(out)) {
        pk_seterr(err, errlen,
                  "%s: the estimator settings do not go together (estimator %s with%s "
                  "perturbations%s, hessian_smooth %g, hessian_every %d)",
                  r->path, pk_estimator_name(out->estimator), out->perturbations > 0 ? "" : "out",
                  out->fzoo_mean ? ", fzoo_baseline mean" : "", (double)out->hessian_smooth,
                  out->hessian_every);
        return PK_ERR_FORMAT;
    }
    if (got != 0 || strncmp(l, "steps ", 6) != 0 ||
        (*nrows = strtoull(l + 6, &end, 10), end == l + 6 || *end != 0) || *nrows > (1ull << 32)) {
        pk_seterr(err, errlen, "%s:%d: want 'steps <count>'", r->path, r->ln);
        return PK_ERR_FORMAT;
    }
    return PK_OK;
}

/* What replay may apply: a finite g, a learning rate and eps in the ranges a run can have, and
 * finite losses (a diverged step is never logged). */
static pk_status check_values(const reader *r, const pk_step_row *row, char *err, size_t errlen)
{
    const char *bad = !isfinite(row->g)                ? "g is not finite"
                      : !in_range(row->lr, 0, 100)     ? "lr is not in [0, 100]"
                      : !in_range(row->eps, 1e-12, 10) ? "eps is not in (0, 10]"
                      : !isfinite(row->loss_plus) || !isfinite(row->loss_minus)
                          ? "a loss is not finite"
                          : NULL;
    if (bad == NULL)
        return PK_OK;
    pk_seterr(err, errlen, "%s:%d: %s", r->path, r->ln, bad);
    return PK_ERR_FORMAT;
}

/* Rows come in (step, q) order: steps 0, 1, 2, ... each with q-indices 0 .. Q-1, the same Q for
 * every step (n-SPSA), so a duplicated, missing, reordered or swapped row is refused. every > 1
 * (hizoo's hessian_every K): a step with step % K != 0 has its weight rows only, q-indices
 * 1, 3, .. Q-1 (step 0 always has all Q). */
static pk_status check_order(const reader *r, const pk_step_row *rows, size_t i, int every,
                             char *err, size_t errlen)
{
    const pk_step_row *row = &rows[i], *prev = i > 0 ? &rows[i - 1] : NULL;
    int32_t q_per_step = 0;
    while ((size_t)q_per_step < i && rows[q_per_step].step == 0)
        q_per_step++;
    int weights_only = every > 1 && row->step % every != 0; /* q 1, 3, .. */
    int ok = prev == NULL ? row->step == 0 && row->q_index == 0
             : row->step == prev->step
                 ? row->q_index == prev->q_index + 1 + weights_only
                 : row->step == prev->step + 1 && row->q_index == weights_only &&
                       prev->q_index + 1 == q_per_step;
    if (ok && prev != NULL && row->step > 0 && row->q_index >= q_per_step)
        ok = 0; /* a later step with more perturbations than step 0 */
    if (ok)
        return PK_OK;
    pk_seterr(err, errlen,
              "%s:%d: step %lld q %d out of order (want steps from 0, each with "
              "q 0..%d in order%s)",
              r->path, r->ln, (long long)row->step, (int)row->q_index,
              q_per_step > 0 ? q_per_step - 1 : 0,
              every > 1 ? "; between hizoo's Hessian updates the odd q only" : "");
    return PK_ERR_FORMAT;
}

/* One row line "step q seed g lr eps loss+ loss-" into *row. */
static pk_status parse_row(reader *r, pk_step_row *row, char *err, size_t errlen)
{
    char *tok[8];
    int nt = 0;
    for (char *p = strtok(r->line, " "); p != NULL && nt < 8; p = strtok(NULL, " "))
        tok[nt++] = p;
    if (nt != 8 || strtok(NULL, " ") != NULL) {
        pk_seterr(err, errlen, "%s:%d: want 8 fields: step q seed g lr eps loss+ loss-", r->path,
                  r->ln);
        return PK_ERR_FORMAT;
    }
    char *e1 = NULL, *e2 = NULL, *e3 = NULL;
    errno = 0;
    long long step = strtoll(tok[0], &e1, 10);
    long q = strtol(tok[1], &e2, 10);
    unsigned long long seed = strtoull(tok[2], &e3, 10);
    if (*e1 || *e2 || *e3 || e1 == tok[0] || e2 == tok[1] || e3 == tok[2] || errno || step < 0 ||
        q < 0 || q > 1000000 || parse_float(tok[3], &row->g) || parse_float(tok[4], &row->lr) ||
        parse_float(tok[5], &row->eps) || parse_float(tok[6], &row->loss_plus) ||
        parse_float(tok[7], &row->loss_minus)) {
        pk_seterr(err, errlen, "%s:%d: malformed number in row", r->path, r->ln);
        return PK_ERR_FORMAT;
    }
    row->step = step;
    row->q_index = (int32_t)q;
    row->seed = seed;
    return PK_OK;
}

/* nrows rows of one log (an ancestor's or the run's own) into *rows (owned). */
/* every: hizoo's hessian_every (check_order), else 0. */
static pk_status parse_block(reader *r, unsigned long long nrows, int every, pk_step_row **rows_out,
                             char *err, size_t errlen)
{
    pk_step_row *rows = calloc(nrows ? (size_t)nrows : 1, sizeof *rows);
    *rows_out = rows;
    if (rows == NULL)
        return PK_ERR_NOMEM;
    for (size_t i = 0; i < (size_t)nrows; i++) {
        if (next_line(r) != 0) {
            pk_seterr(err, errlen, "%s:%d: missing or overlong row (header says %llu rows)",
                      r->path, r->ln, nrows);
            return PK_ERR_FORMAT;
        }
        pk_status st = parse_row(r, &rows[i], err, errlen);
        if (st == PK_OK)
            st = check_values(r, &rows[i], err, errlen);
        if (st == PK_OK)
            st = check_order(r, rows, i, every, err, errlen);
        if (st != PK_OK)
            return st;
    }
    if (nrows > 0) {
        const pk_step_row *last = &rows[nrows - 1];
        size_t q_per_step = 0;
        while (q_per_step < nrows && rows[q_per_step].step == 0)
            q_per_step++;
        if ((size_t)last->q_index + 1 != q_per_step) {
            pk_seterr(err, errlen, "%s:%d: the last step has %d of its %zu perturbations", r->path,
                      r->ln, (int)last->q_index + 1, q_per_step);
            return PK_ERR_FORMAT;
        }
    }
    return PK_OK;
}

/* The ancestors' rows, the nrows rows the header announced, then the end of the file. */
static pk_status parse_rows(reader *r, unsigned long long nrows, pk_seedlog *out, char *err,
                            size_t errlen)
{
    for (size_t i = 0; i < out->n_parents; i++) {
        pk_seedlog_segment *p = &out->parents[i];
        int every = p->estimator == PK_EST_HIZOO ? p->hessian_every : 0;
        pk_status st = parse_block(r, p->n_rows, every, &p->rows, err, errlen);
        if (st != PK_OK)
            return st;
        if (p->n_rows > 0 && p->rows[p->n_rows - 1].step + 1 != p->steps) {
            pk_seterr(err, errlen, "%s:%d: parent %zu announces %lld steps, its rows end at %lld",
                      r->path, r->ln, i + 1, (long long)p->steps,
                      (long long)p->rows[p->n_rows - 1].step + 1);
            return PK_ERR_FORMAT;
        }
    }
    int every = out->estimator == PK_EST_HIZOO ? out->hessian_every : 0;
    pk_status st = parse_block(r, nrows, every, &out->rows, err, errlen);
    if (st != PK_OK)
        return st;
    out->n_rows = (size_t)nrows;
    if (fgets(r->line, sizeof r->line, r->f) != NULL) {
        pk_seterr(err, errlen, "%s:%d: data after the %llu rows the header announces", r->path,
                  r->ln + 1, nrows);
        return PK_ERR_FORMAT;
    }
    return PK_OK;
}

pk_status pk_seedlog_read(const char *path, pk_seedlog *out, char *err, size_t errlen)
{
    reader r = {NULL, path, 0, ""};
    unsigned long long nrows = 0;
    memset(out, 0, sizeof *out);
    out->rounding =
        PK_ROUND_NEAREST; /* no "rounding" line: a log from before stochastic rounding */
    r.f = fopen(path, "r");
    if (r.f == NULL) {
        pk_seterr(err, errlen, "%s: %s", path, strerror(errno));
        return PK_ERR_IO;
    }
    pk_status st = parse_header(&r, out, &nrows, err, errlen);
    if (st == PK_OK)
        st = parse_rows(&r, nrows, out, err, errlen);
    fclose(r.f);
    if (st != PK_OK)
        pk_seedlog_clear(out);
    return st;
}

/* Replay settings: z, weight decay and the estimator fields over the defaults. */
static pk_mezo_params replay_params(pk_z_kind z, float weight_decay, pk_estimator e,
                                    int perturbations, float smooth, int layers, int stages)
{
    pk_mezo_params p = pk_mezo_default_params();
    p.z = z;
    p.weight_decay = weight_decay;
    p.estimator = e;
    if (perturbations > 0)
        p.perturbations = perturbations;
    if (smooth > 0.0f)
        p.hessian_smooth = smooth;
    p.perturb_layers = layers;
    p.perturb_stages = stages;
    p.hessian_budget = 1e30f; /* replaying a log the run could hold is not refused */
    return p;
}

pk_mezo_params pk_seedlog_params(const pk_seedlog *log)
{
    pk_mezo_params p = replay_params(log->z, log->weight_decay, log->estimator, log->perturbations,
                                     log->hessian_smooth, log->perturb_layers, log->perturb_stages);
    p.rounding = log->rounding;
    p.hessian_every = log->hessian_every; /* a record: 0 (no line) reads as 1 */
    p.fzoo_mean = log->fzoo_mean;         /* a record too */
    return p;
}

/* One segment's rows under its own trainable mask and replay settings. */
static pk_status replay_segment(pk_model *m, const char *trainable, const pk_mezo_params *p,
                                const pk_step_row *rows, size_t n, char *err, size_t errlen)
{
    uint8_t *mask = NULL;
    pk_mezo_state *est = NULL;
    pk_status st = pk_mezo_trainable(m, trainable, &mask, err, errlen);
    if (st == PK_OK)
        st = pk_mezo_state_new(m, mask, p, &est, err, errlen);
    if (st == PK_OK)
        pk_mezo_replay_ex(m, mask, p, est, rows, n);
    pk_mezo_state_free(est);
    free(mask);
    return st;
}

pk_status pk_seedlog_replay(pk_model *m, const pk_seedlog *log, char *err, size_t errlen)
{
    char hex[65];
    pk_status st = pk_weights_hash(m, hex);
    if (st != PK_OK)
        return st;
    if (strcmp(hex, log->base_hash) != 0) {
        pk_seterr(err, errlen,
                  "the model's weights hash %.16s... is not the seed log's base %.16s...", hex,
                  log->base_hash);
        return PK_ERR_ARG;
    }
    /* each ancestor under its own estimator, with its state from its own step 0 (as
     * pk_run_materialize replays a parent) */
    for (size_t i = 0; i < log->n_parents; i++) {
        const pk_seedlog_segment *seg = &log->parents[i];
        pk_mezo_params pp =
            replay_params(seg->z, seg->weight_decay, seg->estimator, seg->perturbations,
                          seg->hessian_smooth, seg->perturb_layers, seg->perturb_stages);
        pp.rounding = log->rounding; /* the log's marker covers its ancestors' rows too */
        st = replay_segment(m, seg->trainable, &pp, seg->rows, seg->n_rows, err, errlen);
        if (st != PK_OK)
            return st;
    }
    pk_mezo_params own = pk_seedlog_params(log);
    return replay_segment(m, log->trainable, &own, log->rows, log->n_rows, err, errlen);
}
