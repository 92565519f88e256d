/* minimal.c: the smallest libpocketllm program. Opens (creates) an agent home, imports three
 * notes, fine-tunes 20 MeZO steps on them and generates a line with the fine-tuned weights.
 *   cc minimal.c $(pkg-config --cflags --libs pocketllm) -o minimal
 *   ./minimal HOME_DIR MODEL_DIR        (MODEL_DIR: e.g. share/pocketllm/models/stories260k) */
#include <pocketllm.h>

#include <stdio.h>
#include <string.h>

static int fail(pocketllm_home *h, const char *what, pocketllm_status st)
{
    fprintf(stderr, "minimal: %s: %s (%s)\n", what, pocketllm_errmsg(h), pocketllm_status_str(st));
    pocketllm_home_close(h);
    return 1;
}

static int on_step(void *user, const pocketllm_step_info *s)
{
    (void)user;
    printf("step %lld/%lld loss %.4f\n", (long long)s->step + 1, (long long)s->total,
           (s->loss_plus + s->loss_minus) / 2);
    return 0; /* non-zero would stop at this step boundary */
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: minimal HOME_DIR MODEL_DIR\n");
        return 2;
    }
    char pass[] = "correct horse battery staple"; /* an app reads it from the keystore */
    pocketllm_home_params hp = pocketllm_home_default_params();
    hp.create = 1;
    pocketllm_home *h = NULL;
    pocketllm_status st = pocketllm_home_open(argv[1], pass, strlen(pass), &hp, &h);
    if (st != POCKETLLM_OK) /* pass is wiped now, whatever happened */
        return fail(h, "open", st);
    const char notes[] = "Pip the cat sat on the warm mat.\nPip liked fish and naps in the sun.\n"
                         "One day Pip found a red ball.\n";
    pocketllm_import_params ip = pocketllm_import_default_params();
    ip.format = POCKETLLM_FORMAT_TXT;
    if ((st = pocketllm_import(h, "notes", notes, strlen(notes), &ip, NULL)) != POCKETLLM_OK)
        return fail(h, "import", st);
    pocketllm_train_params tp = pocketllm_train_default_params();
    tp.model_dir = argv[2];
    tp.dataset = "notes";
    tp.steps = 20;
    tp.batch = 3;
    tp.seq_len = 32;
    tp.lr = 1e-4f;
    tp.progress = on_step;
    pocketllm_train_result tr;
    if ((st = pocketllm_train(h, &tp, &tr)) != POCKETLLM_OK)
        return fail(h, "train", st);
    printf("libpocketllm %s, run %lld: %lld steps, weights %.16s\n", pocketllm_version_string(),
           (long long)tr.run_id, (long long)tr.steps_done, tr.weights_hash);
    pocketllm_generate_params gp = pocketllm_generate_default_params();
    gp.run_id = tr.run_id;
    gp.prompt = "Pip";
    gp.max_new = 24;
    char text[512];
    if ((st = pocketllm_generate(h, &gp, text, sizeof text, NULL)) != POCKETLLM_OK)
        return fail(h, "generate", st);
    printf("Pip%s%s\n", text[0] == ' ' ? "" : " ", text); /* the text after the prompt */
    pocketllm_home_close(h);
    return 0;
}
