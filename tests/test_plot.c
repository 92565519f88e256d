/* test_plot.c: pk_plot_svg output is a well-formed XML document (checked by a small checker
 * below: tags nest and match, attributes are quoted, entities are valid, one root element) with
 * an <svg> root and one <path> per curve whose points are where they should be; and pk_plot_run
 * on a real store run (steps + eval points) writes a file with both curves. */
#include "pk_crypto.h"
#include "pk_test.h"
#include "progress.h"
#include "test_util.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- a small XML well-formedness checker ---------------------------------------------------- */

typedef struct xml {
    const char *p;
    int depth;
    int roots;
    char stack[64][32];
    char root[32];
    const char *why;
} xml;

static int is_name_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '_' || c == ':' || c == '.';
}

static int entity(xml *x)
{
    static const char *const ok[] = {"&amp;", "&lt;", "&gt;", "&quot;", "&apos;"};
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++)
        if (!strncmp(x->p, ok[i], strlen(ok[i]))) {
            x->p += strlen(ok[i]);
            return 1;
        }
    if (x->p[1] == '#') {
        const char *q = x->p + 2;
        int hex = *q == 'x';
        q += hex;
        const char *start = q;
        while ((*q >= '0' && *q <= '9') ||
               (hex && ((*q >= 'a' && *q <= 'f') || (*q >= 'A' && *q <= 'F'))))
            q++;
        if (q > start && *q == ';') {
            x->p = q + 1;
            return 1;
        }
    }
    x->why = "bad entity";
    return 0;
}

static int name(xml *x, char *out, size_t n)
{
    size_t k = 0;
    if (!is_name_char(*x->p) || (*x->p >= '0' && *x->p <= '9') || *x->p == '-')
        return 0;
    while (is_name_char(*x->p)) {
        if (k + 1 < n)
            out[k++] = *x->p;
        x->p++;
    }
    out[k] = '\0';
    return 1;
}

static void skip_ws(xml *x)
{
    while (*x->p == ' ' || *x->p == '\n' || *x->p == '\t' || *x->p == '\r')
        x->p++;
}

/* After '<' of a start tag. */
static int start_tag(xml *x)
{
    char tag[32], attr[32], seen[32][32];
    int n_seen = 0;
    if (!name(x, tag, sizeof tag))
        return (x->why = "bad tag name"), 0;
    for (;;) {
        const char *before = x->p;
        skip_ws(x);
        if (*x->p == '/' && x->p[1] == '>') {
            x->p += 2;
            if (x->depth == 0)
                x->roots++, snprintf(x->root, sizeof x->root, "%s", tag);
            return 1;
        }
        if (*x->p == '>') {
            x->p++;
            if (x->depth == 0)
                x->roots++, snprintf(x->root, sizeof x->root, "%s", tag);
            if (x->depth >= 64)
                return (x->why = "too deep"), 0;
            snprintf(x->stack[x->depth++], 32, "%s", tag);
            return 1;
        }
        if (x->p == before)
            return (x->why = "no space before attribute"), 0;
        if (!name(x, attr, sizeof attr))
            return (x->why = "bad attribute name"), 0;
        for (int i = 0; i < n_seen; i++)
            if (!strcmp(seen[i], attr))
                return (x->why = "duplicate attribute"), 0;
        if (n_seen < 32)
            snprintf(seen[n_seen++], 32, "%s", attr);
        if (*x->p++ != '=')
            return (x->why = "attribute without ="), 0;
        char q = *x->p++;
        if (q != '"' && q != '\'')
            return (x->why = "unquoted attribute"), 0;
        while (*x->p && *x->p != q) {
            if (*x->p == '<')
                return (x->why = "< in attribute"), 0;
            if (*x->p == '&' && !entity(x))
                return 0;
            if (*x->p != '&' && *x->p != q)
                x->p++;
        }
        if (*x->p++ != q)
            return (x->why = "unterminated attribute"), 0;
    }
}

