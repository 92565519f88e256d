/* test_estim_cli.c: the JSON contracts of `train` for comparing estimators, through the built
 * `pocketllm` on stories260k: with --json, each eval is one line {"event":"eval","step",
 * "loss","accuracy" (classify only),"evaluations","elapsed_s"} with evaluations = steps x the
 * estimator's evaluations per step x accumulate, and the final line carries evaluations and
 * elapsed_s; --lr auto prints its search ({"event":"lr_search"}), picks its winner (about the
 * lowest finite held-back loss), a third of it for a long constant-rate run, where the winner
 * itself drifts up, and stores the search in the run's settings; an fzoo run is stored as
 * such; plot --x evaluations and --x seconds write an SVG (seconds need eval points); hizoo over
 * its memory budget is refused, its default --hessian-smooth is 1e-8 and --hessian-every 16,
 * and with --hessian-every K the evaluations count the unperturbed loss on every K-th step
 * only; --lr-guard on prints {"event":"lr_cut"} where the loss climbs. */
#include "pk_test.h"
/* this test starts no server-mock: the header's server helpers stay unused */
#include "test_product_util.h"
#include "test_util.h"

#include <cjson/cJSON.h>
#include <math.h>

#define STORIES PK_STORIES_DIR
#define PASS    "estim-cli-test-passphrase"
#define BASE                                                                                       \
    " --model " STORIES " --dataset pip --batch 4 --seq-len 32 --accumulate 2 --threads 1"         \
    " --json"

static char tmp[128], home[256];

/* The stdout lines of a command that are JSON objects with "event" == ev, in order (up to max);
 * returns their count. Each *out is owned (cJSON_Delete). */
static int events(char *text, const char *ev, cJSON **out, int max)
{
    int n = 0;
    for (char *line = strtok(text, "\n"); line != NULL; line = strtok(NULL, "\n")) {
        cJSON *j = cJSON_Parse(line);
        const cJSON *e = cJSON_GetObjectItemCaseSensitive(j, "event");
        if (cJSON_IsString(e) && !strcmp(e->valuestring, ev) && n < max)
            out[n++] = j;
        else
            cJSON_Delete(j);
    }
    return n;
}

static double num(const cJSON *o, const char *k)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsNumber(v) ? v->valuedouble : (double)NAN;
}

/* The winner of an lr_search event's candidates (train/lrsearch.c): the largest rate whose loss
 * is within a quarter of the best improvement (start_loss - lowest) of the lowest finite loss,
 * the largest rate tried left out unless it is the only finite one. 0 if none. */
static double search_winner(const cJSON *search)
{
    const cJSON *cands = cJSON_GetObjectItemCaseSensitive(search, "candidates");
    int n = cJSON_GetArraySize(cands), top = 0, b = -1;
    double lr[16], loss[16];
    for (int i = 0; i < n && i < 16; i++) {
        lr[i] = num(cJSON_GetArrayItem(cands, i), "lr");
        loss[i] = num(cJSON_GetArrayItem(cands, i), "loss");
        top = lr[i] > lr[top] ? i : top;
    }
    n = n < 16 ? n : 16;
    for (int i = 0; i < n; i++)
        if (i != top && isfinite(loss[i]) && (b < 0 || loss[i] < loss[b]))
            b = i;
    if (b < 0)
        return n > 0 && isfinite(loss[top]) ? lr[top] : 0.0;
    double gain = num(search, "start_loss") - loss[b];
    double within = loss[b] + (gain > 0 ? 0.25 * gain : 0.0);
    for (int i = 0; i < n; i++)
        if (i != top && isfinite(loss[i]) && loss[i] <= within && lr[i] > lr[b])
            b = i;
    return lr[b];
}

/* The rate a run takes from its search before the backoff: the winner's, at most a tenth of the
 * smallest candidate that diverged (its loss null: NAN here; train/lrsearch.c
 * pk_lr_search_rate). */
static double search_capped(const cJSON *search, double winner)
{
    const cJSON *cands = cJSON_GetObjectItemCaseSensitive(search, "candidates");
    double edge = 0;
    for (int i = 0; i < cJSON_GetArraySize(cands); i++) {
        double lr = num(cJSON_GetArrayItem(cands, i), "lr");
        if (!isfinite(num(cJSON_GetArrayItem(cands, i), "loss")) && (edge == 0 || lr < edge))
            edge = lr;
    }
    return edge > 0 && winner > edge / 10 * 1.0001 ? edge / 10 : winner;
}

/* The lr_search event in out (consumed): the chosen rate is the winner (search_capped) divided
 * by `backoff`. Returns the chosen rate; *winner (may be NULL) gets the winner's. */
