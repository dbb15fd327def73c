/*
 * lowbit from C, the whole job in one program: check that the header matches the library,
 * load the default model, quantize it in memory with RTN (4-bit weights, 8-bit down
 * projections), save it and load the saved copy, generate text with it, print the perplexity
 * of a text, and measure its efficiency. Every call's status is checked.
 *
 * Usage: pipeline OUT_DIR [PROMPT [MODEL_PATH]]
 *   OUT_DIR     where the quantized checkpoint is saved (created if needed)
 *   PROMPT      default "The capital of France is"
 *   MODEL_PATH  an unquantized checkpoint; default: lowbit's default model
 *               (SmolLM2-135M-Instruct), fetched on first use.
 *
 * Output: the generated text between a line "<<<" and a line ">>>" (a newline added before
 * ">>>"), then "perplexity: token=%.6f word=%.6f tokens=%zu" and a "bench:" line. Exits 0 when
 * everything behaved as documented, after printing "ok".
 *
 * Built against the shared library and against the static one by ffi-examples/c/run.sh and
 * tests/c_api.rs.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lowbit.h"

#define NEW_TOKENS 16

/* The text whose perplexity is printed. */
static const char *const PERPLEXITY_TEXT =
    "The Eiffel Tower is a wrought-iron lattice tower on the Champ de Mars in Paris, France. "
    "It is named after the engineer Gustave Eiffel, whose company designed and built the "
    "tower from 1887 to 1889.";

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

/* The header's version macros against the library's lowbit_version(). */
static void check_version(void) {
    unsigned major = 0, minor = 0, patch = 0;
    const char *library = lowbit_version();
    if (sscanf(library, "%u.%u.%u", &major, &minor, &patch) != 3) {
        fail("lowbit_version() is not MAJOR.MINOR.PATCH");
    }
    if (major != LOWBIT_VERSION_MAJOR || minor != LOWBIT_VERSION_MINOR ||
        patch != LOWBIT_VERSION_PATCH || strcmp(library, LOWBIT_VERSION) != 0) {
        fprintf(stderr, "header %s, library %s\n", LOWBIT_VERSION, library);
        fail("the header does not match the library");
    }
    printf("lowbit %s (header %d.%d.%d)\n", library, LOWBIT_VERSION_MAJOR, LOWBIT_VERSION_MINOR,
           LOWBIT_VERSION_PATCH);
}

static size_t layers_reported = 0;

static bool count_layer(size_t done, size_t total, const char *layer, void *user_data) {
    (void)layer;
    (void)user_data;
    layers_reported = done;
    (void)total;
    return true;
}

static bool print_piece(const char *piece, void *user_data) {
    (void)user_data;
    fputs(piece, stdout);
    return true;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fail("usage: pipeline OUT_DIR [PROMPT [MODEL_PATH]]");
    }
    const char *out_dir = argv[1];
    const char *prompt = argc > 2 ? argv[2] : "The capital of France is";
    check_version();

    char *default_path = NULL;
    const char *model_path = argc > 3 ? argv[3] : NULL;
    if (model_path == NULL) {
        CHECK(lowbit_default_model_path(&default_path));
        model_path = default_path;
    }

    /* The GPU, where this build and machine have one; a build without CUDA support, or a
       machine without a GPU, refuses it with LOWBIT_ERR_UNSUPPORTED. The rest runs on the CPU. */
    lowbit_load_params load = lowbit_load_default_params();
    load.device = "cuda";
    lowbit_model *model = NULL;
    lowbit_status status = lowbit_model_load_with_params(model_path, &load, &model);
    if (status == LOWBIT_OK) {
        printf("cuda loaded\n");
        lowbit_model_free(model);
        model = NULL;
    } else if (status == LOWBIT_ERR_UNSUPPORTED && model == NULL) {
        printf("cuda refused: %s\n", lowbit_last_error());
    } else {
        fail("loading on cuda: neither loaded nor refused as unsupported");
    }
    load.device = "cpu";
    CHECK(lowbit_model_load_with_params(model_path, &load, &model));

    /* RTN, 4-bit weights in groups of 128, 8-bit down projections. */
    const char *overrides[] = {"*.mlp.down_proj=w8a16"};
    lowbit_quantize_params quantize = lowbit_quantize_default_params();
    quantize.method = "rtn";
    quantize.overrides = overrides;
    quantize.n_overrides = 1;
    quantize.progress = count_layer;
    CHECK(lowbit_model_quantize(model, &quantize));
    printf("quantized %zu layers in memory\n", layers_reported);

    /* Save, then work with the saved copy: what a later process would load. */
    CHECK(lowbit_model_save(model, out_dir));
    lowbit_model_free(model);
    model = NULL;
    CHECK(lowbit_model_load(out_dir, &model));

    lowbit_generate_params generate = lowbit_generate_default_params();
    generate.max_new_tokens = NEW_TOKENS;
    generate.temperature = 0.0f;
    char *text = NULL;
    printf("streamed: ");
    CHECK(lowbit_generate(model, prompt, &generate, print_piece, NULL, &text));
    printf("\n<<<\n%s\n>>>\n", text);
    lowbit_string_free(text);

    lowbit_perplexity_result perplexity;
    perplexity.struct_size = sizeof perplexity;
    CHECK(lowbit_perplexity(model, PERPLEXITY_TEXT, 0, &perplexity));
    printf("perplexity: token=%.6f word=%.6f tokens=%zu\n", perplexity.token_perplexity,
           perplexity.word_perplexity, perplexity.tokens);

    lowbit_bench_params bench = lowbit_bench_default_params();
    bench.prompt_tokens = 16;
    bench.decode_tokens = 4;
    lowbit_bench_result measured;
    measured.struct_size = sizeof measured;
    CHECK(lowbit_bench(model, &bench, &measured));
    if (measured.checkpoint_bytes == 0 || measured.weight_bytes == 0 ||
        !(measured.decode_tokens_per_s > 0.0) || !(measured.prefill_tokens_per_s > 0.0) ||
        !(measured.time_to_first_token_s > 0.0) || measured.decode_tokens != 4) {
        fail("lowbit_bench gave an implausible result");
    }
    printf("bench: checkpoint %.1f MB, weights %.1f MB, peak memory %.1f MB, TTFT %.1f ms, "
           "prefill %.1f tok/s, decode %.1f tok/s\n",
           measured.checkpoint_bytes / 1e6, measured.weight_bytes / 1e6,
           measured.peak_memory_bytes / 1e6, measured.time_to_first_token_s * 1e3,
           measured.prefill_tokens_per_s, measured.decode_tokens_per_s);

    lowbit_model_free(model);
    lowbit_string_free(default_path);
    printf("ok\n");
    return 0;
}
