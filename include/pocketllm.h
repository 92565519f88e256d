/* pocketllm.h: libpocketllm, the one public header of PocketLLM (docs/DESIGN.md 14).
 *
 * PocketLLM fine-tunes a language model on the device with MeZO (two forward passes per step,
 * no gradients), keeps the person's text sealed in an encrypted agent home (SQLite + libsodium)
 * and can take part in federated rounds that share only seeds and scalars. This header is the
 * whole API an application calls; everything else in the library is hidden.
 *
 * CONVENTIONS
 *
 *   Handles. A pocketllm_home is an opaque handle on one agent home (a directory holding
 *   pocketllm.db). Open it with pocketllm_home_open, close it with pocketllm_home_close.
 *
 *   Errors. Every fallible function returns a pocketllm_status: POCKETLLM_OK (0) or a named
 *   failure. pocketllm_status_str gives its fixed text; pocketllm_errmsg(home) gives the one
 *   line that describes the last failure on that handle (as sqlite3_errmsg). A failed call
 *   never leaves a partial result the caller must free.
 *
 *   Memory. The caller owns every buffer it passes: results are written into caller structs
 *   and caller arrays of a stated capacity; the library keeps no pointer to them after the
 *   call returns. Strings passed in are borrowed for the duration of the call only.
 *
 *   Secrets. A passphrase is given as (bytes, length), never as a C string, and the library
 *   wipes those bytes before returning, whatever the outcome: the caller's copy is gone (zeroed)
 *   after pocketllm_home_open. Example text is never logged.
 *
 *   Output. The library never prints to stdout or stderr, never calls exit() and never aborts
 *   on bad input: messages go to the handle's error text or to the log callback
 *   (pocketllm_set_log). Only a broken internal invariant (a bug) aborts.
 *
 *   Threads. A handle may move between threads, but two threads must never use the same
 *   handle at once; two handles on two homes may be used concurrently. pocketllm_cancel is the
 *   one function that may be called on a handle another thread is using. Process-wide settings
 *   (pocketllm_set_log, pocketllm_set_threads) must be made before other threads use the
 *   library. Each declaration below repeats its rule after "Threads:".
 *
 *   Versions. PK_VERSION_MAJOR/MINOR/PATCH give the version of this header;
 *   pocketllm_version() the version of the library loaded at run time. The ABI is stable
 *   within one major version (the shared library's SONAME is libpocketllm.so.MAJOR). While
 *   MAJOR is 0 it is stable within one minor version instead (SONAME libpocketllm.so.0.MINOR):
 *   a minor version may append fields to a params struct, so a program is rebuilt against the
 *   new header, where it keeps compiling unchanged. New fields and functions say "since
 *   0.MINOR"; the defaults of a new field keep the earlier behaviour.
 *
 *   Bit-exactness. A run's steps are a pure function of its settings: the same settings give
 *   the same weights for any thread count, and a cancelled run resumed later reaches the same
 *   bits as an uninterrupted one (docs/DESIGN.md 4, 10).
 */
#ifndef POCKETLLM_H
#define POCKETLLM_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define PK_VERSION_MAJOR 0
#define PK_VERSION_MINOR 2
#define PK_VERSION_PATCH 0
/* MAJOR * 10000 + MINOR * 100 + PATCH, the form pocketllm_version() returns. */
#define PK_VERSION_NUMBER (PK_VERSION_MAJOR * 10000 + PK_VERSION_MINOR * 100 + PK_VERSION_PATCH)

#if defined(POCKETLLM_BUILD) && defined(__GNUC__)
#define POCKETLLM_API __attribute__((visibility("default")))
#else
#define POCKETLLM_API
#endif

/* ---- status codes ---------------------------------------------------------------------------- */

