// Command devtest is the GPU backend's kernel harness for the lent GPU
// machine (the user-facing checks are `edgellm selftest/bench --backend
// cuda`): it checks the GPU against the CPU reference on real small models
// and on synthetic presets, then times decode variants. Build with CGO_ENABLED=0 and run it there.
package main

import (
	"encoding/binary"
	"flag"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/edgellm/edgellm/backend/cuda"
	"github.com/edgellm/edgellm/bench"
	"github.com/edgellm/edgellm/gguf"
	"github.com/edgellm/edgellm/model"
	"github.com/edgellm/edgellm/quant"
)

func main() {
	models := flag.String("models", "", "directory holding stories260K/ and tiny-random/")
	presets := flag.String("presets", "smollm-135m,bitnet-2b", "synthetic presets to check and bench")
	benchN := flag.Int("n", 512, "tokens to decode per bench")
	checkOnly := flag.Bool("check", false, "skip the benches")
	self := flag.Bool("self", true, "run the selftests of the presets")
	warm := flag.Int("warm", 16, "warm-up tokens per bench")
	prof := flag.Int("prof", 64, "profiled tokens per bench (0: none)")
	both := flag.Bool("both", true, "also bench without programmatic dependent launch and the persistent kernel")
	rowChunks := flag.Int("rowchunks", 0, "Options.RowChunks of the checks and the main benches (0: default)")
	skip := flag.Int("skip", 0, "tokens decoded untimed before each bench's timed ones (a prompt's positions)")
	defs := flag.String("defs", "", "Options.DebugDefines of the checks and the main benches (NAME=V,NAME=V)")
	more := flag.String("variants", "", "more Options to bench, ';'-separated, each a ','-separated list of rowchunks=N maxblock=N itemrows=N evict=N nopdl persistent skip=K1+K2 def=NAME=V+NAME=V")
	flag.Parse()
	fail := false
	var table []string

	if err := cuda.Available(); err != nil {
		fmt.Println("cuda not available:", err)
		os.Exit(2)
	}
	if bw, err := cuda.CopyBandwidth(0, 1<<30, 20); err != nil {
		fmt.Println("copy bandwidth:", err)
	} else {
		table = append(table, fmt.Sprintf("device-to-device copy: %.0f GB/s", bw))
	}

	if *models != "" {
		var cases []cuda.SelfTestCase
		st := filepath.Join(*models, "stories260K", "stories260K-f32.gguf")
		if w, err := loadGGUF(st); err != nil {
			fmt.Println("stories260K:", err)
			fail = true
		} else {
			cases = append(cases, cuda.SelfTestCase{Name: "stories260K", Weights: w, Prompt: []int32{1, 403, 407, 261, 378}, Greedy: 64})
		}
		tiny, _ := filepath.Glob(filepath.Join(*models, "tiny-random", "*.gguf"))
		var prompt []int32
		for i := 0; i < 24; i++ {
			prompt = append(prompt, int32((37*i+5)%1024))
		}
		for _, p := range tiny {
			w, err := loadGGUF(p)
			if err != nil {
				fmt.Println(p, err)
				fail = true
				continue
			}
			// Greedy ids must match only where the GPU computes in float like
			// the reference; quantized activations may flip near-ties of
			// these random-weight models.
			greedy := 0
			if strings.Contains(p, "f16") {
				greedy = 8
			}
			cases = append(cases, cuda.SelfTestCase{Name: strings.TrimSuffix(filepath.Base(p), ".gguf"), Weights: w, Prompt: prompt, Greedy: greedy})
		}
		for _, c := range cases {
			r := cuda.SelfTest(c)
			fmt.Println(r)
			table = append(table, r.String())
			fail = fail || !r.Pass
		}
	}

	for _, name := range strings.Split(*presets, ",") {
		if name == "" {
			continue
		}
		t0 := time.Now()
		w, err := preset(name)
		if err != nil {
			fmt.Println(err)
			fail = true
			continue
		}
		fmt.Printf("%s built in %v\n", name, time.Since(t0))
		prompt := []int32{1, 2, 3, 4}
		if name == "bitnet-2b" {
			prompt = prompt[:2]
		}
		for _, dense := range []bool{false, true} {
			if !*self || (dense && name == "bitnet-2b") {
				continue // the CPU reference of bitnet-2b takes seconds a token
			}
			nm := name
			if dense {
				nm += "/dense"
			}
			for _, multi := range []bool{false, true} {
				r := cuda.SelfTest(cuda.SelfTestCase{Name: fmt.Sprintf("%s persistent=%v", nm, multi), Weights: w, Prompt: prompt,
					Opts: cuda.Options{Dense: dense, Persistent: multi, RowChunks: *rowChunks, DebugDefines: *defs}})
				fmt.Println(r)
				table = append(table, r.String())
				fail = fail || !r.Pass
			}
		}
		if !*checkOnly {
			variants := []cuda.Options{{RowChunks: *rowChunks, DebugDefines: *defs}}
			if *both {
				variants = append(variants, cuda.Options{NoPDL: true, RowChunks: *rowChunks}, cuda.Options{Persistent: true, RowChunks: *rowChunks})
			}
			for _, spec := range strings.Split(*more, ";") {
				if spec == "" {
					continue
				}
				opts, err := parseVariant(spec)
				if err != nil {
					fmt.Println(err)
					os.Exit(2)
				}
				variants = append(variants, opts)
			}
			for _, opts := range variants {
				line, err := benchOne(name, w, *benchN, *warm, *skip, *prof, opts)
				if err != nil {
					fmt.Println("bench", name, err)
					fail = true
				}
				table = append(table, line)
			}
		}
	}
	fmt.Println("==== summary")
	for _, l := range table {
		fmt.Println(l)
	}
	if fail {
		fmt.Println("FAIL")
		os.Exit(1)
	}
	fmt.Println("OK")
}

