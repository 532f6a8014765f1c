// Package ds is the Go API of ds, an inference engine for the DeepSeek-R1 family: a thin mirror
// of include/ds_c.h with Go ownership (Close), errors and context cancellation.
//
// An Engine may be shared by any number of goroutines. A Session is used by one goroutine at a
// time (its methods serialize on a mutex); Cancel and context cancellation work from any
// goroutine. Closing an Engine while its sessions are open is allowed: they keep the model.
package ds

/*
#cgo pkg-config: ds
#include <stdlib.h>
#include <ds_c.h>

extern int goPieceCallback(void* user, char* piece, size_t len, int32_t token, uint32_t flags);
static int ds_go_piece(void* user, const char* piece, size_t len, int32_t token, uint32_t flags) {
  return goPieceCallback(user, (char*)piece, len, token, flags);
}
static ds_status ds_go_generate(ds_session* s, const ds_generate_params* p, uintptr_t handle, ds_generate_result* r) {
  return ds_session_generate(s, p, ds_go_piece, (void*)handle, r);
}
*/
import "C"

import (
	"context"
	"errors"
	"fmt"
	"io"
	"runtime/cgo"
	"sync"
	"unsafe"
)

// APIVersion is the ABI version this package was written for; Open refuses another libds.
const APIVersion = 1

// Error is a failed call: the ds_status and the library's message.
type Error struct {
	Status  int
	Message string
}

func (e *Error) Error() string {
	return C.GoString(C.ds_status_name(C.ds_status(e.Status))) + ": " + e.Message
}

// Status codes (ds_status).
const (
	ErrInvalidArgument = 1
	ErrNotFound        = 2
	ErrFormat          = 3
	ErrUnsupported     = 4
	ErrOutOfMemory     = 5
	ErrContextFull     = 6
	ErrCancelled       = 8
	ErrInvalidState    = 9
	ErrBufferTooSmall  = 11
)

// ErrClosed is returned by any call on a closed Engine or Session.
var ErrClosed = errors.New("ds: use of a closed handle")

func check(status C.ds_status) error {
	if status == C.DS_OK {
		return nil
	}
	return &Error{Status: int(status), Message: C.GoString(C.ds_last_error())}
}

// Backend picks where the model runs.
type Backend int32

const (
	BackendAuto Backend = 0
	BackendCPU  Backend = 1
	BackendCUDA Backend = 2
)

// EngineOptions: the zero value is the CPU with a thread per physical core.
type EngineOptions struct {
	Backend Backend // 0 means CPU
	Threads int
	Weights WeightFormat // how weight matrices are stored; 0 means f32 (exact)
	Device  int          // the CUDA device (ordinal) for BackendCUDA and BackendAuto; 0 by default
}

// WeightFormat is ds_weight_format: fewer bytes per weight read per token, for some accuracy.
type WeightFormat int32

const (
	WeightsF32  WeightFormat = C.DS_WEIGHTS_F32  // exact: what the reference computes
	WeightsBF16 WeightFormat = C.DS_WEIGHTS_BF16 // half the bytes per token; f32 compute
	WeightsInt8 WeightFormat = C.DS_WEIGHTS_INT8 // llama.cpp's Q8_0 blocks (8.5 bits per weight), CPU only
	WeightsInt4 WeightFormat = C.DS_WEIGHTS_INT4 // llama.cpp's Q4_0 blocks (4.5 bits per weight), CPU only
)

// Engine is a loaded model.
type Engine struct {
	mu  sync.RWMutex
	ptr *C.ds_engine
}

// Open loads a Hugging Face model folder.
func Open(dir string, opts *EngineOptions) (*Engine, error) {
	if v := int(C.ds_version()); v != APIVersion {
		return nil, &Error{Status: ErrUnsupported, Message: fmt.Sprintf("libds has ABI version %d, this package needs %d", v, APIVersion)}
	}
	var o C.ds_engine_options
	C.ds_engine_options_init(&o)
	if opts != nil {
		if opts.Backend != 0 {
			o.backend = C.int32_t(opts.Backend)
		}
		o.n_threads = C.int32_t(opts.Threads)
		o.weight_format = C.int32_t(opts.Weights)
		o.device = C.int32_t(opts.Device)
	}
	cdir := C.CString(dir)
	defer C.free(unsafe.Pointer(cdir))
	e := &Engine{}
	if err := check(C.ds_engine_open(cdir, &o, &e.ptr)); err != nil {
		return nil, err
	}
	return e, nil
}

// Close releases the engine (sessions still open keep the model until they close). Idempotent.
func (e *Engine) Close() {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.ptr != nil {
		C.ds_engine_close(e.ptr)
		e.ptr = nil
	}
}