typedef enum pocketllm_status {
    POCKETLLM_OK = 0,
    POCKETLLM_ERR_NOMEM = 1,        /* allocation failed */
    POCKETLLM_ERR_IO = 2,           /* file system or OS error */
    POCKETLLM_ERR_FORMAT = 3,       /* malformed input (a record, a file, an answer) */
    POCKETLLM_ERR_AUTH = 4,         /* wrong passphrase, tampered data, bad signature */
    POCKETLLM_ERR_DB = 5,           /* the home's database failed */
    POCKETLLM_ERR_HTTP = 6,         /* network or coordinator protocol error */
    POCKETLLM_ERR_ARG = 7,          /* invalid argument */
    POCKETLLM_ERR_BUSY = 8,         /* held by another process (e.g. a run training elsewhere) */
    POCKETLLM_ERR_NOTFOUND = 9,     /* no such home, dataset, run or model */
    POCKETLLM_ERR_UNSUPPORTED = 10, /* valid input this version does not handle, including a home
                                       or seed log written by a newer format version */
    POCKETLLM_ERR_CANCELLED = 11,   /* stopped by pocketllm_cancel or a callback, at a safe point */
    POCKETLLM_ERR_LIMIT = 12,       /* a hard cap was exceeded (size, disk full) */
    POCKETLLM_ERR_NUMERIC = 13,     /* a computation went non-finite (a diverging run) */
    POCKETLLM_ERR_STALE_KEY = 14,   /* the passphrase changed since this handle was opened */
} pocketllm_status;

/* Fixed English text for a status; never NULL (an unknown code gives "unknown status").
 * Threads: any thread. */
POCKETLLM_API const char *pocketllm_status_str(pocketllm_status st);

/* ---- version, logging, threads (process-wide) ------------------------------------------------ */

/* The loaded library's version as PK_VERSION_NUMBER, and as "MAJOR.MINOR.PATCH" (static text).
 * Threads: any thread. */
POCKETLLM_API int pocketllm_version(void);
POCKETLLM_API const char *pocketllm_version_string(void);

typedef enum pocketllm_log_level {
    POCKETLLM_LOG_DEBUG = 0,
    POCKETLLM_LOG_INFO = 1,
    POCKETLLM_LOG_WARN = 2,
    POCKETLLM_LOG_ERROR = 3,
} pocketllm_log_level;

/* Called with each library message at or above the level given to pocketllm_set_log (msg is
 * one line without a newline, valid during the call). It runs on the thread that made the
 * library call, and must not call back into the library on that handle. */
typedef void (*pocketllm_log_fn)(pocketllm_log_level level, const char *msg, void *user);

/* Where library messages go: fn (may be NULL: messages are dropped, the default) with user
 * (borrowed until replaced). The library never writes to stdout or stderr itself.
 * Threads: process-wide; call before other threads use the library. */
POCKETLLM_API void pocketllm_set_log(pocketllm_log_fn fn, void *user, pocketllm_log_level min);

/* Threads the kernels use (OpenMP and OpenBLAS), capped at the online cores; n <= 0 means all
 * online cores. Returns the count now in effect. Results do not depend on it (bit-exact).
 * Threads: process-wide; call before other threads use the library. */
POCKETLLM_API int pocketllm_set_threads(int n);

/* ---- the agent home -------------------------------------------------------------------------- */

typedef struct pocketllm_home pocketllm_home;

typedef struct pocketllm_home_params {
    int create;            /* 1: create the home (directory 0700, new keys, a device identity)
                              if it does not exist; 0 (default): POCKETLLM_ERR_NOTFOUND */
    uint64_t kdf_opslimit; /* Argon2id ops limit for a new home; 0 = the interactive default */
    size_t kdf_memlimit;   /* Argon2id memory limit in bytes for a new home; 0 = the default */
} pocketllm_home_params;

/* The defaults: open an existing home. Threads: any thread. */
POCKETLLM_API pocketllm_home_params pocketllm_home_default_params(void);

