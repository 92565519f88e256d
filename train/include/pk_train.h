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

/* The same, also returning the estimator's state after the applied steps (*state_out owned,
 * pk_mezo_state_free; NULL for plain spsa; may be NULL to drop it). A hizoo run's checkpoints
 * carry its Hessian diagonal (older hizoo runs have none and are rebuilt from step 0). */
PK_NODISCARD pk_status pk_run_materialize_state(pk_store *s, int64_t run_id, int64_t up_to_step,
                                                pk_model **out, uint8_t **trainable_out,
                                                pk_mezo_state **state_out, int64_t *steps_applied,
                                                char *err, size_t errlen);

/* Checkpoint blob: the bytes of the trainable tensors in model order (magic "PKCK1" + count). */
PK_NODISCARD pk_status pk_checkpoint_pack(const pk_model *m, const uint8_t *trainable, void **blob,
                                          size_t *len);
/* Writes the blob's tensors into m. PK_ERR_FORMAT when the blob is not a checkpoint or does
 * not fit m and the mask; err (errlen bytes, may be NULL) says why; nothing is logged. */
PK_NODISCARD pk_status pk_checkpoint_unpack(pk_model *m, const uint8_t *trainable, const void *blob,
                                            size_t len, char *err, size_t errlen);
/* The same with the estimator's state (pk_mezo_state_bytes > 0: magic "PKCK2", the weights'
 * byte count, the weights, then the state; otherwise exactly pk_checkpoint_pack's blob). Unpack
 * refuses (PK_ERR_FORMAT) a blob whose state does not fit `state`, or that lacks one; err says
 * why. */
PK_NODISCARD pk_status pk_checkpoint_pack_state(const pk_model *m, const uint8_t *trainable,
                                                const pk_mezo_state *state, void **blob,
                                                size_t *len);
PK_NODISCARD pk_status pk_checkpoint_unpack_state(pk_model *m, const uint8_t *trainable,
                                                  pk_mezo_state *state, const void *blob,
                                                  size_t len, char *err, size_t errlen);

/* ---- the trainer (trainer.c, run.c) -------------------------------------------------------- */

/* The learning-rate search of --lr auto (lrsearch.c): the candidates tried and the loss each
 * reached on a held-back slice of the training examples. */
#define PK_LR_SEARCH_STEPS 10 /* steps per candidate */
#define PK_LR_BACKOFF      3  /* a long constant-rate run trains at the winner / this */
#define PK_LR_CANDIDATES   7  /* five decades 1e-6 .. 1e-2, then x3 and /3 around the best */
typedef struct pk_lr_search {
    int n;             /* candidates tried */
    int steps_each;    /* steps per candidate, from the same starting weights */
    int held_examples; /* the last examples of the training set, judged on, never stepped on */
    float lr[PK_LR_CANDIDATES];
    double loss[PK_LR_CANDIDATES]; /* held-back loss after the steps; INFINITY: diverged */
    double start_loss;             /* held-back loss before any step */
    float chosen; /* the rate the run trains with: the winner (about the lowest finite loss's
                     rate) at most a tenth of the smallest rate that diverged, divided by 1 to
                     PK_LR_BACKOFF for a constant-rate run of more than 3 x the steps */
} pk_lr_search;

/* The guard of an --lr auto run (lrsearch.c, DESIGN 4): the mean training loss of the last
 * PK_LR_GUARD_WINDOW steps, every PK_LR_GUARD_EVERY steps; when it rises above the lowest since
 * the run began (or since the last cut) by 0.3 of the progress made to it, or by 4 standard
 * errors of a window mean (at least 2%, at most a quarter of the lowest), the rate is cut to a
 * third, at most PK_LR_GUARD_CUTS times, and the windows start over. A pure function of the logged
 * rows' losses, so a resume rebuilds it from the log and goes on at the same rate. */
