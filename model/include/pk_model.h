/* pk_model.h: the model engine. Loads Hugging Face checkpoints (config.json + safetensors, F32/F16/
 * BF16, single or sharded), runs exact batched forward passes (llama, qwen2, opt, gpt2, roberta),
 * the MeZO perturbation hook, training losses, label-word logits, KV-cache generation and
 * sampling, and writes safetensors.
 *
 * Thread safety: a pk_model (and a pk_gen / pk_sampler) may move between threads, but two threads
 * never use the same handle at once. Forward functions use the process-wide OpenMP pool
 * (pk_threads_set). Two handles may run concurrently but would share the cores.
 *
 * Tensor order: tensors are indexed 0..n-1 in strcmp order of their Hugging Face names. The index
 * is stable for a given checkpoint and is the index used by pk_perturb.trainable. */
#ifndef PK_MODEL_H
#define PK_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "pk_common.h"
#include "pk_rng.h"

typedef struct pk_model pk_model;

typedef enum pk_dtype {
    PK_DTYPE_F32 = 0,
    PK_DTYPE_F16 = 1,
    PK_DTYPE_BF16 = 2,
    /* GGUF block-quantized types (ggml's layouts, DESIGN 5): a row of n elements is n / block
     * blocks, each an f16 scale (or two) and packed integers. */
    PK_DTYPE_Q8_0 = 3, /* 32 elements in 34 bytes */
    PK_DTYPE_Q4_0 = 4, /* 32 elements in 18 bytes */
    PK_DTYPE_Q4_K = 5, /* 256 elements in 144 bytes */
    PK_DTYPE_Q5_K = 6, /* 256 elements in 176 bytes */
    PK_DTYPE_Q6_K = 7, /* 256 elements in 210 bytes */
} pk_dtype;
#define PK_DTYPE__COUNT 8

/* Bytes per element of dtype (4 or 2); 0 for a block type (use pk_dtype_row_bytes). */
size_t pk_dtype_size(pk_dtype dt);
/* Elements per block: 1 for F32/F16/BF16, 32 or 256 for the block types. */
size_t pk_dtype_block(pk_dtype dt);
/* Bytes of n consecutive elements starting on a block boundary (n a multiple of the block;
 * PK_ASSERT otherwise). Also the byte offset of element n in a tensor of that dtype. */
size_t pk_dtype_row_bytes(pk_dtype dt, size_t n);
/* 1 for the block-quantized types. */
int pk_dtype_is_quant(pk_dtype dt);
/* "F32", "F16", "BF16" (the safetensors spelling), "Q8_0", "Q4_0", "Q4_K", "Q5_K", "Q6_K". */
const char *pk_dtype_name(pk_dtype dt);
/* Parses "f32"/"F32"/"float32", "f16"/"F16"/"float16", "bf16"/"BF16"/"bfloat16", and the block
 * types as "q8_0"/"Q8_0" etc. Returns 0 on success, -1 if unknown. */
int pk_dtype_parse(const char *s, pk_dtype *out);

/* fp16 / bf16 <-> fp32, round to nearest even (NaN stays NaN, overflow goes to inf). Pure. */
float pk_f16_to_f32(uint16_t h);
uint16_t pk_f32_to_f16(float f);
float pk_bf16_to_f32(uint16_t h);
uint16_t pk_f32_to_bf16(float f);
/* Widens n elements of src (dtype dt, element offset 0) to fp32 in dst. For a block type src
 * points at a block boundary and n is a multiple of the block (PK_ASSERT otherwise). */
void pk_widen(pk_dtype dt, const void *src, size_t n, float *dst);
/* Narrows n fp32 values into dst (dtype dt), round to nearest even; for the block types (Q8_0,
 * Q4_0, Q4_K, Q5_K, Q6_K) quantizes whole blocks (n a multiple of the block). */
void pk_narrow(pk_dtype dt, const float *src, size_t n, void *dst);

typedef struct pk_model_params {
    int max_batch; /* activations reserved up front for (max_batch, max_seq); 0 = lazy */
    int max_seq;   /* 0 = lazy (reserved on first use, grown when a larger batch arrives) */
    int read_only; /* 1: map weights PROT_READ only (pk_tensor_info.data must not be written) */
} pk_model_params;

pk_model_params pk_model_default_params(void);

