// lowbit from C++: score a multiple-choice question the way lm-evaluation-harness does
// (log-likelihood of each answer after the question; acc picks the highest, acc_norm the
// highest per byte), with the RAII wrapper in lowbit.hpp. Also shows a failure arriving as a
// lowbit::error carrying its status and message.
//
// Usage: choice [MODEL_PATH]   (default: lowbit's default model, fetched on first use)
// Output: a line per choice "choice I: LOGPROB PER_BYTE TEXT" (%.6f), then "acc: I" and
// "acc_norm: I" naming the chosen indices, then "ok".
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "lowbit.hpp"

int main(int argc, char **argv) {
    try {
        lowbit::check_version();
        std::printf("lowbit %s (header %d.%d.%d)\n", lowbit_version(), LOWBIT_VERSION_MAJOR,
                    LOWBIT_VERSION_MINOR, LOWBIT_VERSION_PATCH);

        try {
            lowbit::model missing("/nonexistent/lowbit-model");
            std::puts("loading a missing model did not fail");
            return 1;
        } catch (const lowbit::error &e) {
            std::printf("caught: %s (status %d)\n", e.what(), static_cast<int>(e.status()));
            if (e.status() != LOWBIT_ERR_IO) {
                return 1;
            }
        }

        const std::string path = argc > 1 ? argv[1] : lowbit::default_model_path();
        const lowbit::model model(path);

        const std::string question = "Question: What is the capital of France?\nAnswer:";
        const std::vector<std::string> choices = {" Berlin", " Madrid", " Paris", " Rome"};
        const std::vector<double> logprobs = model.score(question, choices);

        size_t acc = 0, acc_norm = 0;
        for (size_t i = 0; i < choices.size(); ++i) {
            const double per_byte = logprobs[i] / static_cast<double>(choices[i].size());
            std::printf("choice %zu: %.6f %.6f%s\n", i, logprobs[i], per_byte, choices[i].c_str());
            if (!std::isfinite(logprobs[i]) || logprobs[i] > 0.0) {
                std::puts("a log-likelihood is not a finite non-positive number");
                return 1;
            }
            if (logprobs[i] > logprobs[acc]) acc = i;
            if (per_byte > logprobs[acc_norm] / static_cast<double>(choices[acc_norm].size())) {
                acc_norm = i;
            }
        }
        std::printf("acc: %zu\nacc_norm: %zu\n", acc, acc_norm);
        std::puts("ok");
        return 0;
    } catch (const std::exception &e) {
        std::fprintf(stderr, "error: %s\n", e.what());
        return 1;
    }
}
