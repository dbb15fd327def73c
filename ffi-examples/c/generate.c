/*
 * lowbit from C: load a model, tokenize a prompt, compute next-token logits, and generate
 * text greedily while streaming it. Every call's status is checked; one deliberate misuse
 * shows how errors are reported.
 *
 * Usage: generate [PROMPT [MODEL_PATH]]
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

/* The streamed pieces, concatenated, to compare with the text lowbit_generate returns. */
struct streamed_text {
    char *bytes;
    size_t len;
    size_t pieces;
};

static bool on_piece(const char *piece, void *user_data) {
    struct streamed_text *streamed = user_data;
    size_t piece_len = strlen(piece);
    char *grown = realloc(streamed->bytes, streamed->len + piece_len + 1);
    if (grown == NULL) {
        return false;
    }
    memcpy(grown + streamed->len, piece, piece_len + 1);
    streamed->bytes = grown;
    streamed->len += piece_len;
    streamed->pieces += 1;
    fputs(piece, stdout);
    fflush(stdout);
    return true;
}

static size_t argmax(const float *values, size_t n) {
    size_t best = 0;
    for (size_t i = 1; i < n; i++) {
        if (values[i] > values[best]) {
            best = i;
        }
    }
    return best;
}

int main(int argc, char **argv) {
    const char *prompt = argc > 1 ? argv[1] : "The capital of France is";

    /* The header and the library loaded at run time must agree. */
    printf("lowbit %s (header %s)\n", lowbit_version(), LOWBIT_VERSION);
    if (strcmp(lowbit_version(), LOWBIT_VERSION) != 0) {
        fail("lowbit.h does not match the loaded library");
    }

    /* Misuse is reported, never fatal: a NULL model gives LOWBIT_ERR_NULL_POINTER. */
    size_t vocab_size = 0;
    lowbit_status status = lowbit_model_vocab_size(NULL, &vocab_size);
    if (status != LOWBIT_ERR_NULL_POINTER || strlen(lowbit_last_error()) == 0) {
        fail("a NULL model was not reported as LOWBIT_ERR_NULL_POINTER");
    }
    printf("misuse reported: %s\n", lowbit_last_error());

    char *default_path = NULL;
    const char *model_path = argc > 2 ? argv[2] : NULL;
    if (model_path == NULL) {
        CHECK(lowbit_default_model_path(&default_path));
        model_path = default_path;
    }
    lowbit_model *model = NULL;
    CHECK(lowbit_model_load(model_path, &model));
    printf("model: %s\n", model_path);
    lowbit_string_free(default_path);

    lowbit_model_info info;
    info.struct_size = sizeof info;
    CHECK(lowbit_model_get_info(model, &info));
    printf("architecture: %s, %zu layers, hidden size %zu, %llu parameters\n",
           info.architecture, info.num_layers, info.hidden_size,
           (unsigned long long)info.parameter_count);
    CHECK(lowbit_model_vocab_size(model, &vocab_size));

    /* Ask for the size first (capacity 0), then tokenize into a buffer of that size. */
    size_t n_ids = 0;
    status = lowbit_tokenize(model, prompt, true, NULL, 0, &n_ids);
    if (status != LOWBIT_ERR_BUFFER_TOO_SMALL || n_ids == 0) {
        fail("querying the token count did not report LOWBIT_ERR_BUFFER_TOO_SMALL");
    }
    uint32_t *ids = malloc(n_ids * sizeof *ids);
    float *logits = malloc(vocab_size * sizeof *logits);
    if (ids == NULL || logits == NULL) {
        fail("out of memory");
    }
    CHECK(lowbit_tokenize(model, prompt, true, ids, n_ids, &n_ids));
    printf("prompt tokens (%zu):", n_ids);
    for (size_t i = 0; i < n_ids; i++) {
        printf(" %u", (unsigned)ids[i]);
    }
    printf("\n");

    /* The most likely next token, from the logits of the last prompt position. */
    size_t n_logits = 0;
    CHECK(lowbit_logits(model, ids, n_ids, logits, vocab_size, &n_logits));
    uint32_t next = (uint32_t)argmax(logits, n_logits);
    char next_text[256];
    size_t next_len = 0;
    CHECK(lowbit_detokenize(model, &next, 1, true, next_text, sizeof next_text, &next_len));
    printf("most likely next token: %u \"%s\"\n", (unsigned)next, next_text);

    lowbit_generate_params params = lowbit_generate_default_params();
    params.max_new_tokens = NEW_TOKENS;
    params.temperature = 0.0f;
    struct streamed_text streamed = {NULL, 0, 0};
    char *text = NULL;
    printf("<<<\n");
    fflush(stdout);
    CHECK(lowbit_generate(model, prompt, &params, on_piece, &streamed, &text));
    printf("\n>>>\n");
    printf("streamed %zu pieces, %zu bytes\n", streamed.pieces, streamed.len);

    if (streamed.bytes == NULL || strcmp(streamed.bytes, text) != 0) {
        fail("the streamed pieces differ from the returned text");
    }
    /* Greedy decoding picks the argmax first. */
    if (strncmp(text, next_text, next_len) != 0) {
        fail("the generated text does not start with the most likely next token");
    }

    lowbit_string_free(text);
    free(streamed.bytes);
    free(logits);
    free(ids);
    lowbit_model_free(model);
    printf("ok\n");
    return 0;
}