static double check_lr_search(char *out, double backoff, double *winner)
{
    cJSON *ls[2] = {0};
    PK_CHECK_EQ(out ? events(out, "lr_search", ls, 2) : 0, 1);
    const cJSON *cands = cJSON_GetObjectItemCaseSensitive(ls[0], "candidates");
    double chosen = num(ls[0], "chosen"), best_lr = search_winner(ls[0]);
    PK_CHECK(cJSON_GetArraySize(cands) >= 5);
    /* the rates are printed to 6 significant digits (%g) */
    PK_CHECK(chosen > 0 && fabs(chosen - search_capped(ls[0], best_lr) / backoff) <= 1e-5 * chosen);
    if (winner)
        *winner = best_lr;
    cJSON_Delete(ls[0]);
    return chosen;
}

/* The run's settings: fzoo, Rademacher, the chosen rate and the search. */
static void check_run_config(long long run, double chosen)
{
    char *show = NULL;
    PK_CHECK_EQ(run_fmt(&show, RUN_SHOW_FAILURE, "%s runs show %lld --json --home %s", POCKETLLM,
                        run, home),
                0);
    cJSON *s = show ? cJSON_Parse(show) : NULL;
    const cJSON *cfg = cJSON_GetObjectItemCaseSensitive(s, "config");
    const cJSON *est = cJSON_GetObjectItemCaseSensitive(cfg, "estimator");
    const cJSON *z = cJSON_GetObjectItemCaseSensitive(cfg, "z");
    PK_CHECK(cJSON_IsString(est) && !strcmp(est->valuestring, "fzoo"));
    PK_CHECK(cJSON_IsString(z) && !strcmp(z->valuestring, "rademacher"));
    PK_CHECK(fabs(num(cfg, "lr") - chosen) <= 1e-5 * chosen);
    PK_CHECK(fabs(num(cJSON_GetObjectItemCaseSensitive(cfg, "lr_search"), "chosen") - chosen) <=
             1e-5 * chosen);
    cJSON_Delete(s);
    free(show);
}

/* run against a plain run: plotted by loss evaluations, and by training seconds only once the
 * plain run has eval points. */
static void check_plots_against_plain(long long run)
{
    char *p = NULL, *q = NULL;
    PK_CHECK_EQ(run_fmt(&q, RUN_SHOW_FAILURE, "%s train" BASE " --steps 2 --lr 1e-4 --home %s",
                        POCKETLLM, home),
                0);
    cJSON *plain = q ? cJSON_Parse(last_line(q)) : NULL;
    PK_CHECK_EQ((long long)num(plain, "evaluations"), 2LL * 2 * 2);
    PK_CHECK_EQ(run_fmt(&p, RUN_SHOW_FAILURE,
                        "%s plot --run %lld --run %lld --x evaluations --out %s/cmp.svg --home %s",
                        POCKETLLM, run, (long long)num(plain, "run"), tmp, home),
                0);
    /* by training seconds: the plain run has no eval point to take them from */
    char *e = NULL;
    PK_CHECK(run_fmt(&e, RUN_MERGE_STDERR,
                     "%s plot --run %lld --run %lld --x seconds --out %s/sec.svg --home %s",
                     POCKETLLM, run, (long long)num(plain, "run"), tmp, home) != 0);
    PK_CHECK(e && strstr(e, "no eval points with training seconds") != NULL);
    free(e);
    cJSON_Delete(plain);
    free(q);
    PK_CHECK_EQ(run_fmt(&q, RUN_SHOW_FAILURE,
                        "%s train" BASE " --steps 2 --lr 1e-4 --eval-dataset pip-heldout"
                        " --eval-every 1 --home %s",
                        POCKETLLM, home),
                0);
    plain = q ? cJSON_Parse(last_line(q)) : NULL;
    free(p);
    PK_CHECK_EQ(run_fmt(&p, RUN_SHOW_FAILURE,
                        "%s plot --run %lld --run %lld --x seconds --out %s/sec.svg --home %s",
                        POCKETLLM, run, (long long)num(plain, "run"), tmp, home),
                0);
    cJSON_Delete(plain);
    free(q);
    char svg[300];
    snprintf(svg, sizeof svg, "%s/sec.svg", tmp);
    char *sec = slurp(svg, NULL);
    PK_CHECK(sec && strstr(sec, ">training seconds</text>") != NULL);
    free(sec);
    snprintf(svg, sizeof svg, "%s/cmp.svg", tmp);
    PK_CHECK(file_bytes(svg) > 0);
    free(p);
}

