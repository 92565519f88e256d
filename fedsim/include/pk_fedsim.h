/* pk_fedsim.h: federated experiments on one machine against the real coordinator (docs/FEDSIM.md):
 * splitting a dataset into device homes (split.c), the coordinator as a child process
 * (coord.c), the device role that `pocketllm fedsim device` runs (device.c: one pk_sync_round
 * with reproducible pool picks and batches, plus the device's own record of what it uploaded),
 * the round loop with dropouts, stragglers, global evaluation and the centralized baseline
 * (sim.c), and the check that the coordinator's log equals a recomputation from the devices'
 * records (verify.c). The protocol and the local steps are net/'s (pk_sync_round) and train/'s.
 * Thread safety: every call runs on the caller's thread; nothing is shared between calls. */
#ifndef PK_FEDSIM_H
#define PK_FEDSIM_H

#include "pk_common.h"
#include "pk_net.h"
#include "pk_store.h"
#include "pk_train.h"

#include <stddef.h>
#include <stdint.h>

/* ---- splits (split.c) ----------------------------------------------------------------------- */

typedef enum pk_split_kind {
    PK_SPLIT_IID = 0,   /* a seeded shuffle dealt round-robin: sizes differ by at most one */
    PK_SPLIT_DIRICHLET, /* per class, device shares drawn from Dirichlet(alpha) (label skew) */
    PK_SPLIT_SHARDS,    /* sorted by class, cut into devices x K shards, K per device */
} pk_split_kind;

typedef struct pk_split {
    pk_split_kind kind;
    double alpha; /* dirichlet: concentration (> 0; small = very non-IID) */
    int shards;   /* shards: shards per device (>= 1) */
} pk_split;

/* "iid" | "dirichlet:ALPHA" | "shards:K". PK_ERR_ARG with err naming the spec. */
PK_NODISCARD pk_status pk_fedsim_split_parse(const char *spec, pk_split *out, char *err,
                                             size_t errlen);
/* Assigns example i (class cls[i] >= 0; use 0 for all when there are no labels) to device
 * dev[i] in [0, n_dev): a pure function of (sp, cls, n, n_dev, seed). Every device gets at least
 * one example (a device left empty takes one from the largest). cls, dev borrowed ([n]).
 * PK_ERR_ARG if n_dev < 1 or n < n_dev (err says how many of each). */
PK_NODISCARD pk_status pk_fedsim_split(const pk_split *sp, const int32_t *cls, size_t n, int n_dev,
                                       uint64_t seed, int32_t *dev, char *err, size_t errlen);

/* ---- the coordinator as a child process (coord.c) -------------------------------------------- */

typedef struct pk_fedsim_coord pk_fedsim_coord;
/* Starts server_bin (pocketllm-server-mock) on 127.0.0.1, port 0, with DIR/coord.db (an existing
 * one is resumed), the task file DIR/task.json (written from task_json), its stderr in
 * DIR/server.log, if faults is not NULL --faults faults, and if capture is not NULL --capture
 * capture (a directory, created if missing, that receives every request body). It gets its own
 * process group and dies with this process (PR_SET_PDEATHSIG). Waits up to 30 s for "listening on
 * HOST:PORT". All strings borrowed. *out owned (pk_fedsim_coord_stop). PK_ERR_IO: files or fork;
 * PK_ERR_HTTP: it did not start (err quotes the last line of its log). */
PK_NODISCARD pk_status pk_fedsim_coord_start(const char *server_bin, const char *dir,
                                             const char *task_json, const char *faults,
                                             const char *capture, pk_fedsim_coord **out, char *err,
                                             size_t errlen);
/* "http://127.0.0.1:PORT" (view, valid until stop). */
const char *pk_fedsim_coord_url(const pk_fedsim_coord *c);
/* SIGTERM to its group, SIGKILL after 10 s; reaps it and frees c. NULL-safe. */
void pk_fedsim_coord_stop(pk_fedsim_coord *c);

/* ---- the device role (device.c) ---------------------------------------------------------------
 */

typedef struct pk_fedsim_device_params {
    pk_sync_params sync;     /* server, DP delta, HTTP limits; wait_s (0: return after upload) */
    const char *model_dir;   /* the task's base model (borrowed) */
    const char *dataset;     /* the device's local dataset in its store (borrowed) */
    pk_train_config cfg;     /* objective, template, labels, batch, seq_len, trainable;
                                mezo.estimator (spsa or fzoo) and mezo.perturbations (fzoo) */
    uint64_t seed;           /* pool picks and batches; 0: fresh CSPRNG randomness */
    double straggle_s;       /* sleep this long before the round (an injected straggler) */
    const char *record_path; /* NULL, or a file this device appends its uploads to (one JSON
                                line per accepted upload: round, device_id, examples, the packed
                                pairs as PROTOCOL 3 base64 exactly as uploaded, DP noise
                                included (pk_sync_params.on_upload), dp_noise, as_uploaded) */
} pk_fedsim_device_params;
/* Defaults: pk_sync_default_params with wait_s 0, pk_train_config_default, no record. */
pk_fedsim_device_params pk_fedsim_device_default_params(void);