#define PK_LR_GUARD_WINDOW 25
#define PK_LR_GUARD_EVERY  5
#define PK_LR_GUARD_CUTS   2
typedef struct pk_lr_guard {
    double loss[PK_LR_GUARD_WINDOW]; /* the last steps' losses, step i at i % WINDOW */
    int64_t n;                       /* steps since the run began or the last cut */
    double first;   /* the first window's mean since the run began or the last cut; NAN: none */
    double best;    /* the lowest window mean since then */
    double best_se; /* that window's standard error (step losses' sd / sqrt(WINDOW)) */
    double last;    /* the last full window's mean */
    double prior;   /* best when the rate was last cut */
    int cuts;       /* times the rate was cut */
} pk_lr_guard;

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
    int lr_auto;            /* a new run searches its rate first (mezo.lr is then the result) */
    pk_lr_search lr_search; /* that search (stored in the run's settings as "lr_search") */
    int lr_guard; /* the rate is cut when the training loss rises (pk_lr_guard; train --lr auto
                     sets it, stored as "lr_guard" so a resume goes on guarded) */
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
/* 1 if the example with this id is held out for eval at holdout percent pct: a hash of the id, so
 * an example stays on its side as datasets grow (the trainer's split; the agent counts a new run's
 * training examples with it before opening the run). */
int pk_train_held_out(int64_t id, int pct);
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
    /* cfg.lr_guard cut the rate to lr after step `step` (0-based): the window's mean training
     * loss `loss` against the lowest before it, `lowest` */
    void (*on_lr_cut)(void *user, int64_t step, float lr, double loss, double lowest);
    /* polled before each step of a new run's --lr auto search (besides pk_interrupted()):
     * nonzero ends it with PK_ERR_INTERRUPTED before the run exists */
    int (*stop)(void *user);
} pk_train_hooks;

