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
PK_NODISCARD pk_status pk_checkpoint_pack(const pk_model *m, const uint8_t *trainable,
                                          void **blob, size_t *len);
PK_NODISCARD pk_status pk_checkpoint_unpack(pk_model *m, const uint8_t *trainable,
                                            const void *blob, size_t len);

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

/* Callbacks of pk_train (all optional). */
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
    int stopped_early;  /* early stopping ended the run */
    int interrupted;    /* pk_interrupted() stopped it at a step boundary (status "stopped") */
    double last_loss;   /* (loss+ + loss-) / 2 of the last step */
    double forward_s, update_s; /* totals */
    char final_hash[65];
} pk_train_result;

/* Runs (resume_run == 0: a new run with cfg; else continues run resume_run from its logged
 * steps, cfg ignored). Each step's rows and progress are one store transaction. Stops at a step
 * boundary when pk_interrupted() is set. err gets one line on failure. */
PK_NODISCARD pk_status pk_train(pk_store *s, const pk_train_config *cfg, int64_t resume_run,
                                const pk_train_hooks *hooks, pk_train_result *res, char *err,
                                size_t errlen);

/* Loads the examples of dataset `name` and builds an objective for model m (tokenizer from
 * model_dir). *out owned (pk_objective_free). */
PK_NODISCARD pk_status pk_objective_from_store(pk_store *s, const char *dataset,
                                               const pk_model *m, const char *model_dir,
                                               const pk_train_config *cfg, pk_objective **out,
                                               char *err, size_t errlen);

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
