/* model_impl.h: private declarations shared by the model/ sources (never included outside model/).
 * The pk_model struct body, the parsed config, the per-layer tensor indices and the kernels. */
#ifndef PK_MODEL_INTERNAL_H
#define PK_MODEL_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "pk_model.h"

enum { ARCH_LLAMA = 0, ARCH_QWEN2, ARCH_OPT, ARCH_GPT2, ARCH_ROBERTA, ARCH__COUNT };
enum { ACT_SILU = 0, ACT_RELU, ACT_GELU, ACT_GELU_TANH };

/* The model configuration, from config.json. */
typedef struct pk_cfg {
    int arch;
    int V;          /* vocab size */
    int H;          /* hidden size */
    int L;          /* layers */
    int nh;         /* attention heads */
    int nkv;        /* key/value heads (GQA) */
    int hd;         /* head dim */
    int inter;      /* FFN inner size */
    int max_pos;    /* positions the model accepts */
    int n_pos_rows; /* rows of the learned position table (opt: max_pos + 2, roberta: max_pos) */
    double eps;     /* norm epsilon */
    double rope_theta;
    int rope_llama3; /* rope_scaling.rope_type == "llama3" */
    double rope_factor, rope_low, rope_high;
    int rope_orig_max;
    int tie;      /* lm_head tied to the token embedding */
    int qkv_bias; /* q/k/v biases (qwen2, llama attention_bias, opt enable_bias, gpt2, roberta) */
    int o_bias;   /* output projection bias */
    int mlp_bias;
    int act;
    int pre_ln;         /* opt do_layer_norm_before */
    int final_ln;       /* opt: final_layer_norm present */
    int ln_affine;      /* opt layer_norm_elementwise_affine */
    int proj;           /* opt word_embed_proj_dim (== H when no project_in/out) */
    int type_vocab;     /* roberta token types */
    int attn_inv_layer; /* gpt2 scale_attn_by_inverse_layer_idx */
    int bos, eos, pad;  /* -1 if none */
} pk_cfg;

/* Parses config.json text into c. fname names the file in messages. */
PK_NODISCARD pk_status pk_cfg_parse(const char *fname, const char *json, size_t len, pk_cfg *c,
                                    char *err, size_t errlen);

/* One tensor of the model. */
typedef struct pk_tensor {
    char *name;
    pk_dtype dtype;
    int ndim;
    int64_t shape[4];
    size_t numel;
    size_t rows, cols; /* 2-D view: rows = shape[0] (1 for 1-D), cols = numel / rows */
    uint64_t key;
    void *data;
    void *owned;     /* non-NULL: data is this heap copy (a misaligned tensor in the file) */
    const void *src; /* with owned: where the tensor sits in the mapped file */
    int is_bias_or_norm;
    int lora_a, lora_b; /* a LoRA-adapted weight: index + 1 of its A [r, in] and B [out, r] */
    int scales;         /* a Q8_0 / Q4_0 weight with trainable block scales: index + 1 of them */
} pk_tensor;

/* Tensor indices (-1 = absent) of one block. Llama: fc1 = up, fc2 = down, gate = gate.
 * GPT-2: q = fused c_attn (k, v = -1). */
typedef struct pk_layer {
    int ln1_w, ln1_b, ln2_w, ln2_b;
    int q_w, q_b, k_w, k_b, v_w, v_b, o_w, o_b;
    int gate_w, gate_b, fc1_w, fc1_b, fc2_w, fc2_b;
} pk_layer;

typedef struct pk_mapping {
    void *base;
    size_t len;
    int fd; /* the mapped file, open while the model lives */
} pk_mapping;

/* Bytes [off, off+len) of mapping `map`, page-aligned, that pk_model_make_writable replaced by
 * anonymous memory holding the file's bytes. */
typedef struct pk_private_range {
    int map;
    size_t off, len;
} pk_private_range;

typedef struct pk_frozen pk_frozen; /* frozen.c */

struct pk_model {
    pk_cfg cfg;
    char *dir;
    char *config_text; /* the source config.json (for pk_model_save) */
    size_t config_len;
    pk_mapping *maps; /* mmapped safetensors files */
    int n_maps;
    pk_private_range *priv; /* [n_priv] sorted by (map, off); NULL until pk_model_make_writable */
    size_t n_priv;
    pk_tensor *t; /* [n_t] sorted by name */
    size_t n_t;
    size_t weight_bytes;
    pk_layer *layers; /* [L] */
    int emb, pos_emb, type_emb, emb_ln_w, emb_ln_b;
    int fin_w, fin_b; /* final norm */
    int proj_in, proj_out;
    int head_w, head_b;                           /* LM head (head_w == emb when tied) */
    int hd_dense_w, hd_dense_b, hd_ln_w, hd_ln_b; /* roberta MLM head */
    pk_frozen *frozen; /* pk_model_freeze_prefix's store, NULL when off */
    int conv1d;        /* gpt2: weights stored [in, out] */