static int xml_check(const char *doc, char *root, size_t n)
{
    xml x = {.p = doc};
    if (!strncmp(x.p, "<?xml", 5)) {
        const char *e = strstr(x.p, "?>");
        if (!e)
            return 0;
        x.p = e + 2;
    }
    while (*x.p) {
        if (*x.p == '<') {
            x.p++;
            if (!strncmp(x.p, "!--", 3)) {
                const char *e = strstr(x.p, "-->");
                if (!e)
                    return 0;
                x.p = e + 3;
            } else if (*x.p == '/') {
                char tag[32];
                x.p++;
                if (!name(&x, tag, sizeof tag) || *x.p++ != '>' || x.depth == 0 ||
                    strcmp(tag, x.stack[--x.depth]) != 0) {
                    fprintf(stderr, "xml: mismatched end tag </%s>\n", tag);
                    return 0;
                }
            } else {
                if (x.depth == 0 && x.roots > 0)
                    return 0; /* a second root */
                if (!start_tag(&x)) {
                    fprintf(stderr, "xml: %s near \"%.40s\"\n", x.why, x.p);
                    return 0;
                }
            }
        } else if (*x.p == '&') {
            if (!entity(&x))
                return 0;
        } else {
            if (x.depth == 0 && !(*x.p == ' ' || *x.p == '\n' || *x.p == '\t' || *x.p == '\r'))
                return 0; /* text outside the root */
            x.p++;
        }
    }
    snprintf(root, n, "%s", x.root);
    return x.depth == 0 && x.roots == 1;
}

static void test_checker_rejects(void)
{
    char root[32];
    PK_CHECK(xml_check("<a><b/></a>", root, sizeof root));
    PK_CHECK(!xml_check("<a><b></a>", root, sizeof root));
    PK_CHECK(!xml_check("<a x=1/>", root, sizeof root));
    PK_CHECK(!xml_check("<a>&bogus;</a>", root, sizeof root));
    PK_CHECK(!xml_check("<a>x < y</a>", root, sizeof root));
    PK_CHECK(!xml_check("<a/><b/>", root, sizeof root));
    PK_CHECK(!xml_check("<a x=\"1\" x=\"2\"/>", root, sizeof root));
}

/* ---- helpers -------------------------------------------------------------------------------- */

/* The SVG file at path (owned), checked: readable, well-formed XML, an <svg> root. */
static char *read_svg(const char *path)
{
    char *svg = slurp(path, NULL);
    PK_CHECK(svg != NULL);
    if (svg) {
        char root[32] = "";
        PK_CHECK(xml_check(svg, root, sizeof root));
        PK_CHECK(strcmp(root, "svg") == 0);
    }
    return svg;
}

/* The d attribute of <path id="ID" ...>: counts M/L commands, writes the first point. */
static int path_points(const char *svg, const char *id, double *x0, double *y0)
{
    char key[64];
    snprintf(key, sizeof key, "<path id=\"%s\"", id);
    const char *p = strstr(svg, key);
    if (!p)
        return -1;
    const char *d = strstr(p, " d=\"");
    const char *end = strstr(p, "/>");
    if (!d || !end || d > end)
        return -1;
    d += 4;
    int n = 0;
    for (const char *q = d; *q && *q != '"'; q++)
        n += *q == 'M' || *q == 'L';
    if (sscanf(d, "M%lf %lf", x0, y0) != 2)
        return -1;
    return n;
}

/* ---- tests ---------------------------------------------------------------------------------- */