/* Whether the sync protocol (a log entry: pool seeds and scalars) can carry estimator e: 1 for
 * spsa (the client's own step) and fzoo (N local steps per FZOO step, docs/FEDSIM.md), 0 for
 * hizoo, with *why (may be NULL; static text) saying why not. */
int pk_fedsim_estimator_carried(pk_estimator e, const char **why);
/* 1 if a coordinator task can name the trainable set spec: 1 to 63 characters (its "trainable"
 * field, docs/PROTOCOL.md 2); else 0 with the reason in err. pk_fedsim_run checks it too. */
int pk_fedsim_trainable_ok(const char *spec, char *err, size_t errlen);

/* One round of one device: loads the model, builds the objective over p->dataset of s, runs
 * pk_sync_round (register, catch up, local steps with pool indices and batches derived from
 * p->seed and the round, upload through the outbox) and appends the record. s and p borrowed;
 * rep (may be NULL) gets pk_sync_round's report. Errors: pk_sync_round's, the model's, the
 * objective's, PK_ERR_IO for the record file; err gets one line. */
PK_NODISCARD pk_status pk_fedsim_device_round(pk_store *s, const pk_fedsim_device_params *p,
                                              pk_sync_report *rep, char *err, size_t errlen);

/* ---- checking the log against the devices' records (verify.c) ------------------------------- */

typedef struct pk_fedsim_check {
    int64_t entries;    /* log entries compared */
    int64_t records;    /* device records read */
    int64_t mismatches; /* entries whose uploads, examples or coefficients differ */
    int values;         /* 1: coefficients compared bit for bit; 0: counts only (a record of
                           an older device that holds its sums before the DP noise) */
    char first[256];    /* the first mismatch, or "" */
} pk_fedsim_check;
/* Fetches the global log versions [first_round, last_round] from url and recomputes each entry
 * from the records files (paths borrowed, n of them; a missing file counts as no uploads): the
 * number of uploads, the example sum and every coefficient (example-weighted mean in device id
 * order, PROTOCOL 6) bit for bit, with or without DP noise (the records hold the uploads as
 * sent); only a record with dp_noise but not as_uploaded (its sums before the noise) limits
 * the entry to the counts. PK_OK when the
 * comparison ran (check->mismatches says whether it passed); PK_ERR_HTTP / PK_ERR_FORMAT /
 * PK_ERR_IO when it could not. */
PK_NODISCARD pk_status pk_fedsim_verify_log(const char *url, const char *const *records, size_t n,
                                            int64_t first_round, int64_t last_round,
                                            pk_fedsim_check *check, char *err, size_t errlen);

/* ---- the simulation (sim.c) -------------------------------------------------------------------
 */

typedef struct pk_fedsim_params {
    const char *pocketllm_bin; /* runs `pocketllm fedsim device` (borrowed) */
    const char *server_bin;    /* pocketllm-server-mock, when server_url is NULL (borrowed) */
    const char *server_url;    /* an external coordinator; NULL: start server_bin */
    const char *faults;        /* the coordinator's --faults SPEC, or NULL */
    const char *model_dir;     /* the base model (borrowed) */
    const char *data_file;     /* training examples (jsonl/txt/csv, as import), or NULL ... */
    pk_store *src;             /* ... the store holding src_dataset (borrowed) */
    const char *src_dataset;
    const char *eval_file;    /* eval examples, or NULL ... */
    const char *eval_dataset; /* ... a dataset of src */
    const char *out_dir;      /* results; device homes under OUT/homes (borrowed) */
    int devices, rounds;
    int64_t local_steps;
    pk_split split;
    int pool;             /* K */
    double participation; /* fraction of devices picked per round, (0, 1] */
    double dropout;       /* fraction of the picked devices that drop out (never upload) */
    double straggler;     /* probability that an uploading device is a straggler */
    double straggle_s;    /* a straggler's delay */
    int parallel;         /* device processes at once (>= 1) */
    uint64_t seed;        /* split, picks, pool seed, batches: same seed, same global hashes */
    int keep;             /* 1: keep the device homes */
    int baseline;         /* 1: also the centralized run */
    float baseline_lr;    /* the baseline's rate; 0: the task's lr (the federated one) */
    int baseline_lr_auto; /* 1: the baseline searches its rate first (pk_lr_search_run, as
                             `train --lr auto`), the search's evaluations taken out of its budget */
    double dp_clip, dp_noise, dp_delta;
    pk_train_config cfg;    /* objective, template, labels, lr, eps, batch, seq_len, trainable, z */
    double round_timeout_s; /* a round that has not closed after this long fails */
} pk_fedsim_params;
pk_fedsim_params pk_fedsim_default_params(void);

