package server

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/edgellm/edgellm/engine"
	"github.com/edgellm/edgellm/gguf"
	"github.com/edgellm/edgellm/quant"
)

// chatFamily is a vocabulary and chat template in the manner of one model
// family, for a "successor" model: after "\n" it writes "Hello", then
// " world", then the family's end-of-turn token.
type chatFamily struct {
	name     string
	model    string            // tokenizer.ggml.model
	tokens   []string          // the vocabulary; its types in types
	types    []int32           //
	kv       map[string]any    // more tokenizer keys
	template string            // testdata file in chattmpl, "" for none
	next     map[string]string // token text -> the token greedy decoding writes after it
	prompt   string            // what the template renders for one user turn "Hi"
}

const (
	tokNormal, tokControl, tokByte = 1, 3, 6
)

// tokenID names a token by its text where a key wants its id.
type tokenID string

// successorGGUF writes a llama-architecture model that maps each token to
// its successor: one-hot embeddings, every layer's weights zero (so the
// residual stream is the embedding), and an output matrix whose row for a
// successor has a 1 at its predecessor's column.
func successorGGUF(t *testing.T, path string, f chatFamily) {
	t.Helper()
	n := len(f.tokens)
	const heads = 4
	dim := (n + 31) / 32 * 32
	id := map[string]int{}
	for i, s := range f.tokens {
		id[s] = i
	}
	w := gguf.NewWriter()
	w.AddString("general.architecture", "llama")
	w.AddString("general.name", f.name)
	for k, v := range map[string]uint32{"context_length": 256, "embedding_length": uint32(dim), "block_count": 1,
		"feed_forward_length": 32, "attention.head_count": heads, "attention.head_count_kv": heads} {
		w.AddUint32("llama."+k, v)
	}
	w.AddFloat32("llama.attention.layer_norm_rms_epsilon", 1e-6)
	w.AddString("tokenizer.ggml.model", f.model)
	w.AddStrings("tokenizer.ggml.tokens", f.tokens)
	w.AddInt32s("tokenizer.ggml.token_type", f.types)
	w.AddFloat32s("tokenizer.ggml.scores", make([]float32, n))
	for k, v := range f.kv {
		switch x := v.(type) {
		case string:
			w.AddString(k, x)
		case bool:
			w.AddBool(k, x)
		case []string:
			w.AddStrings(k, x)
		case tokenID:
			w.AddUint32(k, uint32(id[string(x)]))
		default:
			t.Fatalf("key %s: unsupported %T", k, v)
		}
	}
	if f.template != "" {
		src, err := os.ReadFile(filepath.Join("chattmpl", "testdata", f.template))
		if err != nil {
			t.Fatal(err)
		}
		w.AddString("tokenizer.chat_template", string(src))
	}
	f32 := func(vals []float32) []byte {
		b := make([]byte, 4*len(vals))
		for i, v := range vals {
			u := math.Float32bits(v)
			b[4*i], b[4*i+1], b[4*i+2], b[4*i+3] = byte(u), byte(u>>8), byte(u>>16), byte(u>>24)
		}
		return b
	}
	add := func(name string, rows, cols int, vals []float32) {
		if vals == nil {
			vals = make([]float32, rows*cols)
		}
		if err := w.AddTensor(name, quant.F32, []uint64{uint64(cols), uint64(rows)}, f32(vals)); err != nil {
			t.Fatal(err)
		}
	}
	ones := func(k int) []float32 {
		v := make([]float32, k)
		for i := range v {
			v[i] = 1
		}
		return v
	}
	embed := make([]float32, n*dim)
	for i := range n {
		embed[i*dim+i] = 1
	}
	out := make([]float32, n*dim)
	for from, to := range f.next {
		out[id[to]*dim+id[from]] = 1
	}
	add("token_embd.weight", n, dim, embed)
	add("output.weight", n, dim, out)
	w.AddTensor("output_norm.weight", quant.F32, []uint64{uint64(dim)}, f32(ones(dim)))
	w.AddTensor("blk.0.attn_norm.weight", quant.F32, []uint64{uint64(dim)}, f32(ones(dim)))
	w.AddTensor("blk.0.ffn_norm.weight", quant.F32, []uint64{uint64(dim)}, f32(ones(dim)))
	for _, m := range []string{"attn_q", "attn_k", "attn_v", "attn_output"} {
		add("blk.0."+m+".weight", dim, dim, nil)
	}
	add("blk.0.ffn_gate.weight", 32, dim, nil)
	add("blk.0.ffn_up.weight", 32, dim, nil)
	add("blk.0.ffn_down.weight", dim, 32, nil)
	if err := w.WriteFile(path); err != nil {
		t.Fatal(err)
	}
}

