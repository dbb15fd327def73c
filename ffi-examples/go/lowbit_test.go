package lowbit

import (
	"errors"
	"math"
	"os"
	"strings"
	"testing"
)

// testModel loads the model named by LOWBIT_TEST_MODEL (a small checkpoint with a tokenizer;
// tests/ffi_examples.rs writes one), skipping when it is not set.
func testModel(t *testing.T) *Model {
	t.Helper()
	path := os.Getenv("LOWBIT_TEST_MODEL")
	if path == "" {
		t.Skip("LOWBIT_TEST_MODEL is not set")
	}
	model, err := Load(path, "cpu")
	if err != nil {
		t.Fatalf("Load(%q): %v", path, err)
	}
	t.Cleanup(model.Close)
	return model
}

func TestVersionMatchesHeader(t *testing.T) {
	if Version() != HeaderVersion() {
		t.Fatalf("library %s, header %s", Version(), HeaderVersion())
	}
}

func TestMissingModelIsAnIOError(t *testing.T) {
	_, err := Load("/nonexistent/lowbit-model", "cpu")
	if !errors.Is(err, ErrIO) {
		t.Fatalf("want ErrIO, got %v", err)
	}
	var lowbitErr *Error
	if !errors.As(err, &lowbitErr) || !strings.Contains(lowbitErr.Message, "/nonexistent/lowbit-model") {
		t.Fatalf("the message should name the path: %v", err)
	}
}

func TestCudaLoadsOrIsUnsupported(t *testing.T) {
	path := os.Getenv("LOWBIT_TEST_MODEL")
	if path == "" {
		t.Skip("LOWBIT_TEST_MODEL is not set")
	}
	model, err := Load(path, "cuda")
	if err == nil {
		model.Close()
		return
	}
	if !errors.Is(err, ErrUnsupported) {
		t.Fatalf("want a model or ErrUnsupported, got %v", err)
	}
}

func TestGenerateScorePerplexity(t *testing.T) {
	model := testModel(t)
	if _, err := model.Generate("hello", 4); err != nil {
		t.Fatalf("Generate: %v", err)
	}
	logprobs, err := model.Score("The answer is", []string{" yes", " no"})
	if err != nil {
		t.Fatalf("Score: %v", err)
	}
	for i, lp := range logprobs {
		if math.IsNaN(lp) || math.IsInf(lp, 0) || lp > 0 {
			t.Fatalf("logprob %d is %v", i, lp)
		}
	}
	ppl, err := model.Perplexity("a short text to measure")
	if err != nil || !(ppl >= 1) || math.IsInf(ppl, 0) {
		t.Fatalf("Perplexity: %v, %v", ppl, err)
	}
}

func TestErrorsCarryStatusAndMessage(t *testing.T) {
	model := testModel(t)
	if _, err := model.Generate("a\xc3\x28", 4); !errors.Is(err, ErrInvalidArgument) ||
		!strings.Contains(err.Error(), "not valid UTF-8") {
		t.Fatalf("invalid UTF-8: %v", err)
	}
	if _, err := model.Score("context", nil); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("no continuations: %v", err)
	}
	if err := model.Quantize("w8a16", "magic"); !errors.Is(err, ErrInvalidArgument) ||
		!strings.Contains(err.Error(), "rtn, gptq, awq") {
		t.Fatalf("unknown method: %v", err)
	}
	if err := model.Quantize("w8a16", "rtn"); err != nil {
		t.Fatalf("Quantize: %v", err)
	}
	if err := model.Quantize("w8a16", "rtn"); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("quantizing twice: %v", err)
	}
	model.Close()
	model.Close()
	if _, err := model.Generate("hello", 1); !errors.Is(err, ErrNullPointer) {
		t.Fatalf("closed model: %v", err)
	}
}
