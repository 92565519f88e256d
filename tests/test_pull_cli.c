/* test_pull_cli.c: `pocketllm pull` against pocketllm-server-mock --hub-dir on loopback (the
 * coordinator's hub layout, PROTOCOL 8). A first pull meets `--faults truncate=1` (every body
 * cut in half) with one attempt per file: it fails and leaves a .part. A second pull from a
 * healthy server resumes the .part with a Range request, verifies the sha256 and ends with
 * files identical to the hub's. A third pull finds everything up to date. */
#include "pk_test.h"
#include "test_product_util.h"
#include "test_util.h"

static void make_hub(const char *hub)
{
    mkdir_at(hub, "demo");
    mkdir_at(hub, "demo/tiny");
    const char *src = PK_STORIES_DIR; /* the copy shipped in models/ */
    static const char *const files[] = {"config.json", "model.safetensors", "tokenizer.model"};
    for (size_t i = 0; i < 3; i++) {
        char a[600], b[600];
        snprintf(a, sizeof a, "%s/%s", src, files[i]);
        snprintf(b, sizeof b, "%s/demo/tiny/%s", hub, files[i]);
        PK_CHECK(copy_file(a, b));
    }
}

int main(void)
{
    char tmp[128], hub[200], out[200], db[200], task[200], cmd[2048];
    PK_CHECK(make_tmpdir(tmp, sizeof tmp, "pullcli"));
    snprintf(hub, sizeof hub, "%s/hub", tmp);
    snprintf(out, sizeof out, "%s/out", tmp);
    snprintf(db, sizeof db, "%s/srv.db", tmp);
    snprintf(task, sizeof task, "%s/task.json", tmp);
    mkdir(hub, 0755);
    make_hub(hub);
    PK_CHECK_EQ(
        write_string(
            task,
            "{\"task_id\":\"t\",\"base_model_hash\":\"00\",\"pool_size\":4,\"pool_seed\":"
            "\"0000000000000000000000000000000000000000000000000000000000000000\","
            "\"z_kind\":\"gaussian\",\"lr\":1e-4,\"eps\":1e-3,\"local_steps\":1,\"batch_size\":1,"
            "\"trainable\":\"all\",\"quorum\":1,\"deadline_seconds\":60,\"max_abs_g\":1e6}\n"),
        0);

    /* 1. every body cut in half, one attempt: the pull fails and keeps a partial file */
    server sv = {0};
    char args[1024];
    snprintf(args, sizeof args, "--db %s --task %s --hub-dir %s --faults truncate=1,seed=1", db,
             task, hub);
    PK_CHECK(server_start(&sv, args));
    snprintf(cmd, sizeof cmd,
             "%s pull demo/tiny --endpoint http://127.0.0.1:%d --out %s --retries 1 --quiet",
             POCKETLLM, sv.port, out);
    PK_CHECK_EQ(run_capture(cmd, NULL), 1);
    server_stop(&sv);
    char part[300], final[300], want[300];
    snprintf(part, sizeof part, "%s/config.json.part", out);
    snprintf(final, sizeof final, "%s/config.json", out);
    long long half = file_bytes(part);
    PK_CHECK(half > 0 && half < file_bytes(PK_STORIES_DIR "/config.json"));
    PK_CHECK(file_bytes(final) < 0);

    /* 2. a healthy server: the pull resumes the .part and completes every file */
    snprintf(args, sizeof args, "--db %s --hub-dir %s", db, hub);
    PK_CHECK(server_start(&sv, args));
    char *o = NULL;
    snprintf(cmd, sizeof cmd, "%s pull demo/tiny --endpoint http://127.0.0.1:%d --out %s --json",
             POCKETLLM, sv.port, out);
    PK_CHECK_EQ(run_capture(cmd, &o), 0);
    const char *l = last_line(o);
    PK_CHECK(strstr(l, "\"files\":3") != NULL);
    PK_CHECK(strstr(l, "\"resumed\":1") != NULL);
    PK_CHECK(strstr(l, "\"verified\":3") != NULL);
    if (!strstr(l, "\"resumed\":1"))
        fprintf(stderr, "pull output: %s\n", o ? o : "(none)");
    free(o);
    static const char *const files[] = {"config.json", "model.safetensors", "tokenizer.model"};
    for (size_t i = 0; i < 3; i++) {
        snprintf(final, sizeof final, "%s/%s", out, files[i]);
        snprintf(want, sizeof want, "%s/demo/tiny/%s", hub, files[i]);
        PK_CHECK(files_equal(final, want));
    }
    PK_CHECK(file_bytes(part) < 0);

    /* 3. nothing to do the second time */
    snprintf(cmd, sizeof cmd, "%s pull demo/tiny --endpoint http://127.0.0.1:%d --out %s --json",
             POCKETLLM, sv.port, out);
    o = NULL;
    PK_CHECK_EQ(run_capture(cmd, &o), 0);
    PK_CHECK(strstr(last_line(o), "\"up_to_date\":3") != NULL);
    free(o);

    /* 4. usage errors: exit code 2 */
    snprintf(cmd, sizeof cmd, "%s pull 2>/dev/null", POCKETLLM);
    PK_CHECK_EQ(run_capture(cmd, NULL), 2);
    snprintf(cmd, sizeof cmd, "%s pull a/b --bogus 2>/dev/null", POCKETLLM);
    PK_CHECK_EQ(run_capture(cmd, NULL), 2);
    server_stop(&sv);
    rm_rf(tmp);
    return PK_TEST_DONE();
}
