package server

import (
	"fmt"
	"net/http"

	"github.com/edgellm/edgellm/backend"
	"github.com/edgellm/edgellm/engine"
	"github.com/edgellm/edgellm/tokenizer"
)

// Limits on the work and memory one request can cause, beyond the body's
// size (guard.go) and num_ctx's range (maxNumCtx).

// DefaultKVBudget is Config.KVBudget's default: 8 GiB of KV cache per model.
const DefaultKVBudget = 8 << 30

// kvBytes bounds the KV cache a model loaded with ctx positions and slots
// sequences can allocate: the backend's own size of a session's cache
// where it gives one (the GPU's, which lives on the device), else K and V
// of every layer at 4 bytes an element (the widest any backend keeps).
func kvBytes(m *engine.Model, ctx, slots int) int64 {
	return backend.KVBytes(m.Backend(), ctx) * int64(max(slots, 1))
}

// checkKVBudget refuses a loaded model whose caches could exceed budget.
func checkKVBudget(m *engine.Model, budget int64) error {
	if budget <= 0 {
		return nil
	}
	if need := kvBytes(m, m.ContextLen(), m.Parallel()); need > budget {
		return &apiError{http.StatusBadRequest, fmt.Sprintf(
			"num_ctx %d needs %s of KV cache for %d parallel slots, more than the per-model budget of %s (serve --kv-budget); ask for a smaller num_ctx",
			m.ContextLen(), gib(need), max(m.Parallel(), 1), gib(budget))}
	}
	return nil
}

func gib(n int64) string { return fmt.Sprintf("%.2f GiB", float64(n)/(1<<30)) }

// maxTokenBytes is the most input bytes one token can stand for: the
// longest token text in the vocabulary (a token's stored text is never
// shorter than the input it covers: SentencePiece's "▁" is 3 bytes for 1,
// byte-level BPE's characters 1 or 2 for 1, "<0x41>" 6 for 1). So a text
// of more than ctx x maxTokenBytes bytes cannot fit ctx tokens, and is
// refused without tokenizing it. 0 when there is no vocabulary (prompts of
// token ids): no bound.
func maxTokenBytes(tok *tokenizer.Tokenizer) int {
	if tok.Model() == "none" {
		return 0
	}
	n := 0
	for id := range tok.VocabSize() {
		n = max(n, len(tok.Token(int32(id))))
	}
	return n
}

// textBytes is the text a request asks to tokenize (before the template,
// which only adds to it).
func (g *genRequest) textBytes() int {
	n := len(g.prompt) + len(g.system)
	for _, m := range g.messages {
		n += len(m.Content)
	}
	return n
}

// checkFits refuses a request whose text cannot fit ctx tokens of at most
// maxTok bytes each, before any tokenizing (maxTok 0: unknown, no check).
func checkFits(g *genRequest, ctx, maxTok int) error {
	if ctx <= 0 {
		return nil
	}
	if len(g.context) > ctx {
		return badRequest("context is %d tokens, longer than the context length (num_ctx) of %d", len(g.context), ctx)
	}
	if maxTok <= 0 {
		return nil
	}
	if room := int64(ctx-len(g.context)) * int64(maxTok); int64(g.textBytes()) > room {
		return badRequest("prompt is %d bytes, more than can fit the context length (num_ctx) of %d tokens (at most %d bytes a token)",
			g.textBytes(), ctx, maxTok)
	}
	return nil
}
