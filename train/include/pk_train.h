/* pk_train.h: training runs on top of the optimizer (docs/DESIGN.md 4, 6): the trainer loop
 * with its store transactions, run settings, checkpoints, materializing a run's weights, and
 * exporting a run (Hugging Face directory or seed log).
 *
 * Thread safety: functions on one pk_store or pk_model must not run concurrently. */
#ifndef PK_TRAIN_H
#define PK_TRAIN_H

#include <stddef.h>
#include <stdint.h>

#include "pk_common.h"
#include "pk_mezo.h"
#include "pk_model.h"
#include "pk_store.h"

/* ---- runs ----------------------------------------------------------------------------------- */

/* The weights of a run: base model from the run's config (model dir), checked against the run's
 * base hash, newest checkpoint, then the logged steps after it. *out owned (pk_model_free). */
PK_NODISCARD pk_status pk_run_materialize(pk_store *s, int64_t run_id, pk_model **out, char *err,
                                          size_t errlen);
/* The same, also returning the run's steps_done and (if trainable_out != NULL) the mask. */
PK_NODISCARD pk_status pk_run_materialize_ex(pk_store *s, int64_t run_id, int64_t up_to_step,
                                             pk_model **out, uint8_t **trainable_out,
                                             int64_t *steps_applied, char *err, size_t errlen);

/* Checkpoint blob: the bytes of the trainable tensors in model order (magic "PKCK1" + count). */
PK_NODISCARD pk_status pk_checkpoint_pack(const pk_model *m, const uint8_t *trainable, void **blob,
                                          size_t *len);
PK_NODISCARD pk_status pk_checkpoint_unpack(pk_model *m, const uint8_t *trainable, const void *blob,
                                            size_t len);

/* ---- the trainer (trainer.c, run.c) -------------------------------------------------------- */

/* Everything a run needs; stored as JSON in the run row so resume/replay/eval rebuild it. */
typedef struct pk_train_config {
    char model_dir[1024]; /* absolute path of the base model */
    char dataset[128];
    char eval_dataset[128]; /* "" = none */
    pk_objective_kind objective;
    pk_mezo_params mezo; /* mezo.steps_total = steps */
    int accumulate;      /* micro-batches per step under one z */
    int batch;           /* examples per micro-batch */
    int seq_len;
    int64_t steps;
    int64_t eval_every;       /* 0 = no periodic eval */
    int early_stop;           /* patience in evals, 0 = off */
    int64_t checkpoint_every; /* 0 = none */
    char trainable[256];
    char template_[512];
    char labels[512];
    /* Continual runs (DESIGN 13); each is stored only when set, so older runs read unchanged. */
    int64_t parent_run;    /* 0, or the run whose weights after parent_steps steps it starts from */
    int64_t parent_steps;  /* set by pk_trainer_open: the parent's steps_done when chained */
    char datasets[512];    /* "" = `dataset` alone; else a comma-separated union (the first is
                              `dataset`), examples in dataset order, then id order */
    int64_t examples_upto; /* 0 = every example; else only ids <= it: the set a resume sees */
    int holdout;           /* percent of examples held out for eval, by a hash of their id
                              (0 = none); eval uses them when eval_dataset is "" */
} pk_train_config;

pk_train_config pk_train_config_default(void);
/* *json owned (free()). */
PK_NODISCARD pk_status pk_train_config_to_json(const pk_train_config *c, char **json);
PK_NODISCARD pk_status pk_train_config_from_json(const char *json, pk_train_config *c, char *err,
                                                 size_t errlen);
/* A run of the store and its settings: *ri (owned strings: pk_run_info_clear, also on failure)
 * and *cfg parsed from its config. err: "run N: no such run (see pocketllm runs list)" or the
 * store's / parser's message. */
PK_NODISCARD pk_status pk_run_load_config(pk_store *s, int64_t run_id, pk_run_info *ri,
                                          pk_train_config *cfg, char *err, size_t errlen);

/* Callbacks of pk_train and pk_trainer (all optional; called on the thread that steps). */
typedef struct pk_train_hooks {
    void *user;
    /* after step `step` (0-based) was logged; rows [q] */
    void (*on_step)(void *user, int64_t step, int64_t total, const pk_step_row *rows, int q);
    void (*on_eval)(void *user, int64_t step, double loss, double acc);
    /* the run id, as soon as it exists */
    void (*on_start)(void *user, int64_t run_id, int64_t first_step);
} pk_train_hooks;