/* fzoo, N = 3, accumulate 2, evals at steps 3 and 6, --lr auto. */
static void test_lm_events(void)
{
    char *o = NULL;
    PK_CHECK_EQ(run_fmt(&o, RUN_SHOW_FAILURE,
                        "%s train" BASE " --estimator fzoo --perturbations 3 --lr auto --steps 6"
                        " --eval-dataset pip-heldout --eval-every 3 --home %s",
                        POCKETLLM, home),
                0);
    char *copy = o ? strdup(o) : NULL, *copy2 = o ? strdup(o) : NULL;
    cJSON *ev[8] = {0};
    int n = o ? events(o, "eval", ev, 8) : 0;
    PK_CHECK_EQ(n, 2);
    for (int i = 0; i < n; i++) {
        double step = num(ev[i], "step");
        PK_CHECK_EQ((long long)step, 3LL * (i + 1));
        PK_CHECK_EQ((long long)num(ev[i], "evaluations"), (long long)step * 4 * 2);
        PK_CHECK(num(ev[i], "elapsed_s") >= 0.0 && isfinite(num(ev[i], "loss")));
        PK_CHECK(cJSON_GetObjectItemCaseSensitive(ev[i], "accuracy") == NULL);
        if (i > 0)
            PK_CHECK(num(ev[i], "elapsed_s") >= num(ev[i - 1], "elapsed_s"));
    }
    double chosen = check_lr_search(copy, 1.0, NULL); /* 6 steps: the winner itself */
    /* the final line */
    cJSON *fin = copy2 ? cJSON_Parse(last_line(copy2)) : NULL;
    PK_CHECK_EQ((long long)num(fin, "evaluations"), 48LL);
    PK_CHECK(num(fin, "elapsed_s") >= num(ev[1], "elapsed_s"));
    long long run = (long long)num(fin, "run");
    check_run_config(run, chosen);
    check_plots_against_plain(run);
    for (int i = 0; i < n; i++)
        cJSON_Delete(ev[i]);
    cJSON_Delete(fin);
    free(copy);
    free(copy2);
    free(o);
}

/* The final line's weights hash of a 2-step fzoo run training `spec` (NULL on failure; free). */
static char *top_run_weights(const char *spec)
{
    char *o = NULL, *w = NULL;
    PK_CHECK_EQ(run_fmt(&o, RUN_SHOW_FAILURE,
                        "%s train" BASE " --estimator fzoo --perturbations 2 --lr 1e-3 --steps 2"
                        " --trainable '%s' --home %s",
                        POCKETLLM, spec, home),
                0);
    cJSON *fin = o ? cJSON_Parse(last_line(o)) : NULL;
    const cJSON *wj = cJSON_GetObjectItemCaseSensitive(fin, "weights");
    if (cJSON_IsString(wj))
        w = strdup(wj->valuestring);
    cJSON_Delete(fin);
    free(o);
    return w;
}

/* --trainable top:K: the top block alone trains (the same weights as the regex naming it);
 * top-mlp:K its MLP half (the same weights as the regex naming the post-attention norm and the
 * FFN, another hash than the whole block's); a K beyond the model's blocks is refused before any
 * step, with no progress line. */
static void test_top_trainable(void)
{
    char *bad = NULL;
    char *wa = top_run_weights("top:1"), *wb = top_run_weights("layers\\.4\\.");
    char *wm = top_run_weights("top-mlp:1");
    char *wr = top_run_weights("layers\\.4\\.(mlp|post_attention_layernorm)\\.");
    PK_CHECK(wa && wb && strcmp(wa, wb) == 0);
    PK_CHECK(wm && wr && strcmp(wm, wr) == 0 && strcmp(wm, wa) != 0);
    free(wa);
    free(wb);
    free(wm);
    free(wr);
    PK_CHECK_EQ(run_fmt(&bad, 0, "%s train" BASE " --steps 2 --trainable top:6 --home %s 2>&1",
                        POCKETLLM, home),
                1);
    PK_CHECK(bad && strstr(bad, "'top:6': want top:K") && strstr(bad, "K from 1 to 5"));
    PK_CHECK(bad && strstr(bad, "\"label\":\"train\"") == NULL); /* no progress or done line */
    free(bad);
    bad = NULL;
    /* another estimator's settings: a note each, the run as without them */
    PK_CHECK_EQ(run_fmt(&bad, 0,
                        "%s train" BASE " --steps 1 --perturbations 4 --hessian-every 3 "
                        "--fzoo-baseline mean --home %s 2>&1",
                        POCKETLLM, home),
                0);
    PK_CHECK(bad && strstr(bad, "note: --estimator spsa does not use --perturbations; ignored"));
    PK_CHECK(bad && strstr(bad, "note: --estimator spsa does not use --hessian-every; ignored"));
    PK_CHECK(bad && strstr(bad, "note: --estimator spsa does not use --fzoo-baseline; ignored"));
    PK_CHECK(bad && !strstr(bad, "does not use --spsa-q"));
    free(bad);
}

