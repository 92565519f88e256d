/* pk_mezo.h: the MeZO optimizer (docs/DESIGN.md 4), objectives, seed logs and replay.
 *
 * The step (pk_mezo_step): for each of q perturbations with seed s_k, loss+ and loss- of the
 * same batch through the engine's perturbation hook (weights read-only), g_k = (l+ - l-) / 2eps
 * (clipped), then one update sweep per k: W -= (lr/q) * (g_k * z_k + wd * W) (wd never on
 * biases/norms), f16/bf16 weights through fp32 with seeded stochastic rounding. Every update is a
 * pure function of (W, seed, z kind, lr, g, wd) computed without FMA and independent of the thread
 * count, so a step log replays bit-exactly on any machine.
 *
 * Thread safety: functions on one pk_model must not run concurrently (pk_model's rule). */
#ifndef PK_MEZO_H
#define PK_MEZO_H

#include <stddef.h>
#include <stdint.h>

#include "pk_common.h"
#include "pk_model.h"
#include "pk_rng.h"
#include "pk_tokenizer.h"

/* ---- optimizer ------------------------------------------------------------------------------ */

typedef enum pk_schedule {
    PK_SCHEDULE_CONSTANT = 0,
    PK_SCHEDULE_LINEAR = 1, /* linear decay to 0 at steps_total */
    PK_SCHEDULE_COSINE = 2, /* cosine decay to 0 at steps_total */
} pk_schedule;

/* How a step estimates its update (DESIGN 4, "Estimators"). */
typedef enum pk_estimator {
    PK_EST_SPSA = 0,  /* two-sided MeZO: q pairs (W + eps z, W - eps z), the default */
    PK_EST_FZOO = 1,  /* N one-sided Rademacher perturbations + the unperturbed loss, each
                         coefficient (l_i - l_0) / std(l_1..l_N) */
    PK_EST_HIZOO = 2, /* two-sided with a diagonal Hessian estimate H scaling z by 1/sqrt(H) */
} pk_estimator;

/* How an update of a 16-bit (f16/bf16) weight goes back to 16 bits. Runs and seed logs written
 * before stochastic rounding rounded to nearest: their records say nothing, and replay reads
 * that as PK_ROUND_NEAREST (bit-exact with what they did); new ones record the mode. f32
 * weights are not rounded either way. */
typedef enum pk_rounding {
    PK_ROUND_STOCHASTIC = 0, /* the default: seeded stochastic rounding (pk_mezo_update) */
    PK_ROUND_NEAREST = 1,    /* round to nearest even, as pk_narrow */
} pk_rounding;
/* "stochastic" | "nearest"; -1 if unknown. */
int pk_rounding_parse(const char *s, pk_rounding *out);
const char *pk_rounding_name(pk_rounding r);

typedef struct pk_mezo_params {
    float eps;          /* perturbation scale (default 1e-3) */
    float lr;           /* peak learning rate (default 1e-5) */
    float weight_decay; /* default 0; never applied to biases and norms */
    float clip_g;       /* |g| clipped to this; <= 0 = no clipping */
    pk_schedule schedule;
    int64_t warmup;      /* linear warm-up steps from 0 to lr */
    int64_t steps_total; /* for the decaying schedules */
    int spsa_q;          /* perturbations per step (n-SPSA), >= 1 */
    pk_z_kind z;         /* Gaussian (default) or Rademacher */
    uint64_t seed;       /* run seed: step seeds derive from it */
    pk_estimator estimator;
    int perturbations;    /* fzoo: N one-sided perturbations per step (default 8) */
    int fzoo_mean;        /* fzoo: 1 compares each perturbed loss with the mean of the N
                             instead of the unperturbed loss, which is then not evaluated
                             (N evaluations per micro-batch instead of N + 1); 0 (default) as
                             FZOO */
    float hessian_smooth; /* hizoo: weight of each Hessian update's estimate (default 1e-8) */
    float hessian_budget; /* hizoo: the fp32 diagonal may take at most this fraction of the
                             model's weight bytes (default 0.10, DESIGN 8's 1.10x) */
    int hessian_every;    /* hizoo: l0 and the Hessian rows only on steps with step % K == 0,
                             the plain two-sided step with the current H between (default 16;
                             <= 0 reads as 1, every step, as runs before the option) */
    int perturb_layers;   /* > 0: only this many randomly chosen layers are perturbed and
                             updated per perturbation (the choice a function of its seed) */
    int perturb_stages;   /* > 0: the same over the stages (block halves, DESIGN 4) that hold
                             trainable tensors; not with perturb_layers */
    pk_rounding rounding; /* 16-bit weights' update rounding (default stochastic) */
} pk_mezo_params;

