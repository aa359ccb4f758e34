// Command devtest is the GPU backend's whole-step harness for the lent GPU
// machine (the user-facing checks are `edgellm selftest/bench --backend
// cuda`; each kernel alone is checked and timed by the package's
// TestKernel and BenchmarkKernel): it checks the GPU against the CPU
// reference on real small models and on synth's presets, then times decode
// variants, the experiment switches of internal/knobs among them. Build
// with CGO_ENABLED=0 and run it there.
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/edgellm/edgellm/backend/cuda"
	"github.com/edgellm/edgellm/backend/cuda/internal/knobs"
	"github.com/edgellm/edgellm/bench"
	"github.com/edgellm/edgellm/gguf"
	"github.com/edgellm/edgellm/model"
	"github.com/edgellm/edgellm/synth"
)

// variant is one way of loading a model: its options and the harness's
// switches.
type variant struct {
	opts  cuda.Options
	knobs knobs.Knobs
}

func (v variant) String() string {
	return fmt.Sprintf("%+v %+v", v.opts, v.knobs)
}

func main() {
	models := flag.String("models", "", "directory holding stories260K/ and tiny-random/")
	presets := flag.String("presets", "smollm-135m,bitnet-2b", "synthetic presets to check and bench")
	benchN := flag.Int("n", 512, "tokens to decode per bench")
	checkOnly := flag.Bool("check", false, "skip the benches")
	self := flag.Bool("self", true, "run the selftests of the presets")
	warm := flag.Int("warm", 16, "warm-up tokens per bench")
	prof := flag.Int("prof", 64, "profiled tokens per bench (0: none)")
	both := flag.Bool("both", true, "also bench without programmatic dependent launch")
	skip := flag.Int("skip", 0, "tokens decoded untimed before each bench's timed ones (a prompt's positions)")
	defs := flag.String("defs", "", "knobs.Knobs.Defines of the checks and the main benches (NAME=V,NAME=V)")
	more := flag.String("variants", "", "more variants to bench, ';'-separated, each a ','-separated list of nopdl kvhalf dense rows skip=K1+K2 def=NAME=V+NAME=V")
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

	base := knobs.Knobs{Defines: *defs}
	for _, name := range strings.Split(*presets, ",") {
		if name == "" {
			continue
		}
		p, ok := synth.Presets[name]
		if !ok {
			fmt.Printf("unknown preset %q (have %v)\n", name, synth.PresetNames())
			fail = true
			continue
		}
		t0 := time.Now()
		w, err := synth.Weights(p, synth.Options{Seed: 1})
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
			restore := knobs.Set(base)
			r := cuda.SelfTest(cuda.SelfTestCase{Name: nm, Weights: w, Prompt: prompt, Opts: cuda.Options{Dense: dense}})
			restore()
			fmt.Println(r)
			table = append(table, r.String())
			fail = fail || !r.Pass
		}
		if !*checkOnly {
			variants := []variant{{knobs: base}}
			if *both {
				variants = append(variants, variant{opts: cuda.Options{NoPDL: true}})
			}
			for _, spec := range strings.Split(*more, ";") {
				if spec == "" {
					continue
				}
				v, err := parseVariant(spec)
				if err != nil {
					fmt.Println(err)
					os.Exit(2)
				}
				variants = append(variants, v)
			}
			for _, v := range variants {
				line, err := benchOne(name, w, *benchN, *warm, *skip, *prof, v)
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
func parseVariant(spec string) (variant, error) {
	var v variant
	flags := map[string]*bool{"nopdl": &v.opts.NoPDL, "kvhalf": &v.opts.KVHalf, "dense": &v.opts.Dense}
	for _, kv := range strings.Split(spec, ",") {
		k, val, _ := strings.Cut(strings.TrimSpace(kv), "=")
		if p, ok := flags[k]; ok {
			*p = true
		} else if k == "rows" {
			v.opts.Rows = cuda.RowsOn
		} else if k == "norows" {
			v.opts.Rows = cuda.RowsOff
		} else if k == "def" {
			v.knobs.Defines = strings.ReplaceAll(val, "+", ",")
		} else if k == "skip" {
			v.knobs.Skip = strings.ReplaceAll(val, "+", ",")
		} else {
			return v, fmt.Errorf("variant %q: unknown key %q", spec, k)
		}
	}
	return v, nil
}

// benchOne decodes n tokens greedily after skip untimed ones (the device
// argmax chained through the host, as a generation loop does) and reports
// prefill, throughput and jitter, then a profiled run's per-op times.
func benchOne(name string, w *model.Weights, n, warm, skip, prof int, v variant) (string, error) {
	restore := knobs.Set(v.knobs)
	bm, err := cuda.Load(w, v.opts)
	restore()
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

	// k_qkv_attn's phase clocks (FA_TRACE): us after the v block's start,
	// mean over 16 tokens of the last layer's, for head 0's v, k and first blocks
	timeline := ""
	if strings.Contains(v.knobs.Defines, "FA_TRACE=1") {
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
	line := fmt.Sprintf("bench %s [%s/%s pdl=%v %v] on %s: %.0f tok/s over %d tokens, p50 %.1f us, p99 %.1f us, p99/p50 %.3f, %s, launches/token %d, tokens %016x, h2d %.0f B/token, d2h %.0f B/token, weights %.1f MB -> %.0f GB/s\n%s",
		name, lk, hk, m.PDL(), v, m.Info().Name, toks, n, p50*1e6, p99*1e6, p99/p50, ends, s.LaunchesPerToken(), seq, h2d, d2h,
		float64(m.WeightBytes())/1e6, wgb, profLine+timeline)
	fmt.Println(line)
	return line, nil
}