/* Run `run`'s seed log (exported to TMP/NAME.seedlog) replayed on the base model gives the
 * run's weights hash w, and the log holds `line` once. */
static void check_seedlog_replay(long long run, const char *name, const char *line, const cJSON *w)
{
    char log[600], out[600], *rep = NULL;
    snprintf(log, sizeof log, "%s/%s.seedlog", tmp, name);
    snprintf(out, sizeof out, "%s/%s-replay", tmp, name);
    PK_CHECK_EQ(run_fmt(&rep, RUN_SHOW_FAILURE,
                        "%s export --run %lld --seed-log %s --home %s && %s replay --seed-log %s "
                        "--model %s --out %s 2>&1 && grep -c '^%s$' %s",
                        POCKETLLM, run, log, home, POCKETLLM, log, STORIES, out, line, log),
                0);
    PK_CHECK(rep && cJSON_IsString(w) && strstr(rep, w->valuestring) != NULL); /* the same hash */
    PK_CHECK(rep && strstr(rep, "\n1\n") != NULL);                             /* one such line */
    free(rep);
}

/* --perturb-stages 1 with the top block trainable: the run config has it, its seed log's
 * "perturb_stages 1" line replays to the run's weights; with --perturb-layers too, a usage
 * error. */
static void test_perturb_stages(void)
{
    char *o = NULL, *rep = NULL, *bad = NULL;
    PK_CHECK_EQ(run_fmt(&o, RUN_SHOW_FAILURE,
                        "%s train" BASE " --estimator fzoo --fzoo-baseline mean --perturbations 3"
                        " --perturb-stages 1 --trainable top:1 --lr 1e-3 --steps 4 --home %s",
                        POCKETLLM, home),
                0);
    cJSON *fin = o ? cJSON_Parse(last_line(o)) : NULL;
    long long run = (long long)num(fin, "run");
    const cJSON *w = cJSON_GetObjectItemCaseSensitive(fin, "weights");
    PK_CHECK_EQ(
        run_fmt(&rep, RUN_SHOW_FAILURE, "%s runs show %lld --json --home %s", POCKETLLM, run, home),
        0);
    PK_CHECK(rep && strstr(rep, "\"perturb_stages\":1")); /* runs show's config */
    check_seedlog_replay(run, "stages", "perturb_stages 1", w);
    PK_CHECK_EQ(run_fmt(&bad, 0,
                        "%s train" BASE " --perturb-stages 1 --perturb-layers 2 --steps 1 "
                        "--home %s 2>&1",
                        POCKETLLM, home),
                2);
    PK_CHECK(bad && strstr(bad, "--perturb-stages and --perturb-layers: one of them at most"));
    cJSON_Delete(fin);
    free(o);
    free(rep);
    free(bad);
}

/* --fzoo-baseline mean: N evaluations a step instead of N + 1 (the eval events count them), the
 * setting kept in the run and its seed log, and the seed log replays to the run's weights; a
 * value it does not know is a usage error. */