/* Opens the agent home in directory dir (borrowed) with passphrase (len bytes, 1..1024; not a
 * C string, no terminator needed). The library WIPES the len bytes at passphrase before it
 * returns, success or not. params may be NULL (the defaults).
 *
 * *out receives a handle in every case but out-of-memory (then NULL and POCKETLLM_ERR_NOMEM):
 * on failure the handle only answers pocketllm_errmsg and must be closed. Errors:
 * POCKETLLM_ERR_NOTFOUND (no home and params->create == 0), POCKETLLM_ERR_AUTH (wrong
 * passphrase; nothing in the home changed), POCKETLLM_ERR_UNSUPPORTED (the home was written
 * by a newer PocketLLM: the message names both schema versions), POCKETLLM_ERR_BUSY,
 * POCKETLLM_ERR_ARG (NULL or empty dir or passphrase, dir is a file), POCKETLLM_ERR_DB/IO.
 * Threads: any thread; the new handle is then used by one thread at a time. */
POCKETLLM_API pocketllm_status pocketllm_home_open(const char *dir, void *passphrase, size_t len,
                                                   const pocketllm_home_params *params,
                                                   pocketllm_home **out);

/* A handle that holds no home (since 0.2), for the calls that read nothing from one:
 * pocketllm_generate with a model_dir and pocketllm_seedlog_check. It carries their error text
 * like any handle; every other call on it answers POCKETLLM_ERR_ARG. Close it with
 * pocketllm_home_close. Its only failure is POCKETLLM_ERR_NOMEM (*out NULL).
 * Threads: any thread; the new handle is then used by one thread at a time. */
POCKETLLM_API pocketllm_status pocketllm_home_open_none(pocketllm_home **out);

/* Closes the home and wipes its keys. NULL-safe. Threads: not while another thread uses h. */
POCKETLLM_API void pocketllm_home_close(pocketllm_home *h);

/* The last failure on h as one line ("" if the last call succeeded). View: valid until the
 * next call on h. A NULL h gives a fixed text. Threads: the thread using h. */
POCKETLLM_API const char *pocketllm_errmsg(const pocketllm_home *h);

/* Asks the training run going on in h (pocketllm_train) to stop at the next step boundary;
 * that call then returns POCKETLLM_ERR_CANCELLED with every step so far logged, and the run can
 * be resumed. During lr_auto's search (before the run exists) it stops the search between two
 * of its steps: POCKETLLM_ERR_CANCELLED with no run created (result->run_id 0). Has no effect
 * when nothing trains; the request is cleared when pocketllm_train starts. Threads: ANY thread,
 * while another thread trains on h (lock-free, also safe in a signal handler). */
POCKETLLM_API void pocketllm_cancel(pocketllm_home *h);

/* ---- datasets ------------------------------------------------------------------------------- */

typedef enum pocketllm_format {
    POCKETLLM_FORMAT_AUTO = 0,  /* files only: from the extension (.jsonl/.json, .txt, .csv) */
    POCKETLLM_FORMAT_JSONL = 1, /* one object per line: "text"; or "prompt" + "response"; or
                                   "text" [+ "text2"] + "label" */
    POCKETLLM_FORMAT_TXT = 2,   /* one example per line */
    POCKETLLM_FORMAT_CSV = 3,   /* a header row naming the JSONL columns, RFC 4180 quoting */
} pocketllm_format;

typedef struct pocketllm_import_params {
    pocketllm_format format; /* default POCKETLLM_FORMAT_AUTO */
    int paragraphs;          /* TXT (also when AUTO picks it): one example per
                                blank-line-separated paragraph instead of per line */
    /* Optional: called after every 64th example added and once at the end, with the count so
     * far; on the calling thread. */
    void (*progress)(void *user, int64_t n_examples);
    void *user;
} pocketllm_import_params;

/* The defaults: format from the file extension, no progress. Threads: any thread. */
POCKETLLM_API pocketllm_import_params pocketllm_import_default_params(void);

/* Imports the examples in data (borrowed, len bytes of UTF-8 in params->format, which must not
 * be AUTO) into dataset `name` (created if absent, else appended to), each sealed. All of it or
 * none of it: one transaction. *n_imported (may be NULL) gets the count. Errors:
 * POCKETLLM_ERR_FORMAT (the message says "line N: why"), POCKETLLM_ERR_ARG, POCKETLLM_ERR_DB.
 * Threads: one thread at a time on h. */
