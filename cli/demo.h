/* demo.h: what `pocketllm demo` (cmd_demo.c) and its --federated round (demo_fed.c) share. */
#ifndef PK_CLI_DEMO_H
#define PK_CLI_DEMO_H

#include "opts.h"
#include "pk_mezo.h"
#include "pk_store.h"
#include "pk_train.h"
#include "progress.h"

#include <stddef.h>
#include <stdint.h>

/* The demo dataset, compiled in by cli/CMakeLists.txt (demo/embed.cmake). */
extern const char pk_demo_train[];
extern const size_t pk_demo_train_len;
extern const char pk_demo_heldout[];
extern const size_t pk_demo_heldout_len;

#define DEMO_PASSPHRASE "pocketllm-demo"
#define DEMO_PROMPT     "Once upon a time, Pip"
#define DEMO_GEN_SEED   42u
#define DEMO_GEN_TOKENS 48

typedef struct demo_opts { /* the option table's struct (cmd_demo.c) */
    cli_common c;          /* --threads, --json, --quiet */
    const char *model;     /* --model DIR; NULL: $POCKETLLM_MODEL, else the shipped model */
    int64_t steps;         /* MeZO steps of the fine-tune */
    float lr;              /* learning rate */
    int batch;             /* examples per step */
    int federated, keep;   /* --federated, --keep */
} demo_opts;

typedef struct demo_fed {    /* --federated results (demo_federated, at the bottom) */
    int64_t round;           /* the round both devices uploaded to */
    char hash[65];           /* the global model both devices ended with ("" if they differ) */
    char device_hash[2][65]; /* each device's final model */
    uint64_t wire_up[2];     /* bytes sent per device, all its calls, HTTP headers included */
    uint64_t wire_down[2];   /* bytes received per device */
    uint64_t upload_body[2]; /* the upload request body per device */
    int64_t pairs[2];        /* (seed, sum of g) pairs each device uploaded */
    int bodies;              /* request bodies the coordinator received */
    long long body_bytes;    /* their total size */
    double loss;             /* held-out loss of the global model (NAN: not measured) */
} demo_fed;

typedef struct demo_state {
    demo_opts o;
    char home[256];
    char model_dir[1024];     /* the base model, an absolute path */
    const char *model_source; /* "shipped", "--model" or "POCKETLLM_MODEL" */
    struct pocketllm_home *h; /* the demo home, through libpocketllm */
    pk_store *s;              /* its store (a view of h) for what the API does not cover */
    pk_progress *prog;
    double *losses; /* per-step train loss, for the sparkline */
    int64_t n_losses;
    int64_t run_id;
    double loss_before, loss_after;
    size_t seedlog_bytes, weight_bytes;
    int64_t sealed_bytes, n_train, n_heldout;
    char base_hash[65], final_hash[65];
    char *sample_before, *sample_after;
    demo_fed fed;
} demo_state;

/* Human text goes to stdout unless --quiet. */
void demo_say(const demo_state *d, const char *fmt, ...) PK_PRINTF(2, 3);
/* The next non-empty line of text[0, len) from *pos, copied NUL-terminated into line (cap bytes,
 * longer lines cut); its length, or 0 at the end. */
size_t demo_next_line(const char *text, size_t len, size_t *pos, char *line, size_t cap);
/* Creates an agent home in `home` with the demo passphrase and opens it into *s. */
pk_status demo_create_home(const char *home, pk_store **s, char *err, size_t errlen);
/* The MeZO settings of the demo's fine-tune (the federated round uses its lr and eps). */
pk_train_config demo_config(const demo_state *d);
/* The directory holding the running pocketllm binary (from /proc/self/exe) into out (n bytes).
 * 0, or -1 with errno set. */
int demo_exe_dir(char *out, size_t n);
/* One federated round (demo_fed.c): a local coordinator and two simulated devices. */
int demo_federated(demo_state *d);
/* Adds the federated members to the demo's final JSON object (borrowed): "federated" is null
 * when federated_ok < 0 (no --federated), else true/false followed by the round's figures. */
struct cJSON;
void demo_fed_json(const demo_state *d, int federated_ok, struct cJSON *obj);

#endif /* PK_CLI_DEMO_H */