pk_mezo_params pk_mezo_default_params(void);
/* Parses "constant" | "linear" | "cosine"; -1 if unknown. */
int pk_schedule_parse(const char *s, pk_schedule *out);
const char *pk_schedule_name(pk_schedule s);
/* The learning rate at 0-based step (warm-up then schedule). Pure. */
float pk_mezo_lr_at(const pk_mezo_params *p, int64_t step);
/* The z seed of perturbation q of a step: splitmix64 of (run seed, step, q). Pure. */
uint64_t pk_mezo_step_seed(uint64_t run_seed, int64_t step, int q);

/* Trainable mask from a spec: "all", "bitfit" (biases and norms), "scales" (the fp32 block
 * scales of a quantized base's Q8_0 / Q4_0 weights: pk_model_scales_attach), a LoRA spec
 * "lora[:r=R,alpha=A,seed=S,targets=REGEX]" (targets last; pk_mezo_lora_parse) or a POSIX
 * extended regex matched (regexec, unanchored) against tensor names. A LoRA spec first attaches
 * the adapter to m (pk_model_lora_attach: tensor indices change; calling again with the same
 * spec reuses it) and makes only its A and B tensors trainable. *out is an owned result
 * [n_tensors after the call] (free()), 1 = trainable. PK_ERR_ARG with err naming the problem for
 * a bad regex or spec, or a spec matching no tensor (no linear layer for LoRA targets). */
PK_NODISCARD pk_status pk_mezo_trainable(pk_model *m, const char *spec, uint8_t **out, char *err,
                                         size_t errlen);
/* Parses a LoRA spec into *p: defaults r 8, alpha 16, seed 0, targets "" (the architecture's
 * attention q and v projections). Returns 0 if spec is not a LoRA spec, 1 if parsed, -1 if
 * malformed (err says which item). */
int pk_mezo_lora_parse(const char *spec, pk_lora_params *p, char *err, size_t errlen);
/* The spec as a run records it: a LoRA spec with r, alpha and seed explicit
 * ("lora:r=8,alpha=16,seed=0[,targets=REGEX]"), any other spec unchanged. out (n bytes) borrowed.
 */
void pk_mezo_trainable_canonical(const char *spec, char *out, size_t n);

/* The update sweep W -= lr * (g * z(seed) + wd * W) over the trainable tensors (NULL = all);
 * wd is skipped for biases and norms. f16/bf16 go through fp32 and back by seeded stochastic
 * rounding: element i of tensor t rounds up with probability (its distance from the lower
 * 16-bit neighbour) / spacing, decided by pk_rng_bits(splitmix64(seed ^ "SRNDSEED"), key(t), i),
 * so the update is unbiased (changes below half a 16-bit step survive on average) and a pure
 * function of (weights, seed, scalars). Threaded over blocks (pk_threads_get), bit-identical
 * for any thread count. */
void pk_mezo_update(pk_model *m, const uint8_t *trainable, uint64_t seed, pk_z_kind kind, float lr,
                    float g, float wd);
/* The same with an explicit rounding of 16-bit weights (PK_ROUND_NEAREST: round to nearest even,
 * how runs before stochastic rounding updated them). */
void pk_mezo_update_ex(pk_model *m, const uint8_t *trainable, uint64_t seed, pk_z_kind kind,
                       float lr, float g, float wd, pk_rounding rounding);