    /* activations, reserved for (rB, rT, rTk) and rnp passes, allocated once. The per-pass
     * buffers (x .. pick) live in one arena holding rnp copies pstride bytes apart: pass k's copy
     * of any of them is at (char *)ptr + k * pstride (a paired +/- evaluation runs two passes
     * side by side, see forward.c). The others are shared by the passes. */
    int rB, rT, rTk, rthreads, rnp;
    int pairing;               /* pk_pairing */
    const float *const *hdiag; /* [n_t] or NULL: pk_model_set_perturb_diag, borrowed */
    size_t n_allocs;
    size_t act_bytes;
    void *arena;
    size_t pstride;
    float *x;   /* [N, H] residual stream */
    float *xn;  /* [N, wn] normed input / attention output / final hidden */
    float *big; /* [N, wbig] q|k|v, then FFN hidden (fchunk rows at a time), then LM-head gathers */
    float *wscr; /* [wrows, wcols] widened (+ perturbed) weight block */
    size_t wscr_n;
    float *vscr; /* [2, vmax] widened vectors (norm weight | bias) */
    size_t vmax;
    double *lmax, *lsum, *lse; /* [N] online log-sum-exp */
    float *pick;               /* [N] picked target logits */
    double *lpmax, *lpsum;     /* [lgroup, N] per LM-head block: row max, sum of exp(x - max) */
    /* shared */
    float *rope;   /* [rT + rTk, hd] cos | sin per position (relative to pos0) */
    int32_t *pos;  /* [N] learned position ids */
    float *att;    /* [rthreads, rT * rTk] attention scores */
    int32_t *rows; /* [N] gathered row indices */
    int32_t *tgt;  /* [N] target ids */
    int lrows;     /* vocabulary rows per LM-head block (a function of the model alone) */
    int lgroup;    /* LM-head blocks evaluated together (a multiple of lspan but at the end) */
    int lspan;     /* LM-head blocks per wide head tile (a function of the model alone) */
    int fchunk;    /* FFN rows per chunk (the FFN hidden [fchunk, ffn] fits in big) */
    int wrows;     /* rows of the widest tensor in the weight scratch; 0: WROWS */
    int wn, wbig;
    pk_lora_params lora; /* the attached LoRA adapter (adapter.c); lora.r == 0: none */
    float lora_scale;    /* alpha / r */
};

/* adapter.c: tensor indices of the LoRA pair of weight wi (the A and B indices, -1 if none). */
int pk_lora_of(const pk_model *m, int wi, int *a, int *b);

/* Reserves activations for B sequences of T new tokens attending to Tk keys, for np passes. */
PK_NODISCARD pk_status pk_reserve(pk_model *m, int B, int T, int Tk, int np);

/* Tests: the weight scratch's size in rows of the widest tensor (0 = the default), so that small
 * models run the perturbed path in many blocks. */
void pk_model_set_block_rows(pk_model *m, int rows);

/* The MeZO hook: returns 1 if tensor ti is perturbed under pert. */
int pk_is_perturbed(const pk_model *m, const pk_perturb *pert, int ti);
/* Elements [start, start+cnt) (whole blocks) of a weight with trainable block scales
 * (t->scales), decoded with those scales + pert's scale * z (dst) and - (dst1, may be NULL);
 * forward.c's weight fetch calls it (adapter.c). */
void pk_scales_fetch(const pk_model *m, const pk_perturb *pert, int ti, size_t start, size_t cnt,
                     float *dst, float *dst1);

/* Runs the transformer over a batch (one pass, pert->both ignored): fills m->xn [B*T, Hh] with
 * the final hidden states (after the final norm / project_out / roberta MLM transform).
 * kv_k/kv_v: per-layer caches (generation, B == 1) or NULL; pos0: position of the first token. */
PK_NODISCARD pk_status pk_forward_hidden(pk_model *m, const pk_batch *b, const pk_perturb *pert,
                                         float **kv_k, float **kv_v, int pos0);
/* Width of the final hidden state fed to the LM head. */
int pk_head_dim(const pk_model *m);
/* 1 if dir/name exists (load.c). */
int pk_model_file_exists(const char *dir, const char *name);

/* Calls fn(index, ctx) on every tensor index the model keeps (the model-wide ones, then each
 * layer's): load.c marks them all unbound, adapter.c rewrites them when the tensor order
 * changes. */
void pk_model_each_index(pk_model *m, void (*fn)(int *index, const void *ctx), const void *ctx);
/* Reads a whole (small) file of at most cap bytes; *out owned (free), NUL-terminated, *len its
 * length; err names the path (load.c). */
PK_NODISCARD pk_status pk_model_read_text(const char *path, size_t cap, char **out, size_t *len,
                                          char *err, size_t errlen);
/* LM head (one pass) over M gathered rows h [M, Hh]: per row the log-sum-exp (lse, may be NULL),
 * the logits of ids [M*id_stride + j], j < n_ids (picked, may be NULL), or all logits (full
 * [M, V], may be NULL). */
void pk_lm_head(pk_model *m, const pk_perturb *pert, const float *h, int M, double *lse,
                const int32_t *ids, int id_stride, int n_ids, float *picked, float *full);

/* Safetensors parsing: entries of one file. */
typedef struct pk_st_tensor {
    char name[256];
    int dtype; /* pk_dtype, or -1 for a known non-float dtype (I64, ...) */
    int ndim;
    int64_t shape[4];
    uint64_t begin, end; /* offsets in the data area */
} pk_st_tensor;
PK_NODISCARD pk_status pk_st_parse(const char *fname, const char *header, size_t header_len,
                                   uint64_t data_len, pk_st_tensor **out, size_t *n_out, char *err,
                                   size_t errlen);

#endif /* PK_MODEL_INTERNAL_H */
