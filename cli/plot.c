/* plot.c: loss curves as a standalone SVG 1.1 document (pk_plot_svg), and the plots of a run or
 * of several runs read from the store (pk_plot_run, pk_plot_runs). Reading the step log and eval
 * points is left to store/; this file only lays out axes, ticks, curves and the legend. */
#include "progress.h"

#include "pk_train.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

/* Canvas and plot area in SVG user units (px). */
#define W        800.0
#define H        480.0
#define ML       80.0  /* left margin: y tick labels and axis label */
#define MR       180.0 /* right margin: legend */
#define MT       50.0  /* top margin: title */
#define MB       60.0  /* bottom margin: x tick labels and axis label */
#define PW       (W - ML - MR)
#define PH       (H - MT - MB)
#define MAX_TICK 12

/* The characters XML text escapes; xml_refs[i] is the reference of xml_special[i]. */
static const char xml_special[] = "&<>\"'";
static const char *const xml_refs[] = {"&amp;", "&lt;", "&gt;", "&quot;", "&apos;"};

/* Writes s as XML text: the special characters as references, control characters as '?'. */
static void xml_text(FILE *f, const char *s)
{
    for (; s && *s; s++) {
        unsigned char c = (unsigned char)*s;
        const char *special = strchr(xml_special, c);
        if (special) {
            fputs(xml_refs[special - xml_special], f);
        } else {
            /* XML 1.0 forbids most control characters even as references */
            fputc(c < 0x20 && c != '\t' && c != '\n' ? '?' : c, f);
        }
    }
}