POCKETLLM_API pocketllm_status pocketllm_import(pocketllm_home *h, const char *name,
                                                const void *data, size_t len,
                                                const pocketllm_import_params *params,
                                                int64_t *n_imported);

/* The same from a file (path borrowed), streamed in constant memory; AUTO picks the format from
 * the extension. The message of a bad record says "FILE:LINE: why".
 * Threads: one thread at a time on h. */
POCKETLLM_API pocketllm_status pocketllm_import_file(pocketllm_home *h, const char *name,
                                                     const char *path,
                                                     const pocketllm_import_params *params,
                                                     int64_t *n_imported);

typedef struct pocketllm_dataset {
    int64_t id;
    char name[128];
    int64_t n_examples;
    int64_t sealed_bytes; /* bytes of sealed records on disk */
    double created_at;    /* unix seconds */
} pocketllm_dataset;

/* The datasets of h by name: writes the first min(cap, total) into out (caller-owned, cap
 * entries; may be NULL when cap is 0) and the total count into *n. Call with cap 0 to size the
 * array. Threads: one thread at a time on h. */
POCKETLLM_API pocketllm_status pocketllm_datasets(pocketllm_home *h, pocketllm_dataset *out,
                                                  size_t cap, size_t *n);

/* Deletes dataset `name` and its examples (their pages are wiped). Runs trained on it keep
 * their step logs unless with_runs is 1: then every run whose weights carry the dataset is
 * deleted in the same transaction. runs (caller-owned, cap entries, may be NULL) gets the first
 * min(cap, total) of those run ids (deleted, or still carrying it), *n_runs (may be NULL) the
 * total. POCKETLLM_ERR_NOTFOUND if there is no such dataset, POCKETLLM_ERR_BUSY if one of the
 * runs is training. Threads: one thread at a time on h. */
POCKETLLM_API pocketllm_status pocketllm_dataset_forget(pocketllm_home *h, const char *name,
                                                        int with_runs, int64_t *runs, size_t cap,
                                                        size_t *n_runs);

/* ---- training -------------------------------------------------------------------------------- */

typedef enum pocketllm_objective {
    POCKETLLM_OBJECTIVE_LM = 0,       /* next-token cross-entropy (prompt+response: response) */
    POCKETLLM_OBJECTIVE_CLASSIFY = 1, /* cross-entropy over label words (template + labels) */
    POCKETLLM_OBJECTIVE_ACCURACY = 2, /* minus the accuracy (non-differentiable) */
} pocketllm_objective;

/* What a progress callback sees after each step (valid during the call). */
typedef struct pocketllm_step_info {
    int64_t run_id;
    int64_t step;        /* 0-based step just logged */
    int64_t total;       /* the run's steps */
    double loss_plus;    /* loss at W + eps z (first perturbation of the step) */
    double loss_minus;   /* loss at W - eps z */
    double g;            /* projected gradient (after clipping) */
    double lr;           /* learning rate of the step */
    int has_eval;        /* 1: an eval ran after this step, i.e. at step + 1 steps done */
    double eval_loss;    /* held-out loss of that eval */
    double eval_acc;     /* its accuracy (NaN for lm) */
    int64_t evaluations; /* loss evaluations of the run so far */
    double elapsed_s;    /* training seconds of this call so far (evals excluded) */
    /* since 0.2: lr_auto's guard cut the rate after this step (the training loss over the last
     * window of steps rose well above the lowest window's): the steps after it train at
     * lr_next. cut_loss is that window's mean, cut_lowest the lowest before it. */
    int lr_cut;
    double lr_next, cut_loss, cut_lowest;
} pocketllm_step_info;