static void test_fzoo_baseline(void)
{
    char *o = NULL, *show = NULL, *bad = NULL;
    PK_CHECK_EQ(run_fmt(&o, RUN_SHOW_FAILURE,
                        "%s train" BASE " --estimator fzoo --fzoo-baseline mean --perturbations 3"
                        " --lr 1e-3 --steps 4 --eval-dataset pip-heldout --eval-every 2 --home %s",
                        POCKETLLM, home),
                0);
    char *copy = o ? strdup(o) : NULL;
    cJSON *ev[4] = {0};
    int n = o ? events(o, "eval", ev, 4) : 0;
    PK_CHECK_EQ(n, 2);
    for (int i = 0; i < n; i++) /* 3 per micro-batch, 2 micro-batches a step */
        PK_CHECK_EQ((long long)num(ev[i], "evaluations"), 2LL * (i + 1) * 3 * 2);
    cJSON *fin = copy ? cJSON_Parse(last_line(copy)) : NULL;
    long long run = (long long)num(fin, "run");
    const cJSON *w = cJSON_GetObjectItemCaseSensitive(fin, "weights");
    PK_CHECK_EQ((long long)num(fin, "evaluations"), 24LL);
    PK_CHECK_EQ(run_fmt(&show, RUN_SHOW_FAILURE, "%s runs show %lld --json --home %s", POCKETLLM,
                        run, home),
                0);
    cJSON *sj = show ? cJSON_Parse(show) : NULL;
    const cJSON *b = cJSON_GetObjectItemCaseSensitive(
        cJSON_GetObjectItemCaseSensitive(sj, "config"), "fzoo_baseline");
    PK_CHECK(cJSON_IsString(b) && !strcmp(b->valuestring, "mean"));
    check_seedlog_replay(run, "mean", "fzoo_baseline mean", w);
    PK_CHECK_EQ(run_fmt(&bad, 0,
                        "%s train" BASE " --estimator fzoo --fzoo-baseline median --steps 1 "
                        "--home %s 2>&1",
                        POCKETLLM, home),
                2);
    PK_CHECK(bad && strstr(bad, "--fzoo-baseline") && strstr(bad, "unperturbed|mean"));
    for (int i = 0; i < n; i++)
        cJSON_Delete(ev[i]);
    cJSON_Delete(fin);
    cJSON_Delete(sj);
    free(copy);
    free(o);
    free(show);
    free(bad);
}

/* The final eval loss of a train --json output (consumed), NaN if none; *weights (may be NULL,
 * 65 bytes) gets the final line's weights hash. */
static double final_eval(char *out, char *weights)
{
    cJSON *fin = out ? cJSON_Parse(last_line(out)) : NULL;
    const cJSON *w = cJSON_GetObjectItemCaseSensitive(fin, "weights");
    if (weights)
        snprintf(weights, 65, "%s", cJSON_IsString(w) ? w->valuestring : "");
    cJSON_Delete(fin);
    cJSON *ev[4] = {0};
    int n = out ? events(out, "eval", ev, 4) : 0;
    double l = n > 0 ? num(ev[n - 1], "loss") : (double)NAN;
    for (int i = 0; i < n; i++)
        cJSON_Delete(ev[i]);
    return l;
}

#define LONG " --estimator fzoo --perturbations 4 --eval-dataset pip-heldout --seed 5"

/* --lr auto over a long constant-rate run (DESIGN 4): the winner of the 10-step search drifts
 * up over 90 steps (here it ends above the loss it had at step 30), so the run takes a third of
 * it and ends far lower; the search and the run are the same bits at 2 threads. A run of 45
 * steps takes the winner / 1.5, a cosine run of 45 the winner itself. */
static void test_lr_backoff(void)
{
    char *o = NULL, *o2 = NULL, *w = NULL, h1[65], h2[65];
    PK_CHECK_EQ(run_fmt(&o, RUN_SHOW_FAILURE,
                        "%s train" BASE LONG " --lr auto --steps 90 --eval-every 30 --home %s",
                        POCKETLLM, home),
                0);
    PK_CHECK_EQ(run_fmt(&o2, RUN_SHOW_FAILURE,
                        "%s train" BASE LONG " --lr auto --steps 90 --eval-every 30 --home %s"
                        " --threads 2",
                        POCKETLLM, home),
                0);
    char *c1 = o ? strdup(o) : NULL, *c2 = o2 ? strdup(o2) : NULL;
    const char *s1 = c1 ? strstr(c1, "{\"event\":\"lr_search\"") : NULL;
    const char *s2 = c2 ? strstr(c2, "{\"event\":\"lr_search\"") : NULL;
    PK_CHECK(s1 && s2 && strcspn(s1, "\n") == strcspn(s2, "\n") &&
             !strncmp(s1, s2, strcspn(s1, "\n")));
    double winner = 0, chosen = check_lr_search(c1, 3.0, &winner);
    double auto_loss = final_eval(o, h1);
    (void)final_eval(o2, h2);
    PK_CHECK(h1[0] && !strcmp(h1, h2));
    PK_CHECK_EQ(run_fmt(&w, RUN_SHOW_FAILURE,
                        "%s train" BASE LONG " --lr %.9g --steps 90 --eval-every 30 --home %s",
                        POCKETLLM, winner, home),
                0);
    cJSON *ev[4] = {0};
    char *wc = w ? strdup(w) : NULL;
    int n = wc ? events(wc, "eval", ev, 4) : 0;
    PK_CHECK_EQ(n, 3);
    double win_loss = final_eval(w, NULL);
    if (n == 3)
        PK_CHECK(num(ev[2], "loss") > num(ev[0], "loss")); /* the winner drifts up */
    PK_CHECK(isfinite(auto_loss) && auto_loss + 0.2 < win_loss);
    printf("lr auto over 90 steps: winner %g ends at %.4f, chosen %g at %.4f\n", winner, win_loss,
           chosen, auto_loss);
    for (int i = 0; i < n; i++)
        cJSON_Delete(ev[i]);
    free(wc);
    free(w);
    free(c1);
    free(c2);
    free(o);
    free(o2);
    /* 45 steps: winner / 1.5; with a cosine decay, the winner */
    static const char *const sched[2] = {"constant", "cosine"};
    for (int k = 0; k < 2; k++) {
        o = NULL;
        PK_CHECK_EQ(run_fmt(&o, RUN_SHOW_FAILURE,
                            "%s train" BASE LONG " --lr auto --steps 45 --schedule %s --home %s",
                            POCKETLLM, sched[k], home),
                    0);
        double wk = 0;
        (void)check_lr_search(o, k == 0 ? 1.5 : 1.0, &wk);
        PK_CHECK(wk == winner); /* the same search: it does not depend on the run's length */
        free(o);
    }
}