/* A loss over micro-batch `micro` under the perturbation pert (NULL = unperturbed). With
 * pert->both (as pk_mezo_projected_grad calls it) loss[0] gets the loss at +pert->scale and
 * loss[1] at -pert->scale: pass pert to the pk_model evaluation functions, whose outputs are
 * then doubled (pk_model.h). */
typedef pk_status (*pk_mezo_loss_fn)(void *user, pk_model *m, int micro, const pk_perturb *pert,
                                     double *loss);
/* The same loss over micro-batch `micro` for every evaluation of the sweep s (pk_model.h: its
 * unperturbed evaluation if s->base, then each perturbation's), loss [pk_sweep_evals(s)] in that
 * order: pass s to pk_model_loss_sweep / pk_model_select_sweep. Each value must be the bits the
 * pk_mezo_loss_fn of the same objective gives for that evaluation alone. */
typedef pk_status (*pk_mezo_sweep_fn)(void *user, pk_model *m, int micro, const pk_sweep *s,
                                      double *loss);
/* A step's loss: fn (required) evaluates one perturbation (or a +/- pair); sweep (may be NULL)
 * all of a step's evaluations of one micro-batch in one call, so the engine groups them by their
 * shared prefix (layer sampling: the blocks below a perturbation's lowest perturbed one run once
 * per micro-batch, pk_model_block_evals). Without sweep, fzoo, hizoo and layer-sampled spsa call
 * fn once per evaluation; the rows are the same bits either way. user is passed to both. */
typedef struct pk_mezo_loss {
    pk_mezo_loss_fn fn;
    pk_mezo_sweep_fn sweep;
    void *user;
} pk_mezo_loss;

/* The projected gradient at an explicit seed: l+ and l- are the means over n_micro micro-batches
 * (the same z for all), g = (l+ - l-) / (2 eps) in double. No weight is written. */
PK_NODISCARD pk_status pk_mezo_projected_grad(pk_model *m, const uint8_t *trainable, uint64_t seed,
                                              pk_z_kind kind, float eps, int n_micro,
                                              pk_mezo_loss_fn fn, void *user, double *g,
                                              double *loss_plus, double *loss_minus);
/* The same for the lm objective on one batch (target_mask as pk_model_loss; may be NULL). */
PK_NODISCARD pk_status pk_mezo_projected_grad_batch(pk_model *m, const uint8_t *trainable,
                                                    uint64_t seed, pk_z_kind kind, float eps,
                                                    const pk_batch *batch,
                                                    const uint8_t *target_mask, double *g,
                                                    double *loss_plus, double *loss_minus);

/* A loss above this many nats (per token for lm, per example for classify) means the run has
 * diverged: no model that learned anything comes near it (a uniform guess over a 150k-token
 * vocabulary is 12 nats), while fzoo's normalized step can keep a diverging run finite. */
#define PK_MEZO_LOSS_DIVERGED 1e3
/* 1 if a step-log row is usable: g, loss_plus and loss_minus finite and both losses at most
 * PK_MEZO_LOSS_DIVERGED; else the step diverged (PK_ERR_NUMERIC). */
int pk_mezo_row_ok(const pk_step_row *r);

/* One MeZO step at 0-based `step`: q projected gradients (seeds pk_mezo_step_seed), then the
 * q update sweeps. rows [p->spsa_q] (caller-owned) receive the step-log rows; row.lr is the
 * rate each sweep used (lr_at(step) / q) and row.g the clipped g, exactly what replay applies.
 * Stats (may be NULL): seconds spent in the loss passes and in the update sweeps.
 * PK_ERR_NUMERIC: the run diverged (a loss or g of perturbation k is not finite, or not
 * finite as a float, or a loss is above PK_MEZO_LOSS_DIVERGED); no weight was written,
 * rows[0..k) hold this step's rows and rows[k] the diverging one with its unclipped g: rows[k]
 * is the first row that is not pk_mezo_row_ok. Otherwise the loss function's status. */