func (e *Engine) use() (*C.ds_engine, func(), error) {
	e.mu.RLock()
	if e.ptr == nil {
		e.mu.RUnlock()
		return nil, nil, ErrClosed
	}
	return e.ptr, e.mu.RUnlock, nil
}

// Tokenize turns UTF-8 text into token ids (addSpecial prepends BOS where the model wants it).
func (e *Engine) Tokenize(text string, addSpecial bool) ([]int32, error) {
	ptr, done, err := e.use()
	if err != nil {
		return nil, err
	}
	defer done()
	ctext := C.CString(text)
	defer C.free(unsafe.Pointer(ctext))
	special := C.int(0)
	if addSpecial {
		special = 1
	}
	var n C.size_t
	status := C.ds_tokenize(ptr, ctext, C.size_t(len(text)), special, nil, 0, &n)
	if status != C.DS_ERR_BUFFER_TOO_SMALL {
		return []int32{}, check(status)
	}
	ids := make([]int32, int(n))
	if err := check(C.ds_tokenize(ptr, ctext, C.size_t(len(text)), special, (*C.int32_t)(unsafe.Pointer(&ids[0])), n, &n)); err != nil {
		return nil, err
	}
	return ids, nil
}

// Detokenize turns token ids into text.
func (e *Engine) Detokenize(ids []int32) (string, error) {
	ptr, done, err := e.use()
	if err != nil {
		return "", err
	}
	defer done()
	if len(ids) == 0 {
		return "", nil
	}
	cids := (*C.int32_t)(C.malloc(C.size_t(4 * len(ids))))
	defer C.free(unsafe.Pointer(cids))
	copy(unsafe.Slice((*int32)(unsafe.Pointer(cids)), len(ids)), ids)
	var n C.size_t
	status := C.ds_detokenize(ptr, cids, C.size_t(len(ids)), nil, 0, &n)
	if status != C.DS_ERR_BUFFER_TOO_SMALL {
		return "", check(status)
	}
	buf := (*C.char)(C.malloc(n))
	defer C.free(unsafe.Pointer(buf))
	if err := check(C.ds_detokenize(ptr, cids, C.size_t(len(ids)), buf, n, &n)); err != nil {
		return "", err
	}
	return C.GoStringN(buf, C.int(n)), nil
}

// ChatMessage is one turn of a conversation: role is system, user, assistant or tool.
type ChatMessage struct {
	Role, Content string
}

// ChatApply formats a conversation with the model's chat template.
func (e *Engine) ChatApply(messages []ChatMessage, addGenerationPrompt bool) (string, error) {
	ptr, done, err := e.use()
	if err != nil {
		return "", err
	}
	defer done()
	list := (*C.ds_chat_message)(C.malloc(C.size_t(len(messages)+1) * C.size_t(unsafe.Sizeof(C.ds_chat_message{}))))
	defer C.free(unsafe.Pointer(list))
	items := unsafe.Slice(list, len(messages)+1)
	for i, m := range messages {
		items[i].role = C.CString(m.Role)
		items[i].content = C.CString(m.Content)
		defer C.free(unsafe.Pointer(items[i].role))
		defer C.free(unsafe.Pointer(items[i].content))
	}
	gen := C.int(0)
	if addGenerationPrompt {
		gen = 1
	}
	var n C.size_t
	status := C.ds_chat_apply(ptr, list, C.size_t(len(messages)), gen, nil, 0, &n)
	if status != C.DS_ERR_BUFFER_TOO_SMALL {
		return "", check(status)
	}
	buf := (*C.char)(C.malloc(n))
	defer C.free(unsafe.Pointer(buf))
	if err := check(C.ds_chat_apply(ptr, list, C.size_t(len(messages)), gen, buf, n, &n)); err != nil {
		return "", err
	}
	return C.GoStringN(buf, C.int(n)), nil
}

// Speculative methods for SessionOptions.
const (
	SpeculativeNone  = 0
	SpeculativeDraft = 1
	SpeculativeMTP   = 2
	SpeculativeNgram = 3
)

// SessionOptions: the zero value is greedy decoding with the model's full context.
type SessionOptions struct {
	NCtx        uint32
	Temperature float32
	TopK        int32
	TopP        float32 // 0 means off (1)
	MinP        float32
	Seed        uint64
	Speculative int     // Speculative* constant
	DraftTokens int32   // k; 0 means 4
	Draft       *Engine // for SpeculativeDraft
}

// Session is a conversation with its own KV cache.
type Session struct {
	mu     sync.Mutex
	ptr    *C.ds_session
	engine *Engine // kept alive for the session's life
	draft  *Engine
}

