/*
 * Misuse of the lowbit C API, on purpose: NULL handles and out-pointers, freed models and
 * strings, double frees, invalid UTF-8, wrong struct_size, callbacks that cancel, devices and
 * methods this build does not have. Each must give its documented status and a message from
 * lowbit_last_error(), never a crash. Small enough to run under valgrind.
 *
 * Usage: misuse MODEL_DIR OUT_DIR
 *   MODEL_DIR  a small unquantized checkpoint with a tokenizer (tests use a synthetic one)
 *   OUT_DIR    a scratch directory for lowbit_quantize and lowbit_model_save
 *
 * Output: one line per case, "CASE: STATUS_NAME: MESSAGE", then "ok" when every case gave the
 * expected status and a message containing the expected words.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lowbit.h"

static int failures = 0;

static const char *status_name(lowbit_status status) {
    switch (status) {
    case LOWBIT_OK: return "LOWBIT_OK";
    case LOWBIT_ERR_INVALID_ARGUMENT: return "LOWBIT_ERR_INVALID_ARGUMENT";
    case LOWBIT_ERR_NULL_POINTER: return "LOWBIT_ERR_NULL_POINTER";
    case LOWBIT_ERR_IO: return "LOWBIT_ERR_IO";
    case LOWBIT_ERR_FORMAT: return "LOWBIT_ERR_FORMAT";
    case LOWBIT_ERR_UNSUPPORTED: return "LOWBIT_ERR_UNSUPPORTED";
    case LOWBIT_ERR_TOKENIZER: return "LOWBIT_ERR_TOKENIZER";
    case LOWBIT_ERR_CANCELLED: return "LOWBIT_ERR_CANCELLED";
    case LOWBIT_ERR_INTERNAL: return "LOWBIT_ERR_INTERNAL";
    case LOWBIT_ERR_BUFFER_TOO_SMALL: return "LOWBIT_ERR_BUFFER_TOO_SMALL";
    case LOWBIT_ERR_CONFIG: return "LOWBIT_ERR_CONFIG";
    }
    return "(unknown status)";
}

/* Checks that a call gave `expected` and a last error containing `words`. */
static void expect(const char *name, lowbit_status got, lowbit_status expected, const char *words) {
    const char *message = lowbit_last_error();
    printf("%s: %s: %s\n", name, status_name(got), message);
    if (got != expected || strstr(message, words) == NULL) {
        printf("  FAILED: expected %s with a message containing \"%s\"\n", status_name(expected),
               words);
        failures += 1;
    }
}

/* Checks a condition that is not a status. */
static void require(const char *name, int condition) {
    if (!condition) {
        printf("%s: FAILED\n", name);
        failures += 1;
    }
}

static bool cancel_at_once(size_t done, size_t total, const char *layer, void *user_data) {
    (void)done;
    (void)total;
    (void)layer;
    *(size_t *)user_data += 1;
    return false;
}

static bool cancel_task(size_t index, size_t count, const char *task, void *user_data) {
    (void)index;
    (void)count;
    (void)task;
    *(size_t *)user_data += 1;
    return false;
}