/* What the learning-rate search of lr_auto tried (valid during the callback). */
#define POCKETLLM_LR_CANDIDATES 7
typedef struct pocketllm_lr_search {
    int n;             /* candidates tried */
    int steps_each;    /* steps per candidate from the same starting weights */
    int held_examples; /* examples held back to judge on */
    float lr[POCKETLLM_LR_CANDIDATES];
    double loss[POCKETLLM_LR_CANDIDATES]; /* held-back loss after the steps; inf: diverged */
    double start_loss;                    /* held-back loss before any step */
    float chosen;                         /* the rate the run trains with */
} pocketllm_lr_search;

/* Return 0 to go on, non-zero to stop at this step boundary (as pocketllm_cancel). */
typedef int (*pocketllm_progress_fn)(void *user, const pocketllm_step_info *info);

typedef struct pocketllm_train_params {
    /* A new run (resume_run == 0): */
    const char *model_dir;    /* base model, a Hugging Face directory (required unless
                                 parent_run is set) */
    const char *dataset;      /* training dataset (required) */
    const char *datasets;     /* NULL, or a comma-separated union starting with `dataset` */
    const char *eval_dataset; /* NULL: none (or the held-out part with holdout > 0) */
    pocketllm_objective objective;
    int64_t steps;             /* default 100 */
    int batch;                 /* examples per micro-batch, default 8 */
    int seq_len;               /* tokens per example, default 64 */
    int accumulate;            /* micro-batches per step under one z, default 1 */
    float lr;                  /* peak learning rate (default: the library's) */
    int lr_auto;               /* 1: a short search on a held-back slice picks lr first, and
                                  the rate is cut should the training loss climb (lr_cut) */
    float eps;                 /* perturbation scale */
    const char *schedule;      /* "constant" (default), "linear" or "cosine" */
    int64_t warmup;            /* linear warm-up steps */
    float weight_decay;        /* decoupled, never on biases and norms */
    int spsa_q;                /* perturbations per step, averaged */
    const char *estimator;     /* "spsa" (default), "fzoo" or "hizoo" */
    int perturbations;         /* fzoo: one-sided perturbations per step */
    float hessian_smooth;      /* hizoo */
    float hessian_budget;      /* hizoo */
    int perturb_layers;        /* > 0: K random layers perturbed per perturbation */
    float clip_g;              /* |g| clipped to this; 0 = off */
    const char *trainable;     /* "all" (default), "bitfit", a regex, or "lora[:...]" */
    uint64_t seed;             /* run seed */
    const char *z;             /* "gaussian" (default) or "rademacher" */
    const char *template_text; /* classify: prompt with {text} / {text2} */
    const char *labels;        /* classify: comma-separated label words */
    int64_t eval_every;        /* eval every N steps (0: never) */
    int early_stop;            /* patience in evals (0: off) */
    int64_t checkpoint_every;  /* sealed weight checkpoints every N steps (0: none) */
    int64_t parent_run;        /* > 0: start from that run's final weights (its base model) */
    int holdout;               /* percent of examples held out for eval (0: none) */
    /* Or continue a run from its log, bit-exactly (the fields above are then ignored): */
    int64_t resume_run;
    /* Callbacks (optional), on the training thread: */
    void (*on_start)(void *user, int64_t run_id, int64_t first_step);    /* the run exists */
    pocketllm_progress_fn progress;                                      /* after each step */
    void (*on_lr_search)(void *user, const pocketllm_lr_search *search); /* lr_auto, once */
    void *user;
    /* since 0.2: hizoo's Hessian update interval K: the unperturbed loss and the Hessian update
     * only on steps with step % K == 0 (default 16, train --hessian-every; 0 or 1: every
     * step, as before the field) */
    int hessian_every;
    /* since 0.2: the guard that cuts the rate to a third when the training loss climbs (DESIGN
     * 4): 0 (default) on with lr_auto, off otherwise; 1 on (a hand-set lr too); 2 off */
    int lr_guard;
    /* since 0.2: fzoo's baseline, what each perturbed loss is compared with: NULL or
     * "unperturbed" (default, FZOO: the unperturbed loss, N + 1 evaluations per step) or "mean"
     * (the mean of the N perturbed losses; the unperturbed loss is not evaluated: N per step;
     * train --fzoo-baseline) */
    const char *fzoo_baseline;
    /* since 0.2: > 0: K random stages (halves of transformer blocks: attention, MLP) of those
     * holding trainable tensors perturbed per perturbation (train --perturb-stages; not with
     * perturb_layers; 0 = off) */
    int perturb_stages;
} pocketllm_train_params;