static void test_svg(void)
{
    double x[50], y[50], ex[5] = {0, 10, 20, 30, 49}, ey[5] = {3.0, 2.8, 2.6, 2.5, 2.45};
    for (int i = 0; i < 50; i++) {
        x[i] = i;
        y[i] = 3.0 - 0.01 * i + ((i % 2) ? 0.05 : -0.05);
    }
    y[7] = (double)NAN; /* skipped: the curve has a gap */
    pk_plot_series ser[2] = {
        {"train-loss", "train <loss> & \"more\"", "#1f77b4", x, y, 50, 0, 0},
        {"eval-loss", "eval loss", "#d62728", ex, ey, 5, 1, 0},
    };
    char path[] = "/tmp/pk_plot_XXXXXX";
    int fd = mkstemp(path);
    PK_CHECK(fd >= 0);
    if (fd < 0)
        return;
    FILE *f = fdopen(fd, "w");
    PK_CHECK_EQ(pk_plot_svg(f, "Run 1: <test> & 'quotes'", "step", "loss", ser, 2), PK_OK);
    fclose(f);
    char *svg = read_svg(path);
    if (svg) {
        PK_CHECK(strstr(svg, "xmlns=\"http://www.w3.org/2000/svg\"") != NULL);
        PK_CHECK(strstr(svg, "version=\"1.1\"") != NULL);
        PK_CHECK(strstr(svg, "Run 1: &lt;test&gt; &amp; &apos;quotes&apos;") != NULL);
        double x0 = 0, y0 = 0;
        PK_CHECK_EQ(path_points(svg, "train-loss", &x0, &y0), 49); /* 50 points minus the NaN */
        /* first point is at the left edge of the plot area (x = 0 is the minimum) */
        PK_CHECK_NEAR(x0, 80.0, 0.01);
        PK_CHECK_EQ(path_points(svg, "eval-loss", &x0, &y0), 5);
        int circles = 0;
        for (const char *q = svg; (q = strstr(q, "<circle")) != NULL; q++)
            circles++;
        PK_CHECK_EQ(circles, 5);
        PK_CHECK(strstr(svg, "id=\"legend\"") != NULL);
        PK_CHECK(strstr(svg, ">eval loss</text>") != NULL);
        PK_CHECK(strstr(svg, "<text") != NULL && strstr(svg, ">20</text>") != NULL); /* a tick */
    }
    free(svg);
    unlink(path);

    /* nothing finite to draw: an argument error, not an empty plot */
    double nan1[1] = {(double)NAN};
    pk_plot_series bad = {"x", "x", "#000", nan1, nan1, 1, 0, 0};
    PK_CHECK_EQ(pk_plot_svg(stdout, "t", "x", "y", &bad, 1), PK_ERR_ARG);
}

/* A new store at dir (passphrase "pw", the fastest Argon2id limits), open; NULL after saying why
 * on stderr. */
static pk_store *new_store(const char *dir)
{
    char err[256] = "";
    pk_store_params prm = pk_store_default_params();
    prm.opslimit = 1;
    prm.memlimit = 8192;
    pk_store *s = NULL;
    pk_status st = pk_store_init(dir, "pw", 2, prm, err, sizeof err);
    if (st == PK_OK)
        st = pk_store_open(dir, "pw", 2, &s, err, sizeof err);
    if (st != PK_OK)
        fprintf(stderr, "store %s: %s\n", dir, err);
    return s;
}

static void test_run_plot(void)
{
    char home[] = "/tmp/pk_plot_home_XXXXXX";
    PK_CHECK(mkdtemp(home) != NULL);
    char dir[300];
    snprintf(dir, sizeof dir, "%s/h", home);
    char err[256] = "";
    pk_store *s = new_store(dir);
    PK_CHECK(s != NULL);
    if (s == NULL)
        return;
    pk_example ex = {.text = "Pip has a red ball."};
    int64_t eid = 0, ds = 0, run = 0;
    PK_CHECK_EQ(pk_store_example_add(s, "pip", &ex, &eid, NULL, 0), PK_OK);
    PK_CHECK_EQ(pk_store_dataset_id(s, "pip", &ds, NULL, 0), PK_OK);
    PK_CHECK_EQ(pk_store_run_create(s, ds, "{}", "00", 40, &run, NULL, 0), PK_OK);
    char out[320];
    snprintf(out, sizeof out, "%s/loss.svg", home);
    /* an empty run: a clear NOTFOUND, no file */
    PK_CHECK_EQ(pk_plot_run(s, run, out, err, sizeof err), PK_ERR_NOTFOUND);
    PK_CHECK(strstr(err, "no logged steps") != NULL);
    PK_CHECK(access(out, F_OK) != 0);
    for (int step = 0; step < 40; step++) {
        pk_step_row rows[2];
        for (int q = 0; q < 2; q++) {
            rows[q] = (pk_step_row){.step = step,
                                    .q_index = q,
                                    .seed = (uint64_t)(step * 2 + q),
                                    .g = 0.1f,
                                    .loss_plus = 3.0f - 0.02f * (float)step,
                                    .loss_minus = 2.9f - 0.02f * (float)step,
                                    .lr = 1e-3f,
                                    .eps = 1e-3f};
        }
        PK_CHECK_EQ(pk_store_steps_append(s, run, rows, 2, NULL, 0), PK_OK);
        if (step % 10 == 9)
            PK_CHECK_EQ(
                pk_store_eval_append(s, run, step + 1, 2.9 - 0.02 * step, (double)NAN, NULL, 0),
                PK_OK);
    }
    PK_CHECK_EQ(pk_plot_run(s, run, out, err, sizeof err), PK_OK);
    char *svg = read_svg(out);
    if (svg) {
        double x0, y0;
        PK_CHECK_EQ(path_points(svg, "train-loss", &x0, &y0), 40); /* one point per step */
        PK_CHECK_EQ(path_points(svg, "train-loss-raw", &x0, &y0), 40);
        PK_CHECK_EQ(path_points(svg, "eval-loss", &x0, &y0), 4);
    }
    free(svg);
    /* an unwritable destination: an IO error naming the file */
    PK_CHECK_EQ(pk_plot_run(s, run, "/nonexistent-dir/x.svg", err, sizeof err), PK_ERR_IO);
    PK_CHECK(strstr(err, "/nonexistent-dir/x.svg") != NULL);
    pk_store_close(s);
    PK_CHECK_EQ(remove_tree(home), 0);
}