/* In train --help, option opt's row shows default def. */
static void check_help_default(const char *help, const char *opt, const char *def)
{
    const char *h = help ? strstr(help, opt) : NULL;
    const char *eol = h ? strchr(h, '\n') : NULL;
    const char *d = h ? strstr(h, def) : NULL;
    PK_CHECK(d != NULL && (eol == NULL || d < eol));
}

/* hizoo's default --hessian-smooth is 1e-8 (README "Faster convergence": 1e-6 made H a rate
 * decay) and --hessian-every 16: train --help says so; a run without the smoothing stores it
 * and the run with --hessian-every 2 stores that. */
static void check_hizoo_default(long long run)
{
    char *o = NULL;
    PK_CHECK_EQ(run_fmt(&o, RUN_SHOW_FAILURE, "%s train --help", POCKETLLM), 0);
    check_help_default(o, "--hessian-smooth", "[1e-08]");
    check_help_default(o, "--hessian-every", "[16]");
    free(o);
    o = NULL;
    PK_CHECK(run > 0);
    PK_CHECK_EQ(
        run_fmt(&o, RUN_SHOW_FAILURE, "%s runs show %lld --json --home %s", POCKETLLM, run, home),
        0);
    cJSON *s = o ? cJSON_Parse(o) : NULL;
    const cJSON *cfg = cJSON_GetObjectItemCaseSensitive(s, "config");
    PK_CHECK(fabs(num(cfg, "hessian_smooth") - 1e-8) < 1e-15);
    PK_CHECK_EQ((int)num(cfg, "hessian_every"), 2);
    cJSON_Delete(s);
    free(o);
}

/* classify: the eval events carry the accuracy; hizoo with --hessian-every 2 counts 2q + 1
 * evaluations on steps 0 and 2, 2q on steps 1 and 3 (x accumulate 2). */
static void test_classify_events(void)
{
    char path[300], *o = NULL;
    snprintf(path, sizeof path, "%s/cls.jsonl", tmp);
    FILE *f = fopen(path, "w");
    PK_CHECK(f != NULL);
    for (int i = 0; f && i < 8; i++)
        fprintf(f, "{\"text\": \"One day, Tom %s.\", \"label\": %d}\n",
                i % 2 ? "lost the red ball" : "found a pretty flower", i % 2);
    if (f)
        fclose(f);
    PK_CHECK_EQ(run_fmt(NULL, RUN_SHOW_FAILURE, "%s import %s --dataset cls --home %s >/dev/null",
                        POCKETLLM, path, home),
                0);
    PK_CHECK_EQ(run_fmt(&o, RUN_SHOW_FAILURE,
                        "%s train" BASE " --dataset cls --objective classify --template "
                        "'{text} They felt' --labels ' happy, sad' --estimator hizoo "
                        "--hessian-budget 1.5 --hessian-every 2 --lr 1e-4 --steps 4 "
                        "--eval-dataset cls --eval-every 2 --home %s",
                        POCKETLLM, home),
                0);
    cJSON *fin = o ? cJSON_Parse(last_line(o)) : NULL; /* before events() cuts o up */
    cJSON *ev[4] = {0};
    int n = o ? events(o, "eval", ev, 4) : 0;
    PK_CHECK_EQ(n, 2);
    for (int i = 0; i < n; i++) {
        double a = num(ev[i], "accuracy");
        PK_CHECK(a >= 0.0 && a <= 1.0);
        PK_CHECK_EQ((long long)num(ev[i], "evaluations"), (3LL + 2) * 2 * (i + 1));
        cJSON_Delete(ev[i]);
    }
    PK_CHECK_EQ((long long)num(fin, "evaluations"), (3LL + 2) * 2 * 2);
    free(o);
    check_hizoo_default((long long)num(fin, "run"));
    cJSON_Delete(fin);
    /* the whole model's diagonal over the default budget: refused, exit 1, sizes named */
    PK_CHECK_EQ(run_fmt(&o, RUN_MERGE_STDERR,
                        "%s train" BASE " --estimator hizoo --steps 1 --home %s", POCKETLLM, home),
                1);
    PK_CHECK(o != NULL && strstr(o, "Hessian diagonal") != NULL && strstr(o, "MB") != NULL);
    free(o);
    /* a tiny budget for --trainable all: the flag to change named first, then what the diagonal
     * needs and what the budget allows, neither printed as zero */
    PK_CHECK_EQ(run_fmt(&o, RUN_MERGE_STDERR,
                        "%s train" BASE " --estimator hizoo --trainable all --hessian-budget 0.001 "
                        "--steps 1 --home %s",
                        POCKETLLM, home),
                1);
    PK_CHECK(o != NULL &&
             strstr(o, "pocketllm train: --hessian-budget: hizoo: the fp32 Hessian diagonal of "
                       "the trainable tensors needs 1.05 MB, more than the budget of 1.04 KB "
                       "(0.001 x the 1.05 MB of weights)") != NULL);
    PK_CHECK(o != NULL && strstr(o, " 0.0 ") == NULL && strstr(o, "--estimator:") == NULL);
    free(o);
}

