/* pk_agent.h: the on-device training agent (DESIGN 13): a loop that trains a chained run on a
 * home's datasets in slices while the device is idle, charging and cool, sleeps otherwise, picks
 * up newly imported examples, evaluates on a held-out slice and keeps the best point. It reports
 * through a status row in the store (pocketllm agent status / stop) and an event callback; it
 * never prints, never exits and never touches the network itself (sync is a callback).
 * Errors: pk_status, with (err, errlen) last (DESIGN 9).
 * Thread safety: one agent per process and per home; call from one thread. */
#ifndef PK_AGENT_H
#define PK_AGENT_H

#include "pk_common.h"
#include "pk_store.h"
#include "pk_train.h"

#include <stddef.h>
#include <stdint.h>

/* ---- device conditions (conditions.c) ------------------------------------------------------- */

typedef struct pk_agent_conditions {
    char sysfs_root[512];   /* "/sys": class/power_supply and class/thermal below it */
    char loadavg_path[512]; /* "/proc/loadavg" */
    int min_battery;        /* percent: on battery, train only at or above it (101: never) */
    double max_temp_c;      /* every thermal zone below it (degrees Celsius) */
    double max_load;        /* 1-minute load average below it, the agent's own share removed */
    int window_start;       /* minutes after local midnight; -1 (both): any time */
    int window_end;         /* may be below window_start: the window spans midnight */
    int now_minutes;        /* -1: the clock; else a fixed local time of day (tests) */
} pk_agent_conditions;
pk_agent_conditions pk_agent_conditions_default(void);

/* 1 if training may run now, else 0 and why (one sentence naming the value and the limit, into
 * why, n bytes). own_load is what this process itself adds to the load average (its threads
 * while it trains). A machine without power supplies counts as on AC; without thermal zones,
 * as cool. */
int pk_agent_conditions_ok(const pk_agent_conditions *c, double own_load, char *why, size_t n);

/* The memory a model needs to train (its safetensors bytes plus a tenth for activations and
 * scratch, plus `state` times them for the estimator's state: hizoo's fp32 Hessian diagonal is
 * at most its --hessian-budget times the weights; plus, if `frozen`, the frozen prefix's store at
 * its most, a quarter of them or 16 MB; plus 24 MB for the process), from the file sizes alone:
 * nothing is mapped. */
PK_NODISCARD pk_status pk_agent_model_bytes(const char *model_dir, double state, int frozen,
                                            uint64_t *bytes, char *err, size_t errlen);

/* ---- the loop (agent.c) --------------------------------------------------------------------- */

typedef enum pk_agent_event {
    PK_AGENT_INFO = 0, /* a state change, a run started or finished, an eval, a sync */
    PK_AGENT_WARN,     /* something failed and will be retried */
} pk_agent_event;

typedef struct pk_agent_params {
    pk_train_config train; /* model_dir, objective, lr, eps, seed, batch, steps per run, ...;
                              dataset, datasets, holdout, eval_every, early_stop set by the agent
                              from the fields below */
    char datasets[512];    /* comma-separated dataset names (the union is trained on) */
    int holdout;           /* percent held out for eval (1..90) */
    int64_t eval_every;    /* steps between evals */
    int early_stop;        /* evals without improvement that end a run */
    int64_t slice_steps;   /* steps between looks for new examples */
    double poll_s;         /* seconds between checks while waiting */
    int threads;           /* the agent's threads (what it adds to the load average) */
    pk_agent_conditions cond;
    /* Optional sync: called between slices every sync_every_s seconds while conditions hold;
     * after a failure retried with a doubling delay (poll_s up to sync_every_s). */
    double sync_every_s; /* 0: no sync */
    pk_status (*sync)(void *user, char *err, size_t errlen);
    void *sync_user;
    /* Optional: one line per event, no private text in it (run ids, steps, losses, reasons). */
    void (*on_event)(void *user, pk_agent_event kind, const char *line);
    void *event_user;
    /* Optional: the status JSON each time it is written to the store's agent row (the same
     * text, borrowed for the call: state, reason, run, step, steps_today, datasets, threads,
     * best, last_sync; no private text), so a caller can publish it where reading needs no
     * passphrase (the CLI's HOME/agent.status). user is event_user. */
    void (*on_status)(void *user, const char *status_json);
} pk_agent_params;
pk_agent_params pk_agent_default_params(void);

/* Runs the agent on the open store s (borrowed) until it is asked to stop (pk_interrupted(), or
 * pocketllm agent stop through the store row), then returns PK_OK having stopped at a step
 * boundary. PK_ERR_BUSY if another live agent holds the home (err names its pid); a training
 * error that repeats is returned (err says what). */
PK_NODISCARD pk_status pk_agent_run(pk_store *s, const pk_agent_params *p, char *err,
                                    size_t errlen);

#endif /* PK_AGENT_H */