/* The last point of <path id="ID" ...>'s d attribute. */
static int path_last(const char *svg, const char *id, double *x, double *y)
{
    char key[64];
    snprintf(key, sizeof key, "<path id=\"%s\"", id);
    const char *p = strstr(svg, key);
    const char *d = p ? strstr(p, " d=\"") : NULL;
    const char *end = d ? strchr(d + 4, '"') : NULL;
    if (!end)
        return -1;
    const char *last = NULL;
    for (const char *q = d + 4; q < end; q++)
        if (*q == 'M' || *q == 'L')
            last = q;
    return last && sscanf(last + 1, "%lf %lf", x, y) == 2 ? 0 : -1;
}

/* A run of 40 spsa steps with evals every 10; secs_per_step > 0 stores the seconds of each. */
static int64_t timed_run(pk_store *s, int64_t ds, double secs_per_step)
{
    int64_t run = 0;
    PK_CHECK_EQ(pk_store_run_create(s, ds, "{}", "00", 40, &run, NULL, 0), PK_OK);
    for (int step = 0; step < 40; step++) {
        pk_step_row row = {.step = step,
                           .seed = (uint64_t)step,
                           .g = 0.1f,
                           .lr = 1e-3f,
                           .loss_plus = 3.0f - 0.02f * (float)step,
                           .loss_minus = 2.9f - 0.02f * (float)step,
                           .eps = 1e-3f};
        PK_CHECK_EQ(pk_store_steps_append(s, run, &row, 1, NULL, 0), PK_OK);
        if (step % 10 != 9)
            continue;
        PK_CHECK_EQ(pk_store_eval_append(s, run, step + 1, 2.9, (double)NAN, NULL, 0), PK_OK);
        if (secs_per_step > 0.0)
            PK_CHECK_EQ(
                pk_store_eval_set_seconds(s, run, step + 1, secs_per_step * (step + 1), NULL, 0),
                PK_OK);
    }
    return run;
}