/* Loads a model directory: config.json + model.safetensors or model.safetensors.index.json with
 * its shards; or a GGUF file (dir names the .gguf file, or a directory without safetensors
 * weights holding model.gguf or one *.gguf; config from its metadata, DESIGN 5). The files are
 * mmapped MAP_PRIVATE, PROT_READ|PROT_WRITE: writing a tensor's data changes this process's copy
 * only (copy-on-write), never the files. Everything is validated before use (header bounds, JSON,
 * offsets inside the data area and not overlapping, byte size = dtype x shape, every tensor the
 * config implies present with its shape). dir is borrowed. On success *out is an owned result (free
 * with pk_model_free). On failure *out is NULL and err (size errlen, may be NULL/0) holds one line
 * naming the file and tensor/key. Returns PK_ERR_IO (missing/unreadable file), PK_ERR_FORMAT
 * (malformed), PK_ERR_UNSUPPORTED (unknown model_type, pytorch_model.bin only), PK_ERR_NOMEM. */
PK_NODISCARD pk_status pk_model_load(const char *dir, pk_model_params p, pk_model **out, char *err,
                                     size_t errlen);
void pk_model_free(pk_model *m); /* NULL-safe */

/* Info (pure getters). arch: "llama", "qwen2", "opt", "gpt2" or "roberta" (static string). */
const char *pk_model_arch(const pk_model *m);
int pk_model_vocab_size(const pk_model *m);
int pk_model_max_positions(const pk_model *m); /* longest sequence the model accepts */
int pk_model_hidden_size(const pk_model *m);
int pk_model_n_layers(const pk_model *m);
int pk_model_is_causal(const pk_model *m);       /* 0 for roberta (an encoder with an MLM head) */
int pk_model_bos_id(const pk_model *m);          /* from config.json, -1 if none */
int pk_model_eos_id(const pk_model *m);          /* -1 if none */
int pk_model_pad_id(const pk_model *m);          /* -1 if none */
size_t pk_model_weight_bytes(const pk_model *m); /* sum of stored tensor bytes */
/* Multiply-add FLOPs (x2) of the linear layers + LM head for one forward over B*T tokens; used by
 * bench. */
double pk_model_forward_flops(const pk_model *m, int B, int T);

/* Measures cblas_sgemm GFLOP/s on the model's own linear-layer and LM-head shapes for B*T tokens
 * (random fp32 operands, current thread setting, best of reps runs). Returns 0 on allocation
 * failure. For bench forward's roofline. */
double pk_model_bench_sgemm(const pk_model *m, int B, int T, int reps);

/* Threads for our OpenMP loops (forward passes and the MeZO update). n <= 0 means all cores.
 * Returns the value now in effect. pk_threads_get returns the current value. OpenBLAS itself runs
 * single-threaded inside those loops: every result is bit-identical for any n
 * (docs/DETERMINISM.md). */
int pk_threads_set(int n);
int pk_threads_get(void);

/* The BLAS kernel forward passes run on: "OpenBLAS <version> <core> <machine>", e.g.
 * "OpenBLAS 0.3.21 Haswell x86_64" (the core follows OPENBLAS_CORETYPE or OpenBLAS's own CPU
 * detection). Losses are a pure function of the weights, the batch, the perturbation and this
 * kernel; another kernel may round differently. Writes at most n bytes, NUL-terminated, into
 * out (borrowed) and returns out. */
const char *pk_model_kernel(char *out, size_t n);

/* Tensors. */
typedef struct pk_tensor_info {
    const char *name; /* Hugging Face name, view valid while the model lives */
    pk_dtype dtype;   /* storage dtype */
    int ndim;
    int64_t shape[4];
    size_t numel;
    uint64_t key;        /* pk_rng_tensor_key(name) */
    void *data;          /* the stored elements, row-major, writable (copy-on-write mmap) */
    int is_bias_or_norm; /* 1 for biases and normalization weights (no weight decay) */
} pk_tensor_info;

size_t pk_model_n_tensors(const pk_model *m);
/* For training: gives the chosen tensors (tensors [n_tensors] borrowed, 1 = chosen; NULL = all)
 * memory of this process's own, filled from the files with one sequential read, so the first
 * writes to them (the first MeZO update, a checkpoint restore) do not take a copy-on-write page
 * fault for every 4 KB page of the mapping. Call once after loading, before writing any tensor;
 * later calls do nothing. Pointers from pk_model_tensor stay valid. RSS stays what writing every
 * chosen page would make it. PK_ERR_NOMEM, PK_ERR_IO (then the weights are unusable: free the
 * model); PK_ERR_UNSUPPORTED (nothing done, a warning logged) if a chosen tensor is
 * block-quantized or the model is a llama GGUF file from llama.cpp (DESIGN 5). */