PK_NODISCARD pk_status pk_mezo_step(pk_model *m, const uint8_t *trainable, const pk_mezo_params *p,
                                    int64_t step, int n_micro, pk_mezo_loss_fn fn, void *user,
                                    pk_step_row *rows, double *forward_s, double *update_s);

/* Applies step-log rows in order: pk_mezo_update(row.seed, kind, row.lr, row.g, wd). */
void pk_mezo_replay_rows(pk_model *m, const uint8_t *trainable, pk_z_kind kind, float wd,
                         const pk_step_row *rows, size_t n);

/* BLAKE2b-256 (pk_crypto.h's pk_hash_state) over the tensors in pk_model order, each as:
 * name bytes, a 0 byte, the dtype name ("F32"...), a 0 byte, ndim and shape[0..ndim) as
 * little-endian int64, then the stored bytes. hex gets 64 lowercase hex digits + NUL. */
PK_NODISCARD pk_status pk_weights_hash(const pk_model *m, char hex[65]);

/* ---- estimators (estimator.c) ------------------------------------------------------------- */

/* Parses "spsa" | "fzoo" | "hizoo"; -1 if unknown. */
int pk_estimator_parse(const char *s, pk_estimator *out);
const char *pk_estimator_name(pk_estimator e);
/* fzoo's baseline: "unperturbed" (0, FZOO's l0) | "mean" (1, pk_mezo_params.fzoo_mean); -1 if
 * unknown. */
int pk_fzoo_baseline_parse(const char *s, int *mean);
const char *pk_fzoo_baseline_name(int mean);
/* fzoo's sigma: the population standard deviation of l[0..n), in double, in order (the mean
 * first, into *mean; then the squared deviations). The trainer's fzoo and fedsim's devices share
 * it, so their coefficients are the same bits. */
double pk_fzoo_sigma(const double *l, int n, double *mean);
/* The largest hizoo Hessian update interval (train --hessian-every). */
#define PK_HESSIAN_EVERY_MAX 1000000
/* Step-log rows a step writes at most (the size of a step's row buffer): spsa q, fzoo N, hizoo
 * 2q (a Hessian row then an update row per perturbation). */
int pk_mezo_rows_per_step(const pk_mezo_params *p);
/* Whether `step` is a hizoo step that takes l0 and updates H (step % hessian_every == 0); 0
 * for the other estimators. Pure, so replay and resume know it. */
int pk_mezo_hessian_step(const pk_mezo_params *p, int64_t step);
/* The rows step `step` writes: pk_mezo_rows_per_step, except hizoo's steps without the Hessian
 * update, which write their q weight rows only. */
int pk_mezo_step_rows(const pk_mezo_params *p, int64_t step);
/* Loss evaluations (forward passes over one micro-batch) a step takes at most, per
 * micro-batch: spsa 2q, fzoo N + 1, hizoo 2q + 1 (2q on steps without the Hessian update). */
int pk_mezo_evals_per_step(const pk_mezo_params *p);
/* Loss evaluations per micro-batch of steps 0 .. steps-1, as taken (hizoo's l0 only on its
 * Hessian steps). */
int64_t pk_mezo_evals_upto(const pk_mezo_params *p, int64_t steps);

/* What an estimator carries from step to step: hizoo's Hessian diagonal (fp32, one value per
 * trainable element, starting at 1), nothing for the others. Owned handle. */
typedef struct pk_mezo_state pk_mezo_state;
/* *out is NULL (and PK_OK) for estimators without state. PK_ERR_ARG if hizoo's diagonal of the
 * trainable tensors exceeds p->hessian_budget times the weight bytes (err gives both sizes). */
PK_NODISCARD pk_status pk_mezo_state_new(const pk_model *m, const uint8_t *trainable,
                                         const pk_mezo_params *p, pk_mezo_state **out, char *err,
                                         size_t errlen);