func loadGGUF(path string) (*model.Weights, error) {
	f, err := gguf.Open(path)
	if err != nil {
		return nil, err
	}
	return model.FromGGUF(f)
}

// parseVariant reads one -variants entry.
func parseVariant(spec string) (cuda.Options, error) {
	var o cuda.Options
	ints := map[string]*int{"rowchunks": &o.RowChunks, "maxblock": &o.MaxBlock, "itemrows": &o.ItemRows, "evict": &o.Evict}
	flags := map[string]*bool{"nopdl": &o.NoPDL, "persistent": &o.Persistent}
	for _, kv := range strings.Split(spec, ",") {
		k, v, _ := strings.Cut(strings.TrimSpace(kv), "=")
		if p, ok := ints[k]; ok {
			n, err := strconv.Atoi(v)
			if err != nil {
				return o, fmt.Errorf("variant %q: %v", spec, err)
			}
			*p = n
		} else if p, ok := flags[k]; ok {
			*p = true
		} else if k == "def" {
			o.DebugDefines = strings.ReplaceAll(v, "+", ",")
		} else if k == "skip" {
			o.DebugSkip = strings.ReplaceAll(v, "+", ",")
		} else {
			return o, fmt.Errorf("variant %q: unknown key %q", spec, k)
		}
	}
	return o, nil
}