PK_NODISCARD pk_status pk_model_make_writable(pk_model *m, const uint8_t *tensors);
/* Restores every weight to the contents of its safetensors file, as loaded (the weights are
 * copy-on-write mappings of the files: the pages written since are dropped, and the ranges made
 * writable are read again; no copy is kept). PK_ERR_IO if the kernel refuses;
 * PK_ERR_UNSUPPORTED for a llama GGUF file from llama.cpp (its q/k rows were reordered). */
PK_NODISCARD pk_status pk_model_restore_base(pk_model *m);
/* Fills *out for tensor i (0 <= i < n_tensors). PK_ERR_ARG if i is out of range. */
PK_NODISCARD pk_status pk_model_tensor(const pk_model *m, size_t i, pk_tensor_info *out);
/* Index of the tensor with this name, or -1. */
int pk_model_tensor_index(const pk_model *m, const char *name);

/* LoRA adapters (model/adapter.c, DESIGN 4): each targeted linear layer y = x W^T gains
 * y += (alpha / r) * (x A^T) B^T with A [r, in] and B [out, r] fp32 tensors registered as
 * ordinary model tensors named "<module>.lora_A.weight" / "<module>.lora_B.weight" (PEFT's
 * names without "base_model.model."), so the perturbation, the MeZO update, pk_weights_hash and
 * checkpoints reach them unchanged; the base may be any dtype. A is drawn uniform in
 * +-1/sqrt(in) (PEFT's Kaiming-uniform bound) from pk_rng_bits(seed, key(A name), i), B is 0:
 * the same params give the same bits anywhere. */
typedef struct pk_lora_params {
    int r;             /* rank, 1..PK_LORA_MAX_RANK */
    float alpha;       /* scale alpha / r */
    char targets[160]; /* POSIX extended regex; a module matches when it matches the whole module
                          name (weight name without ".weight") or its last component; "" = the
                          architecture's attention q and v projections */
    uint64_t seed;     /* A's initialization */
} pk_lora_params;
#define PK_LORA_MAX_RANK 64

/* The default targets of the model's architecture (static string): q_proj|v_proj (llama, qwen2,
 * opt), c_attn (gpt2, q, k and v fused), query|value (roberta). */
const char *pk_model_lora_default_targets(const pk_model *m);
/* Attaches adapters to every linear layer p->targets matches (tensor indices change: the new
 * tensors take their places in name order). Attaching the same params again does nothing;
 * other params on an adapted model are PK_ERR_ARG. PK_ERR_ARG also for a rank out of range, a
 * bad regex or targets matching no linear layer (err names them). *n_adapted (may be NULL) gets
 * the number of adapted layers. */
PK_NODISCARD pk_status pk_model_lora_attach(pk_model *m, const pk_lora_params *p, size_t *n_adapted,
                                            char *err, size_t errlen);
/* 1 and *out filled (may be NULL) when an adapter is attached, else 0. */
int pk_model_lora(const pk_model *m, pk_lora_params *out);
/* 1 if tensor i is a LoRA A or B tensor. */
int pk_model_tensor_is_lora(const pk_model *m, size_t i);
/* Folds the adapters into their base weights (W + (alpha / r) B A, as fp32 heap copies) and
 * removes the A and B tensors: the model then computes the same function without adapters (up
 * to rounding) and pk_model_save writes a plain model. Trainable block scales
 * (pk_model_scales_attach) are folded the same way: each such weight becomes the fp32 copy of
 * its blocks decoded with the trained scales (exactly what the GEMMs computed), and the scales
 * tensors go. PK_ERR_NOMEM. */
PK_NODISCARD pk_status pk_model_lora_merge(pk_model *m);

/* Trainable block scales (--trainable scales, model/adapter.c, DESIGN 5): every Q8_0 / Q4_0
 * weight W gains an fp32 tensor "<W name>.scales" [rows, cols / 32] holding its blocks' scales
 * (the stored f16 values, exact), an ordinary model tensor like a LoRA one; the GEMMs then
 * decode block b of W as scales[b] * q (perturbed: (scales[b] + eps z) * q) instead of its f16
 * scale. Attaching again does nothing. PK_ERR_ARG (err says why) when the model has no Q8_0 /
 * Q4_0 weight. *n_tensors (may be NULL) gets the number of quantized weights it covers. */
