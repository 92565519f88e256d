/* progress.c: progress display (bar, plain lines, JSON lines) and the sparkline.
 * It only formats and writes to the stream it is given; what is counted and when to stop is
 * left to the trainer, importer, replay and pull that call it. */
#include "progress.h"

#include "pk_common.h"

#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#define LABEL_MAX     64
#define EMA_ALPHA     0.1 /* weight of the newest loss in the smoothed loss */
#define REDRAW_S      0.1 /* bar: at most 10 redraws per second */
#define PLAIN_EVERY_S 5.0 /* plain/json: a line at least every 5 s ... */
#define PLAIN_TENTHS  10  /* ... or every 10% */

struct pk_progress {
    FILE *out;             /* borrowed */
    pk_progress_mode mode; /* never AUTO after pk_progress_new_to */
    char label[LABEL_MAX]; /* NUL-terminated, control characters replaced by '?' */
    int64_t total;         /* <= 0: unknown */
    int64_t done;          /* last reported count */
    int64_t start;         /* count at creation (a resumed run): excluded from the rate */
    int bytes;             /* 1: counts are bytes */
    char unit[24];         /* what is counted, for the rate ("steps" unless set) */
    double ema;            /* smoothed loss, NAN until the first finite loss */
    double last_loss;      /* latest finite loss, NAN if none */
    pk_progress_clock now; /* the clock: pk_time_now unless a test set one */
    void *now_ctx;         /* borrowed, passed to now() */
    double t0;             /* the clock at creation (or when it was set), seconds */
    double t_last;         /* time of the last line or redraw, seconds */
    int last_tenth;        /* 10% bucket of the last plain line */
    int drawn;             /* the bar has been drawn at least once */
};

pk_progress_mode pk_progress_mode_from_args(int json, int quiet)
{
    if (quiet)
        return PK_PROGRESS_QUIET;
    if (json)
        return PK_PROGRESS_JSON;
    return PK_PROGRESS_AUTO;
}

pk_progress *pk_progress_new(const char *label, int64_t total, pk_progress_mode mode)
{
    return pk_progress_new_to(stdout, label, total, mode);
}

pk_progress *pk_progress_new_to(FILE *out, const char *label, int64_t total, pk_progress_mode mode)
{
    pk_progress *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    p->out = out ? out : stdout;
    if (mode == PK_PROGRESS_AUTO)
        mode = isatty(fileno(p->out)) ? PK_PROGRESS_AUTO : PK_PROGRESS_PLAIN;
    p->mode = mode;
    const char *l = label ? label : "";
    size_t i = 0;
    for (; l[i] && i + 1 < LABEL_MAX; i++)
        p->label[i] = ((unsigned char)l[i] < 0x20 || l[i] == 0x7f) ? '?' : l[i];
    p->label[i] = '\0';
    p->total = total;
    p->ema = (double)NAN;
    p->last_loss = (double)NAN;
    pk_progress_set_clock(p, NULL, NULL);
    return p;
}

static double real_clock(void *ctx)
{
    (void)ctx;
    return pk_time_now();
}

void pk_progress_set_clock(pk_progress *p, pk_progress_clock now, void *ctx)
{
    if (!p)
        return;
    p->now = now ? now : real_clock;
    p->now_ctx = ctx;
    p->t0 = p->now(p->now_ctx);
    p->t_last = p->t0;
}

void pk_progress_set_bytes(pk_progress *p, int on)
{
    if (p)
        p->bytes = on != 0;
}

void pk_progress_set_unit(pk_progress *p, const char *unit)
{
    if (p)
        snprintf(p->unit, sizeof p->unit, "%s", unit ? unit : "");
}

void pk_progress_set_start(pk_progress *p, int64_t done)
{
    if (p) {
        p->start = done;
        p->done = done;
    }
}

void pk_progress_set_total(pk_progress *p, int64_t total)
{
    if (p)
        p->total = total;
}

double pk_progress_loss_ema(const pk_progress *p)
{
    return p ? p->ema : (double)NAN;
}

/* "12.3 MiB" style for bytes, plain integer otherwise. */
static void fmt_count(const pk_progress *p, int64_t v, char *buf, size_t n)
{
    if (!p->bytes) {
        snprintf(buf, n, "%lld", (long long)v);
        return;
    }
    static const char *const units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    double x = (double)v;
    size_t u = 0;
    while (x >= 1024.0 && u + 1 < sizeof units / sizeof units[0]) {
        x /= 1024.0;
        u++;
    }
    if (u == 0)
        snprintf(buf, n, "%lld B", (long long)v);
    else
        snprintf(buf, n, "%.1f %s", x, units[u]);
}

