/*
 * lowbit from C: score a model on two evaluation tasks (ARC-Easy and LAMBADA) and read the
 * results JSON. Shows the parameters-with-defaults pattern, a progress callback, cancelling
 * from it, and a misused call reported rather than fatal. Every call's status is checked.
 *
 * Usage: eval DATA_DIR [MODEL_PATH]
 *   DATA_DIR    the data sets in their published formats: arc/ARC-Easy-Test.jsonl and
 *               lambada/lambada_test.jsonl (tests/fixtures/eval has small ones).
 *   MODEL_PATH  a checkpoint directory, .safetensors or .gguf file; default: lowbit's default
 *               model (SmolLM2-135M-Instruct), fetched on first use.
 *
 * Output: the size of the results JSON, then one line per task,
 * "TASK: METRIC=VALUE METRIC=VALUE documents=N". Exits 0 when everything behaved as
 * documented.
 *
 * Build and run: ffi-examples/c/run.sh (or see tests/c_api.rs).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lowbit.h"

/* Documents scored per task. */
#define LIMIT 5

/* Stops the program when a lowbit call fails, printing lowbit's message. */
#define CHECK(call)                                                                       \
    do {                                                                                  \
        lowbit_status check_status_ = (call);                                             \
        if (check_status_ != LOWBIT_OK) {                                                 \
            fprintf(stderr, "%s:%d: %s returned %d: %s\n", __FILE__, __LINE__, #call,     \
                    (int)check_status_, lowbit_last_error());                             \
            exit(1);                                                                      \
        }                                                                                 \
    } while (0)

static void fail(const char *message) {
    fprintf(stderr, "error: %s\n", message);
    exit(1);
}

/* What the progress callback has seen; it cancels when asked to start task `cancel_at`. */
struct progress {
    size_t calls;
    size_t cancel_at; /* SIZE_MAX: never cancel */
    bool in_order;    /* task_index ran 0, 1, 2, ... */
};

static bool on_task(size_t task_index, size_t task_count, const char *task, void *user_data) {
    struct progress *progress = user_data;
    if (task_index != progress->calls) {
        progress->in_order = false;
    }
    progress->calls += 1;
    printf("[%zu/%zu] %s\n", task_index + 1, task_count, task);
    fflush(stdout);
    return task_index != progress->cancel_at;
}

/*
 * The text right after `"KEY":` for each key of `keys` in turn, each searched after the
 * previous one; NULL when one is missing. Enough for the fixed layout of lowbit's results
 * (sorted keys, each task's metrics in one object); a real program would use a JSON parser.
 */
static const char *find_value(const char *json, const char *const *keys, size_t n_keys) {
    const char *at = json;
    for (size_t i = 0; i < n_keys; i++) {
        size_t key_len = strlen(keys[i]);
        for (;;) {
            at = strchr(at, '"');
            if (at == NULL) {
                return NULL;
            }
            if (strncmp(at + 1, keys[i], key_len) == 0 && at[1 + key_len] == '"') {
                const char *after = at + 2 + key_len;
                while (*after == ' ' || *after == '\n') {
                    after += 1;
                }
                if (*after == ':') {
                    at = after + 1;
                    break;
                }
            }
            at += 1;
        }
    }
    return at;
}

/* The number under results -> TASK -> METRIC; exits when it is missing. */
static double metric(const char *json, const char *task, const char *name) {
    const char *keys[] = {"results", task, name};
    const char *value = find_value(json, keys, sizeof keys / sizeof keys[0]);
    char *end = NULL;
    double number = value != NULL ? strtod(value, &end) : 0.0;
    if (value == NULL || end == value) {
        fprintf(stderr, "error: no number for %s %s in the results\n", task, name);
        exit(1);
    }
    return number;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s DATA_DIR [MODEL_PATH]\n", argv[0]);
        return 2;
    }
    const char *data_dir = argv[1];

    printf("lowbit %s (header %s)\n", lowbit_version(), LOWBIT_VERSION);
    if (strcmp(lowbit_version(), LOWBIT_VERSION) != 0) {
        fail("lowbit.h does not match the loaded library");
    }

    char *default_path = NULL;
    const char *model_path = argc > 2 ? argv[2] : NULL;
    if (model_path == NULL) {
        CHECK(lowbit_default_model_path(&default_path));
        model_path = default_path;
    }
    printf("model: %s\n", model_path);
    lowbit_model *model = NULL;
    CHECK(lowbit_model_load(model_path, &model));
    lowbit_string_free(default_path);

    /* Misuse is reported, never fatal: an unknown task is LOWBIT_ERR_INVALID_ARGUMENT, found
     * before any task runs. */
    const char *misspelled[] = {"arc_easy", "arc_medium"};
    lowbit_eval_params params = lowbit_eval_default_params();
    params.data_dir = data_dir;
    params.tasks = misspelled;
    params.n_tasks = sizeof misspelled / sizeof misspelled[0];
    char *json = NULL;
    lowbit_status status = lowbit_eval(model, &params, &json);
    if (status != LOWBIT_ERR_INVALID_ARGUMENT || json != NULL ||
        strlen(lowbit_last_error()) == 0) {
        fail("an unknown task was not reported as LOWBIT_ERR_INVALID_ARGUMENT");
    }
    printf("misuse reported: %s\n", lowbit_last_error());

    /* Start from the defaults (every document, each task's few-shot default, the model's own
     * context length) and score the first LIMIT documents of two tasks. */
    const char *tasks[] = {"arc_easy", "lambada_openai"};
    const size_t n_tasks = sizeof tasks / sizeof tasks[0];
    params = lowbit_eval_default_params();
    params.data_dir = data_dir;
    params.tasks = tasks;
    params.n_tasks = n_tasks;
    params.limit = LIMIT;
    params.keep_samples = false;
    params.progress = on_task;

    /* Returning false from the callback cancels before that task runs; no results. */
    struct progress cancelled = {0, 1, true};
    params.user_data = &cancelled;
    status = lowbit_eval(model, &params, &json);
    if (status != LOWBIT_ERR_CANCELLED || json != NULL || cancelled.calls != 2) {
        fail("returning false from the progress callback did not cancel");
    }
    printf("cancelled as asked: %s\n", lowbit_last_error());

    struct progress progress = {0, SIZE_MAX, true};
    params.user_data = &progress;
    CHECK(lowbit_eval(model, &params, &json));
    if (!progress.in_order || progress.calls != n_tasks) {
        fail("the progress callback was not called once per task, in order");
    }
    printf("results: %zu bytes of JSON\n", strlen(json));

    /* Two metrics per task, as lm-evaluation-harness names them. */
    const char *metrics[][2] = {{"acc,none", "acc_norm,none"}, {"acc,none", "perplexity,none"}};
    for (size_t i = 0; i < n_tasks; i++) {
        const char *documents_keys[] = {"n-samples", tasks[i], "effective"};
        const char *documents = find_value(json, documents_keys, 3);
        if (documents == NULL) {
            fail("the results have no document count");
        }
        printf("%s: %s=%.6f %s=%.6f documents=%ld\n", tasks[i], metrics[i][0],
               metric(json, tasks[i], metrics[i][0]), metrics[i][1],
               metric(json, tasks[i], metrics[i][1]), strtol(documents, NULL, 10));
    }

    lowbit_string_free(json);
    lowbit_model_free(model);
    printf("ok\n");
    return 0;
}
