package ds

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// fixtures: $DS_FIXTURES_DIR, or ../shared/fixtures beside the checkout.
func fixture(name string) string {
	dir := os.Getenv("DS_FIXTURES_DIR")
	if dir == "" {
		dir = filepath.Join("..", "..", "..", "..", "shared", "fixtures")
	}
	return filepath.Join(dir, name)
}

// referenceIDs reads an I64 tensor of a fixture's reference.safetensors.
func referenceIDs(t *testing.T, name, tensor string) []int32 {
	data, err := os.ReadFile(filepath.Join(fixture(name), "reference.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	n := binary.LittleEndian.Uint64(data[:8])
	var header map[string]json.RawMessage
	if err := json.Unmarshal(data[8:8+n], &header); err != nil {
		t.Fatal(err)
	}
	var entry struct {
		DataOffsets [2]uint64 `json:"data_offsets"`
	}
	if err := json.Unmarshal(header[tensor], &entry); err != nil {
		t.Fatal(err)
	}
	raw := data[8+n+entry.DataOffsets[0] : 8+n+entry.DataOffsets[1]]
	ids := make([]int32, len(raw)/8)
	for i := range ids {
		ids[i] = int32(binary.LittleEndian.Uint64(raw[8*i:]))
	}
	return ids
}

func open(t *testing.T, name string) *Engine {
	e, err := Open(fixture(name), &EngineOptions{Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	return e
}

func TestGreedyMatchesTransformers(t *testing.T) {
	for _, name := range []string{"deepseek_v3_tiny", "qwen2_tiny", "llama_tiny"} {
		e := open(t, name)
		s, err := e.NewSession(nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Append(referenceIDs(t, name, "input_ids")); err != nil {
			t.Fatal(err)
		}
		want := referenceIDs(t, name, "greedy_tokens")
		for i, w := range want {
			got, err := s.NextToken()
			if err != nil || got != w {
				t.Fatalf("%s step %d: got %d (%v), transformers %d", name, i, got, err, w)
			}
		}
		s.Close()
	}
}

func TestTokenizeGenerateAndSpeculative(t *testing.T) {
	const name = "deepseek_v3_vocab_bf16"
	e := open(t, name)
	ids, err := e.Tokenize("The capital of France is", true)
	if err != nil {
		t.Fatal(err)
	}
	if want := referenceIDs(t, name, "input_ids"); !equal(ids, want) {
		t.Fatalf("tokenize: %v, want %v", ids, want)
	}
	want := referenceIDs(t, name, "greedy_tokens")
	for _, opts := range []*SessionOptions{nil, {Speculative: SpeculativeNgram, DraftTokens: 3}, {Speculative: SpeculativeDraft, Draft: e}} {
		s, err := e.NewSession(opts)
		if err != nil {
			t.Fatal(err)
		}
		var tokens []int32
		var text strings.Builder
		res, err := s.Generate(context.Background(), GenerateParams{PromptText: "The capital of France is", AddSpecial: true, MaxTokens: uint32(len(want))},
			func(p Piece) bool {
				if len(tokens) == 0 || tokens[len(tokens)-1] != p.Token {
					tokens = append(tokens, p.Token)
				}
				text.WriteString(p.Text)
				return false
			})
		if err != nil || res.StopReason != StopMaxTokens || !equal(tokens, want) {
			t.Fatalf("generate %+v: %v %+v %v, want %v", opts, err, res, tokens, want)
		}
		decoded, _ := e.Detokenize(want)
		if text.String() != decoded {
			t.Fatalf("streamed %q, decoded %q", text.String(), decoded)
		}
		s.Close()
	}
}

func TestTheDeviceReachesTheLibrary(t *testing.T) {
	_, err := Open(fixture("qwen2_tiny"), &EngineOptions{Backend: BackendCUDA, Device: -1})
	if err == nil || !strings.Contains(err.Error(), "device must be >= 0") {
		t.Fatalf("device -1: %v, want a refusal", err)
	}
}

func TestQuantizedWeightsReachTheLibrary(t *testing.T) {
	// int4 on CUDA is refused by libds itself, naming why.
	_, err := Open(fixture("qwen2_tiny"), &EngineOptions{Backend: BackendCUDA, Weights: WeightsInt4})
	if err == nil || !strings.Contains(err.Error(), "CPU backend only") {
		t.Fatalf("int4 on CUDA: %v, want a refusal naming the CPU backend", err)
	}
	e, err := Open(fixture("qwen2_tiny"), &EngineOptions{Threads: 1, Weights: WeightsInt8})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	s, _ := e.NewSession(nil)
	defer s.Close()
	if err := s.Append(referenceIDs(t, "qwen2_tiny", "input_ids")); err != nil {
		t.Fatal(err)
	}
	if _, err := s.NextToken(); err != nil {
		t.Fatal(err)
	}
}

func TestBF16WeightsOption(t *testing.T) {
	// The fixture's weights are bf16 already, so bf16 storage changes nothing: same tokens.
	const name = "llama_tied_bf16"
	e, err := Open(fixture(name), &EngineOptions{Threads: 1, Weights: WeightsBF16})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	s, _ := e.NewSession(nil)
	defer s.Close()
	if err := s.Append(referenceIDs(t, name, "input_ids")); err != nil {
		t.Fatal(err)
	}
	for i, w := range referenceIDs(t, name, "greedy_tokens") {
		if got, err := s.NextToken(); err != nil || got != w {
			t.Fatalf("step %d: %d (%v), want %d", i, got, err, w)
		}
	}
}

func TestStreamingStopsWhenAsked(t *testing.T) {
	e := open(t, "deepseek_v3_vocab_bf16")
	s, _ := e.NewSession(nil)
	defer s.Close()
	seen := 0
	res, err := s.Generate(context.Background(), GenerateParams{PromptText: "Hello", AddSpecial: true}, func(Piece) bool {
		seen++
		return seen >= 3
	})
	if err != nil || res.StopReason != StopCallback || res.GeneratedTokens != 3 {
		t.Fatalf("%v %+v", err, res)
	}
	var buf bytes.Buffer
	if _, err := s.GenerateTo(context.Background(), GenerateParams{MaxTokens: 4}, &buf); err != nil || buf.Len() == 0 {
		t.Fatalf("GenerateTo: %v %q", err, buf.String())
	}
}

func TestContextCancellation(t *testing.T) {
	e := open(t, "deepseek_v3_vocab_bf16")
	s, _ := e.NewSession(&SessionOptions{NCtx: 4096})
	defer s.Close()
	ctx, cancel := context.WithCancel(context.Background())
	var once sync.Once
	res, err := s.Generate(ctx, GenerateParams{PromptText: "Hello", AddSpecial: true}, func(Piece) bool {
		once.Do(cancel)
		time.Sleep(time.Millisecond)
		return false
	})
	if err != nil || res.StopReason != StopCancelled {
		t.Fatalf("%v %+v", err, res)
	}
}

func TestPanickingCallbackIsAnError(t *testing.T) {
	e := open(t, "deepseek_v3_vocab_bf16")
	s, _ := e.NewSession(nil)
	defer s.Close()
	_, err := s.Generate(context.Background(), GenerateParams{PromptText: "Hi", AddSpecial: true, MaxTokens: 5}, func(Piece) bool { panic("boom") })
	if err == nil || !strings.Contains(err.Error(), "boom") {
		t.Fatalf("%v", err)
	}
	if _, err := s.NextToken(); err != nil {
		t.Fatalf("session unusable after a panic: %v", err)
	}
}

func TestErrorsAndClosedHandles(t *testing.T) {
	_, err := Open("/nonexistent/model", nil)
	var dsErr *Error
	if !errors.As(err, &dsErr) || dsErr.Status != ErrNotFound || !strings.Contains(err.Error(), "/nonexistent/model") {
		t.Fatalf("%v", err)
	}
	e := open(t, "qwen2_tiny")
	s, _ := e.NewSession(nil)
	e.Close() // the session keeps the model
	if err := s.Append([]int32{1, 2, 3}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Tokenize("x", false); !errors.Is(err, ErrClosed) {
		t.Fatalf("closed engine: %v", err)
	}
	s.Close()
	s.Close()
	if _, err := s.NextToken(); !errors.Is(err, ErrClosed) {
		t.Fatalf("closed session: %v", err)
	}
}

func TestChatTemplate(t *testing.T) {
	e := open(t, "deepseek_v3_vocab_bf16")
	text, err := e.ChatApply([]ChatMessage{{"user", "What is 2+2?"}}, true)
	if err != nil || text != "<｜begin▁of▁sentence｜><｜User｜>What is 2+2?<｜Assistant｜>" {
		t.Fatalf("%v %q", err, text)
	}
}

func equal(a, b []int32) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