static void fmt_duration(double s, char *buf, size_t n)
{
    if (!(s >= 0.0) || s > 359999.0) {
        snprintf(buf, n, "--:--");
        return;
    }
    long t = (long)(s + 0.5);
    if (t >= 3600)
        snprintf(buf, n, "%ld:%02ld:%02ld", t / 3600, (t / 60) % 60, t % 60);
    else
        snprintf(buf, n, "%ld:%02ld", t / 60, t % 60);
}

typedef struct stats {
    double elapsed; /* s */
    double rate;    /* units/s, 0 if unknown */
    double eta;     /* s, -1 if unknown */
    double frac;    /* 0..1, -1 if total unknown */
} stats;

static stats compute(const pk_progress *p, double now)
{
    stats s;
    s.elapsed = now - p->t0;
    s.rate = s.elapsed > 1e-6 ? (double)(p->done - p->start) / s.elapsed : 0.0;
    s.frac = p->total > 0 ? (double)p->done / (double)p->total : -1.0;
    if (s.frac > 1.0)
        s.frac = 1.0;
    s.eta = (p->total > 0 && s.rate > 0.0) ? (double)(p->total - p->done) / s.rate : -1.0;
    if (s.eta < 0.0 && p->total > 0 && p->done >= p->total)
        s.eta = 0.0;
    return s;
}

static void fmt_rate(const pk_progress *p, double rate, char *buf, size_t n)
{
    if (p->bytes)
        snprintf(buf, n, "%.2f MiB/s", rate / (1024.0 * 1024.0));
    else
        snprintf(buf, n, "%.2f %s/s", rate, p->unit[0] ? p->unit : "steps");
}

static int term_width(const pk_progress *p)
{
    struct winsize ws;
    if (ioctl(fileno(p->out), TIOCGWINSZ, &ws) == 0 && ws.ws_col >= 40)
        return ws.ws_col;
    return 80;
}

static void draw_bar(pk_progress *p, double now, int final)
{
    stats s = compute(p, now);
    char done[32], total[32], rate[32], eta[32], loss[32] = "";
    fmt_count(p, p->done, done, sizeof done);
    fmt_count(p, p->total, total, sizeof total);
    fmt_rate(p, s.rate, rate, sizeof rate);
    fmt_duration(final ? s.elapsed : s.eta, eta, sizeof eta);
    if (isfinite(p->ema))
        snprintf(loss, sizeof loss, " loss %.4f", p->ema);
    char tail[256]; /* five fields of under 32 bytes and a few words */
    if (p->total > 0)
        snprintf(tail, sizeof tail, " %s/%s%s %s %s %s", done, total, loss, rate,
                 final ? "in" : "ETA", eta);
    else
        snprintf(tail, sizeof tail, " %s%s %s", done, loss, rate);
    int width = term_width(p) - 1;
    int barw = width - (int)strlen(p->label) - (int)strlen(tail) - 8;
    fprintf(p->out, "\r%s ", p->label);
    if (p->total > 0 && barw >= 10) {
        if (barw > 40)
            barw = 40;
        int fill = (int)(s.frac * barw + 0.5);
        fputc('[', p->out);
        for (int i = 0; i < barw; i++)
            fputc(i < fill ? '#' : '.', p->out);
        fprintf(p->out, "] %3d%%", (int)(s.frac * 100.0));
    }
    fprintf(p->out, "%s\x1b[K", tail);
    if (final)
        fputc('\n', p->out);
    fflush(p->out);
    p->drawn = 1;
}

static void print_plain(pk_progress *p, double now, int final)
{
    stats s = compute(p, now);
    char done[32], total[32], rate[32], eta[32];
    fmt_count(p, p->done, done, sizeof done);
    fmt_count(p, p->total, total, sizeof total);
    fmt_rate(p, s.rate, rate, sizeof rate);
    fmt_duration(final ? s.elapsed : s.eta, eta, sizeof eta);
    fprintf(p->out, "%s: %s", p->label, done);
    if (p->total > 0)
        fprintf(p->out, "/%s (%d%%)", total, (int)(s.frac * 100.0));
    if (isfinite(p->ema))
        fprintf(p->out, " loss %.4f", p->ema);
    fprintf(p->out, " %s %s %s\n", rate, final ? "done in" : "ETA", eta);
    fflush(p->out);
}

static void json_str(FILE *f, const char *s)
{
    fputc('"', f);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            fprintf(f, "\\%c", c);
        else if (c < 0x20)
            fprintf(f, "\\u%04x", c);
        else
            fputc(c, f);
    }
    fputc('"', f);
}

static void json_num(FILE *f, const char *key, double v)
{
    if (isfinite(v))
        fprintf(f, ",\"%s\":%.6g", key, v);
    else
        fprintf(f, ",\"%s\":null", key);
}