// benchOne decodes n tokens greedily after skip untimed ones (the device
// argmax chained through the host, as a generation loop does) and reports
// prefill, throughput and jitter, then a profiled run's per-op times.
func benchOne(name string, w *model.Weights, n, warm, skip, prof int, opts cuda.Options) (string, error) {
	bm, err := cuda.Load(w, opts)
	if err != nil {
		return "", err
	}
	defer bm.Close()
	m := bm.(*cuda.Model)
	bs, err := m.NewSession(n + skip + 64)
	if err != nil {
		return "", err
	}
	defer bs.Close()
	s := bs.(*cuda.Session)
	// prefill of 128 tokens (the bench's prompt), median of 5
	prompt := make([]int32, 128)
	for i := range prompt {
		prompt[i] = int32(i*7919%m.Config().Vocab + 1)
	}
	var pf []float64
	for r := 0; r < 6; r++ {
		_ = s.Rewind(0)
		t := time.Now()
		if err := s.Prefill(prompt, nil); err != nil {
			return "", err
		}
		if r > 0 { // the first warms up
			pf = append(pf, 128/time.Since(t).Seconds())
		}
	}
	prefill := fmt.Sprintf(", prefill %.0f tok/s", bench.Median(pf))
	_ = s.Rewind(0)
	tok := int32(1)
	for i := 0; i < warm; i++ {
		if tok, err = s.DecodeArgmax(tok); err != nil {
			return "", err
		}
	}
	_ = s.Rewind(0)
	for i := 0; i < skip; i++ { // untimed, as a prompt would be
		if tok, err = s.DecodeArgmax(tok); err != nil {
			return "", err
		}
	}
	st0 := s.Stats()
	lat := make([]float64, 0, n)
	var seq uint64
	start := time.Now()
	for i := 0; i < n; i++ {
		t := time.Now()
		if tok, err = s.DecodeArgmax(tok); err != nil {
			return "", err
		}
		lat = append(lat, time.Since(t).Seconds())
		if i < 64 { // a fingerprint of the greedy tokens, to compare variants
			seq = seq*1000003 + uint64(tok)
		}
	}
	total := time.Since(start).Seconds()
	st1 := s.Stats()
	// p50 of the first and the last 64 tokens: attention grows with the position
	ends := fmt.Sprintf("p50 first/last 64 %.1f/%.1f us", bench.Median(lat[:min(64, n)])*1e6, bench.Median(lat[max(n-64, 0):])*1e6) + prefill
	sort.Float64s(lat)
	p50, p99 := lat[len(lat)/2], lat[len(lat)*99/100]
	toks := float64(n) / total
	h2d := float64(st1.H2DBytes-st0.H2DBytes) / float64(n)
	d2h := float64(st1.D2HBytes-st0.D2HBytes) / float64(n)
	wgb := float64(m.WeightBytes()) * toks / 1e9

	// the persistent kernel's timeline: mean us per step kind over 16 tokens
	timeline := ""
	if pers, _ := s.Persistent(); pers {
		var sum [7]float64
		for i := 0; i < 16; i++ {
			if tok, err = s.DecodeArgmax(tok); err != nil {
				return "", err
			}
			tl, err := s.Timeline()
			if err != nil {
				return "", err
			}
			sum[0] += tl[0]
			for j, v := range tl[1 : len(tl)-1] {
				sum[1+j%5] += v / float64((len(tl)-2)/5)
			}
			sum[6] += tl[len(tl)-1]
		}
		timeline = fmt.Sprintf("\n  persistent us/step (block 0, incl. barrier): embed %.2f qkv %.2f attn %.2f wo %.2f gateup %.2f down %.2f lmhead %.2f",
			sum[0]/16, sum[1]/16, sum[2]/16, sum[3]/16, sum[4]/16, sum[5]/16, sum[6]/16)
	}

	// k_qkv_attn's phase clocks (FA_TRACE): us after the v block's start,
	// mean over 16 tokens of the last layer's, for head 0's v, k and first blocks
	if strings.Contains(opts.DebugDefines, "FA_TRACE=1") {
		var sum [48]float64
		for i := 0; i < 16; i++ {
			if tok, err = s.DecodeArgmax(tok); err != nil {
				return "", err
			}
			tr, err := s.Trace(48)
			if err != nil {
				return "", err
			}
			for j := range sum {
				sum[j] += float64(int64(tr[j]-tr[0])) / 1e3 / 16
			}
		}
		timeline += fmt.Sprintf("\n  k_qkv_attn marks (us; entry, issued, waited, staged, qkv, folded, merged-sync, end; in the staging: loads issued, values, reduced, quantized): v block %.2f %.2f k block %.2f %.2f q block %.2f %.2f",
			sum[:8], sum[8:12], sum[16:24], sum[24:28], sum[32:40], sum[40:44])
	}

	// per-op profile (launch by launch, so it includes launch gaps)
	_ = s.Rewind(0)
	s.Profile(true)
	for i := 0; i < prof; i++ {
		if tok, err = s.DecodeArgmax(tok); err != nil {
			return "", err
		}
	}
	s.Profile(false)
	ot := s.OpTimes()
	us := func(v float64) float64 { return v / float64(max(prof, 1)) * 1e6 }
	profLine := fmt.Sprintf("  ops us/token: embed %.1f qkv %.1f attn %.1f wo %.1f gateup %.1f down %.1f lmhead %.1f (sum %.1f)",
		us(ot.Embedding), us(ot.QKV), us(ot.Attention), us(ot.Output), us(ot.FFNUpGate), us(ot.FFNDown), us(ot.LMHead),
		us(ot.Embedding+ot.QKV+ot.Attention+ot.Output+ot.FFNUpGate+ot.FFNDown+ot.LMHead))
	lk, hk := m.Kinds()
	pers, why := s.Persistent()
	line := fmt.Sprintf("bench %s [%s/%s persistent=%v%s grid=%d pdl=%v %+v] on %s: %.0f tok/s over %d tokens, p50 %.1f us, p99 %.1f us, p99/p50 %.3f, %s, launches/token %d, tokens %016x, h2d %.0f B/token, d2h %.0f B/token, weights %.1f MB -> %.0f GB/s\n%s",
		name, lk, hk, pers, why, m.StepGrid(), m.PDL(), opts, m.Info().Name, toks, n, p50*1e6, p99*1e6, p99/p50, ends, s.LaunchesPerToken(), seq, h2d, d2h,
		float64(m.WeightBytes())/1e6, wgb, profLine+timeline)
	fmt.Println(line)
	return line, nil
}