/* bench mezo --perturb-layers K: fzoo steps through sweeps and one pass per evaluation give the
 * same rows; per pass every evaluation runs all 5 blocks, through sweeps fewer. N = 1 is refused
 * naming the option. */
static void test_bench_layers(void)
{
    char *o = NULL;
    PK_CHECK_EQ(run_fmt(&o, RUN_SHOW_FAILURE,
                        "%s bench mezo --model " STORIES " --batch 2 --seq 16 --steps 2 "
                        "--threads 1 --perturbations 4 --perturb-layers 1",
                        POCKETLLM),
                0);
    cJSON *j = o ? cJSON_Parse(o) : NULL;
    PK_CHECK(j != NULL);
    PK_CHECK(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(j, "fzoo_same_bits")));
    PK_CHECK_EQ((int)num(j, "fzoo_layers"), 1);
    PK_CHECK_EQ((int)num(j, "fzoo_perturbations"), 4);
    PK_CHECK(num(j, "fzoo_pass_blocks") == 5.0 * 5);
    /* each perturbation's lowest block is its only one: at least L + 4 x 1 blocks */
    PK_CHECK(num(j, "fzoo_sweep_blocks") >= 9.0 && num(j, "fzoo_sweep_blocks") < 25.0);
    PK_CHECK(num(j, "fzoo_sweep_step_min_s") <= num(j, "fzoo_sweep_step_s"));
    PK_CHECK(num(j, "fzoo_sweep_step_s") <= num(j, "fzoo_sweep_step_max_s"));
    PK_CHECK(num(j, "fzoo_pass_step_s") > 0.0 && num(j, "fzoo_sweep_width") >= 1.0);
    cJSON_Delete(j);
    free(o);
    o = NULL;
    PK_CHECK_EQ(run_fmt(&o, RUN_MERGE_STDERR,
                        "%s bench mezo --model " STORIES " --batch 2 --seq 16 --steps 1 "
                        "--perturbations 1 --perturb-layers 1",
                        POCKETLLM),
                1);
    PK_CHECK(o != NULL && strstr(o, "bench mezo: --perturbations: fzoo needs 2") != NULL);
    free(o);
}

/* --lr-guard (DESIGN 4): on a hand-set rate at which the lm loss climbs (the settings of
 * test_trainer's test_lr_guard_run), `on` prints {"event":"lr_cut","step":30,"lr":R,"loss":L,
 * "lowest":M} first (a second cut later depends on the BLAS kernel), with R a third of the
 * rate and L above M, counts the cuts in its final line (lr_cuts), and stores the setting in the
 * run (resuming it goes on at the cut rate: test_trainer test_lr_guard_run); `off` and the
 * default for a hand-set rate print none and end elsewhere. */
#define GUARDED                                                                                    \
    " --model " STORIES " --dataset pip --batch 8 --seq-len 64 --eps 1e-3 --lr 1e-3 --seed 2024"   \
    " --threads 1 --json"