// NewSession starts a conversation on the engine.
func (e *Engine) NewSession(opts *SessionOptions) (*Session, error) {
	ptr, done, err := e.use()
	if err != nil {
		return nil, err
	}
	defer done()
	var o C.ds_session_options
	C.ds_session_options_init(&o)
	s := &Session{engine: e}
	if opts != nil {
		o.n_ctx = C.uint32_t(opts.NCtx)
		o.temperature = C.float(opts.Temperature)
		o.top_k = C.int32_t(opts.TopK)
		if opts.TopP > 0 {
			o.top_p = C.float(opts.TopP)
		}
		o.min_p = C.float(opts.MinP)
		o.seed = C.uint64_t(opts.Seed)
		o.speculative_method = C.int32_t(opts.Speculative)
		if opts.DraftTokens > 0 {
			o.draft_tokens = C.int32_t(opts.DraftTokens)
		}
		if opts.Draft != nil {
			draft, draftDone, err := opts.Draft.use()
			if err != nil {
				return nil, err
			}
			defer draftDone()
			o.draft_engine = draft
			s.draft = opts.Draft
		}
	}
	if err := check(C.ds_session_create(ptr, &o, &s.ptr)); err != nil {
		return nil, err
	}
	return s, nil
}

// Close releases the session. Idempotent.
func (s *Session) Close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ptr != nil {
		C.ds_session_close(s.ptr)
		s.ptr = nil
	}
}

// Cancel stops a running Generate or Append, from any goroutine.
func (s *Session) Cancel() {
	// Not under s.mu: Generate holds it, and ds_session_cancel is thread-safe. The pointer is
	// read racily only against Close, which callers must not overlap with Cancel.
	if p := s.ptr; p != nil {
		C.ds_session_cancel(p)
	}
}

func (s *Session) lock() error {
	s.mu.Lock()
	if s.ptr == nil {
		s.mu.Unlock()
		return ErrClosed
	}
	return nil
}

func cInts(ids []int32) (*C.int32_t, func()) {
	if len(ids) == 0 {
		return nil, func() {}
	}
	p := (*C.int32_t)(C.malloc(C.size_t(4 * len(ids))))
	copy(unsafe.Slice((*int32)(unsafe.Pointer(p)), len(ids)), ids)
	return p, func() { C.free(unsafe.Pointer(p)) }
}

// Append runs the tokens (prefill, or a step).
func (s *Session) Append(ids []int32) error {
	if err := s.lock(); err != nil {
		return err
	}
	defer s.mu.Unlock()
	p, free := cInts(ids)
	defer free()
	return check(C.ds_session_append(s.ptr, p, C.size_t(len(ids))))
}

// NextToken samples, appends and returns the next token.
func (s *Session) NextToken() (int32, error) {
	if err := s.lock(); err != nil {
		return 0, err
	}
	defer s.mu.Unlock()
	var t C.int32_t
	err := check(C.ds_session_next_token(s.ptr, &t))
	return int32(t), err
}

// Logits returns a copy of the logits after the last token.
func (s *Session) Logits() ([]float32, error) {
	if err := s.lock(); err != nil {
		return nil, err
	}
	defer s.mu.Unlock()
	var p *C.float
	var n C.size_t
	if err := check(C.ds_session_logits(s.ptr, &p, &n)); err != nil {
		return nil, err
	}
	out := make([]float32, int(n))
	copy(out, unsafe.Slice((*float32)(unsafe.Pointer(p)), int(n)))
	return out, nil
}

// Truncate keeps the first n tokens.
func (s *Session) Truncate(n int) error {
	if err := s.lock(); err != nil {
		return err
	}
	defer s.mu.Unlock()
	return check(C.ds_session_truncate(s.ptr, C.size_t(n)))
}

// NTokens is how many tokens the session holds.
func (s *Session) NTokens() int {
	if err := s.lock(); err != nil {
		return 0
	}
	defer s.mu.Unlock()
	return int(C.ds_session_n_tokens(s.ptr))
}

// Stats are speculative decoding's counters.
type Stats struct {
	TargetPasses, DraftedTokens, AcceptedTokens uint64
	MeanAcceptedLength                          float64
}

// Stats returns speculative decoding's counters (zeros without it).
func (s *Session) Stats() (Stats, error) {
	if err := s.lock(); err != nil {
		return Stats{}, err
	}
	defer s.mu.Unlock()
	var st C.ds_session_stats
	st.struct_size = C.uint32_t(unsafe.Sizeof(st))
	if err := check(C.ds_session_stats_get(s.ptr, &st)); err != nil {
		return Stats{}, err
	}
	return Stats{uint64(st.target_passes), uint64(st.drafted_tokens), uint64(st.accepted_tokens), float64(st.mean_accepted_length)}, nil
}