/* The defaults (the CLI's `train` defaults). Threads: any thread. */
POCKETLLM_API pocketllm_train_params pocketllm_train_default_params(void);

typedef struct pocketllm_train_result {
    int64_t run_id;
    int64_t steps_done;    /* steps logged in the run so far */
    int stopped_early;     /* early stopping ended the run */
    int cancelled;         /* stopped by pocketllm_cancel or the progress callback */
    double last_loss;      /* (loss+ + loss-)/2 of the last step; NaN if none ran */
    double forward_s;      /* seconds in forward passes */
    double update_s;       /* seconds in weight updates */
    int64_t evaluations;   /* loss evaluations so far (also before a resume) */
    double elapsed_s;      /* training wall-clock of this call */
    char weights_hash[65]; /* hex hash of the weights where it stopped */
    float lr;              /* the learning rate used (the searched one with lr_auto) */
    /* since 0.2: times the guard (lr_guard) cut the rate, also before a resume; the steps
     * after the last cut ran at lr / 3 per cut (the schedule applied as before) */
    int lr_cuts;
} pocketllm_train_result;

/* Trains a new run, or resumes params->resume_run, step by step; every step is logged in the
 * home in its own transaction before the next starts. Returns POCKETLLM_OK when the run is done
 * (all steps, or early stopping), POCKETLLM_ERR_CANCELLED when pocketllm_cancel or the progress
 * callback stopped it at a step boundary (status "stopped": resume it with resume_run = its id
 * to reach the same weights, bit for bit, as an uninterrupted run). *result (may be NULL) is
 * filled as far as the run got, also on failure. Errors: POCKETLLM_ERR_ARG (settings out of
 * range), POCKETLLM_ERR_NOTFOUND (model, dataset or run), POCKETLLM_ERR_NUMERIC (the run
 * diverged; it is marked failed), POCKETLLM_ERR_FORMAT, POCKETLLM_ERR_DB.
 * Threads: one thread at a time on h; pocketllm_cancel(h) from any thread. */
POCKETLLM_API pocketllm_status pocketllm_train(pocketllm_home *h,
                                               const pocketllm_train_params *params,
                                               pocketllm_train_result *result);

/* ---- evaluation and generation ----------------------------------------------------------------
 */

typedef struct pocketllm_eval_params {
    const char *model_dir; /* a base model, or NULL with run_id > 0 */
    int64_t run_id;        /* > 0: the run's weights and, as defaults, its settings */
    const char *dataset;   /* required */
    int objective;         /* -1 (default): the run's (lm for a model); else pocketllm_objective */
    const char *template_text; /* NULL: the run's */
    const char *labels;        /* NULL: the run's */
    int batch;                 /* 0: the run's (8 for a model) */
    int seq_len;               /* 0: the run's (128 for a model) */
} pocketllm_eval_params;

/* The defaults: objective -1, batch and seq_len 0 (the run's). Threads: any thread. */
POCKETLLM_API pocketllm_eval_params pocketllm_eval_default_params(void);

typedef struct pocketllm_eval_result {
    int64_t examples;
    int objective; /* the pocketllm_objective used */
    double loss;
    double accuracy; /* NaN for lm */
} pocketllm_eval_result;

/* Unperturbed loss (and accuracy) of a model or a run's weights on a dataset.
 * Threads: one thread at a time on h. */
POCKETLLM_API pocketllm_status pocketllm_eval(pocketllm_home *h,
                                              const pocketllm_eval_params *params,
                                              pocketllm_eval_result *result);