// chatFamilies are Gemma 3 (SentencePiece, <end_of_turn>), Qwen3 (byte-level
// BPE, <|im_end|>) and Llama 3.2 (byte-level BPE, <|eot_id|>), each with its
// real chat template.
func chatFamilies() []chatFamily {
	gemma := chatFamily{name: "gemma-3-test", model: "llama", template: "gemma-3-it.jinja",
		prompt: "<bos><start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\n"}
	for _, s := range []string{"<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>"} {
		gemma.tokens = append(gemma.tokens, s)
		gemma.types = append(gemma.types, tokControl)
	}
	gemma.types[3] = 2 // <unk>
	for b := range 256 {
		gemma.tokens = append(gemma.tokens, fmt.Sprintf("<0x%02X>", b))
		gemma.types = append(gemma.types, tokByte)
	}
	for _, s := range []string{"\n", "Hello", "\u2581world"} {
		gemma.tokens = append(gemma.tokens, s)
		gemma.types = append(gemma.types, tokNormal)
	}
	gemma.kv = map[string]any{"tokenizer.ggml.bos_token_id": tokenID("<bos>"), "tokenizer.ggml.eos_token_id": tokenID("<eos>"),
		"tokenizer.ggml.add_space_prefix": false, "tokenizer.ggml.add_bos_token": true}
	gemma.next = map[string]string{"\n": "Hello", "Hello": "\u2581world", "\u2581world": "<end_of_turn>"}

	bpe := func(name, pre, tmpl, prompt, end string, specials []string, kv map[string]any) chatFamily {
		f := chatFamily{name: name, model: "gpt2", template: tmpl, prompt: prompt, kv: kv}
		// Printable ASCII stands for itself in byte-level BPE; "Ġ" is the
		// space byte, "Ċ" the newline: all the templates' text needs.
		for b := '!'; b <= '~'; b++ {
			f.tokens = append(f.tokens, string(b))
			f.types = append(f.types, tokNormal)
		}
		f.tokens = append(f.tokens, "Ġ", "Ċ", "Hello", "Ġworld")
		f.types = append(f.types, tokNormal, tokNormal, tokNormal, tokNormal)
		for _, s := range specials {
			f.tokens = append(f.tokens, s)
			f.types = append(f.types, tokControl)
		}
		f.kv["tokenizer.ggml.pre"] = pre
		f.kv["tokenizer.ggml.merges"] = []string{"H e"}
		f.next = map[string]string{"Ċ": "Hello", "Hello": "Ġworld", "Ġworld": end}
		return f
	}
	qwen := bpe("qwen3-test", "qwen2", "qwen3.jinja", "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n", "<|im_end|>",
		[]string{"<|endoftext|>", "<|im_start|>", "<|im_end|>"},
		map[string]any{"tokenizer.ggml.bos_token_id": tokenID("<|endoftext|>"), "tokenizer.ggml.eos_token_id": tokenID("<|im_end|>"), "tokenizer.ggml.add_bos_token": false})
	llama := bpe("llama-3.2-test", "llama-bpe", "llama-3.2-instruct.jinja", "", "<|eot_id|>",
		[]string{"<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>", "<|eom_id|>"},
		map[string]any{"tokenizer.ggml.bos_token_id": tokenID("<|begin_of_text|>"), "tokenizer.ggml.eos_token_id": tokenID("<|eot_id|>")})
	return []chatFamily{gemma, qwen, llama}
}

// Chat through a family's own template ends at its end-of-turn token, which
// is never streamed; a raw prompt (no template, so no stop strings) ends
// there too, so it is the end-of-generation set that stops it.
func TestChatEndsAtEndOfTurn(t *testing.T) {
	s, err := New(Config{ModelsDir: t.TempDir(), Engine: engine.Options{Backend: "cpu", Threads: 1}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	h := s.Handler()
	for _, f := range chatFamilies() {
		t.Run(f.name, func(t *testing.T) {
			successorGGUF(t, filepath.Join(s.cfg.ModelsDir, f.name+".gguf"), f)
			var r struct {
				Response        string
				Message         struct{ Content string }
				DoneReason      string `json:"done_reason"`
				EvalCount       int    `json:"eval_count"`
				PromptEvalCount int    `json:"prompt_eval_count"`
			}
			post := func(path, body string) {
				t.Helper()
				r.Response, r.Message.Content = "", ""
				w := do(t, h, "POST", path, body)
				if w.Code != 200 {
					t.Fatalf("%s: %d %s", path, w.Code, w.Body)
				}
				if err := json.Unmarshal(w.Body.Bytes(), &r); err != nil {
					t.Fatal(err)
				}
			}
			post("/api/chat", `{"model":"`+f.name+`","stream":false,"messages":[{"role":"user","content":"Hi"}],"options":{"temperature":0,"num_predict":20}}`)
			if r.Message.Content != "Hello world" || r.DoneReason != "stop" || r.EvalCount != 2 {
				t.Errorf("chat: %q, done %q after %d tokens; want \"Hello world\", stop, 2", r.Message.Content, r.DoneReason, r.EvalCount)
			}
			if f.prompt != "" {
				m := modelOf(t, s, f.name)
				ids, err := m.Tokenizer().Encode(f.prompt, false, true)
				if err != nil {
					t.Fatal(err)
				}
				if r.PromptEvalCount != len(ids) {
					t.Errorf("chat prompt: %d tokens, want %d (%q)", r.PromptEvalCount, len(ids), f.prompt)
				}
			}
			post("/api/generate", `{"model":"`+f.name+`","prompt":"\n","raw":true,"stream":false,"options":{"temperature":0,"num_predict":20}}`)
			if r.Response != "Hello world" || r.DoneReason != "stop" {
				t.Errorf("raw: %q, done %q", r.Response, r.DoneReason)
			}
		})
	}
}
