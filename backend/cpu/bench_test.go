package cpu

import (
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"testing"
	"time"

	"github.com/edgellm/edgellm/backend/cpu/kernels"
	"github.com/edgellm/edgellm/gguf"
	"github.com/edgellm/edgellm/internal/testfiles"
	"github.com/edgellm/edgellm/model"
	"github.com/edgellm/edgellm/quant"
)

// BenchmarkDecodeStories times one decode step of stories260K.
func BenchmarkDecodeStories(b *testing.B) {
	for _, threads := range []int{1, 2} {
		b.Run(map[int]string{1: "t1", 2: "t2"}[threads], func(b *testing.B) {
			w := loadGGUFB(b, testfiles.Path(b, "models/stories260K/stories260K-f32.gguf"))
			m, err := Load(w, Options{Threads: threads})
			if err != nil {
				b.Fatal(err)
			}
			defer m.Close()
			s, _ := m.NewSession(512)
			logits := make([]float32, w.Vocab)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if s.Pos() == 512 {
					s.Rewind(0)
				}
				if err := s.Decode(1, logits); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func loadGGUFB(b *testing.B, path string) *model.Weights {
	f, err := gguf.Open(path)
	if err != nil {
		b.Skip(err)
	}
	b.Cleanup(func() { f.Close() })
	w, err := model.FromGGUF(f)
	if err != nil {
		b.Fatal(err)
	}
	return w
}

// loadPresetB loads a bench preset that `edgellm bench` wrote to the user
// cache (name without .gguf), skipping the benchmark when it is not there.
func loadPresetB(b *testing.B, name string) *model.Weights {
	dir, err := os.UserCacheDir()
	if err != nil {
		b.Skip(err)
	}
	return loadGGUFB(b, filepath.Join(dir, "edgellm", "synth", name+".gguf"))
}

// BenchmarkMatVec times one SmolLM-135M FFN-up-shaped product (1536x576)
// per weight type on the pool, reporting weight bytes per second.
func BenchmarkMatVec(b *testing.B) {
	r := rand.New(rand.NewPCG(1, 1))
	for _, typ := range []quant.Type{quant.F32, quant.F16, quant.Q8_0, quant.Q4_0, quant.Q2_0} {
		for _, threads := range []int{1, 2} {
			for _, kern := range []bool{false, true} {
				b.Run(fmt.Sprintf("%s/t%d/kernels=%v", typ, threads, kern), func(b *testing.B) {
					w := randTensor(b, r, "w", typ, 1536, 576, 1)
					mm, err := newMatmul(&w, 1536, 576, kern, nil)
					if err != nil {
						b.Fatal(err)
					}
					p := newPool(threads)
					defer p.close()
					x := make([]float32, 576)
					out := make([]float32, 1536)
					task := newMatTask(threads, 576)
					task.n, task.m, task.out, task.x, task.nb = 1, [3]matmul{mm}, [3][]float32{out}, x, 1
					b.SetBytes(int64(len(w.Data)))
					b.ResetTimer()
					if mm.acts() {
						a, err := kernels.NewActs(576, 1)
						if err != nil {
							b.Fatal(err)
						}
						a.Set(x)
						task.a = a
					}
					for range b.N {
						task.deal(threads)
						p.run(task)
					}
				})
			}
		}
	}
}

// BenchmarkSynth times a 128-token prefill and decode steps of the bench
// presets written by `edgellm bench` to the user cache (skipped when they
// are not there), with per-operation times (ms per token).
func BenchmarkSynth(b *testing.B) {
	for _, name := range []string{"smollm-135m-q2_0-q8_0", "bitnet-2b-tq2_0-q8_0"} {
		b.Run(name, func(b *testing.B) {
			w := loadPresetB(b, name)
			m, err := Load(w, Options{Threads: 1})
			if err != nil {
				b.Fatal(err)
			}
			defer m.Close()
			prompt := make([]int32, 128)
			for i := range prompt {
				prompt[i] = int32(i * 7 % w.Vocab)
			}
			logits := make([]float32, w.Vocab)
			for _, phase := range []string{"prefill", "decode"} {
				b.Run(phase, func(b *testing.B) {
					ss, _ := m.NewSession(384)
					s := ss.(*Session)
					s.Profile(true)
					if phase == "decode" {
						s.Prefill(prompt, logits)
					}
					s.OpTimes()
					b.ResetTimer()
					n := 0
					for i := 0; i < b.N; i++ {
						if phase == "prefill" {
							s.Rewind(0)
							s.Prefill(prompt, logits)
							n += len(prompt)
							continue
						}
						if s.Pos() == 384 {
							s.Rewind(128)
						}
						s.Decode(1, logits)
						n++
					}
					b.StopTimer()
					t := s.OpTimes()
					b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "tok/s")
					for _, op := range []struct {
						name string
						v    float64
					}{{"qkv", t.QKV}, {"attn", t.Attention}, {"out", t.Output}, {"ffnup", t.FFNUpGate}, {"ffndown", t.FFNDown}, {"head", t.LMHead}, {"other", t.Other}} {
						b.ReportMetric(op.v*1e3/float64(n), op.name+"-ms/tok")
					}
				})
			}
		})
	}
}

// BenchmarkJitter decodes 256 tokens after a 128-token prompt of the
// smollm-135m preset (as `edgellm bench` does) at 1 thread and reports the
// per-token latency p50, p99 and their ratio, the same for the thread's CPU
// time, page faults and involuntary context switches per token, and, as a
// control, the p99/p50 of a fixed arithmetic loop about as long as a token
// run after each token (no memory traffic, nothing of ours: the machine's
// own floor). JITTER_TRACE=1 prints every token's time, thread CPU time,
// minor page faults, involuntary context switches and the control's time.
func BenchmarkJitter(b *testing.B) {
	w := loadPresetB(b, "smollm-135m-q2_0-q8_0")
	m, err := Load(w, Options{Threads: 1})
	if err != nil {
		b.Fatal(err)
	}
	defer m.Close()
	prompt := make([]int32, 128)
	for i := range prompt {
		prompt[i] = int32(i * 7 % w.Vocab)
	}
	logits := make([]float32, w.Vocab)
	// Thread CPU time per token (Linux) tells our own variation from time
	// the machine took the core away.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	lat, cpu, ctl := make([]float64, 256), make([]float64, 256), make([]float64, 256)
	flt, inv := make([]int64, 256), make([]int64, 256)
	var p50s, p99s, c50s, c99s, x50s, x99s []float64
	var faults, switches int64
	spins := calibrateSpin(6 * time.Millisecond)
	pct := func(v []float64) (float64, float64) {
		v = slices.Clone(v)
		slices.Sort(v)
		return v[len(v)/2], v[len(v)*99/100]
	}
	for i := 0; i < b.N; i++ {
		s, _ := m.NewSession(384)
		s.Prefill(prompt, logits)
		for k := range lat {
			f0, _, i0 := threadFaults()
			t0, c0 := time.Now(), threadCPU()
			s.Decode(int32(k), logits)
			lat[k] = time.Since(t0).Seconds() * 1e3
			cpu[k] = (threadCPU() - c0) * 1e3
			f1, _, i1 := threadFaults()
			flt[k], inv[k] = f1-f0, i1-i0
			faults, switches = faults+flt[k], switches+inv[k]
			t0 = time.Now()
			spin(spins)
			ctl[k] = time.Since(t0).Seconds() * 1e3
		}
		s.Close()
		if os.Getenv("JITTER_TRACE") != "" {
			for k := range lat {
				fmt.Printf("%d %.3f %.3f %d %d %.3f\n", k, lat[k], cpu[k], flt[k], inv[k], ctl[k])
			}
		}
		p50, p99 := pct(lat)
		c50, c99 := pct(cpu)
		x50, x99 := pct(ctl)
		p50s, p99s, c50s, c99s = append(p50s, p50), append(p99s, p99), append(c50s, c50), append(c99s, c99)
		x50s, x99s = append(x50s, x50), append(x99s, x99)
	}
	med := func(v []float64) float64 { slices.Sort(v); return v[len(v)/2] }
	p50, p99 := med(p50s), med(p99s)
	b.ReportMetric(p50, "p50-ms")
	b.ReportMetric(p99, "p99-ms")
	b.ReportMetric(p99/p50, "p99/p50")
	b.ReportMetric(med(c99s)/med(c50s), "cpu-p99/p50")
	b.ReportMetric(med(x99s)/med(x50s), "control-p99/p50")
	b.ReportMetric(float64(faults)/float64(b.N*len(lat)), "faults/token")
	b.ReportMetric(float64(switches)/float64(b.N*len(lat)), "invol-switches/token")
}

// spinSink keeps spin's result alive.
var spinSink uint64

// spin runs n steps of a dependent integer recurrence: a fixed amount of
// work that touches no memory.
func spin(n int) {
	x := spinSink | 1
	for range n {
		x = x*6364136223846793005 + 1442695040888963407
	}
	spinSink = x
}

// calibrateSpin returns about how many spin steps take d here (the fastest
// of a few tries).
func calibrateSpin(d time.Duration) int {
	const n = 1 << 20
	best := time.Duration(math.MaxInt64)
	for range 5 {
		t0 := time.Now()
		spin(n)
		best = min(best, time.Since(t0))
	}
	return int(float64(n) * float64(d) / float64(max(best, 1)))
}

// BenchmarkAttention times a decode step's attention at position 380 of
// the smollm-135m preset (1 thread): one layer again and again (its cache
// in L2/L3) and all 30 in turn (from memory, as in decode).
func BenchmarkAttention(b *testing.B) {
	w := loadPresetB(b, "smollm-135m-q2_0-q8_0")
	m, err := load(w, Options{Threads: 1})
	if err != nil {
		b.Fatal(err)
	}
	defer m.Close()
	s, err := m.newSession(384)
	if err != nil {
		b.Fatal(err)
	}
	prompt := make([]int32, 381)
	if err := s.Prefill(prompt, nil); err != nil {
		b.Fatal(err)
	}
	for _, nl := range []int{1, w.Config.Layers} {
		b.Run(fmt.Sprintf("layers=%d", nl), func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				for l := 0; l < nl; l++ {
					s.at.layer, s.at.pos0, s.at.nb, s.at.chunks = l, 380, 1, maxKVChunks
					m.pool.run(&s.at)
					s.at.merge()
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*nl)/1e3, "us/layer")
		})
	}
}

type nopTask struct{}

func (nopTask) run(w, n int) {}

// BenchmarkPoolBarrier is the pool's cost per operation with no work: the
// dispatch and the wait for every worker, at each thread count the machine
// has cores for.
func BenchmarkPoolBarrier(b *testing.B) {
	b.Logf("NumCPU %d, GOMAXPROCS %d", runtime.NumCPU(), runtime.GOMAXPROCS(0))
	for _, threads := range []int{1, 2, 4, 8, 16} {
		if threads > runtime.NumCPU() {
			break
		}
		b.Run(fmt.Sprintf("t%d", threads), func(b *testing.B) {
			p := newPool(threads)
			defer p.close()
			for i := 0; i < b.N; i++ {
				p.run(nopTask{})
			}
		})
	}
}

// BenchmarkRope rotates one row's queries and keys of a bitnet-2b-shaped
// layer (20 query heads and 5 KV heads of 128) in cache, in both pair
// layouts.
func BenchmarkRope(b *testing.B) {
	r := rand.New(rand.NewPCG(5, 6))
	const hd = 128
	v := randTensorVec(r, 25*hd, 1)
	p := &pass{sets: 1, cos: randTensorVec(r, hd/2, 1), sin: randTensorVec(r, hd/2, 1)}
	for _, style := range []model.RopeStyle{model.RopeNorm, model.RopeNeoX} {
		c := &model.Config{HeadDim: hd, RopeStyle: style}
		b.Run(map[model.RopeStyle]string{model.RopeNorm: "norm", model.RopeNeoX: "neox"}[style], func(b *testing.B) {
			for range b.N {
				p.rope(v, 0, 0, c)
			}
		})
	}
}