PK_NODISCARD pk_status pk_model_scales_attach(pk_model *m, size_t *n_tensors, char *err,
                                              size_t errlen);
/* 1 if tensor i is a block-scales tensor. */
int pk_model_tensor_is_scales(const pk_model *m, size_t i);

/* A batch of B sequences, left-aligned, padded to T. All pointers borrowed. */
typedef struct pk_batch {
    int B, T;
    const int32_t *ids;        /* [B*T] row-major; entries past lengths[b] are ignored */
    const int32_t *lengths;    /* [B] valid tokens per row (1..T) */
    const int32_t *token_type; /* [B*T] or NULL (roberta token types; 0 if NULL) */
} pk_batch;

/* The MeZO perturbation: each trainable tensor W is used as W + scale * z(seed, key(W), i), i the
 * element's index in the stored row-major layout, materialized block by block in an fp32 scratch
 * buffer just before use (the stored weights are never written by a forward pass). Tied LM heads
 * use the embedding's z. trainable is borrowed, [n_tensors], 1 = perturbed; NULL = all tensors. */
typedef struct pk_perturb {
    uint64_t seed;
    float scale; /* +eps or -eps */
    pk_z_kind kind;
    const uint8_t *trainable;
    /* 1: evaluate at +scale and at -scale in one call (a MeZO step's two passes). Every output
     * of the evaluation functions below is then doubled: the +scale results, followed by the
     * -scale results (seq_nll [2B], seq_count [2B], mean [2], out [2 * n_sel * n_ids],
     * logits [2 * B*T*V]). The two passes run side by side when the model pairs them (see
     * pk_model_set_pairing), sharing each weight block's z, else one after the other; the
     * results are the same bits either way. */
    int both;
} pk_perturb;

/* A sweep: several perturbations of the same batch evaluated in one pass over the weights
 * (DESIGN 4, docs/ZGEN.md). pert gives the scale, kind and both of every perturbation; n >= 1
 * perturbations take seeds[n] (borrowed) instead of pert.seed and, if masks (borrowed) is not
 * NULL, masks[i] (NULL = all tensors) instead of pert.trainable for perturbation i; n = 0 is the
 * one perturbation pert. base = 1 adds an unperturbed evaluation. The evaluations, in output
 * order: the unperturbed one (base), then per perturbation i the +scale one and (pert.both) the
 * -scale one; pk_sweep_evals counts them, and every output of the *_sweep evaluation functions
 * is that many times as long as for one evaluation, evaluation e's at e times the single size.
 * They run side by side, pk_model_sweep_width at a time, each weight block materialized for
 * all of them while it is hot (a + and its - pass from one z), grouped by their shared prefix
 * (pk_model_stage_evals); every result is the bits of the same evaluation run alone. */
typedef struct pk_sweep {
    pk_perturb pert;
    int n;
    const uint64_t *seeds;
    const uint8_t *const *masks;
    int base;
} pk_sweep;

/* Evaluations of s: base + max(n, 1) * (pert.both ? 2 : 1). */
int pk_sweep_evals(const pk_sweep *s);

/* How a pk_perturb with both = 1 runs. Paired, the + and - passes go through the layers
 * together: each weight block's z is generated once for both (one z sweep instead of two per
 * step) at the cost of a second set of activations. */
typedef enum pk_pairing {
    PK_PAIRING_AUTO = 0, /* paired when one pass's activations are at most 3% of the weight
                            bytes (the step stays within inference memory); the default */
    PK_PAIRING_ON = 1,   /* always paired */
    PK_PAIRING_OFF = 2,  /* never: the passes run one after the other */
} pk_pairing;
void pk_model_set_pairing(pk_model *m, pk_pairing mode);
/* Per-tensor diagonals for the perturbation (hizoo): while set, a perturbed tensor ti with
 * hdiag[ti] != NULL reads as W + scale * (z / sqrtf(h)) elementwise (pk_z_perturb_diag). hdiag
 * [n_tensors] is borrowed until the next call; NULL clears it. */