void pk_mezo_state_free(pk_mezo_state *s); /* NULL-safe */
/* The state as bytes, for checkpoints: pk_mezo_state_bytes of them (0 for NULL or stateless)
 * written to out by save (hizoo: each trainable tensor's fp32 diagonal in model order, native
 * byte order, as the weights of a checkpoint); load reads them back into a state made by
 * pk_mezo_state_new for the same model, mask and settings (PK_ERR_FORMAT if len differs). */
size_t pk_mezo_state_bytes(const pk_mezo_state *s);
void pk_mezo_state_save(const pk_mezo_state *s, void *out);
PK_NODISCARD pk_status pk_mezo_state_load(pk_mezo_state *s, const void *in, size_t len);

/* The layer (transformer block) a tensor belongs to: the number after "layers.", "layer." or
 * "h." in its name; -1 for tensors outside the blocks (embeddings, final norm, head). */
int pk_tensor_layer(const char *name);
/* The tensors perturbation `seed` touches: trainable (NULL = all) restricted to
 * p->perturb_layers layers drawn without replacement from the model's layers by a generator
 * seeded with `seed` (tensors outside the blocks are left alone); a copy of trainable when
 * perturb_layers is 0 or not below the layer count. With p->perturb_stages K instead, K of the
 * stages that hold trainable tensors (pk_model_tensor_stage; in stage order, drawn the same
 * way), the tensors outside the blocks left alone; a copy of trainable when K is not below
 * their count. out [n_tensors] caller-owned. */
void pk_mezo_layer_mask(const pk_model *m, const uint8_t *trainable, const pk_mezo_params *p,
                        uint64_t seed, uint8_t *out);

/* One step of p->estimator at 0-based `step` (pk_mezo_step for plain spsa, bit for bit). rows
 * [pk_mezo_rows_per_step(p)] receive what replay needs, the first pk_mezo_step_rows(p, step)
 * of them written. st: from pk_mezo_state_new (NULL
 * unless hizoo); it is updated with the weights. No weight (and no state) is written when a
 * loss or coefficient is not finite (PK_ERR_NUMERIC, rows as pk_mezo_step). */
PK_NODISCARD pk_status pk_mezo_step_ex(pk_model *m, const uint8_t *trainable,
                                       const pk_mezo_params *p, pk_mezo_state *st, int64_t step,
                                       int n_micro, pk_mezo_loss_fn fn, void *user,
                                       pk_step_row *rows, double *forward_s, double *update_s);
/* pk_mezo_step_ex with a sweep-capable loss (pk_mezo_loss): fzoo's, hizoo's and layer-sampled
 * spsa's evaluations of a micro-batch go through loss->sweep in one call (base = 1 for fzoo and
 * hizoo, per-perturbation masks), rows in q-index order and the same bits as pk_mezo_step_ex. */
PK_NODISCARD pk_status pk_mezo_step_sweep(pk_model *m, const uint8_t *trainable,
                                          const pk_mezo_params *p, pk_mezo_state *st, int64_t step,
                                          int n_micro, const pk_mezo_loss *loss, pk_step_row *rows,
                                          double *forward_s, double *update_s);
/* Applies logged rows in order under p's estimator, z kind, weight decay and layer sampling,
 * updating st (hizoo) as the step did: the same bits as the live run. */
void pk_mezo_replay_ex(pk_model *m, const uint8_t *trainable, const pk_mezo_params *p,
                       pk_mezo_state *st, const pk_step_row *rows, size_t n);

/* ---- objectives ----------------------------------------------------------------------------- */

typedef enum pk_objective_kind {
    PK_OBJ_LM = 0,       /* mean next-token CE (prompt+response: response tokens only) */
    PK_OBJ_CLASSIFY = 1, /* CE over label-word options */
    PK_OBJ_ACCURACY = 2, /* -accuracy (non-differentiable) */
} pk_objective_kind;
int pk_objective_parse(const char *s, pk_objective_kind *out); /* -1 if unknown */
const char *pk_objective_name(pk_objective_kind k);

/* Tokenized examples of a dataset plus the batching state. Owned handle. */
typedef struct pk_objective pk_objective;

