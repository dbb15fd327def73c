// A small C++17 wrapper over include/lowbit.h: RAII handles (std::unique_ptr with custom
// deleters), exceptions carrying the status and lowbit_last_error(), std::string and
// std::vector instead of buffers. Header-only; link with -llowbit (or liblowbit.a).
//
// Thread safety is that of the C API: a lowbit::model may be used by several threads at once,
// except quantize(), which changes it. lowbit_last_error() is per thread, and check() reads it
// on the thread that made the failing call, right after it.
#pragma once

#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "lowbit.h"

namespace lowbit {

/// The name of a status, e.g. "LOWBIT_ERR_IO".
inline const char *status_name(lowbit_status status) noexcept {
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
    return "LOWBIT_ERR_UNKNOWN";
}

/// A failed lowbit call: what() is "STATUS_NAME: message".
class error : public std::runtime_error {
public:
    error(lowbit_status status, const std::string &message)
        : std::runtime_error(std::string(status_name(status)) + ": " + message),
          status_(status), message_(message) {}
    lowbit_status status() const noexcept { return status_; }
    /// lowbit_last_error() at the time of the failure.
    const std::string &message() const noexcept { return message_; }

private:
    lowbit_status status_;
    std::string message_;
};

/// Throws lowbit::error unless `status` is LOWBIT_OK.
inline void check(lowbit_status status) {
    if (status != LOWBIT_OK) {
        throw error(status, lowbit_last_error());
    }
}

struct model_deleter {
    void operator()(lowbit_model *model) const noexcept { lowbit_model_free(model); }
};
struct string_deleter {
    void operator()(char *text) const noexcept { lowbit_string_free(text); }
};
/// Owns a lowbit_model.
using model_ptr = std::unique_ptr<lowbit_model, model_deleter>;
/// Owns a string returned by lowbit.
using string_ptr = std::unique_ptr<char, string_deleter>;

/// Throws std::runtime_error when the header this program was compiled with does not match
/// the library loaded at run time.
inline void check_version() {
    const std::string library = lowbit_version();
    if (library != LOWBIT_VERSION) {
        throw std::runtime_error("lowbit.h is version " LOWBIT_VERSION ", the library " + library);
    }
}

/// lowbit's default model directory (fetched and converted on first use).
inline std::string default_model_path() {
    char *raw = nullptr;
    check(lowbit_default_model_path(&raw));
    string_ptr path(raw);
    return path.get();
}

/// A loaded model.
class model {
public:
    /// Loads `path` (a checkpoint directory, .safetensors or .gguf file) on `device`.
    explicit model(const std::string &path, const char *device = "cpu") {
        lowbit_load_params params = lowbit_load_default_params();
        params.device = device;
        lowbit_model *raw = nullptr;
        check(lowbit_model_load_with_params(path.c_str(), &params, &raw));
        handle_.reset(raw);
    }

    lowbit_model *get() const noexcept { return handle_.get(); }

    /// Greedy (by default) continuation of `prompt`.
    std::string generate(const std::string &prompt,
                         lowbit_generate_params params = lowbit_generate_default_params()) const {
        char *raw = nullptr;
        check(lowbit_generate(get(), prompt.c_str(), &params, nullptr, nullptr, &raw));
        string_ptr text(raw);
        return text.get();
    }

    /// Log-likelihood of each continuation after `context` (natural log).
    std::vector<double> score(const std::string &context,
                              const std::vector<std::string> &continuations) const {
        std::vector<const char *> pointers;
        pointers.reserve(continuations.size());
        for (const auto &c : continuations) {
            pointers.push_back(c.c_str());
        }
        std::vector<double> logprobs(continuations.size());
        check(lowbit_score_continuations(get(), context.c_str(), pointers.data(), pointers.size(),
                                         logprobs.data(), nullptr));
        return logprobs;
    }

    /// Perplexity measures of `text`.
    lowbit_perplexity_result perplexity(const std::string &text, size_t max_length = 0) const {
        lowbit_perplexity_result result{};
        result.struct_size = sizeof result;
        check(lowbit_perplexity(get(), text.c_str(), max_length, &result));
        return result;
    }

    /// Quantizes the model in memory; on failure it is unchanged.
    void quantize(const lowbit_quantize_params &params) {
        check(lowbit_model_quantize(get(), &params));
    }

    /// Writes the model as a checkpoint directory.
    void save(const std::string &dir) const { check(lowbit_model_save(get(), dir.c_str())); }

private:
    model_ptr handle_;
};

}  // namespace lowbit