typedef struct pk_train_result {
    int64_t run_id;
    int64_t steps_done;
    int stopped_early; /* early stopping ended the run */
    int interrupted;   /* pk_interrupted() stopped it at a step boundary (status "stopped") */
    double last_loss;  /* (loss+ + loss-) / 2 of the last step */
    double forward_s, update_s; /* totals */
    int64_t evaluations; /* training loss evaluations so far (forward passes over a micro-batch,
                            perturbed and unperturbed: steps x pk_mezo_evals_per_step x
                            accumulate; also the steps before a resume) */
    double elapsed_s;    /* training wall-clock of this process: steps, logging, checkpoints;
                            evals excluded */
    char final_hash[65];
    pk_lr_search lr_search; /* a new run's --lr auto search (n = 0 if none) */
    int lr_cuts;            /* cfg.lr_guard's cuts of the rate so far (also before a resume) */
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
/* Stops the run at the current step boundary as pk_interrupted() would (status "stopped",
 * result.interrupted = 1, final hash set; resumable), without the process-wide flag: how an
 * embedding application cancels one run. Does nothing on a done trainer. */
PK_NODISCARD pk_status pk_trainer_stop(pk_trainer *t, char *err, size_t errlen);
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

/* The learning-rate search (lrsearch.c): each candidate takes PK_LR_SEARCH_STEPS steps of cfg's
 * estimator (constant rate) from m's current weights on all but the last examples of obj, then
 * the loss over those held-back examples; the weights are restored after each. r->chosen is the
 * winner (the largest rate within a quarter of the best improvement of the lowest finite loss,
 * not the largest rate tried unless alone: lrsearch.c), at most a tenth of the smallest rate that
 * diverged (pk_lr_search_rate), for a constant schedule (mezo.schedule)
 * divided by cfg->steps / (3 x PK_LR_SEARCH_STEPS) clamped to [1, PK_LR_BACKOFF]; a diverging
 * candidate (PK_ERR_NUMERIC, a non-finite loss, or a training loss over its last half of steps
 * above twice its first step's; its loss is then INFINITY) is never the winner. Before each step
 * it polls pk_interrupted() and hooks->stop (hooks may be NULL): PK_ERR_INTERRUPTED, the weights
 * restored. PK_ERR_NUMERIC
 * if every candidate diverged, PK_ERR_ARG if obj has fewer than 2 examples; err says which. */
/* The winner of a search's r->n candidates (lr[], loss[], start_loss): the index described
 * above, or -1 if no loss is finite. The rule alone, for tests and tools. */
int pk_lr_search_winner(const pk_lr_search *r);
/* Whether a candidate's training losses train[0 .. steps) blew up: the mean over the last
 * steps / 2 is above twice train[0], or is not a number (steps >= 2; a train[0] that is not
 * positive, the accuracy objective's, is never judged). The rule alone, for tests. */
int pk_lr_search_blew_up(const double *train, int steps);
/* The rate a run trains with when candidate b won (r->chosen): its rate, at most a tenth of the
 * smallest rate that diverged, divided by the backoff above; 0 if b is not a candidate. */
float pk_lr_search_rate(const pk_lr_search *r, int b, const pk_train_config *cfg);
PK_NODISCARD pk_status pk_lr_search_run(pk_model *m, const uint8_t *trainable, pk_objective *obj,
                                        const pk_train_config *cfg, const pk_train_hooks *hooks,
                                        pk_lr_search *r, char *err, size_t errlen);

/* A guard before any step. */
pk_lr_guard pk_lr_guard_new(void);
/* Feeds one logged step's rows (n of them) to g; returns 1 when that step ends a window that cuts
 * the rate (g->cuts went up), else 0. */
int pk_lr_guard_step(pk_lr_guard *g, const pk_step_row *rows, int n);
/* The rate after `cuts` cuts of `chosen`: chosen / 3, cuts times, in float. */
float pk_lr_guard_rate(float chosen, int cuts);
/* Whether a run is guarded (pk_train_config.lr_guard) under a guard setting of PK_LR_GUARD_AUTO
 * (on with --lr auto only: train's default, and the agent's, which has no setting), _ON or _OFF;
 * the values are the API's pocketllm_train_params.lr_guard. */
enum { PK_LR_GUARD_AUTO = 0, PK_LR_GUARD_ON = 1, PK_LR_GUARD_OFF = 2 };
int pk_lr_guard_on(int setting, int lr_auto);

/* Loads the examples of dataset `name` (or, when name is NULL, of the comma-separated datasets
 * cfg->datasets names, their union in that order) and builds an objective for model m
 * (tokenizer from model_dir). *out owned (pk_objective_free). */
PK_NODISCARD pk_status pk_objective_from_store(pk_store *s, const char *dataset, const pk_model *m,
                                               const char *model_dir, const pk_train_config *cfg,
                                               pk_objective **out, char *err, size_t errlen);

/* ---- export of a run (export.c) ------------------------------------------------------------- */

/* The run's current weights (pk_run_materialize: base model + checkpoint + logged steps) as a
 * Hugging Face model directory (pk_model_save: config.json, model.safetensors in dtype, the
 * base model's tokenizer files), plus pocketllm_run.json (run id, steps, base and weights
 * hashes) for provenance. A LoRA run is written merged (pk_model_lora_merge: W + (alpha/r) B A
 * in fp32, then narrowed to dtype), a plain model of the base's shapes. *weights_hash (may be
 * NULL, 65 bytes) gets the run's pk_weights_hash (before merging and narrowing). err names the
 * problem. */
PK_NODISCARD pk_status pk_export_hf(pk_store *s, int64_t run_id, const char *out_dir,
                                    pk_dtype dtype, char *weights_hash, char *err, size_t errlen);
/* A LoRA run's adapter as a Hugging Face PEFT adapter directory: adapter_model.safetensors
 * (fp32 "base_model.model.<module>.lora_A.weight" [r, in] and ".lora_B.weight" [out, r]),
 * adapter_config.json (peft_type LORA, r, lora_alpha, target_modules, fan_in_fan_out for GPT-2's
 * Conv1D, base_model_name_or_path = the run's model) and pocketllm_run.json. PK_ERR_ARG for a
 * run that trains no adapter (a full-parameter or subset run: export those with pk_export_hf).
 * *weights_hash (may be NULL, 65 bytes) as pk_export_hf. */
PK_NODISCARD pk_status pk_export_adapter(pk_store *s, int64_t run_id, const char *out_dir,
                                         char *weights_hash, char *err, size_t errlen);
/* The run as a portable seed log (pk_seedlog_write: base hash, z kind, weight decay, trainable
 * spec and every step-log row). *bytes (may be NULL) gets the file size. */
PK_NODISCARD pk_status pk_export_seedlog(pk_store *s, int64_t run_id, const char *path,
                                         size_t *bytes, char *err, size_t errlen);

#endif /* PK_TRAIN_H */
