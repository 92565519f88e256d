/* pk_ui.h: terminal helpers for long operations (import, train, replay, pull): a progress
 * display, a Ctrl-C flag checked at safe points, and a loss sparkline.
 * Output goes to stdout (or the FILE given to pk_progress_new_to); this is the one place in the
 * agent library that writes to a stream, because its whole job is to show progress.
 * Thread safety: a pk_progress handle may move between threads but is never used by two at
 * once. pk_interrupted() may be called from any thread. */
#ifndef PK_UI_H
#define PK_UI_H

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
pk_progress *pk_progress_new_to(FILE *out, const char *label, int64_t total,
                                pk_progress_mode mode);
/* Counts in bytes: shows sizes as KiB/MiB and the rate as MiB/s (for downloads). */
void pk_progress_set_bytes(pk_progress *p, int on);
/* Names what is counted in the rate ("examples" -> "examples/s"; default "steps"). */
void pk_progress_set_unit(pk_progress *p, const char *unit);
/* Starts the count at `done` (a resumed run): the rate and ETA count only what follows. */
void pk_progress_set_start(pk_progress *p, int64_t done);
/* Changes the total (e.g. once a download learns its Content-Length). */
void pk_progress_set_total(pk_progress *p, int64_t total);
/* Reports `done` steps so far and the latest loss (NAN if none). Shows step/total, the
 * smoothed loss (EMA, NaN and inf ignored), steps/s and ETA. The bar redraws at most ~10
 * times/s; PLAIN and JSON print a line every 5 s or each time another 10% is done. */
void pk_progress_update(pk_progress *p, int64_t done, double loss);
/* The smoothed loss so far, NAN if no finite loss was seen. */
double pk_progress_loss_ema(const pk_progress *p);
/* Prints the final line (bar: completes it and ends the line) and frees p. NULL-safe. */
void pk_progress_finish(pk_progress *p);
/* QUIET if quiet, else JSON if json, else AUTO. */
pk_progress_mode pk_progress_mode_from_args(int json, int quiet);

/* Installs SIGINT and SIGTERM handlers that only set a flag; long loops poll pk_interrupted()
 * at step boundaries and stop cleanly (exit code 130). A second Ctrl-C kills the process
 * at once (the handler is one-shot). Idempotent. */
void pk_interrupt_install(void);
/* 1 once SIGINT or SIGTERM arrived (or pk_interrupt_raise was called), else 0. */
int pk_interrupted(void);
/* Sets the flag by hand (tests, or a caller that wants the same clean-stop path). */
void pk_interrupt_raise(void);
/* Clears the flag (e.g. between two phases of the demo, or in tests). */
void pk_interrupt_clear(void);

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
    int markers;       /* 1: also draw a dot at every point (sparse series such as eval loss) */
    int faint;         /* 1: thin and translucent (raw values under a smoothed curve) */
} pk_plot_series;

/* Writes a standalone SVG 1.1 document: axes with "nice" ticks, grid, axis labels, title, one
 * <path id="ID"> per series (plus <circle>s with markers), and a legend. Text is XML-escaped.
 * PK_ERR_ARG if no series has a finite point; PK_ERR_IO if writing fails. out is borrowed. */
PK_NODISCARD pk_status pk_plot_svg(FILE *out, const char *title, const char *xlabel,
                                   const char *ylabel, const pk_plot_series *series,
                                   size_t n_series);

/* The loss plot of a run: train loss per step ((loss+ + loss-)/2, averaged over the q rows of a
 * step) raw and smoothed (EMA 0.9; ids "train-loss-raw", "train-loss"), and the eval points
 * (id "eval-loss"), written to out_path atomically (temporary file + rename).
 * PK_ERR_NOTFOUND if the run has neither steps nor evals; err (errlen bytes) says why. */
PK_NODISCARD pk_status pk_plot_run(pk_store *s, int64_t run_id, const char *out_path, char *err,
                                   size_t errlen);

/* ---- model download from a Hugging Face-compatible hub (pull.c) ---------------------------- */