/* SVG ids: letters, digits and '-' only. */
static void xml_id(FILE *f, const char *s)
{
    if (!s || !*s) {
        fputs("series", f);
        return;
    }
    if (!((*s >= 'A' && *s <= 'Z') || (*s >= 'a' && *s <= 'z')))
        fputc('s', f); /* an id must start with a letter */
    for (; *s; s++) {
        char c = *s;
        int ok =
            (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-';
        fputc(ok ? c : '-', f);
    }
}

/* Colors are attribute values: keep [#A-Za-z0-9(),. ] only. */
static void css_color(FILE *f, const char *s)
{
    if (!s || !*s) {
        fputs("#333333", f);
        return;
    }
    for (; *s; s++) {
        char c = *s;
        int ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                 c == '#' || c == '(' || c == ')' || c == ',' || c == '.' || c == ' ';
        if (ok)
            fputc(c, f);
    }
}

/* Ticks at multiples of 1, 2 or 5 x 10^k covering [lo, hi]: ~5 of them. */
static int nice_ticks(double lo, double hi, double *ticks, int max)
{
    double span = hi - lo;
    if (!(span > 0.0))
        return 0;
    double raw = span / 5.0;
    double mag = pow(10.0, floor(log10(raw)));
    double r = raw / mag;
    double step = (r < 1.5 ? 1.0 : r < 3.5 ? 2.0 : r < 7.5 ? 5.0 : 10.0) * mag;
    int k = 0;
    for (double t = ceil(lo / step) * step; t <= hi + step * 1e-9 && k < max; t += step)
        ticks[k++] = fabs(t) < step * 1e-9 ? 0.0 : t;
    return k;
}

typedef struct bounds {
    double x0, x1, y0, y1;
} bounds;

static int data_bounds(const pk_plot_series *series, size_t n_series, bounds *b)
{
    int any = 0;
    b->x0 = b->y0 = HUGE_VAL;
    b->x1 = b->y1 = -HUGE_VAL;
    for (size_t s = 0; s < n_series; s++)
        for (size_t i = 0; i < series[s].n; i++) {
            double x = series[s].x[i], y = series[s].y[i];
            if (!isfinite(x) || !isfinite(y))
                continue;
            any = 1;
            b->x0 = fmin(b->x0, x);
            b->x1 = fmax(b->x1, x);
            b->y0 = fmin(b->y0, y);
            b->y1 = fmax(b->y1, y);
        }
    if (!any)
        return 0;
    if (b->x1 - b->x0 < 1e-12) {
        b->x0 -= 1.0;
        b->x1 += 1.0;
    }
    double pad = (b->y1 - b->y0) * 0.05;
    if (pad < 1e-9)
        pad = fmax(fabs(b->y0) * 0.05, 0.5);
    b->y0 -= pad;
    b->y1 += pad;
    return 1;
}

static double px(const bounds *b, double x)
{
    return ML + (x - b->x0) / (b->x1 - b->x0) * PW;
}

static double py(const bounds *b, double y)
{
    return MT + PH - (y - b->y0) / (b->y1 - b->y0) * PH;
}

static void draw_axes(FILE *f, const bounds *b, const char *xlabel, const char *ylabel)
{
    double t[MAX_TICK];
    int n = nice_ticks(b->x0, b->x1, t, MAX_TICK);
    fputs("<g id=\"x-axis\" font-size=\"12\" text-anchor=\"middle\">\n", f);
    for (int i = 0; i < n; i++) {
        double x = px(b, t[i]);
        fprintf(f, "<line x1=\"%.2f\" y1=\"%.2f\" x2=\"%.2f\" y2=\"%.2f\" stroke=\"#e0e0e0\"/>\n",
                x, MT, x, MT + PH);
        fprintf(f, "<line x1=\"%.2f\" y1=\"%.2f\" x2=\"%.2f\" y2=\"%.2f\" stroke=\"#000\"/>\n", x,
                MT + PH, x, MT + PH + 5.0);
        fprintf(f, "<text x=\"%.2f\" y=\"%.2f\">%g</text>\n", x, MT + PH + 19.0, t[i]);
    }
    fprintf(f, "<text x=\"%.2f\" y=\"%.2f\" font-size=\"14\">", ML + PW / 2.0, H - 15.0);
    xml_text(f, xlabel);
    fputs("</text>\n</g>\n<g id=\"y-axis\" font-size=\"12\" text-anchor=\"end\">\n", f);
    n = nice_ticks(b->y0, b->y1, t, MAX_TICK);
    for (int i = 0; i < n; i++) {
        double y = py(b, t[i]);
        fprintf(f, "<line x1=\"%.2f\" y1=\"%.2f\" x2=\"%.2f\" y2=\"%.2f\" stroke=\"#e0e0e0\"/>\n",
                ML, y, ML + PW, y);
        fprintf(f, "<line x1=\"%.2f\" y1=\"%.2f\" x2=\"%.2f\" y2=\"%.2f\" stroke=\"#000\"/>\n",
                ML - 5.0, y, ML, y);
        fprintf(f, "<text x=\"%.2f\" y=\"%.2f\">%g</text>\n", ML - 8.0, y + 4.0, t[i]);
    }
    fprintf(f,
            "<text x=\"%.2f\" y=\"%.2f\" font-size=\"14\" text-anchor=\"middle\" "
            "transform=\"rotate(-90 %.2f %.2f)\">",
            20.0, MT + PH / 2.0, 20.0, MT + PH / 2.0);
    xml_text(f, ylabel);
    fputs("</text>\n</g>\n", f);
    fprintf(f,
            "<rect x=\"%.2f\" y=\"%.2f\" width=\"%.2f\" height=\"%.2f\" fill=\"none\" "
            "stroke=\"#000\"/>\n",
            ML, MT, PW, PH);
}

static void draw_series(FILE *f, const bounds *b, const pk_plot_series *s)
{
    fputs("<path id=\"", f);
    xml_id(f, s->id);
    fputs("\" fill=\"none\" stroke=\"", f);
    css_color(f, s->color);
    fprintf(f, "\" stroke-width=\"%s\"%s d=\"", s->faint ? "1" : "2",
            s->faint ? " stroke-opacity=\"0.35\"" : "");
    int pen_down = 0;
    for (size_t i = 0; i < s->n; i++) {
        if (!isfinite(s->x[i]) || !isfinite(s->y[i])) {
            pen_down = 0; /* a gap in the curve */
            continue;
        }
        fprintf(f, "%s%.2f %.2f ", pen_down ? "L" : "M", px(b, s->x[i]), py(b, s->y[i]));
        pen_down = 1;
    }
    fputs("\"/>\n", f);
    if (!s->markers)
        return;
    fputs("<g class=\"markers\" fill=\"", f);
    css_color(f, s->color);
    fputs("\">\n", f);
    for (size_t i = 0; i < s->n; i++)
        if (isfinite(s->x[i]) && isfinite(s->y[i]))
            fprintf(f, "<circle cx=\"%.2f\" cy=\"%.2f\" r=\"3.5\"/>\n", px(b, s->x[i]),
                    py(b, s->y[i]));
    fputs("</g>\n", f);
}

static void draw_legend(FILE *f, const pk_plot_series *series, size_t n_series)
{
    fputs("<g id=\"legend\" font-size=\"13\">\n", f);
    for (size_t s = 0; s < n_series; s++) {
        double y = MT + 10.0 + 22.0 * (double)s;
        fprintf(f,
                "<line x1=\"%.2f\" y1=\"%.2f\" x2=\"%.2f\" y2=\"%.2f\" stroke-width=\"%s\" "
                "stroke=\"",
                ML + PW + 15.0, y, ML + PW + 40.0, y, series[s].faint ? "1" : "2");
        css_color(f, series[s].color);
        fprintf(f, "\"/>\n<text x=\"%.2f\" y=\"%.2f\">", ML + PW + 46.0, y + 4.0);
        xml_text(f, series[s].name);
        fputs("</text>\n", f);
    }
    fputs("</g>\n", f);
}

pk_status pk_plot_svg(FILE *out, const char *title, const char *xlabel, const char *ylabel,
                      const pk_plot_series *series, size_t n_series)
{
    bounds b;
    if (!out || !series || !data_bounds(series, n_series, &b))
        return PK_ERR_ARG;
    fputs("<?xml version=\"1.0\" encoding=\"UTF-8\" standalone=\"no\"?>\n", out);
    fprintf(out,
            "<svg xmlns=\"http://www.w3.org/2000/svg\" version=\"1.1\" width=\"%.0f\" "
            "height=\"%.0f\" viewBox=\"0 0 %.0f %.0f\" font-family=\"sans-serif\">\n",
            W, H, W, H);
    fputs("<title>", out);
    xml_text(out, title);
    fputs("</title>\n", out);
    fprintf(out, "<rect width=\"%.0f\" height=\"%.0f\" fill=\"#ffffff\"/>\n", W, H);
    fprintf(out, "<text x=\"%.2f\" y=\"30\" font-size=\"16\" text-anchor=\"middle\">",
            ML + PW / 2.0);
    xml_text(out, title);
    fputs("</text>\n", out);
    draw_axes(out, &b, xlabel, ylabel);
    for (size_t s = 0; s < n_series; s++)
        draw_series(out, &b, &series[s]);
    draw_legend(out, series, n_series);
    fputs("</svg>\n", out);
    return ferror(out) ? PK_ERR_IO : PK_OK;
}

pk_status pk_plot_svg_panels(FILE *out, const char *title, const pk_plot_panel *panels,
                             size_t n_panels)
{
    const double top = 30.0; /* the document title above the panels */
    int any = 0;
    bounds b;
    for (size_t i = 0; out && panels && i < n_panels; i++)
        any |= data_bounds(panels[i].series, panels[i].n_series, &b);
    if (!any)
        return PK_ERR_ARG;
    double height = top + H * (double)n_panels;
    fputs("<?xml version=\"1.0\" encoding=\"UTF-8\" standalone=\"no\"?>\n", out);
    fprintf(out,
            "<svg xmlns=\"http://www.w3.org/2000/svg\" version=\"1.1\" width=\"%.0f\" "
            "height=\"%.0f\" viewBox=\"0 0 %.0f %.0f\" font-family=\"sans-serif\">\n",
            W, height, W, height);
    fputs("<title>", out);
    xml_text(out, title);
    fprintf(out, "</title>\n<rect width=\"%.0f\" height=\"%.0f\" fill=\"#ffffff\"/>\n", W, height);
    fprintf(out, "<text x=\"%.2f\" y=\"22\" font-size=\"17\" text-anchor=\"middle\">", W / 2.0);
    xml_text(out, title);
    fputs("</text>\n", out);
    for (size_t i = 0; i < n_panels; i++) {
        const pk_plot_panel *pp = &panels[i];
        fprintf(out, "<g id=\"panel-%zu\" transform=\"translate(0 %.2f)\">\n", i,
                top + H * (double)i);
        fprintf(out, "<text x=\"%.2f\" y=\"30\" font-size=\"15\" text-anchor=\"middle\">",
                ML + PW / 2.0);
        xml_text(out, pp->title);
        fputs("</text>\n", out);
        if (data_bounds(pp->series, pp->n_series, &b)) {
            draw_axes(out, &b, pp->xlabel, pp->ylabel);
            for (size_t s = 0; s < pp->n_series; s++)
                draw_series(out, &b, &pp->series[s]);
            draw_legend(out, pp->series, pp->n_series);
        }
        fputs("</g>\n", out);
    }
    fputs("</svg>\n", out);
    return ferror(out) ? PK_ERR_IO : PK_OK;
}

/* rows (sorted by step, q_index) -> one (step, mean (l+ + l-)/2) point per step. */
static size_t train_points(const pk_step_row *rows, size_t n, double *x, double *y)
{
    size_t k = 0;
    for (size_t i = 0; i < n;) {
        size_t j = i;
        double sum = 0.0;
        int cnt = 0;
        for (; j < n && rows[j].step == rows[i].step; j++) {
            double l = 0.5 * ((double)rows[j].loss_plus + (double)rows[j].loss_minus);
            if (isfinite(l)) {
                sum += l;
                cnt++;
            }
        }
        x[k] = (double)rows[i].step + 1.0; /* the loss seen while taking step s: s+1 steps done */
        y[k] = cnt ? sum / cnt : (double)NAN;
        k++;
        i = j;
    }
    return k;
}

static void ema(const double *y, size_t n, double alpha, double *out)
{
    double m = (double)NAN;
    for (size_t i = 0; i < n; i++) {
        if (isfinite(y[i]))
            m = isfinite(m) ? (1.0 - alpha) * m + alpha * y[i] : y[i];
        out[i] = m;
    }
}

/* path "-" is stdout; otherwise a whole-file write (pk_out: PATH.tmp renamed over PATH, so a
 * failed write leaves the old file; a symlink, a device or a FIFO written through, never
 * replaced; a directory refused). */
static pk_status write_svg_file(const char *path, const char *title, const char *xlabel,
                                const pk_plot_series *ser, size_t n_ser, char *err, size_t errlen)
{
    if (!strcmp(path, "-")) {
        errno = 0;
        pk_status st = pk_plot_svg(stdout, title, xlabel, "loss (nats/token)", ser, n_ser);
        if (st == PK_OK && (fflush(stdout) != 0 || ferror(stdout)))
            st = PK_ERR_IO;
        if (st != PK_OK)
            pk_seterr(err, errlen, "cannot write the SVG to stdout: %s",
                      errno ? strerror(errno) : "write error");
        return st;
    }
    pk_out o;
    pk_status st = pk_out_open(&o, path, 0, err, errlen);
    if (st != PK_OK)
        return st;
    errno = 0;
    st = pk_plot_svg(o.f, title, xlabel, "loss (nats/token)", ser, n_ser);
    if (st != PK_OK) { /* a failed write's errno (ENOSPC on /dev/full), else the status */
        int e = errno;
        pk_seterr(err, errlen, "cannot write %s: %s", o.tmp,
                  st == PK_ERR_IO && e ? strerror(e) : pk_status_str(st));
        pk_out_abort(&o);
        return st;
    }
    return pk_out_commit(&o, err, errlen);
}

/* A run's train loss: one point per step (x: steps done) and its EMA. Owned arrays. */
typedef struct train_curve {
    double *x, *y, *smooth;
    size_t n;
} train_curve;

static void curve_free(train_curve *c)
{
    free(c->x);
    free(c->y);
    free(c->smooth);
    memset(c, 0, sizeof *c);
}

static pk_status read_train_curve(pk_store *s, int64_t run_id, train_curve *c, char *err,
                                  size_t errlen)
{
    char serr[512] = ""; /* what the store says on failure */
    pk_step_row *rows = NULL;
    size_t n_rows = 0;
    pk_run_info ri;
    memset(c, 0, sizeof *c);
    memset(&ri, 0, sizeof ri);
    pk_status st = pk_store_run_get(s, run_id, &ri, serr, sizeof serr);
    pk_run_info_clear(&ri);
    if (st != PK_OK) {
        pk_seterr(err, errlen, "run %lld: %s", (long long)run_id,
                  st == PK_ERR_NOTFOUND ? "no such run (see pocketllm runs list)" : serr);
        return st;
    }
    st = pk_store_steps_read(s, run_id, 0, INT64_MAX, &rows, &n_rows, serr, sizeof serr);
    if (st != PK_OK) {
        pk_seterr(err, errlen, "cannot read the step log of run %lld: %s", (long long)run_id, serr);
        return st;
    }
    size_t cap = n_rows ? n_rows : 1;
    c->x = malloc(cap * sizeof *c->x);
    c->y = malloc(cap * sizeof *c->y);
    c->smooth = malloc(cap * sizeof *c->smooth);
    if (!c->x || !c->y || !c->smooth) {
        curve_free(c);
        free(rows);
        return PK_ERR_NOMEM;
    }
    c->n = train_points(rows, n_rows, c->x, c->y);
    ema(c->y, c->n, 0.1, c->smooth);
    free(rows);
    return PK_OK;
}

pk_status pk_plot_run(pk_store *s, int64_t run_id, const char *out_path, char *err, size_t errlen)
{
    char serr[512] = ""; /* what the store says on failure */
    train_curve tc = {0};
    size_t n_eval = 0;
    int64_t *esteps = NULL;
    double *eloss = NULL, *eacc = NULL, *ex = NULL;
    pk_status st = read_train_curve(s, run_id, &tc, err, errlen);
    if (st != PK_OK)
        goto out;
    st = pk_store_eval_read(s, run_id, &esteps, &eloss, &eacc, &n_eval, serr, sizeof serr);
    if (st != PK_OK) {
        pk_seterr(err, errlen, "cannot read the eval points of run %lld: %s", (long long)run_id,
                  serr);
        goto out;
    }
    if (tc.n == 0 && n_eval == 0) {
        pk_seterr(err, errlen, "run %lld has no logged steps or eval points yet",
                  (long long)run_id);
        st = PK_ERR_NOTFOUND;
        goto out;
    }
    ex = malloc((n_eval ? n_eval : 1) * sizeof *ex);
    if (!ex) {
        st = PK_ERR_NOMEM;
        goto out;
    }
    for (size_t i = 0; i < n_eval; i++)
        ex[i] = (double)esteps[i];
    pk_plot_series ser[3] = {
        {"train-loss-raw", "train loss (per step)", "#1f77b4", tc.x, tc.y, tc.n, 0, 1},
        {"train-loss", "train loss (smoothed)", "#1f77b4", tc.x, tc.smooth, tc.n, 0, 0},
        {"eval-loss", "held-out loss", "#d62728", ex, eloss, n_eval, 1, 0},
    };
    char title[96];
    snprintf(title, sizeof title, "PocketLLM run %lld: loss", (long long)run_id);
    st = write_svg_file(out_path, title, "step", ser, 3, err, errlen);
out:
    curve_free(&tc);
    free(esteps);
    free(eloss);
    free(eacc);
    free(ex);
    return st;
}

/* Distinct colors for up to 8 runs (then they repeat). */
static const char *const run_colors[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e",
                                         "#9467bd", "#8c564b", "#e377c2", "#17becf"};

typedef struct run_label {
    char id[32];   /* "run-N" */
    char name[32]; /* "run N" */
} run_label;

/* Steps done -> loss evaluations done, as the steps took them (pk_mezo_evals_upto). */
static pk_status to_evaluations(pk_store *s, int64_t run_id, train_curve *c, char *err,
                                size_t errlen)
{
    pk_run_info ri;
    pk_train_config cfg;
    pk_status st = pk_run_load_config(s, run_id, &ri, &cfg, err, errlen);
    pk_run_info_clear(&ri);
    if (st != PK_OK)
        return st;
    /* as taken: hizoo's unperturbed loss only on its Hessian steps */
    for (size_t i = 0; i < c->n; i++)
        c->x[i] = (double)pk_mezo_evals_upto(&cfg.mezo, (int64_t)c->x[i]) * (double)cfg.accumulate;
    return PK_OK;
}

/* Steps done -> training seconds: linear between the knots (0 steps, 0 s) and the run's timed
 * eval points; past the last knot unknown (NaN: not drawn). */
static pk_status to_seconds(pk_store *s, int64_t run_id, train_curve *c, char *err, size_t errlen)
{
    char serr[512] = ""; /* what the store says on failure */
    int64_t *ks = NULL;
    double *kt = NULL;
    size_t nk = 0;
    pk_status st = pk_store_eval_seconds(s, run_id, &ks, &kt, &nk, serr, sizeof serr);
    if (st != PK_OK) {
        pk_seterr(err, errlen, "cannot read the eval seconds of run %lld: %s", (long long)run_id,
                  serr);
        return st;
    }
    if (nk == 0) {
        pk_seterr(err, errlen,
                  "run %lld has no eval points with training seconds (train with --eval-dataset "
                  "and --eval-every to plot it by seconds)",
                  (long long)run_id);
        st = PK_ERR_NOTFOUND;
    }
    size_t k = 0;
    double s0 = 0.0, t0 = 0.0; /* the knot at or before x */
    for (size_t i = 0; st == PK_OK && i < c->n; i++) {
        double x = c->x[i];
        while (k < nk && (double)ks[k] < x) {
            s0 = (double)ks[k];
            t0 = kt[k];
            k++;
        }
        if (k == nk) {
            c->x[i] = (double)NAN;
            continue;
        }
        double s1 = (double)ks[k], t1 = kt[k];
        c->x[i] = s1 > s0 ? t0 + (t1 - t0) * (x - s0) / (s1 - s0) : t1;
    }
    free(ks);
    free(kt);
    return st;
}

static const char *x_label(pk_plot_x x)
{
    switch (x) {
    case PK_PLOT_X_EVALUATIONS:
        return "loss evaluations";
    case PK_PLOT_X_SECONDS:
        return "training seconds";
    case PK_PLOT_X_STEP:
    default:
        return "step";
    }
}

pk_status pk_plot_runs(pk_store *s, const int64_t *run_ids, size_t n_runs, const char *out_path,
                       char *err, size_t errlen)
{
    return pk_plot_runs_x(s, run_ids, n_runs, PK_PLOT_X_STEP, out_path, err, errlen);
}

pk_status pk_plot_runs_x(pk_store *s, const int64_t *run_ids, size_t n_runs, pk_plot_x x,
                         const char *out_path, char *err, size_t errlen)
{
    train_curve *tc = calloc(n_runs ? n_runs : 1, sizeof *tc);
    pk_plot_series *ser = calloc(n_runs ? n_runs : 1, sizeof *ser);
    run_label *lab = calloc(n_runs ? n_runs : 1, sizeof *lab);
    pk_status st = tc && ser && lab ? PK_OK : PK_ERR_NOMEM;
    for (size_t i = 0; st == PK_OK && i < n_runs; i++) {
        st = read_train_curve(s, run_ids[i], &tc[i], err, errlen);
        if (st == PK_OK && tc[i].n == 0) {
            pk_seterr(err, errlen, "run %lld has no logged steps yet", (long long)run_ids[i]);
            st = PK_ERR_NOTFOUND;
        }
        if (st == PK_OK && x == PK_PLOT_X_EVALUATIONS)
            st = to_evaluations(s, run_ids[i], &tc[i], err, errlen);
        if (st == PK_OK && x == PK_PLOT_X_SECONDS)
            st = to_seconds(s, run_ids[i], &tc[i], err, errlen);
        snprintf(lab[i].id, sizeof lab[i].id, "run-%lld", (long long)run_ids[i]);
        snprintf(lab[i].name, sizeof lab[i].name, "run %lld", (long long)run_ids[i]);
        pk_plot_series one = {lab[i].id,
                              lab[i].name,
                              run_colors[i % (sizeof run_colors / sizeof run_colors[0])],
                              tc[i].x,
                              tc[i].smooth,
                              tc[i].n,
                              0,
                              0};
        ser[i] = one;
    }
    if (st == PK_OK)
        st = write_svg_file(out_path, "PocketLLM runs: train loss (smoothed)", x_label(x), ser,
                            n_runs, err, errlen);
    for (size_t i = 0; tc && i < n_runs; i++)
        curve_free(&tc[i]);
    free(tc);
    free(ser);
    free(lab);
    return st;
}