static void print_json(pk_progress *p, double now, int final)
{
    stats s = compute(p, now);
    fputs("{\"event\":", p->out);
    fputs(final ? "\"done\"" : "\"progress\"", p->out);
    fputs(",\"label\":", p->out);
    json_str(p->out, p->label);
    fprintf(p->out, ",\"done\":%lld,\"total\":%lld", (long long)p->done, (long long)p->total);
    json_num(p->out, "loss", p->last_loss);
    json_num(p->out, "loss_ema", p->ema);
    json_num(p->out, "rate", s.rate);
    json_num(p->out, "eta_s", s.eta);
    json_num(p->out, "elapsed_s", s.elapsed);
    fputs("}\n", p->out);
    fflush(p->out);
}

void pk_progress_update(pk_progress *p, int64_t done, double loss)
{
    if (!p)
        return;
    p->done = done;
    if (isfinite(loss)) {
        p->last_loss = loss;
        p->ema = isfinite(p->ema) ? (1.0 - EMA_ALPHA) * p->ema + EMA_ALPHA * loss : loss;
    }
    if (p->mode == PK_PROGRESS_QUIET)
        return;
    double now = p->now(p->now_ctx);
    if (p->mode == PK_PROGRESS_AUTO) {
        if (!p->drawn || now - p->t_last >= REDRAW_S) {
            p->t_last = now;
            draw_bar(p, now, 0);
        }
        return;
    }
    int tenth = p->total > 0 ? (int)((double)done * PLAIN_TENTHS / (double)p->total) : 0;
    int due = now - p->t_last >= PLAIN_EVERY_S || tenth > p->last_tenth;
    if (!due || (p->total > 0 && done >= p->total))
        return; /* the 100% line is the final one, printed by pk_progress_finish */
    p->t_last = now;
    p->last_tenth = tenth;
    if (p->mode == PK_PROGRESS_JSON)
        print_json(p, now, 0);
    else
        print_plain(p, now, 0);
}

void pk_progress_finish(pk_progress *p)
{
    if (!p)
        return;
    double now = p->now(p->now_ctx);
    if (p->mode == PK_PROGRESS_AUTO)
        draw_bar(p, now, 1);
    else if (p->mode == PK_PROGRESS_JSON)
        print_json(p, now, 1);
    else if (p->mode == PK_PROGRESS_PLAIN)
        print_plain(p, now, 1);
    free(p);
}

void pk_progress_abandon(pk_progress *p)
{
    if (!p)
        return;
    if (p->mode == PK_PROGRESS_AUTO && p->drawn) {
        fputc('\n', p->out);
        fflush(p->out);
    }
    free(p);
}

static int locale_is_utf8(void)
{
    static const char *const vars[] = {"LC_ALL", "LC_CTYPE", "LANG"};
    for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++) {
        const char *v = getenv(vars[i]);
        if (v && *v)
            return strstr(v, "UTF-8") || strstr(v, "utf8") || strstr(v, "UTF8") ||
                   strstr(v, "utf-8");
    }
    return 0;
}

void pk_sparkline(FILE *f, const double *v, size_t n, int width)
{
    pk_sparkline_ex(f, v, n, width, locale_is_utf8());
}

/* Mean of the finite values of v[a..b), NAN if none. */
static double bucket_mean(const double *v, size_t a, size_t b)
{
    double sum = 0.0;
    size_t k = 0;
    for (size_t i = a; i < b; i++)
        if (isfinite(v[i])) {
            sum += v[i];
            k++;
        }
    return k ? sum / (double)k : (double)NAN;
}

void pk_sparkline_ex(FILE *f, const double *v, size_t n, int width, int unicode)
{
    static const char *const blocks[] = {"\xe2\x96\x81", "\xe2\x96\x82", "\xe2\x96\x83",
                                         "\xe2\x96\x84", "\xe2\x96\x85", "\xe2\x96\x86",
                                         "\xe2\x96\x87", "\xe2\x96\x88"};
    static const char ascii[] = "_.-=*#";
    if (!f || !v || n == 0 || width <= 0)
        return;
    size_t w = n < (size_t)width ? n : (size_t)width;
    double lo = HUGE_VAL, hi = -HUGE_VAL;
    for (size_t j = 0; j < w; j++) {
        double m = bucket_mean(v, j * n / w, (j + 1) * n / w);
        if (isfinite(m)) {
            lo = m < lo ? m : lo;
            hi = m > hi ? m : hi;
        }
    }
    int levels = unicode ? 8 : (int)(sizeof ascii - 1);
    for (size_t j = 0; j < w; j++) {
        double m = bucket_mean(v, j * n / w, (j + 1) * n / w);
        if (!isfinite(m)) {
            fputc(' ', f);
            continue;
        }
        int k = hi > lo ? (int)((m - lo) / (hi - lo) * (levels - 1) + 0.5) : (levels - 1) / 2;
        if (k < 0)
            k = 0;
        if (k >= levels)
            k = levels - 1;
        if (unicode)
            fputs(blocks[k], f);
        else
            fputc(ascii[k], f);
    }
}
