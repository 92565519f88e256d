/* progress.h: what the CLI shows a person during and after long operations (import, train,
 * replay, pull): a progress display, a loss sparkline and SVG loss plots. Output goes to stdout
 * or the FILE given; the libraries never print, they report progress through callbacks.
 * Thread safety: a pk_progress handle may move between threads but is never used by two at
 * once. pk_interrupted() may be called from any thread. */
#ifndef PK_CLI_PROGRESS_H
#define PK_CLI_PROGRESS_H

#include "pk_common.h"
#include "pk_model.h"
#include "pk_store.h"

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

typedef enum pk_progress_mode {
    PK_PROGRESS_AUTO = 0, /* a redrawn bar if the stream is a TTY, else PLAIN */
    PK_PROGRESS_PLAIN,    /* a line every few seconds or every 10%, and a final line */
    PK_PROGRESS_JSON,     /* one JSON object per line (same throttling as PLAIN) */
    PK_PROGRESS_QUIET,    /* nothing */
} pk_progress_mode;

typedef struct pk_progress pk_progress;

/* Starts a progress display for `total` steps (total <= 0: unknown, no percentage or ETA).
 * label is copied. Returns an owned handle (free with pk_progress_finish), or NULL if out of
 * memory; every pk_progress_* function accepts NULL and then does nothing. */
pk_progress *pk_progress_new(const char *label, int64_t total, pk_progress_mode mode);
/* The same, writing to `out` (borrowed, must outlive the handle); AUTO checks isatty(out). */
pk_progress *pk_progress_new_to(FILE *out, const char *label, int64_t total, pk_progress_mode mode);
/* Counts in bytes: shows sizes as KiB/MiB and the rate as MiB/s (for downloads). */
void pk_progress_set_bytes(pk_progress *p, int on);
/* Names what is counted in the rate ("examples" -> "examples/s"; default "steps"). */
void pk_progress_set_unit(pk_progress *p, const char *unit);
/* Starts the count at `done` (a resumed run): the rate and ETA count only what follows. */
void pk_progress_set_start(pk_progress *p, int64_t done);
/* Changes the total (e.g. once a download learns its Content-Length). */
void pk_progress_set_total(pk_progress *p, int64_t total);
/* A clock in seconds; ctx is what pk_progress_set_clock was given. */
typedef double (*pk_progress_clock)(void *ctx);
/* Reads the time from now(ctx) instead of pk_time_now() (NULL: back to pk_time_now), so a test
 * can drive the rate, ETA and throttling deterministically. The elapsed time restarts at the
 * clock's current value. ctx is borrowed and must outlive the handle. */
void pk_progress_set_clock(pk_progress *p, pk_progress_clock now, void *ctx);
/* Reports `done` steps so far and the latest loss (NAN if none). Shows step/total, the
 * smoothed loss (EMA, NaN and inf ignored), steps/s and ETA. The bar redraws at most ~10
 * times/s; PLAIN and JSON print a line every 5 s or each time another 10% is done. */
void pk_progress_update(pk_progress *p, int64_t done, double loss);
/* The smoothed loss so far, NAN if no finite loss was seen. */
double pk_progress_loss_ema(const pk_progress *p);
/* Prints the final line (bar: completes it and ends the line) and frees p. NULL-safe. */
void pk_progress_finish(pk_progress *p);
/* For an operation that failed: no final line (a bar already drawn gets its line ended), and
 * frees p. NULL-safe. */
void pk_progress_abandon(pk_progress *p);
/* QUIET if quiet, else JSON if json, else AUTO. */
pk_progress_mode pk_progress_mode_from_args(int json, int quiet);

/* Writes a one-line sparkline of v[0..n) squeezed (bucket means) or kept to at most `width`
 * characters, then nothing else (no newline). Unicode blocks when the locale (LC_ALL, LC_CTYPE,
 * LANG) says UTF-8, else the ASCII ramp "_.-=*#". Non-finite values print as a space. */
void pk_sparkline(FILE *f, const double *v, size_t n, int width);
/* The same with the character set chosen by the caller (unicode 1 or 0), for tests. */
void pk_sparkline_ex(FILE *f, const double *v, size_t n, int width, int unicode);