/* plot --x seconds: each run's steps placed at its training seconds (linear between evals). */
static void test_runs_by_seconds(void)
{
    char home[] = "/tmp/pk_plot_sec_XXXXXX";
    PK_CHECK(mkdtemp(home) != NULL);
    char dir[300], out[320], err[256] = "";
    snprintf(dir, sizeof dir, "%s/h", home);
    snprintf(out, sizeof out, "%s/sec.svg", home);
    pk_store *s = new_store(dir);
    PK_CHECK(s != NULL);
    if (s == NULL)
        return;
    pk_example ex = {.text = "Pip has a red ball."};
    int64_t eid = 0, ds = 0;
    PK_CHECK_EQ(pk_store_example_add(s, "pip", &ex, &eid, NULL, 0), PK_OK);
    PK_CHECK_EQ(pk_store_dataset_id(s, "pip", &ds, NULL, 0), PK_OK);
    int64_t fast = timed_run(s, ds, 0.5), slow = timed_run(s, ds, 1.0),
            untimed = timed_run(s, ds, 0);
    /* a missing eval point has no seconds to set */
    PK_CHECK_EQ(pk_store_eval_set_seconds(s, fast, 7, 1.0, err, sizeof err), PK_ERR_NOTFOUND);
    int64_t *ks = NULL;
    double *kt = NULL;
    size_t nk = 0;
    PK_CHECK_EQ(pk_store_eval_seconds(s, slow, &ks, &kt, &nk, NULL, 0), PK_OK);
    PK_CHECK_EQ(nk, 4);
    if (nk == 4) {
        PK_CHECK_EQ(ks[3], 40);
        PK_CHECK_NEAR(kt[3], 40.0, 1e-12);
    }
    free(ks);
    free(kt);
    PK_CHECK_EQ(pk_store_eval_seconds(s, untimed, &ks, &kt, &nk, NULL, 0), PK_OK);
    PK_CHECK_EQ(nk, 0);
    free(ks);
    free(kt);

    int64_t two[2] = {fast, slow};
    PK_CHECK_EQ(pk_plot_runs_x(s, two, 2, PK_PLOT_X_SECONDS, out, err, sizeof err), PK_OK);
    char *svg = read_svg(out);
    if (svg) {
        char id_fast[32], id_slow[32];
        snprintf(id_fast, sizeof id_fast, "run-%lld", (long long)fast);
        snprintf(id_slow, sizeof id_slow, "run-%lld", (long long)slow);
        double x0 = 0, y0 = 0, x1 = 0, y1 = 0;
        /* x from 0.5 s (fast's first step) to 40 s (slow's last): plot area 80..620 px */
        PK_CHECK_EQ(path_points(svg, id_fast, &x0, &y0), 40);
        PK_CHECK_NEAR(x0, 80.0, 0.01);
        PK_CHECK_EQ(path_last(svg, id_fast, &x1, &y1), 0);
        PK_CHECK_NEAR(x1, 80.0 + (20.0 - 0.5) / 39.5 * 540.0, 0.01); /* 40 steps at 0.5 s */
        PK_CHECK_EQ(path_points(svg, id_slow, &x0, &y0), 40);
        PK_CHECK_NEAR(x0, 80.0 + 0.5 / 39.5 * 540.0, 0.01);
        PK_CHECK_EQ(path_last(svg, id_slow, &x1, &y1), 0);
        PK_CHECK_NEAR(x1, 620.0, 0.01);
        PK_CHECK(strstr(svg, ">training seconds</text>") != NULL);
    }
    free(svg);
    PK_CHECK_EQ(remove(out), 0);
    /* by steps both runs end at the same x */
    PK_CHECK_EQ(pk_plot_runs_x(s, two, 2, PK_PLOT_X_STEP, out, err, sizeof err), PK_OK);
    svg = read_svg(out);
    if (svg) {
        char id[32];
        double x1 = 0, y1 = 0;
        snprintf(id, sizeof id, "run-%lld", (long long)fast);
        PK_CHECK_EQ(path_last(svg, id, &x1, &y1), 0);
        PK_CHECK_NEAR(x1, 620.0, 0.01);
    }
    free(svg);
    PK_CHECK_EQ(remove(out), 0);
    /* a run evaluated without seconds: NOTFOUND naming it, and no file */
    int64_t bad[2] = {fast, untimed};
    PK_CHECK_EQ(pk_plot_runs_x(s, bad, 2, PK_PLOT_X_SECONDS, out, err, sizeof err),
                PK_ERR_NOTFOUND);
    char want[64];
    snprintf(want, sizeof want, "run %lld has no eval points with training seconds",
             (long long)untimed);
    PK_CHECK(strstr(err, want) != NULL);
    PK_CHECK(access(out, F_OK) != 0);
    pk_store_close(s);
    PK_CHECK_EQ(remove_tree(home), 0);
}

int main(void)
{
    PK_CHECK_EQ(pk_crypto_global_init(), PK_OK);
    test_checker_rejects();
    test_svg();
    test_run_plot();
    test_runs_by_seconds();
    return PK_TEST_DONE();
}