/* Called with each generated token's text as it becomes complete UTF-8 (bytes, len; not
 * NUL-terminated; may be 0 bytes for a token that completes nothing yet, or an id the tokenizer
 * does not know, as in a vocabulary padded beyond the tokenizer's) and its id; after the last
 * token, once more with id -1 for bytes held back at the end, if any. bytes is NULL (len 0)
 * only when the model has no tokenizer files: then the ids are the output. Return 0 to go on,
 * non-zero to stop. */
typedef int (*pocketllm_token_fn)(void *user, int32_t id, const char *bytes, size_t len);

/* Called once after a successful generation with the whole sequence (since 0.2): ids[0, n_ids)
 * are the prompt's ids (after tokenizing a text prompt) then the generated ones (with the
 * end-of-sequence token when it ended the generation); text (text_len bytes plus a NUL, special
 * tokens left out) is all of them decoded together, which may differ from the prompt followed
 * by the streamed pieces where they meet. text is NULL without tokenizer files, or when the
 * tokenizer does not know one of the ids. Views, valid during the call. */
typedef void (*pocketllm_sequence_fn)(void *user, const int32_t *ids, size_t n_ids,
                                      const char *text, size_t text_len);

typedef struct pocketllm_generate_params {
    const char *model_dir;       /* a model directory, or NULL with run_id */
    int64_t run_id;              /* > 0: the run's fine-tuned weights and its base tokenizer */
    const char *prompt;          /* UTF-8; "" starts from the BOS token. Needs tokenizer files */
    int max_new;                 /* tokens to generate at most (default 32) */
    float temperature;           /* 0 (default): greedy */
    int top_k;                   /* 0: off */
    float top_p;                 /* 1: off */
    uint64_t seed;               /* sampler seed: the same seed, the same tokens (any threads) */
    int ignore_eos;              /* 1: do not stop at the end-of-sequence token */
    pocketllm_token_fn on_token; /* optional */
    void *user;                  /* given to on_token and on_sequence */
    /* since 0.2 (the defaults keep the 0.1 behaviour): */
    const int32_t *prompt_ids; /* NULL (default): the prompt is text. Else the prompt as
                                  n_prompt_ids token ids (borrowed; prompt is then ignored),
                                  each inside the model's vocabulary: the way to prompt a model
                                  whose directory has no tokenizer files */
    size_t n_prompt_ids;
    pocketllm_sequence_fn on_sequence; /* optional: the whole sequence at the end */
} pocketllm_generate_params;

/* The defaults: greedy, 32 new tokens, a text prompt "". Threads: any thread. */
POCKETLLM_API pocketllm_generate_params pocketllm_generate_default_params(void);

/* Generates after the prompt (params->prompt_ids, else params->prompt) with a KV cache: greedy
 * or sampled (temperature, top_k, top_p from seed), up to max_new tokens, stopping after the
 * end-of-sequence token unless ignore_eos. out (caller-owned, cap bytes, may be NULL with cap 0)
 * gets the generated text, NUL-terminated, cut at cap - 1 bytes ("" for a model without
 * tokenizer files); *n_tokens (may be NULL) the number of tokens generated. h is needed for
 * run_id (the run lives in the home) and for the error text; with model_dir it reads nothing
 * from the home (a handle of pocketllm_home_open_none will do). Errors: POCKETLLM_ERR_ARG
 * (no prompt, an id outside the vocabulary, prompt + max_new beyond the model's positions, a
 * text prompt for a model without tokenizer files), POCKETLLM_ERR_NOTFOUND (no such run),
 * POCKETLLM_ERR_IO or POCKETLLM_ERR_FORMAT (the model's files), POCKETLLM_ERR_NUMERIC (the
 * logits went non-finite: non-finite weights).
 * Threads: one thread at a time on h. */
POCKETLLM_API pocketllm_status pocketllm_generate(pocketllm_home *h,
                                                  const pocketllm_generate_params *params,
                                                  char *out, size_t cap, int *n_tokens);

/* ---- export and sync ------------------------------------------------------------------------- */

