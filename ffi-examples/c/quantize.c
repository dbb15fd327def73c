/*
 * lowbit from C: quantize a checkpoint to 4 bits, load the result, and generate text with it.
 * Shows the parameters-with-defaults pattern, layer overrides, a progress callback, and
 * cancelling from it. Every call's status is checked.
 *
 * Usage: quantize OUT_DIR [PROMPT [MODEL_PATH]]
 *   OUT_DIR     where the quantized checkpoint is written (created if needed)
 *   PROMPT      default "The capital of France is"
 *   MODEL_PATH  a checkpoint directory, .safetensors or .gguf file; default: lowbit's default
 *               model (SmolLM2-135M-Instruct), fetched on first use.
 *
 * Output: the generated text is printed between a line "<<<" and a line ">>>" (with a
 * newline added before ">>>"). Exits 0 when everything behaved as documented.
 *
 * Build and run: ffi-examples/c/run.sh (or see tests/c_api.rs).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lowbit.h"

#define NEW_TOKENS 16

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

/* What the progress callback has seen; it cancels once `cancel_after` layers are done. */
struct progress {
    size_t calls;
    size_t last_done;
    size_t total;
    size_t cancel_after; /* 0: never cancel */
    bool in_order;       /* done ran 1, 2, 3, ... with the same total */
};

static bool on_layer(size_t done, size_t total, const char *layer, void *user_data) {
    struct progress *progress = user_data;
    if (done != progress->last_done + 1 || (progress->calls > 0 && total != progress->total)) {
        progress->in_order = false;
    }
    progress->calls += 1;
    progress->last_done = done;
    progress->total = total;
    /* About ten lines per pass, and always the last one. */
    size_t every = total / 10 > 0 ? total / 10 : 1;
    if (done == total || done % every == 0 || done == progress->cancel_after) {
        printf("quantized %zu/%zu %s\n", done, total, layer);
        fflush(stdout);
    }
    return done != progress->cancel_after;
}

static bool print_piece(const char *piece, void *user_data) {
    (void)user_data;
    fputs(piece, stdout);
    fflush(stdout);
    return true;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s OUT_DIR [PROMPT [MODEL_PATH]]\n", argv[0]);
        return 2;
    }
    const char *out_dir = argv[1];
    const char *prompt = argc > 2 ? argv[2] : "The capital of France is";

    printf("lowbit %s (header %s)\n", lowbit_version(), LOWBIT_VERSION);
    if (strcmp(lowbit_version(), LOWBIT_VERSION) != 0) {
        fail("lowbit.h does not match the loaded library");
    }

    char *default_path = NULL;
    const char *model_path = argc > 3 ? argv[3] : NULL;
    if (model_path == NULL) {
        CHECK(lowbit_default_model_path(&default_path));
        model_path = default_path;
    }
    printf("model: %s\n", model_path);

    /* Misuse is reported, never fatal: an unknown scheme is LOWBIT_ERR_INVALID_ARGUMENT. */
    lowbit_quantize_params params = lowbit_quantize_default_params();
    params.scheme = "w3a16";
    lowbit_status status = lowbit_quantize(model_path, out_dir, &params);
    if (status != LOWBIT_ERR_INVALID_ARGUMENT || strlen(lowbit_last_error()) == 0) {
        fail("an unknown scheme was not reported as LOWBIT_ERR_INVALID_ARGUMENT");
    }
    printf("misuse reported: %s\n", lowbit_last_error());

    /* Start from the defaults (w4a16-g128, round-to-nearest) and keep the MLP's down
     * projections at 8 bits; the embeddings and the LM head stay in floating point. */
    const char *overrides[] = {"*.mlp.down_proj=w8a16"};
    params = lowbit_quantize_default_params();
    params.overrides = overrides;
    params.n_overrides = sizeof overrides / sizeof overrides[0];
    params.progress = on_layer;

    /* Returning false from the callback cancels; nothing is written. */
    struct progress cancelled = {0, 0, 0, 2, true};
    params.user_data = &cancelled;
    status = lowbit_quantize(model_path, out_dir, &params);
    if (status != LOWBIT_ERR_CANCELLED || cancelled.calls != 2) {
        fail("returning false from the progress callback did not cancel");
    }
    printf("cancelled as asked: %s\n", lowbit_last_error());

    struct progress progress = {0, 0, 0, 0, true};
    params.user_data = &progress;
    CHECK(lowbit_quantize(model_path, out_dir, &params));
    if (!progress.in_order || progress.calls == 0 || progress.last_done != progress.total) {
        fail("the progress callback did not count 1, 2, ..., total");
    }
    printf("wrote %s (%zu layers quantized)\n", out_dir, progress.total);
    lowbit_string_free(default_path);

    lowbit_model *model = NULL;
    CHECK(lowbit_model_load(out_dir, &model));
    lowbit_model_info info;
    info.struct_size = sizeof info;
    CHECK(lowbit_model_get_info(model, &info));
    printf("quantized model: %s, %llu parameters in %.1f MB\n", info.architecture,
           (unsigned long long)info.parameter_count, (double)info.weight_bytes / 1e6);

    lowbit_generate_params generate = lowbit_generate_default_params();
    generate.max_new_tokens = NEW_TOKENS;
    generate.temperature = 0.0f;
    char *text = NULL;
    printf("<<<\n");
    fflush(stdout);
    CHECK(lowbit_generate(model, prompt, &generate, print_piece, NULL, &text));
    printf("\n>>>\n");
    if (strlen(text) == 0) {
        fail("the quantized model generated no text");
    }

    lowbit_string_free(text);
    lowbit_model_free(model);
    printf("ok\n");
    return 0;
}