typedef struct pk_objective_params {
    pk_objective_kind kind;
    int seq_len;           /* tokens per sequence (truncation) */
    const char *template_; /* classify: "{text} It was" (roberta: must contain <mask>); borrowed */
    const char *labels;    /* classify: comma-separated label words, e.g. " great, terrible" */
} pk_objective_params;

/* Builds an objective over examples (borrowed; strings copied and tokenized now). err names
 * the example and the problem (e.g. a label that is not one of the label words). */
PK_NODISCARD pk_status pk_objective_new(const pk_model *m, const pk_tokenizer *tok,
                                        pk_objective_params p, pk_example *const *examples,
                                        size_t n, pk_objective **out, char *err, size_t errlen);
void pk_objective_free(pk_objective *o); /* NULL-safe; wipes token ids */
size_t pk_objective_size(const pk_objective *o);
/* Selects the examples idx[0..n) (indices into the objective's examples) as the current batch. */
PK_NODISCARD pk_status pk_objective_select(pk_objective *o, const size_t *idx, size_t n);
/* The tokens of every row the objective's examples make (lm: one per example; causal classify:
 * one per label word), summed: what keeping each row's hidden states costs per hidden unit. */
size_t pk_objective_row_tokens(const pk_objective *o);
/* Sets m's frozen prefix (pk_model_freeze_prefix, DESIGN 4) for training `trainable` on o: the
 * trainable set's shared prefix when every row of o fits pk_model_frozen_cap of the weights,
 * else none. A function of the model, the trainable set and o's examples alone, so a run, its
 * resume and a federated device decide alike. */
PK_NODISCARD pk_status pk_objective_freeze_prefix(const pk_objective *o, pk_model *m,
                                                  const uint8_t *trainable);
/* Loss of the current selection (the pk_mezo_loss_fn shape with user = the objective; micro is
 * ignored). *acc (may be NULL) the accuracy for classify/accuracy, NAN for lm; *tokens (may be
 * NULL) the number of counted targets (lm) or examples. With pert->both, loss[2] and acc[2]: the
 * + and the - pass's. */
PK_NODISCARD pk_status pk_objective_loss(pk_objective *o, pk_model *m, const pk_perturb *pert,
                                         double *loss, double *acc, double *tokens);
/* pk_mezo_loss_fn adapter: user = pk_objective*. */
pk_status pk_objective_loss_fn(void *user, pk_model *m, int micro, const pk_perturb *pert,
                               double *loss);
/* The loss of the current selection for every evaluation of the sweep s (NULL: one unperturbed
 * evaluation): loss [pk_sweep_evals(s)], each the bits pk_objective_loss gives for that
 * evaluation alone. */
PK_NODISCARD pk_status pk_objective_loss_sweep(pk_objective *o, pk_model *m, const pk_sweep *s,
                                               double *loss);
/* A federated local step's projected gradient: the batch of `step` (min(batch, 1024) examples of
 * the shuffle seeded by shuffle_seed, pk_batch_indices with one micro-batch) selected in o, then
 * pk_mezo_projected_grad at seed over it. *g gets g as a float, *n_examples the batch size. */
PK_NODISCARD pk_status pk_objective_step_grad(pk_objective *o, pk_model *m,
                                              const uint8_t *trainable, uint64_t shuffle_seed,
                                              int64_t step, size_t batch, uint64_t seed,
                                              pk_z_kind kind, float eps, float *g,
                                              int64_t *n_examples);
/* The deterministic batch of a step: indices of the B examples of micro-batch `micro` of
 * `step`, from a per-epoch shuffle seeded by run_seed (a pure function of its arguments). */
PK_NODISCARD pk_status pk_batch_indices(uint64_t run_seed, int64_t step, int micro, int n_micro,
                                        size_t n_examples, size_t B, size_t *idx);
/* A training step's micro-batches over an objective: with pk_objective_batches_loss as the step's
 * pk_mezo_loss, micro-batch `micro` of `step` (pk_batch_indices over the first n_examples
 * examples, n_micro per step, batch each) is selected, then its loss, or the loss of every
 * evaluation of a sweep, is taken. The trainer's steps and the --lr auto search's use it. */