typedef struct pk_pull_params {
    const char *endpoint;      /* NULL: $HF_ENDPOINT, else https://huggingface.co (borrowed) */
    const char *revision;      /* NULL: "main" (borrowed) */
    const char *token;         /* NULL: $HF_TOKEN if set; sent as a Bearer header, never logged */
    pk_progress_mode progress; /* one byte-progress display per file */
    int max_attempts;          /* per file; each retry resumes the .part with a Range request */
    long connect_timeout_ms;   /* per attempt */
    long stall_timeout_s;      /* abort an attempt that receives nothing for this long */
} pk_pull_params;
/* endpoint/revision/token NULL, AUTO progress, 5 attempts, 10 s connect, 60 s stall. */
pk_pull_params pk_pull_default_params(void);

typedef struct pk_pull_result {
    int files;                /* files now present in out_dir (downloaded or already there) */
    int downloaded;           /* files transferred this call */
    int up_to_date;           /* files already complete (size and sha256 match): not fetched */
    int resumed;              /* transfers that continued a .part file with a Range request */
    int verified;             /* files whose sha256 the hub gave and that matched */
    int64_t bytes;            /* body bytes received this call */
} pk_pull_result;

/* Downloads into out_dir (created if needed) config.json (required), the tokenizer files that
 * exist (tokenizer.json, tokenizer.model, tokenizer_config.json, special_tokens_map.json,
 * vocab.json, merges.txt, vocab.txt), generation_config.json, and the weights:
 * model.safetensors, or model.safetensors.index.json plus every shard it names.
 * URL: {endpoint}/{repo}/resolve/{revision}/{file}. Each file goes to FILE.part first and is
 * renamed when complete; a .part left by an interrupted run (or a dropped connection) is
 * resumed with "Range: bytes=N-". When the hub gives a sha256 (X-Content-Sha256, or an ETag /
 * X-Linked-Etag of 64 hex digits) the file is checked, and a mismatch removes it
 * (PK_ERR_AUTH). Ctrl-C (pk_interrupted) stops with PK_ERR_INTERRUPTED, keeping the .part.
 * PK_ERR_ARG: bad repo id or revision; PK_ERR_NOTFOUND: no such repo/file (404);
 * PK_ERR_AUTH: 401/403 (gated or private: set HF_TOKEN) or checksum mismatch; PK_ERR_HTTP:
 * network failure after max_attempts; PK_ERR_IO: out_dir not writable; PK_ERR_FORMAT: a bad
 * index; PK_ERR_UNSUPPORTED: libcurl cannot be loaded (or the hub has no safetensors).
 * err (errlen bytes, may be NULL) says what happened and what to do. res may be NULL.
 * Needs curl_global_init and sodium_init done (pk_http_global_init, pk_crypto_global_init). */
PK_NODISCARD pk_status pk_pull(const char *repo, const char *out_dir, const pk_pull_params *p,
                               pk_pull_result *res, char *err, size_t errlen);

/* ---- export of a run (export.c) ------------------------------------------------------------- */

/* The run's current weights (pk_run_materialize: base model + checkpoint + logged steps) as a
 * Hugging Face model directory (pk_model_save: config.json, model.safetensors in dtype, the
 * base model's tokenizer files), plus pocketllm_run.json (run id, steps, base and weights
 * hashes) for provenance. *weights_hash (may be NULL, 65 bytes) gets the exported weights'
 * pk_weights_hash (before narrowing to dtype). err names the problem. */
PK_NODISCARD pk_status pk_export_hf(pk_store *s, int64_t run_id, const char *out_dir,
                                    pk_dtype dtype, char *weights_hash, char *err, size_t errlen);
/* The run as a portable seed log (pk_seedlog_write: base hash, z kind, weight decay, trainable
 * spec and every step-log row). *bytes (may be NULL) gets the file size. */
PK_NODISCARD pk_status pk_export_seedlog(pk_store *s, int64_t run_id, const char *path,
                                         size_t *bytes, char *err, size_t errlen);

#endif /* PK_UI_H */