typedef struct pk_train_result {
    int64_t run_id;
    int64_t steps_done;
    int stopped_early; /* early stopping ended the run */
    int interrupted;   /* pk_interrupted() stopped it at a step boundary (status "stopped") */
    double last_loss;  /* (loss+ + loss-) / 2 of the last step */
    double forward_s, update_s; /* totals */
    char final_hash[65];
} pk_train_result;

/* A run being trained, one step at a time (pk_train is the loop over it). Owned handle
 * (pk_trainer_free). It borrows the store: the store must outlive it, and a trainer and other
 * calls on that store must not run concurrently. */
typedef struct pk_trainer pk_trainer;

/* A new run with cfg->parent_run set starts from the parent's weights after its logged steps
 * (any trainable spec, objective or dataset; the base model is the parent's), and its base hash
 * is the root base model's, so its seed log replays on that model.
 * Opens a run (resume_run == 0: a new run with cfg, borrowed; else continues run resume_run
 * from its logged steps, cfg ignored and may be NULL): loads the model, builds the objectives,
 * marks the run "running" and calls hooks->on_start. hooks (may be NULL) is copied; hooks->user
 * is borrowed. A new run's row is created only after its settings, model and objective were
 * accepted. *out owned (pk_trainer_free); NULL on failure. Errors: PK_ERR_ARG (settings out of
 * range, bad trainable spec, empty dataset), PK_ERR_NOTFOUND (no such dataset or run),
 * PK_ERR_FORMAT (an example's label is not a label word), the model's, the tokenizer's or the
 * store's status; err names the problem. */
PK_NODISCARD pk_status pk_trainer_open(pk_store *s, const pk_train_config *cfg, int64_t resume_run,
                                       const pk_train_hooks *hooks, pk_trainer **out, char *err,
                                       size_t errlen);
/* Evaluates the current weights on the eval examples (eval_dataset, or the held-out part), logs
 * the point at the current step and calls on_eval; the early-stopping count sees it too.
 * PK_ERR_ARG if the run has no eval examples. */
PK_NODISCARD pk_status pk_trainer_eval(pk_trainer *t, double *loss, char *err, size_t errlen);
/* Takes one step and returns once its rows are logged (one store transaction, then on_step),
 * after the checkpoint and the eval that fall due at it (on_eval). The trainer is done after the
 * last step, when early stopping ends the run, or when pk_interrupted() was set at the start of
 * this call (then no step is taken: the run stops at a step boundary); a done trainer has written
 * the run's status ("done", or "stopped" when interrupted) and the final hash. Stepping a done
 * trainer does nothing. Errors: PK_ERR_NUMERIC when the run diverged (a loss or the projected
 * gradient is not finite; the run is marked "failed"; err names the step and the values), the
 * objective's or the store's status. After an error the trainer takes no more steps
 * (PK_ERR_ARG): free it and resume the run from its log. */
PK_NODISCARD pk_status pk_trainer_step(pk_trainer *t, char *err, size_t errlen);
/* 1 once pk_trainer_step takes no more steps (finished, stopped early, interrupted or failed). */
int pk_trainer_done(const pk_trainer *t);
/* The run so far: run id, steps logged, last loss, timings; interrupted, stopped_early and
 * final_hash once done. View: valid until the next call on t. */
const pk_train_result *pk_trainer_result(const pk_trainer *t);
void pk_trainer_free(pk_trainer *t); /* NULL-safe */

/* The whole run: pk_trainer_open, pk_trainer_step until done, the result into *res (also filled
 * as far as the run got on failure). Stops at a step boundary when pk_interrupted() is set.
 * Errors as pk_trainer_open and pk_trainer_step; err gets one line on failure. */
PK_NODISCARD pk_status pk_train(pk_store *s, const pk_train_config *cfg, int64_t resume_run,
                                const pk_train_hooks *hooks, pk_train_result *res, char *err,
                                size_t errlen);

/* Loads the examples of dataset `name` and builds an objective for model m (tokenizer from
 * model_dir). *out owned (pk_objective_free). */
PK_NODISCARD pk_status pk_objective_from_store(pk_store *s, const char *dataset, const pk_model *m,
                                               const char *model_dir, const pk_train_config *cfg,
                                               pk_objective **out, char *err, size_t errlen);

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

#endif /* PK_TRAIN_H */