static bool stop_after_first_piece(const char *piece, void *user_data) {
    (void)piece;
    *(size_t *)user_data += 1;
    return false;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: misuse MODEL_DIR OUT_DIR\n");
        return 2;
    }
    const char *model_dir = argv[1];
    const char *out_dir = argv[2];
    /* 0xC3 0x28 is not UTF-8 (a lead byte followed by a non-continuation byte). */
    const char bad_utf8[] = {'a', (char)0xC3, (char)0x28, 0};

    lowbit_model *model = NULL;
    size_t vocab = 0;
    uint32_t ids[4] = {1, 2, 3, 4};
    float logits[1];
    char text[8];
    size_t count = 0;
    char *owned = NULL;
    double logprob = 0.0;
    const char *continuation = " b";

    /* NULL handles. */
    expect("null model vocab_size", lowbit_model_vocab_size(NULL, &vocab),
           LOWBIT_ERR_NULL_POINTER, "model is NULL");
    expect("null model generate", lowbit_generate(NULL, "a", NULL, NULL, NULL, &owned),
           LOWBIT_ERR_NULL_POINTER, "model is NULL");
    require("generate failure leaves out_text NULL", owned == NULL);
    expect("null model logits", lowbit_logits(NULL, ids, 1, logits, 1, &count),
           LOWBIT_ERR_NULL_POINTER, "model is NULL");
    expect("null model score", lowbit_score_continuations(NULL, "a", &continuation, 1, &logprob, NULL),
           LOWBIT_ERR_NULL_POINTER, "model is NULL");
    expect("null model quantize", lowbit_model_quantize(NULL, NULL), LOWBIT_ERR_NULL_POINTER,
           "model is NULL");
    expect("null model save", lowbit_model_save(NULL, out_dir), LOWBIT_ERR_NULL_POINTER,
           "model is NULL");
    expect("null model bench", lowbit_bench(NULL, NULL, NULL), LOWBIT_ERR_NULL_POINTER,
           "model is NULL");
    lowbit_model_free(NULL);
    lowbit_string_free(NULL);

    /* NULL out-pointers and arguments. */
    expect("null out load", lowbit_model_load(model_dir, NULL), LOWBIT_ERR_NULL_POINTER,
           "out is NULL");
    expect("null path load", lowbit_model_load(NULL, &model), LOWBIT_ERR_NULL_POINTER,
           "path is NULL");
    require("failed load sets *out to NULL", model == NULL);
    if (lowbit_model_load(model_dir, &model) != LOWBIT_OK) {
        fprintf(stderr, "loading %s: %s\n", model_dir, lowbit_last_error());
        return 1;
    }
    expect("null out vocab_size", lowbit_model_vocab_size(model, NULL), LOWBIT_ERR_NULL_POINTER,
           "out is NULL");
    expect("null count tokenize", lowbit_tokenize(model, "abc", false, NULL, 0, NULL),
           LOWBIT_ERR_NULL_POINTER, "n_ids is NULL");
    expect("null buffer with capacity", lowbit_tokenize(model, "abc", false, NULL, 4, &count),
           LOWBIT_ERR_NULL_POINTER, "ids is NULL");
    expect("small buffer", lowbit_detokenize(model, ids, 4, false, text, 1, &count),
           LOWBIT_ERR_BUFFER_TOO_SMALL, "are needed");
    expect("null logprobs score", lowbit_score_continuations(model, "a", &continuation, 1, NULL, NULL),
           LOWBIT_ERR_NULL_POINTER, "logprobs is NULL");
    expect("null continuation", lowbit_score_continuations(model, "a", NULL, 1, &logprob, NULL),
           LOWBIT_ERR_NULL_POINTER, "continuations is NULL");
    expect("null perplexity out", lowbit_perplexity(model, "a b", 0, NULL),
           LOWBIT_ERR_NULL_POINTER, "out is NULL");
    expect("null quantize params", lowbit_model_quantize(model, NULL), LOWBIT_ERR_NULL_POINTER,
           "lowbit_quantize_default_params");
    expect("null eval results", lowbit_eval(model, NULL, NULL), LOWBIT_ERR_NULL_POINTER, "NULL");

    /* Invalid UTF-8. */
    expect("invalid utf-8 path", lowbit_model_load(bad_utf8, &(lowbit_model *){NULL}),
           LOWBIT_ERR_INVALID_ARGUMENT, "not valid UTF-8");
    expect("invalid utf-8 prompt", lowbit_generate(model, bad_utf8, NULL, NULL, NULL, &owned),
           LOWBIT_ERR_INVALID_ARGUMENT, "prompt is not valid UTF-8");
    expect("invalid utf-8 tokenize", lowbit_tokenize(model, bad_utf8, false, NULL, 0, &count),
           LOWBIT_ERR_INVALID_ARGUMENT, "text is not valid UTF-8");
    expect("invalid utf-8 context", lowbit_score_continuations(model, bad_utf8, &continuation, 1, &logprob, NULL),
           LOWBIT_ERR_INVALID_ARGUMENT, "context is not valid UTF-8");
    lowbit_quantize_params quantize = lowbit_quantize_default_params();
    quantize.scheme = bad_utf8;
    expect("invalid utf-8 scheme", lowbit_model_quantize(model, &quantize),
           LOWBIT_ERR_INVALID_ARGUMENT, "params->scheme is not valid UTF-8");

    /* Wrong struct_size: params the caller passes, and results the caller receives. */
    lowbit_generate_params generate = lowbit_generate_default_params();
    generate.struct_size = 3;
    expect("generate struct_size", lowbit_generate(model, "a", &generate, NULL, NULL, &owned),
           LOWBIT_ERR_INVALID_ARGUMENT, "struct_size is 3");
    quantize = lowbit_quantize_default_params();
    quantize.struct_size = sizeof quantize + 8;
    expect("quantize struct_size", lowbit_model_quantize(model, &quantize),
           LOWBIT_ERR_INVALID_ARGUMENT, "struct_size is");
    lowbit_load_params load = lowbit_load_default_params();
    load.struct_size = 0;
    expect("load struct_size", lowbit_model_load_with_params(model_dir, &load, &(lowbit_model *){NULL}),
           LOWBIT_ERR_INVALID_ARGUMENT, "struct_size is 0");
    lowbit_eval_params eval = lowbit_eval_default_params();
    eval.struct_size = 1;
    expect("eval struct_size", lowbit_eval(model, &eval, &owned), LOWBIT_ERR_INVALID_ARGUMENT,
           "struct_size is 1");
    lowbit_bench_params bench = lowbit_bench_default_params();
    bench.struct_size = 2;
    lowbit_bench_result measured;
    measured.struct_size = sizeof measured;
    expect("bench params struct_size", lowbit_bench(model, &bench, &measured),
           LOWBIT_ERR_INVALID_ARGUMENT, "struct_size is 2");
    measured.struct_size = 5;
    expect("bench result struct_size", lowbit_bench(model, NULL, &measured),
           LOWBIT_ERR_INVALID_ARGUMENT, "out->struct_size is 5");
    lowbit_perplexity_result perplexity;
    perplexity.struct_size = 0;
    expect("perplexity result struct_size", lowbit_perplexity(model, "a b", 0, &perplexity),
           LOWBIT_ERR_INVALID_ARGUMENT, "out->struct_size is 0");
    lowbit_model_info info;
    info.struct_size = 7;
    expect("info struct_size", lowbit_model_get_info(model, &info), LOWBIT_ERR_INVALID_ARGUMENT,
           "struct_size is 7");

    /* Callbacks that cancel, and one that stops generation (not an error). */
    size_t calls = 0;
    lowbit_model_info before;
    before.struct_size = sizeof before;
    expect("info before quantizing", lowbit_model_get_info(model, &before), LOWBIT_OK, "");
    quantize = lowbit_quantize_default_params();
    quantize.scheme = "w8a16";
    quantize.progress = cancel_at_once;
    quantize.user_data = &calls;
    expect("quantize cancelled", lowbit_model_quantize(model, &quantize), LOWBIT_ERR_CANCELLED,
           "the model is unchanged");
    require("quantize callback called once", calls == 1);
    info.struct_size = sizeof info;
    expect("info after cancelling", lowbit_model_get_info(model, &info), LOWBIT_OK, "");
    require("model unchanged after cancel", info.weight_bytes == before.weight_bytes);
    calls = 0;
    expect("quantize to disk cancelled", lowbit_quantize(model_dir, out_dir, &quantize),
           LOWBIT_ERR_CANCELLED, "nothing was written");
    const char *tasks[] = {"arc_easy"};
    eval = lowbit_eval_default_params();
    eval.tasks = tasks;
    eval.n_tasks = 1;
    eval.progress = cancel_task;
    eval.user_data = &calls;
    calls = 0;
    expect("eval cancelled", lowbit_eval(model, &eval, &owned), LOWBIT_ERR_CANCELLED,
           "cancelled by the progress callback");
    require("eval failure leaves results NULL", owned == NULL);
    calls = 0;
    generate = lowbit_generate_default_params();
    generate.max_new_tokens = 8;
    generate.stop_at_eos = false;
    expect("generate stopped by callback",
           lowbit_generate(model, "ab", &generate, stop_after_first_piece, &calls, &owned), LOWBIT_OK, "");
    require("generation stopped after at most one piece", calls <= 1 && owned != NULL);
    lowbit_string_free(owned);

    /* Double free of a string is guarded, and so are strings lowbit keeps. */
    lowbit_string_free(owned);
    expect("string freed twice", LOWBIT_OK, LOWBIT_OK, "not a live string");
    lowbit_string_free((char *)lowbit_version());
    expect("static string freed", LOWBIT_OK, LOWBIT_OK, "not a live string");
    owned = NULL;

    /* Devices and methods the C API does not offer. */
    load = lowbit_load_default_params();
    load.device = "cuda:0";
    lowbit_model *on_gpu = NULL;
    expect("cuda device", lowbit_model_load_with_params(model_dir, &load, &on_gpu),
           LOWBIT_ERR_UNSUPPORTED, "without CUDA support");
    load.device = "tpu";
    expect("unknown device", lowbit_model_load_with_params(model_dir, &load, &on_gpu),
           LOWBIT_ERR_INVALID_ARGUMENT, "expected cpu, cuda or cuda:N");
    quantize = lowbit_quantize_default_params();
    quantize.method = "magic";
    expect("unknown method", lowbit_model_quantize(model, &quantize), LOWBIT_ERR_INVALID_ARGUMENT,
           "rtn, gptq, awq");
    quantize.method = "gptq";
    expect("gptq without calibration", lowbit_model_quantize(model, &quantize),
           LOWBIT_ERR_INVALID_ARGUMENT, "needs calibration text");
    quantize.n_calibration_files = 1;
    expect("null calibration files", lowbit_model_quantize(model, &quantize),
           LOWBIT_ERR_NULL_POINTER, "params->calibration_files is NULL");

    /* A quantized model cannot be quantized again; saving into its own directory is refused. */
    quantize = lowbit_quantize_default_params();
    quantize.scheme = "w8a16";
    expect("quantize", lowbit_model_quantize(model, &quantize), LOWBIT_OK, "");
    expect("quantize twice", lowbit_model_quantize(model, &quantize),
           LOWBIT_ERR_INVALID_ARGUMENT, "already quantized");
    expect("save into the source", lowbit_model_save(model, model_dir),
           LOWBIT_ERR_INVALID_ARGUMENT, "directory the model is read from");
    expect("save", lowbit_model_save(model, out_dir), LOWBIT_OK, "");

    /* A freed model is refused, and freeing it again frees nothing. */
    lowbit_model *freed = model;
    lowbit_model_free(model);
    model = NULL;
    expect("use after free", lowbit_model_vocab_size(freed, &vocab), LOWBIT_ERR_INVALID_ARGUMENT,
           "not a live lowbit_model");
    lowbit_model_free(freed);
    expect("model freed twice", LOWBIT_OK, LOWBIT_OK, "not a live lowbit_model");

    /* The saved model loads and runs. */
    if (lowbit_model_load(out_dir, &model) != LOWBIT_OK) {
        printf("loading the saved model: %s\n", lowbit_last_error());
        failures += 1;
    } else {
        expect("saved model runs", lowbit_logits(model, ids, 2, NULL, 0, &count),
               LOWBIT_ERR_BUFFER_TOO_SMALL, "are needed");
        lowbit_model_free(model);
    }

    if (failures > 0) {
        printf("%d case(s) failed\n", failures);
        return 1;
    }
    printf("ok\n");
    return 0;
}
