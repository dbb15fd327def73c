// Package lowbit calls the lowbit C API (include/lowbit.h) through cgo: load a model, generate
// text, score continuations, measure perplexity, quantize in memory. Failures are Go errors of
// type *Error carrying the C status and lowbit_last_error(); compare them with errors.Is
// against the Err* values.
//
// Build: the library must be on the linker's path, e.g.
//
//	CGO_LDFLAGS="-L/path/to/target/release -Wl,-rpath,/path/to/target/release" go test
//
// A *Model may be used by several goroutines at once, except Quantize and Close, which must
// not overlap with other uses of the same model.
package lowbit

/*
#cgo CFLAGS: -I${SRCDIR}/../../include
#cgo LDFLAGS: -llowbit
#include <stdlib.h>
#include "lowbit.h"
*/
import "C"

import (
	"fmt"
	"runtime"
	"unsafe"
)

// Status is a lowbit_status.
type Status int

// The statuses of include/lowbit.h.
const (
	StatusOK              Status = C.LOWBIT_OK
	StatusInvalidArgument Status = C.LOWBIT_ERR_INVALID_ARGUMENT
	StatusNullPointer     Status = C.LOWBIT_ERR_NULL_POINTER
	StatusIO              Status = C.LOWBIT_ERR_IO
	StatusFormat          Status = C.LOWBIT_ERR_FORMAT
	StatusUnsupported     Status = C.LOWBIT_ERR_UNSUPPORTED
	StatusTokenizer       Status = C.LOWBIT_ERR_TOKENIZER
	StatusCancelled       Status = C.LOWBIT_ERR_CANCELLED
	StatusInternal        Status = C.LOWBIT_ERR_INTERNAL
	StatusBufferTooSmall  Status = C.LOWBIT_ERR_BUFFER_TOO_SMALL
	StatusConfig          Status = C.LOWBIT_ERR_CONFIG
)

var statusNames = map[Status]string{
	StatusOK: "ok", StatusInvalidArgument: "invalid argument", StatusNullPointer: "null pointer",
	StatusIO: "i/o error", StatusFormat: "format error", StatusUnsupported: "unsupported",
	StatusTokenizer: "tokenizer error", StatusCancelled: "cancelled",
	StatusInternal: "internal error", StatusBufferTooSmall: "buffer too small",
	StatusConfig: "config error",
}

func (s Status) String() string {
	if name, ok := statusNames[s]; ok {
		return name
	}
	return fmt.Sprintf("status %d", int(s))
}

// Error is a failed lowbit call.
type Error struct {
	Status  Status
	Message string // lowbit_last_error() of the failed call
}

func (e *Error) Error() string { return "lowbit: " + e.Status.String() + ": " + e.Message }

// Is makes errors.Is(err, ErrIO) and the like compare statuses.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Message == "" && t.Status == e.Status
}

// Values to compare errors with, by status: errors.Is(err, lowbit.ErrIO).
var (
	ErrInvalidArgument = &Error{Status: StatusInvalidArgument}
	ErrNullPointer     = &Error{Status: StatusNullPointer}
	ErrIO              = &Error{Status: StatusIO}
	ErrFormat          = &Error{Status: StatusFormat}
	ErrUnsupported     = &Error{Status: StatusUnsupported}
	ErrTokenizer       = &Error{Status: StatusTokenizer}
	ErrCancelled       = &Error{Status: StatusCancelled}
	ErrInternal        = &Error{Status: StatusInternal}
	ErrConfig          = &Error{Status: StatusConfig}
)

// call runs a lowbit call and reads lowbit_last_error on the same OS thread: the message is
// per thread, and the Go scheduler may otherwise move the goroutine between the two.
func call(f func() C.enum_lowbit_status) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	status := f()
	if status == C.LOWBIT_OK {
		return nil
	}
	return &Error{Status: Status(status), Message: C.GoString(C.lowbit_last_error())}
}

// Version is the version of the library loaded at run time.
func Version() string { return C.GoString(C.lowbit_version()) }

// HeaderVersion is the version of the lowbit.h this package was compiled against.
func HeaderVersion() string {
	return fmt.Sprintf("%d.%d.%d", C.LOWBIT_VERSION_MAJOR, C.LOWBIT_VERSION_MINOR, C.LOWBIT_VERSION_PATCH)
}