/* 1 if the run of a train --json output stores "lr_guard": true, 0 if not, -1 on failure. */
static int guard_stored(const char *out)
{
    char *copy = out ? strdup(out) : NULL, *show = NULL;
    cJSON *fin = copy ? cJSON_Parse(last_line(copy)) : NULL;
    long long run = (long long)num(fin, "run");
    cJSON_Delete(fin);
    free(copy);
    if (run <= 0 || run_fmt(&show, RUN_SHOW_FAILURE, "%s runs show %lld --json --home %s",
                            POCKETLLM, run, home) != 0) {
        free(show);
        return -1;
    }
    cJSON *s = cJSON_Parse(show);
    const cJSON *g =
        cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(s, "config"), "lr_guard");
    int r = s == NULL ? -1 : cJSON_IsTrue(g);
    cJSON_Delete(s);
    free(show);
    return r;
}

/* The stdout of a 75-step guarded-settings run with `extra` options (owned), NULL on failure. */
static char *guarded_run(const char *extra)
{
    char *o = NULL;
    PK_CHECK_EQ(run_fmt(&o, RUN_SHOW_FAILURE, "%s train" GUARDED " --steps 75%s --home %s",
                        POCKETLLM, extra, home),
                0);
    return o;
}

static void test_lr_guard_cli(void)
{
    char hon[65] = "", hoff[65] = "", hd[65] = "";
    char *on = guarded_run(" --lr-guard on"), *off = guarded_run(" --lr-guard off");
    char *dflt = guarded_run("");
    char *c_on = on ? strdup(on) : NULL, *c_off = off ? strdup(off) : NULL;
    cJSON *cut[4] = {0}, *none[4] = {0};
    int n = c_on ? events(c_on, "lr_cut", cut, 4) : 0;
    PK_CHECK(n >= 1 && n <= 2); /* a second cut depends on the BLAS kernel (test_trainer) */
    if (n >= 1) {
        PK_CHECK_EQ((long long)num(cut[0], "step"), 30LL);
        PK_CHECK(fabs(num(cut[0], "lr") - 1e-3 / 3) < 1e-9);
        PK_CHECK(num(cut[0], "loss") > num(cut[0], "lowest") && num(cut[0], "lowest") > 0);
    }
    PK_CHECK_EQ(c_off ? events(c_off, "lr_cut", none, 4) : -1, 0);
    /* the setting is stored with the run (a resume goes on guarded: test_trainer) */
    PK_CHECK(guard_stored(on) == 1 && guard_stored(off) == 0);
    /* the final line counts the cuts */
    cJSON *fon = on ? cJSON_Parse(last_line(on)) : NULL,
          *foff = off ? cJSON_Parse(last_line(off)) : NULL;
    PK_CHECK(num(fon, "lr_cuts") == (double)n && num(foff, "lr_cuts") == 0.0);
    cJSON_Delete(fon);
    cJSON_Delete(foff);
    (void)final_eval(on, hon);
    (void)final_eval(off, hoff);
    (void)final_eval(dflt, hd);
    PK_CHECK(hon[0] && hoff[0] && strcmp(hon, hoff) != 0 && !strcmp(hoff, hd));
    for (int i = 0; i < n; i++)
        cJSON_Delete(cut[i]);
    free(c_on);
    free(c_off);
    free(on);
    free(off);
    free(dflt);
}

int main(void)
{
    unsetenv("POCKETLLM_HOME");
    setenv("POCKETLLM_PASSPHRASE", PASS, 1);
    PK_CHECK(make_tmpdir(tmp, sizeof tmp, "estimcli"));
    snprintf(home, sizeof home, "%s/home", tmp);
    PK_CHECK_EQ(run_fmt(NULL, RUN_SHOW_FAILURE,
                        "%s init --home %s --opslimit 1 --memlimit 8192 >/dev/null", POCKETLLM,
                        home),
                0);
    PK_CHECK_EQ(run_fmt(NULL, RUN_SHOW_FAILURE,
                        "%s import %s/demo/data/train.txt --dataset pip --format txt --home %s "
                        ">/dev/null && %s import %s/demo/data/heldout.txt --dataset pip-heldout "
                        "--format txt --home %s >/dev/null",
                        POCKETLLM, PK_SOURCE_DIR, home, POCKETLLM, PK_SOURCE_DIR, home),
                0);
    test_lm_events();
    test_lr_backoff();
    test_lr_guard_cli();
    test_top_trainable();
    test_fzoo_baseline();
    test_perturb_stages();
    test_classify_events();
    test_bench_layers();
    rm_rf(tmp);
    return PK_TEST_DONE();
}