void pk_model_set_perturb_diag(pk_model *m, const float *const *hdiag);
/* 1 if a both = 1 evaluation of a (B, T) batch runs paired. */
int pk_model_pairs(const pk_model *m, int B, int T);
/* Passes run side by side for `evals` evaluations of a (B, T) batch, 1 .. min(evals, 64):
 * PK_PAIRING_OFF 1, ON min(evals, 64), AUTO the most passes whose activations together stay
 * within 6% of the weight bytes, the memory of a paired step (so AUTO pairs exactly when
 * pk_model_pairs). More evaluations run in several sweeps. */
int pk_model_sweep_width(const pk_model *m, int B, int T, int evals);
/* Activation bytes one pass of a (B, T) batch adds to a sweep (the arena copy of each pass). */
size_t pk_model_pass_bytes(const pk_model *m, int B, int T);
/* Shared prefixes (layer sampling, DESIGN 4): when every tensor an evaluation of a sweep perturbs
 * lies inside the transformer blocks, the stages below its lowest perturbed one compute what the
 * unperturbed model computes. A block is two stages: 2l, its attention half (ln1, the attention
 * and its output projection), and 2l + 1, its MLP half (ln2 and the FFN); so a set that trains
 * only a block's MLP half shares that block's attention half too. A sweep orders its
 * perturbations by that lowest stage, and the unperturbed stages run once per sweep call (one
 * more [B*T, hidden] fp32 buffer in the reservation), each group of evaluations starting from
 * their output: the same bits as separate passes. pk_model_stage_evals counts the stage
 * evaluations run so far (one per pass through one stage, a shared one once), so callers and
 * tests can see what was saved; pk_model_block_evals is half that, rounded down. */
uint64_t pk_model_stage_evals(const pk_model *m);
/* The stage tensor ti belongs to (2l: block l's attention half, 2l + 1: its MLP half), -1 for a
 * tensor outside the blocks. */
int pk_model_tensor_stage(const pk_model *m, size_t ti);
uint64_t pk_model_block_evals(const pk_model *m);

/* The frozen prefix (DESIGN 4): a run whose trainable tensors all lie from stage `level` up (or
 * after the blocks; pk_model_trainable_level gives that level for a trainable mask, 0 if none;
 * stages as for shared prefixes, two per block) never changes the embeddings and stages below
 * it, so the residual stream entering stage `level` is a function of a token row alone. With the
 * store on, every forward pass whose perturbation leaves those stages alone (pk_model_loss,
 * sweeps) takes each row's stream from the row computed by itself (a batch of that row alone),
 * kept after its first use up to cap_bytes and copied after that: the same bits whether a row
 * was kept or not, whatever batch it comes in and however many threads, so the losses are a pure
 * function of (weights, batch, perturbation, kernel) with the store on (not the same bits as with
 * it off: a row alone is another GEMM tiling). The caller promises not to change the tensors
 * below `level` while it is on. level 0 turns it off (and frees it); PK_ERR_ARG past the
 * model's 2 x blocks stages. */
PK_NODISCARD pk_status pk_model_freeze_prefix(pk_model *m, int level, size_t cap_bytes);
int pk_model_frozen_level(const pk_model *m);
/* The store's cap for weights of weight_bytes: a quarter of them, at least 16 MB (what the
 * trainer gives pk_model_freeze_prefix, and what the agent's --max-rss estimate counts). */
size_t pk_model_frozen_cap(uint64_t weight_bytes);
int pk_model_trainable_level(const pk_model *m, const uint8_t *trainable);
/* Rows found in the store, rows computed by themselves, and the bytes the store holds. */
void pk_model_frozen_stats(const pk_model *m, uint64_t *hits, uint64_t *misses, size_t *bytes);

/* Reserves activations for batches up to (B, T) so later forward calls do not allocate
 * (otherwise the first forward of a larger shape reserves lazily). PK_ERR_ARG if T exceeds
 * max positions, PK_ERR_NOMEM. */
PK_NODISCARD pk_status pk_model_reserve(pk_model *m, int B, int T);
/* Bytes of activation/scratch memory currently reserved, and the number of allocations made by
 * reservations so far (a test checks forward passes leave it unchanged). */
size_t pk_model_activation_bytes(const pk_model *m);
size_t pk_model_alloc_count(const pk_model *m);