// Piece is a piece of streamed text: whole UTF-8 characters, the token, and whether it is R1's
// reasoning (<think>…</think>).
type Piece struct {
	Text      string
	Token     int32
	Reasoning bool
}

// GenerateParams: the prompt (ids and/or text) and the stops.
type GenerateParams struct {
	PromptIDs   []int32
	PromptText  string
	AddSpecial  bool // for PromptText: prepend BOS (chat text carries its own)
	MaxTokens   uint32
	StopIDs     []int32
	StopStrings []string
	ShowSpecial bool
}

// Stop reasons.
const (
	StopEOS         = 0
	StopMaxTokens   = 1
	StopToken       = 2
	StopString      = 3
	StopCallback    = 4
	StopCancelled   = 5
	StopContextFull = 6
)

// Result says why generation stopped and how fast it ran.
type Result struct {
	StopReason             int
	PromptTokens           int
	GeneratedTokens        int
	PrefillTokensPerSecond float64
	DecodeTokensPerSecond  float64
}

type generation struct {
	onPiece  func(Piece) bool
	panicked interface{}
}

// Generate decodes, calling onPiece for each piece (return true to stop). Cancelling ctx stops
// it; a panic in onPiece stops it and comes back as an error.
func (s *Session) Generate(ctx context.Context, params GenerateParams, onPiece func(Piece) bool) (Result, error) {
	if err := s.lock(); err != nil {
		return Result{}, err
	}
	defer s.mu.Unlock()
	if err := ctx.Err(); err != nil {
		return Result{StopReason: StopCancelled}, nil
	}
	var p C.ds_generate_params
	C.ds_generate_params_init(&p)
	ids, freeIDs := cInts(params.PromptIDs)
	defer freeIDs()
	p.prompt_ids, p.n_prompt_ids = ids, C.size_t(len(params.PromptIDs))
	if params.PromptText != "" {
		text := C.CString(params.PromptText)
		defer C.free(unsafe.Pointer(text))
		p.prompt_text, p.prompt_text_len = text, C.size_t(len(params.PromptText))
	}
	if params.AddSpecial {
		p.add_special = 1
	}
	p.max_tokens = C.uint32_t(params.MaxTokens)
	stopIDs, freeStops := cInts(params.StopIDs)
	defer freeStops()
	p.stop_ids, p.n_stop_ids = stopIDs, C.size_t(len(params.StopIDs))
	if n := len(params.StopStrings); n > 0 {
		arr := (**C.char)(C.malloc(C.size_t(n) * C.size_t(unsafe.Sizeof((*C.char)(nil)))))
		defer C.free(unsafe.Pointer(arr))
		items := unsafe.Slice(arr, n)
		for i, str := range params.StopStrings {
			items[i] = C.CString(str)
			defer C.free(unsafe.Pointer(items[i]))
		}
		p.stop_strings, p.n_stop_strings = arr, C.size_t(n)
	}
	if params.ShowSpecial {
		p.show_special = 1
	}
	if onPiece == nil {
		onPiece = func(Piece) bool { return false }
	}
	state := &generation{onPiece: onPiece}
	handle := cgo.NewHandle(state)
	defer handle.Delete()

	finished := make(chan struct{})
	defer close(finished)
	go func() {
		select {
		case <-ctx.Done():
			C.ds_session_cancel(s.ptr)
		case <-finished:
		}
	}()
	var r C.ds_generate_result
	r.struct_size = C.uint32_t(unsafe.Sizeof(r))
	status := C.ds_go_generate(s.ptr, &p, C.uintptr_t(handle), &r)
	if state.panicked != nil {
		return Result{}, &Error{Status: ErrCancelled, Message: fmt.Sprintf("the piece callback panicked: %v", state.panicked)}
	}
	if err := check(status); err != nil {
		return Result{}, err
	}
	return Result{int(r.stop_reason), int(r.n_prompt_tokens), int(r.n_generated_tokens),
		float64(r.prefill_tokens_per_second), float64(r.decode_tokens_per_second)}, nil
}

// GenerateTo streams the answer (reasoning included) into w.
func (s *Session) GenerateTo(ctx context.Context, params GenerateParams, w io.Writer) (Result, error) {
	var writeErr error
	res, err := s.Generate(ctx, params, func(p Piece) bool {
		_, writeErr = io.WriteString(w, p.Text)
		return writeErr != nil
	})
	if err == nil {
		err = writeErr
	}
	return res, err
}