// preset builds a synthetic model of a reference shape in memory: ternary
// matrices as Q2_0 (uniform per-tensor scale), tied Q8_0 embedding.
func preset(name string) (*model.Weights, error) {
	var c model.Config
	switch name {
	case "smollm-135m":
		c = model.Config{Arch: model.ArchLlama, Dim: 576, FFNDim: 1536, Layers: 30, Heads: 9, KVHeads: 3, HeadDim: 64,
			Vocab: 49152, ContextLen: 2048, NormEps: 1e-5, RopeBase: 10000, RopeScale: 1, Act: model.SiLU}
	case "bitnet-2b":
		c = model.Config{Arch: model.ArchBitNet158, Dim: 2560, FFNDim: 6912, Layers: 30, Heads: 20, KVHeads: 5, HeadDim: 128,
			Vocab: 128256, ContextLen: 4096, NormEps: 1e-5, RopeBase: 500000, RopeScale: 1, Act: model.ReLU2, SubNorms: true}
	default:
		return nil, fmt.Errorf("unknown preset %q", name)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	w := &model.Weights{Config: c, Tied: true}
	norm := func(n int) []float32 {
		v := make([]float32, n)
		for i := range v {
			v[i] = 1 + 0.1*float32(rng.NormFloat64())
		}
		return v
	}
	tern := func(nm string, rows, cols int) model.Tensor {
		d := quant.F32ToF16(float32(1 / math.Sqrt(float64(cols)/2)))
		nb := rows * cols / 64
		data := make([]byte, nb*18)
		for b := 0; b < nb; b++ {
			blk := data[b*18 : b*18+18]
			binary.LittleEndian.PutUint16(blk, d)
			for j := 0; j < 2; j++ {
				x := rng.Uint64()
				m := x & (x >> 1) & 0x5555555555555555 // fields equal to 3 ...
				x ^= m << 1                            // ... become 1 (zero weight)
				binary.LittleEndian.PutUint64(blk[2+8*j:], x)
			}
		}
		return model.Tensor{Name: nm, Type: quant.Q2_0, Rows: rows, Cols: cols, Data: data, Scale: 1}
	}
	qd, kvd := c.Heads*c.HeadDim, c.KVDim()
	for l := 0; l < c.Layers; l++ {
		p := fmt.Sprintf("blk.%d.", l)
		L := model.Layer{
			AttnNorm: norm(c.Dim), FFNNorm: norm(c.Dim),
			Wq: tern(p+"attn_q.weight", qd, c.Dim), Wk: tern(p+"attn_k.weight", kvd, c.Dim), Wv: tern(p+"attn_v.weight", kvd, c.Dim),
			Wo: tern(p+"attn_output.weight", c.Dim, qd), Wgate: tern(p+"ffn_gate.weight", c.FFNDim, c.Dim),
			Wup: tern(p+"ffn_up.weight", c.FFNDim, c.Dim), Wdown: tern(p+"ffn_down.weight", c.Dim, c.FFNDim),
		}
		if c.SubNorms {
			L.AttnSubNorm, L.FFNSubNorm = norm(qd), norm(c.FFNDim)
		}
		w.Layers = append(w.Layers, L)
	}
	w.OutNorm = norm(c.Dim)
	nb := c.Vocab * c.Dim / 32
	emb := make([]byte, nb*34)
	d := quant.F32ToF16(0.05 / 64)
	for b := 0; b < nb; b++ {
		blk := emb[b*34 : b*34+34]
		binary.LittleEndian.PutUint16(blk, d)
		for j := 0; j < 4; j++ {
			binary.LittleEndian.PutUint64(blk[2+8*j:], rng.Uint64())
		}
	}
	w.Embed = model.Tensor{Name: "token_embd.weight", Type: quant.Q8_0, Rows: c.Vocab, Cols: c.Dim, Data: emb, Scale: 1}
	w.Output = w.Embed
	w.Output.Name = "output.weight"
	return w, nil
}