/* Causal next-token cross-entropy. target_mask [B*T] (borrowed, may be NULL): position t of row
 * b counts as a target (token ids[b,t] predicted from positions < t) if target_mask[b*T+t] != 0
 * and 1 <= t < lengths[b]; NULL = every valid t >= 1. seq_nll[B] / seq_count[B] (may be NULL)
 * get each row's summed NLL and counted targets; *mean (may be NULL) the mean over all counted
 * targets (NaN if none). Never materializes [B*T, vocab] logits (LM head in vocab row blocks).
 * Roberta: PK_ERR_UNSUPPORTED (use pk_model_select_logits at the mask position).
 * PK_ERR_ARG on bad shapes or token ids out of range. */
PK_NODISCARD pk_status pk_model_loss(pk_model *m, const pk_batch *batch, const uint8_t *target_mask,
                                     const pk_perturb *pert, double *seq_nll, int32_t *seq_count,
                                     double *mean);

/* Logits of chosen token ids at chosen positions: out[s*n_ids + j] = logit of ids[j] at
 * (sel_b[s], sel_t[s]) (causal models: the distribution of the token AFTER position t; roberta:
 * the MLM logits at t). With pk_model_select_logprobs the values are log-softmax over the whole
 * vocabulary instead. All arrays borrowed; out [n_sel*n_ids] caller-owned.
 * PK_ERR_ARG if a position is outside its row's valid length or an id is out of range. */
PK_NODISCARD pk_status pk_model_select_logits(pk_model *m, const pk_batch *batch,
                                              const pk_perturb *pert, size_t n_sel,
                                              const int32_t *sel_b, const int32_t *sel_t,
                                              size_t n_ids, const int32_t *ids, float *out);
PK_NODISCARD pk_status pk_model_select_logprobs(pk_model *m, const pk_batch *batch,
                                                const pk_perturb *pert, size_t n_sel,
                                                const int32_t *sel_b, const int32_t *sel_t,
                                                size_t n_ids, const int32_t *ids, float *out);

/* Full logits: out [B*T*V] caller-owned (rows past a sequence's length are computed from padding
 * and meaningless). For tests and small inputs; training uses the two functions above. */
PK_NODISCARD pk_status pk_model_logits(pk_model *m, const pk_batch *batch, const pk_perturb *pert,
                                       float *out);

/* The evaluation functions above over every evaluation of a sweep s (NULL: one unperturbed
 * evaluation), outputs pk_sweep_evals(s) times as long (pk_sweep); select: logprobs != 0 for
 * pk_model_select_logprobs's values. PK_ERR_ARG also for n < 0 or n >= 1 without seeds. */
PK_NODISCARD pk_status pk_model_loss_sweep(pk_model *m, const pk_batch *batch,
                                           const uint8_t *target_mask, const pk_sweep *s,
                                           double *seq_nll, int32_t *seq_count, double *mean);
PK_NODISCARD pk_status pk_model_select_sweep(pk_model *m, const pk_batch *batch, const pk_sweep *s,
                                             size_t n_sel, const int32_t *sel_b,
                                             const int32_t *sel_t, size_t n_ids, const int32_t *ids,
                                             int logprobs, float *out);
PK_NODISCARD pk_status pk_model_logits_sweep(pk_model *m, const pk_batch *batch, const pk_sweep *s,
                                             float *out);

/* Generation with a KV cache (causal models only, one sequence). */
typedef struct pk_gen pk_gen;
/* A cache for up to max_tokens positions (<= max positions). m is borrowed and must outlive g.
 * *out owned result, free with pk_gen_free. PK_ERR_UNSUPPORTED for roberta. */
PK_NODISCARD pk_status pk_gen_create(pk_model *m, int max_tokens, pk_gen **out);
void pk_gen_free(pk_gen *g); /* NULL-safe */
/* Empties the cache (position 0). */
void pk_gen_reset(pk_gen *g);
/* Tokens in the cache so far. */
int pk_gen_pos(const pk_gen *g);
/* Appends n tokens (ids borrowed) at the current position and, if logits != NULL, writes the
 * next-token logits [V] after the last one. pert may be NULL. PK_ERR_LIMIT if the cache is full,
 * PK_ERR_ARG for ids out of range or n < 1. */
PK_NODISCARD pk_status pk_gen_feed(pk_gen *g, const int32_t *ids, int n, const pk_perturb *pert,
                                   float *logits);

/* Sampling: temperature <= 0 is greedy (argmax, lowest id on ties); otherwise softmax(logits/T)
 * restricted to the top_k most likely (0 = all), then to the smallest set whose probability
 * reaches top_p (1 = all), drawn with a deterministic RNG seeded by seed. */