typedef struct pk_fedsim_round {
    int64_t round;                /* simulation round (1..R); 0 = the base model */
    int64_t coord_round;          /* the coordinator's round number */
    int participants, dropped;    /* picked this round; of them, dropped out */
    int stragglers, uploads;      /* delayed devices; accepted uploads */
    int64_t examples;             /* example count behind the round's log entry */
    double loss, accuracy;        /* global model on the eval set (accuracy NAN for lm) */
    double bytes_up_per_device;   /* mean over the uploading devices, HTTP headers included */
    double bytes_down_per_device; /* the same, received */
    double max_bytes_up, max_bytes_down;
    double total_bytes; /* every device's traffic so far, up + down */
    double seconds;     /* wall clock from the first launch to the round's close */
    double eval_seconds;
    double epsilon; /* the largest epsilon any device has spent so far; NAN without DP */
    char model_hash[65], log_head[65];
} pk_fedsim_round;

/* A baseline attempt that diverged (--baseline-lr auto) and was started over at a third of its
 * rate: its rate, the last step of the window that diverged (0-based), that window's mean
 * training loss (NAN when a step's loss was not finite), the lowest the attempt had reached
 * (or its starting loss) and the loss evaluations it spent. */
#define PK_FEDSIM_BACKOFFS 4
typedef struct pk_fedsim_backoff {
    float lr;
    int64_t step;
    double loss, lowest;
    int64_t evaluations;
} pk_fedsim_backoff;

typedef struct pk_fedsim_summary {
    int64_t examples, eval_examples;
    int64_t min_device_examples, max_device_examples;
    int64_t quorum;      /* uploads per round */
    int64_t local_steps; /* per device and round (the task's) */
    float lr, eps;
    int rounds_done;
    int64_t device_steps; /* local MeZO steps over all devices and rounds */
    pk_fedsim_round base, last;
    double seconds;
    pk_fedsim_check check;
    int baseline;               /* 1: the baseline ran */
    int64_t device_evaluations; /* loss evaluations of all local steps (forward passes over a
                                   batch: 2 per two-point step) */
    int64_t baseline_steps;     /* its steps: what the evaluations budget leaves after the search */
    int64_t baseline_evaluations;        /* the search's and the steps', <= device_evaluations */
    int64_t baseline_search_evaluations; /* the rate search's share (0 without auto) */
    int baseline_backoffs;               /* attempts that diverged and were started over */
    pk_fedsim_backoff baseline_backoff[PK_FEDSIM_BACKOFFS];
    float baseline_lr;            /* the rate it trained with (searched or given) */
    pk_lr_search baseline_search; /* the search (n = 0 without auto) */
    double baseline_loss, baseline_accuracy;
    double baseline_seconds;
    char url[256]; /* the coordinator */
} pk_fedsim_summary;

typedef struct pk_fedsim_hooks {
    void *user; /* borrowed, passed back */
    /* after the base model's eval (round 0) and after every round */
    void (*on_round)(void *user, const pk_fedsim_round *r);
    /* the baseline's evals: step, the rounds that many steps equal, loss, accuracy */
    void (*on_baseline)(void *user, int64_t step, double rounds, double loss, double acc);
    /* progress text, one line without newline */
    void (*on_note)(void *user, const char *line);
} pk_fedsim_hooks;

/* The whole experiment (docs/FEDSIM.md): device homes, coordinator, rounds, evals, the log
 * check, the baseline; the coordinator and every device process are stopped on every path and
 * the homes removed unless p->keep. p, hooks borrowed; sum (may be NULL) filled as far as the
 * run got. Errors: PK_ERR_ARG (settings, too few examples, a missing eval dataset),
 * PK_ERR_HTTP (the coordinator does not answer, a round does not close), PK_ERR_IO (files,
 * processes), PK_ERR_INTERRUPTED (Ctrl-C), and the libraries' own; err gets one line. */
PK_NODISCARD pk_status pk_fedsim_run(const pk_fedsim_params *p, const pk_fedsim_hooks *hooks,
                                     pk_fedsim_summary *sum, char *err, size_t errlen);

#endif /* PK_FEDSIM_H */