// DefaultModelPath is lowbit's default model directory, fetched on first use.
func DefaultModelPath() (string, error) {
	var out *C.char
	if err := call(func() C.enum_lowbit_status { return C.lowbit_default_model_path(&out) }); err != nil {
		return "", err
	}
	defer C.lowbit_string_free(out)
	return C.GoString(out), nil
}

// Model is a loaded model. Close it when done.
type Model struct {
	ptr *C.lowbit_model
}

// Load loads a checkpoint directory, .safetensors or .gguf file on device ("cpu", or "cuda" /
// "cuda:N", which builds without CUDA support and machines without a GPU refuse with
// ErrUnsupported).
func Load(path, device string) (*Model, error) {
	cPath := C.CString(path)
	defer C.free(unsafe.Pointer(cPath))
	cDevice := C.CString(device)
	defer C.free(unsafe.Pointer(cDevice))
	params := C.lowbit_load_default_params()
	params.device = cDevice
	var ptr *C.lowbit_model
	err := call(func() C.enum_lowbit_status { return C.lowbit_model_load_with_params(cPath, &params, &ptr) })
	if err != nil {
		return nil, err
	}
	return &Model{ptr: ptr}, nil
}

// Close frees the model; later calls on it return ErrNullPointer. Closing twice is harmless.
func (m *Model) Close() {
	C.lowbit_model_free(m.ptr)
	m.ptr = nil
}

// Generate greedily continues prompt with up to maxNewTokens tokens.
func (m *Model) Generate(prompt string, maxNewTokens int) (string, error) {
	cPrompt := C.CString(prompt)
	defer C.free(unsafe.Pointer(cPrompt))
	params := C.lowbit_generate_default_params()
	params.max_new_tokens = C.size_t(maxNewTokens)
	var out *C.char
	err := call(func() C.enum_lowbit_status {
		return C.lowbit_generate(m.ptr, cPrompt, &params, nil, nil, &out)
	})
	if err != nil {
		return "", err
	}
	defer C.lowbit_string_free(out)
	return C.GoString(out), nil
}

// Score returns the log-likelihood (natural log) of each continuation after context.
func (m *Model) Score(context string, continuations []string) ([]float64, error) {
	cContext := C.CString(context)
	defer C.free(unsafe.Pointer(cContext))
	n := len(continuations)
	// cgo forbids passing Go memory holding Go pointers to C: the array lives in C memory.
	array := (**C.char)(C.malloc(C.size_t(n+1) * C.size_t(unsafe.Sizeof((*C.char)(nil)))))
	defer C.free(unsafe.Pointer(array))
	pointers := unsafe.Slice(array, n+1)
	for i, c := range continuations {
		pointers[i] = C.CString(c)
		defer C.free(unsafe.Pointer(pointers[i]))
	}
	logprobs := make([]C.double, n+1)
	err := call(func() C.enum_lowbit_status {
		return C.lowbit_score_continuations(m.ptr, cContext, array, C.size_t(n), &logprobs[0], nil)
	})
	if err != nil {
		return nil, err
	}
	out := make([]float64, n)
	for i := range out {
		out[i] = float64(logprobs[i])
	}
	return out, nil
}

// Perplexity is the token perplexity of text (every token predicted once).
func (m *Model) Perplexity(text string) (float64, error) {
	cText := C.CString(text)
	defer C.free(unsafe.Pointer(cText))
	var result C.lowbit_perplexity_result
	result.struct_size = C.size_t(unsafe.Sizeof(result))
	if err := call(func() C.enum_lowbit_status { return C.lowbit_perplexity(m.ptr, cText, 0, &result) }); err != nil {
		return 0, err
	}
	return float64(result.token_perplexity), nil
}

// Quantize quantizes the model in memory with scheme (e.g. "w8a16") and method ("rtn"; "gptq"
// and "awq" need calibration files, which this example does not pass). On failure the model
// is unchanged.
func (m *Model) Quantize(scheme, method string) error {
	cScheme := C.CString(scheme)
	defer C.free(unsafe.Pointer(cScheme))
	cMethod := C.CString(method)
	defer C.free(unsafe.Pointer(cMethod))
	params := C.lowbit_quantize_default_params()
	params.scheme = cScheme
	params.method = cMethod
	return call(func() C.enum_lowbit_status { return C.lowbit_model_quantize(m.ptr, &params) })
}