typedef struct pk_sampler_params {
    float temperature;
    int top_k;
    float top_p;
    uint64_t seed;
} pk_sampler_params;
typedef struct pk_sampler pk_sampler;
PK_NODISCARD pk_status pk_sampler_create(pk_sampler_params p, int vocab, pk_sampler **out);
void pk_sampler_free(pk_sampler *s); /* NULL-safe */
/* Picks the next token from logits [vocab] (borrowed, not modified). */
int32_t pk_sampler_sample(pk_sampler *s, const float *logits);

/* Writes the model with its CURRENT weights to out_dir (created if missing): config.json (the
 * source's, torch_dtype updated), model.safetensors in dtype, and copies of the tokenizer files
 * found in the source directory. err as in pk_model_load. */
PK_NODISCARD pk_status pk_model_save(const pk_model *m, const char *out_dir, pk_dtype dtype,
                                     char *err, size_t errlen);

/* Writes the model with its CURRENT weights as out_dir/model.gguf (created if missing; DESIGN 5):
 * tensor i converted to types[i] (borrowed, [n_tensors]: F32, F16, BF16, Q8_0, Q4_0, Q4_K, or
 * the tensor's own type, whose bytes are copied), the source config.json in the metadata
 * (pocketllm.config_json) with llama.cpp's keys and tensor names for llama / qwen2, plus
 * out_dir/config.json and copies of the tokenizer files. PK_ERR_ARG (a type that cannot be
 * written or whose blocks do not divide a tensor's rows; err names the tensor), PK_ERR_IO,
 * PK_ERR_NOMEM. pk_model_load reads the result (out_dir or out_dir/model.gguf). */
PK_NODISCARD pk_status pk_model_save_gguf(const pk_model *m, const char *out_dir,
                                          const pk_dtype *types, char *err, size_t errlen);

/* A streaming safetensors writer: tensors are written in the given order (the header lists them
 * sorted by name as required), each filled in fp32 chunks by fill(user, i, start, n, buf) that
 * writes elements [start, start+n) of tensor i into buf, then narrowed to the tensor's dtype.
 * Nothing beyond one chunk is held in memory. entries borrowed. */
typedef struct pk_st_entry {
    const char *name;
    pk_dtype dtype;
    int ndim;
    int64_t shape[4];
} pk_st_entry;
typedef void (*pk_st_fill_fn)(void *user, size_t i, size_t start, size_t n, float *buf);
PK_NODISCARD pk_status pk_safetensors_write(const char *path, const pk_st_entry *entries, size_t n,
                                            pk_st_fill_fn fill, void *user, char *err,
                                            size_t errlen);

/* Writes a model with random weights for config_json (len bytes, borrowed; written verbatim as
 * out_dir/config.json) into out_dir (created if missing): every tensor the config implies, in
 * dtype, matrices ~ N(0, 0.02^2), biases ~ N(0, 0.02^2), norm weights ~ 1 + N(0, 0.05^2), all
 * from pk_z_fill(seed, key(name), ...) so the same seed gives the same bytes. Streams (holds one
 * chunk in memory). err as in pk_model_load. */
PK_NODISCARD pk_status pk_model_make(const char *config_json, size_t len, const char *out_dir,
                                     pk_dtype dtype, uint64_t seed, char *err, size_t errlen);

/* Parsers exposed for the fuzz targets and tests: validate a safetensors header (the JSON text
 * after the 8-byte length, header_len bytes) against a data area of data_len bytes, and a
 * config.json text. Return PK_OK or PK_ERR_FORMAT / PK_ERR_UNSUPPORTED with err naming what is
 * wrong (fname is used in messages). Pure, no allocation is kept. */
PK_NODISCARD pk_status pk_safetensors_check_header(const char *fname, const char *header,
                                                   size_t header_len, uint64_t data_len, char *err,
                                                   size_t errlen);
/* Validates a whole GGUF file in buf [len] (borrowed): header, every metadata value, tensor
 * infos, types, offsets and sizes (for the fuzz target and tests). PK_OK or PK_ERR_FORMAT with
 * err naming the key or tensor. Pure. */
PK_NODISCARD pk_status pk_gguf_check(const char *fname, const unsigned char *buf, size_t len,
                                     char *err, size_t errlen);
PK_NODISCARD pk_status pk_config_check(const char *fname, const char *json, size_t len, char *err,
                                       size_t errlen);

#endif /* PK_MODEL_H */