/* Writes run run_id as a portable seed log to path (borrowed; mode 0600): the base-model hash
 * and one line per step (seed, projected gradient, lr). `pocketllm replay --seed-log FILE
 * --model BASE` rebuilds the weights anywhere. *bytes (may be NULL) gets the file size.
 * Threads: one thread at a time on h. */
POCKETLLM_API pocketllm_status pocketllm_export_seedlog(pocketllm_home *h, int64_t run_id,
                                                        const char *path, size_t *bytes);

/* Checks that the seed log at path is one this library can replay, without replaying it:
 * POCKETLLM_ERR_UNSUPPORTED names both versions for a log of a newer format, POCKETLLM_ERR_FORMAT
 * for a malformed one. *n_rows (may be NULL) gets its step-log rows. h only carries the error
 * text. Threads: one thread at a time on h. */
POCKETLLM_API pocketllm_status pocketllm_seedlog_check(pocketllm_home *h, const char *path,
                                                       int64_t *n_rows);

typedef struct pocketllm_sync_params {
    const char *server;    /* the coordinator, http(s)://HOST[:PORT] (required) */
    const char *model_dir; /* the task's base model (required) */
    const char *dataset;   /* local steps' dataset (required unless catch_up or datasets) */
    const char *datasets;  /* or "NAME,NAME": the local steps train on the union (an agent) */
    const char *task_id;   /* NULL: whatever task the coordinator runs */
    const char *trainable; /* NULL: "all" */
    int catch_up;          /* 1: no local steps, only download and replay the global log */
    int batch;             /* default 8 */
    int seq_len;           /* default 64 */
    double dp_clip;        /* > 0: clip each step's g to [-clip, clip]; 0: the task's */
    double dp_noise;       /* > 0: Gaussian noise sigma * clip on each g (needs dp_clip) */
    double dp_delta;       /* delta of the reported epsilon (default 1e-5) */
    double wait_s;         /* wait this long for the round to close (default 60) */
    double timeout_s;      /* per HTTP request (0: the library's default) */
    const char *out_dir;   /* NULL, or write the global model (base + log) there */
} pocketllm_sync_params;

/* The defaults. Threads: any thread. */
POCKETLLM_API pocketllm_sync_params pocketllm_sync_default_params(void);

typedef struct pocketllm_sync_result {
    char device_id[24];
    char task_id[68];
    int64_t round;         /* the round uploaded to (0: none this call) */
    int uploaded;          /* an update was accepted this call */
    int flushed;           /* pending uploads from earlier calls sent now */
    int64_t steps;         /* local steps run */
    int64_t pairs;         /* (seed, sum of g) pairs uploaded */
    int64_t examples;      /* example count uploaded */
    int round_closed;      /* the round closed and its entry was replayed */
    int64_t log_version;   /* global log version applied */
    char log_head[65];     /* its hash */
    char model_hash[65];   /* weights hash of the global model */
    int dp;                /* differential privacy applied this call */
    double epsilon, delta; /* privacy spent on the task (delta 0: never DP) */
    uint64_t upload_body_bytes;
    uint64_t bytes_up, bytes_down;           /* wire bytes of this call */
    uint64_t body_bytes_up, body_bytes_down; /* bodies only */
    uint64_t requests, attempts;
} pocketllm_sync_result;

/* One federated round with a coordinator (docs/SYNC.md): registers this device once, sends any
 * pending upload, checks the base model, catches up with the verified global log, runs the
 * task's local steps, uploads only per-seed sums of projected gradients (signed, through the
 * home's outbox: never lost or duplicated), waits for the round, replays the log. Text and
 * weights never leave the device. Loads libcurl on first use. POCKETLLM_ERR_HTTP: unreachable
 * (a pending upload stays in the outbox for the next call); POCKETLLM_ERR_AUTH: the global log
 * failed verification. *result may be NULL. Threads: one thread at a time on h. */
POCKETLLM_API pocketllm_status pocketllm_sync(pocketllm_home *h,
                                              const pocketllm_sync_params *params,
                                              pocketllm_sync_result *result);

#ifdef __cplusplus
}
#endif

#endif /* POCKETLLM_H */