typedef struct pk_objective_batches {
    pk_objective *obj;
    uint64_t run_seed;
    int64_t step;
    int n_micro;
    size_t n_examples, batch;
    size_t *idx; /* [batch] */
} pk_objective_batches;
/* {fn, sweep, user = b}: b must outlive the steps that use it. */
pk_mezo_loss pk_objective_batches_loss(pk_objective_batches *b);
/* Loss and accuracy over all examples, unperturbed, in batches of B (lm: token-weighted mean;
 * classify: mean CE; accuracy: -accuracy). *acc is NAN for lm. */
PK_NODISCARD pk_status pk_objective_eval(pk_objective *o, pk_model *m, size_t B, double *loss,
                                         double *acc);

/* ---- seed logs ------------------------------------------------------------------------------ */

/* A seed log file (format in mezo/seedlog.c and README): a text header
 * "pocketllm-seedlog 1", "base_hash HEX", "z gaussian|rademacher", "weight_decay F",
 * "trainable SPEC", "steps N", then N lines "step q seed g lr eps loss_plus loss_minus" with
 * floats as C99 hex floats (exact). */
/* One ancestor of a chained run (DESIGN 13): its settings and the rows of its log that lie
 * under the run, applied before the log's own rows. */
typedef struct pk_seedlog_segment {
    pk_z_kind z;
    float weight_decay;
    char trainable[256];
    int64_t steps;     /* steps of the ancestor's log under the chain */
    pk_step_row *rows; /* owned; n_rows = steps * q */
    size_t n_rows;
    /* the ancestor's estimator, as the log's own optional lines (0: spsa, no layer sampling) */
    pk_estimator estimator;
    int perturbations;    /* fzoo */
    int fzoo_mean;        /* fzoo: "fzoo_baseline mean" (a record: replay follows the rows) */
    float hessian_smooth; /* hizoo */
    int hessian_every;    /* hizoo: 0 or 1 = every step (a record: replay follows the rows) */
    int perturb_layers;   /* 0 = off */
    int perturb_stages;   /* 0 = off */
} pk_seedlog_segment;
typedef struct pk_seedlog {
    char base_hash[65];
    pk_z_kind z;
    float weight_decay;
    char trainable[256];
    /* optional header lines, written only when not the default (spsa, no layer sampling) */
    pk_estimator estimator;
    int perturbations;    /* fzoo */
    int fzoo_mean;        /* fzoo: "fzoo_baseline mean" (a record: replay follows the rows) */
    float hessian_smooth; /* hizoo */
    int hessian_every;    /* hizoo: 0 or 1 = every step (a record: replay follows the rows) */
    int perturb_layers;   /* 0 = off */
    int perturb_stages;   /* 0 = off */
    /* "rounding stochastic|nearest", always written; a log without the line was written before
     * stochastic rounding and reads as PK_ROUND_NEAREST */
    pk_rounding rounding;
    pk_step_row *rows; /* owned */
    size_t n_rows;
    /* A chained run's ancestors, root first (optional "parent ..." header lines); replay
     * applies each one's rows before the log's own. NULL, 0 for a plain log. Owned. */
    pk_seedlog_segment *parents;
    size_t n_parents;
} pk_seedlog;
PK_NODISCARD pk_status pk_seedlog_write(const char *path, const pk_seedlog *log, char *err,
                                        size_t errlen);
PK_NODISCARD pk_status pk_seedlog_read(const char *path, pk_seedlog *out, char *err, size_t errlen);
/* The replay settings of a log: z, weight decay and the estimator lines over the defaults. */
pk_mezo_params pk_seedlog_params(const pk_seedlog *log);
void pk_seedlog_clear(pk_seedlog *log); /* frees rows and parents; NULL-safe */
/* Checks the model's hash against the log's base hash, then applies the rows. */
PK_NODISCARD pk_status pk_seedlog_replay(pk_model *m, const pk_seedlog *log, char *err,
                                         size_t errlen);

#endif /* PK_MEZO_H */
