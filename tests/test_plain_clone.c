/* test_plain_clone.c: what a person who clones the repository gets. The committed state of the
 * source tree is cloned (git clone) into a temporary directory with no shared/ beside it, only
 * the pocketllm target is built there (Release, -j2), and the shortened demo runs from another
 * working directory with no --model and no POCKETLLM_MODEL: it must train the stories260k
 * shipped in the clone's models/ (not a copy elsewhere) and lower the held-out loss. Then the
 * clone's install rules lay out bin/ and share/, and the installed binary must find its model
 * there with the source tree's copy moved away; with both gone the demo fails naming the way
 * out. Uncommitted changes are not seen: commit first. */
#include "pk_common.h"
#include "pk_test.h"

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function" /* the server helpers stay unused */
#include "json_test_util.h"
#include "test_product_util.h"
#pragma GCC diagnostic pop

#include <cjson/cJSON.h>
#include <limits.h>
#include <stdarg.h>

#define DEMO_STEPS "60" /* the shortened demo: enough for the held-out loss to move */

static char g_tmp[256]; /* the test's temporary directory (resolved: /tmp may be a link) */

/* git clone of the source tree's committed state, then a Release build of pocketllm alone, with
 * PK_SHARED_DIR where a plain clone has it: beside the clone, where nothing is. */
static int clone_and_build(void)
{
    char shared[320];
    snprintf(shared, sizeof shared, "%s/shared", g_tmp);
    PK_CHECK(file_bytes(shared) < 0);
    double t0 = pk_time_now();
    if (run_fmt(NULL, RUN_SHOW_FAILURE, "git clone -q '%s' '%s/repo' >&2", PK_SOURCE_DIR, g_tmp) !=
        0)
        return -1;
    char model[384];
    snprintf(model, sizeof model, "%s/repo/models/stories260k/model.safetensors", g_tmp);
    PK_CHECK(file_bytes(model) > 1000000); /* committed as it is, not as a Git LFS pointer */
    if (run_fmt(NULL, RUN_SHOW_FAILURE,
                "cmake -S '%s/repo' -B '%s/build' -DCMAKE_BUILD_TYPE=Release "
                "-DPK_SHARED_DIR='%s' >'%s/configure.log' 2>&1 || { cat '%s/configure.log' >&2; "
                "exit 1; }",
                g_tmp, g_tmp, shared, g_tmp, g_tmp) != 0)
        return -1;
    double t1 = pk_time_now();
    if (run_fmt(NULL, RUN_SHOW_FAILURE,
                "cmake --build '%s/build' -j2 --target pocketllm >'%s/build.log' 2>&1 || "
                "{ tail -n 40 '%s/build.log' >&2; exit 1; }",
                g_tmp, g_tmp, g_tmp) != 0)
        return -1;
    fprintf(stderr, "clone + configure %.1f s, build %.1f s\n", t1 - t0, pk_time_now() - t1);
    return 0;
}

/* The clone's shortened demo, run from g_tmp/elsewhere: the shipped model inside the clone,
 * named as such in the text and in the JSON, and a lower held-out loss after training. */
static void test_demo_from_clone(void)
{
    char *o = NULL, want[384];
    PK_CHECK_EQ(run_fmt(&o, RUN_SHOW_FAILURE,
                        "mkdir -p '%s/elsewhere' && cd '%s/elsewhere' && "
                        "env -u POCKETLLM_MODEL -u PK_SHARED_DIR '%s/build/cli/pocketllm' demo "
                        "--steps " DEMO_STEPS " --json --threads 1",
                        g_tmp, g_tmp, g_tmp),
                0);
    PK_CHECK(o && strstr(o, "shipped with PocketLLM") != NULL);
    cJSON *j = last_json(o);
    PK_CHECK(j != NULL);
    snprintf(want, sizeof want, "%s/repo/models/stories260k", g_tmp);
    PK_CHECK(!strcmp(json_str(j, "model"), "shipped"));
    PK_CHECK(!strcmp(json_str(j, "model_dir"), want));
    double before = json_num(j, "loss_before"), after = json_num(j, "loss_after");
    PK_CHECK(isfinite(before) && isfinite(after) && after < before);
    PK_CHECK(json_num(j, "steps") == atof(DEMO_STEPS));
    printf("plain clone: held-out loss %.4f -> %.4f on %s\n", before, after,
           json_str(j, "model_dir"));
    cJSON_Delete(j);
    free(o);
}

/* The clone's install rules for pocketllm (cli/) and the shipped model (models/), into
 * g_tmp/inst; the coordinator's rule is left out, as its target was not built. */
static int install_parts(void)
{
    static const char *const parts[] = {"cli", "models"};
    for (int i = 0; i < 2; i++)
        if (run_fmt(NULL, RUN_SHOW_FAILURE,
                    "cmake -DCMAKE_INSTALL_PREFIX='%s/inst' -P '%s/build/%s/cmake_install.cmake' "
                    ">&2",
                    g_tmp, g_tmp, parts[i]) != 0)
            return -1;
    return 0;
}

/* The installed pocketllm with the clone's models/ moved away: it must use the installed copy;
 * with that gone too, exit 1 and a message that names --model. */
static void test_installed(void)
{
    char *o = NULL, want[384];
    PK_CHECK_EQ(install_parts(), 0);
    PK_CHECK_EQ(
        run_fmt(NULL, RUN_SHOW_FAILURE, "mv '%s/repo/models' '%s/repo/models.away'", g_tmp, g_tmp),
        0);
    cJSON *j = NULL;
    PK_CHECK_EQ(run_json(&j, RUN_SHOW_FAILURE,
                         "cd '%s/elsewhere' && env -u POCKETLLM_MODEL '%s/inst/bin/pocketllm' demo "
                         "--steps 2 --json --quiet --threads 1",
                         g_tmp, g_tmp),
                0);
    snprintf(want, sizeof want, "%s/inst/share/pocketllm/models/stories260k", g_tmp);
    PK_CHECK(j && !strcmp(json_str(j, "model"), "shipped") &&
             !strcmp(json_str(j, "model_dir"), want));
    cJSON_Delete(j);
    PK_CHECK_EQ(run_fmt(NULL, RUN_SHOW_FAILURE, "rm -rf '%s/inst/share'", g_tmp), 0);
    PK_CHECK_EQ(run_fmt(&o, RUN_SHOW_FAILURE,
                        "cd '%s/elsewhere' && env -u POCKETLLM_MODEL '%s/inst/bin/pocketllm' demo "
                        "--steps 2 --quiet 2>&1",
                        g_tmp, g_tmp),
                1);
    PK_CHECK(o && strstr(o, "--model DIR") != NULL);
    free(o);
}

int main(void)
{
    char tmp[128], abs[PATH_MAX];
    if (!make_tmpdir(tmp, sizeof tmp, "plainclone") || !realpath(tmp, abs) ||
        strlen(abs) >= sizeof g_tmp)
        return 1;
    memcpy(g_tmp, abs, strlen(abs) + 1);
    double t0 = pk_time_now();
    int built = clone_and_build() == 0;
    PK_CHECK(built);
    if (built) {
        test_demo_from_clone();
        test_installed();
    }
    printf("total %.1f s\n", pk_time_now() - t0);
    rm_rf_if_passed(g_tmp, pk_test_failures);
    return PK_TEST_DONE();
}