/* ---- loss plots (plot.c) -------------------------------------------------------------------- */

/* One curve: y against x (both borrowed, n values; non-finite y values are skipped). */
typedef struct pk_plot_series {
    const char *id;    /* SVG id of the <path> ([A-Za-z0-9-], others become '-'); borrowed */
    const char *name;  /* legend text; borrowed */
    const char *color; /* CSS color, e.g. "#1f77b4"; borrowed */
    const double *x;   /* steps */
    const double *y;   /* losses */
    size_t n;
    int markers; /* 1: also draw a dot at every point (sparse series such as eval loss) */
    int faint;   /* 1: thin and translucent (raw values under a smoothed curve) */
} pk_plot_series;

/* Writes a standalone SVG 1.1 document: axes with "nice" ticks, grid, axis labels, title, one
 * <path id="ID"> per series (plus <circle>s with markers), and a legend. Text is XML-escaped.
 * PK_ERR_ARG if no series has a finite point; PK_ERR_IO if writing fails. out is borrowed. */
PK_NODISCARD pk_status pk_plot_svg(FILE *out, const char *title, const char *xlabel,
                                   const char *ylabel, const pk_plot_series *series,
                                   size_t n_series);

/* One plot of a multi-plot document (pk_plot_svg_panels); everything borrowed. */
typedef struct pk_plot_panel {
    const char *title, *xlabel, *ylabel;
    const pk_plot_series *series;
    size_t n_series;
} pk_plot_panel;
/* Several plots stacked vertically in one standalone SVG 1.1 document, each drawn as
 * pk_plot_svg draws one (in its own <g id="panel-N">), under a document title. A panel with no
 * finite point is left empty. PK_ERR_ARG if no panel has one; PK_ERR_IO if writing fails. */
PK_NODISCARD pk_status pk_plot_svg_panels(FILE *out, const char *title, const pk_plot_panel *panels,
                                          size_t n_panels);

/* The loss plot of a run: train loss per step ((loss+ + loss-)/2, averaged over the q rows of a
 * step) raw and smoothed (EMA 0.9; ids "train-loss-raw", "train-loss"), and the eval points
 * (id "eval-loss"), written to out_path atomically (temporary file + rename).
 * PK_ERR_NOTFOUND if the run has neither steps nor evals; err (errlen bytes) says why. */
PK_NODISCARD pk_status pk_plot_run(pk_store *s, int64_t run_id, const char *out_path, char *err,
                                   size_t errlen);
/* Several runs in one plot: each run's smoothed train loss (as in pk_plot_run) as one series,
 * id "run-N", named "run N", in its own color; no eval points. run_ids borrowed (n_runs >= 1).
 * PK_ERR_NOTFOUND if a run has no logged steps (err names it; no file is written). */
PK_NODISCARD pk_status pk_plot_runs(pk_store *s, const int64_t *run_ids, size_t n_runs,
                                    const char *out_path, char *err, size_t errlen);
/* What the x axis of pk_plot_runs_x counts. */
typedef enum pk_plot_x {
    PK_PLOT_X_STEP = 0,        /* steps done */
    PK_PLOT_X_EVALUATIONS = 1, /* loss evaluations done: steps x the run's evaluations per step
                                  (pk_mezo_evals_per_step x accumulate), to compare estimators */
    PK_PLOT_X_SECONDS = 2,     /* training seconds (evals excluded, cumulative over resumes),
                                  piecewise linear between the eval points that carry them;
                                  steps after a run's last timed eval are not drawn */
} pk_plot_x;
/* pk_plot_runs against the chosen x (pk_plot_runs is PK_PLOT_X_STEP). With PK_PLOT_X_SECONDS,
 * PK_ERR_NOTFOUND if a run has no eval point with seconds (err names it; no file is written). */
PK_NODISCARD pk_status pk_plot_runs_x(pk_store *s, const int64_t *run_ids, size_t n_runs,
                                      pk_plot_x x, const char *out_path, char *err, size_t errlen);

#endif /* PK_CLI_PROGRESS_H */
