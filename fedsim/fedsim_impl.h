/* fedsim_impl.h: helpers shared by the fedsim/ sources (not part of pk_fedsim.h). */
#ifndef PK_FEDSIM_IMPL_H
#define PK_FEDSIM_IMPL_H

#include "pk_common.h"

#include <stddef.h>
#include <stdint.h>

/* A seeded stream (splitmix64 over a counter): every random choice of a simulation comes from
 * one of these, keyed by what it decides, so nothing depends on process timing. */
typedef struct fs_rng {
    uint64_t s;
} fs_rng;

static inline fs_rng fs_rng_make(uint64_t seed, uint64_t a, uint64_t b)
{
    fs_rng r = {pk_splitmix64(pk_splitmix64(seed ^ pk_splitmix64(a)) ^ b)};
    return r;
}

static inline uint64_t fs_next(fs_rng *r)
{
    r->s += 0x9e3779b97f4a7c15ull;
    return pk_splitmix64(r->s);
}

/* Uniform in [0, 1) with 53 bits. */
static inline double fs_uniform(fs_rng *r)
{
    return (double)(fs_next(r) >> 11) * (1.0 / 9007199254740992.0);
}

/* Uniform in [0, n) (n >= 1; the modulo bias is below 2^-40 for the n used here). */
static inline uint64_t fs_below(fs_rng *r, uint64_t n)
{
    return fs_next(r) % n;
}

/* In-place Fisher-Yates shuffle of v[n]. */
static inline void fs_shuffle(fs_rng *r, int32_t *v, size_t n)
{
    for (size_t i = n; i > 1; i--) {
        size_t j = (size_t)fs_below(r, i);
        int32_t t = v[i - 1];
        v[i - 1] = v[j];
        v[j] = t;
    }
}

#include "pk_fedsim.h"

#include <sys/types.h>

/* A model and its trainable mask behind pk_sync_model_ops' apply, reset and hash: the device's
 * and the observer's are the same three calls (device.c). The first member of the struct a
 * pk_sync_model_ops.user points to, so user may be read as an fs_model *. */
typedef struct fs_model {
    pk_model *m;
    uint8_t *trainable; /* [n_tensors] */
} fs_model;
pk_status fs_model_apply(void *user, uint64_t seed, pk_z_kind kind, float lr, float coef);
pk_status fs_model_reset(void *user);
pk_status fs_model_hash(void *user, char hex[65]);

/* The state of one pk_fedsim_run (sim.c: rounds, processes, eval, baseline; sim_data.c: the
 * homes and the data). */
typedef struct fs_sim {
    fs_model fm; /* the observer's model (base + global log) and mask; first: the ops' user */
    const pk_fedsim_params *p;
    const pk_fedsim_hooks *h;
    pk_fedsim_summary *sum;
    char *err;
    size_t errlen;
    char homes[1024];     /* OUT/homes */
    char pass_path[1100]; /* OUT/homes/passphrase: the homes' (random) passphrase */
    char pass[65];
    char coord_dir[1100]; /* OUT/coordinator */
    char model_abs[1024];
    pk_store *obs; /* the observer home: union, eval, the global model's catch-up */
    pk_objective *eval;
    pk_fedsim_coord *coord;
    char url[256];
    int n_dev;
    char (*home)[1100]; /* [n_dev] device homes */
    uint64_t *dev_seed; /* [n_dev] */
    double *dev_eps;    /* [n_dev] epsilon each device reported last (NAN: none) */
    pid_t *pid;         /* [n_dev] running device processes (0: none) */
    double *dev_t0;     /* [n_dev] launch time */
    int64_t quorum, local_steps, K, coord_round;
    int picked, dropped;
    float lr, eps;
    double total_bytes;
} fs_sim;

/* sim_data.c */
pk_status fs_setup_homes(fs_sim *x);
void fs_remove_tree(const char *dir);
/* The last non-empty line of the file at path (without its newline) into out[n]; "" if none. */
void fs_last_line(const char *path, char *out, size_t n);
void fs_note(fs_sim *x, const char *fmt, ...) PK_PRINTF(2, 3);

/* baseline.c: the centralized run of --baseline (backed off while it diverges with auto). */
pk_status fs_baseline(fs_sim *x);

/* Packed pairs (PROTOCOL 3): 6 bytes each, u16le k then f32le v. */
#define FS_PAIR_BYTES 6

#endif /* PK_FEDSIM_IMPL_H */
