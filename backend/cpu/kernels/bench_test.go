package kernels

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
)

// cpuRate reports, next to the wall-clock MB/s, the rate per CPU second the
// process used (cpu-MB/s): the figure to read on a machine shared with
// other jobs. Call it right after the timed loop with the bytes per op.
func cpuRate(b *testing.B, start int64, bytes int) {
	if ns := processCPU() - start; ns > 0 && start > 0 {
		b.ReportMetric(float64(bytes)*float64(b.N)/float64(ns)*1e3, "cpu-MB/s")
	}
}

// The benchmark shapes (rows x cols): BitNet 2B4T's attention, FFN up/gate
// and FFN down, SmolLM-135M's FFN up and down. b.SetBytes is the matrix's
// resident bytes, so MB/s is the rate weights stream at. "dram" rotates over
// copies totalling > 128 MiB so every byte comes from memory (as in decode,
// which reads the whole model per token); "hot" reuses one copy (cache).
var benchShapes = [][2]int{{2560, 2560}, {6912, 2560}, {2560, 6912}, {1536, 576}, {576, 1536}}

const streamBytes = 128 << 20

func benchCopies(bytes int, mode string) int {
	if mode == "hot" {
		return 1
	}
	return streamBytes/bytes + 1
}

func BenchmarkTernaryMatVec(b *testing.B) {
	for _, layout := range []Layout{Layout2Bit, LayoutTL, LayoutLUT} {
		for _, isa := range isas {
			if !hasISA(isa) || (isa != "go" && layout == LayoutLUT) || ((isa == "avx512" || isa == "avxvnni") && layout != Layout2Bit) {
				continue // LayoutLUT is pure Go; the VNNI kernels read Layout2Bit
			}
			for _, mode := range []string{"dram", "hot"} {
				for _, sh := range benchShapes {
					rows, cols := sh[0], sh[1]
					name := fmt.Sprintf("%v/isa=%s/%s/%dx%d", layout, isa, mode, rows, cols)
					b.Run(name, func(b *testing.B) {
						defer setISA(isa)()
						rng := rand.New(rand.NewPCG(1, 1))
						tc := randTernary(rng, rows, cols, "row")
						n := benchCopies(rows*cols/4, mode)
						m0, err := NewTernary(rows, cols, tc.codes, tc.bscale, 64, TernaryOptions{Layout: layout})
						if err != nil {
							b.Fatal(err)
						}
						ms := make([]*Ternary, n)
						for i := range ms {
							m := *m0 // same values, its own bytes in memory
							m.data = append([]byte(nil), m0.data...)
							ms[i] = &m
						}
						a, _ := NewActs(cols, 1)
						if layout != Layout2Bit {
							a.EnableLUT()
						}
						a.Set(randActs(rng, cols, 1))
						dst := make([]float32, rows)
						b.SetBytes(int64(ms[0].Bytes()))
						b.ResetTimer()
						c0 := processCPU()
						for i := 0; i < b.N; i++ {
							ms[i%n].MatVec(dst, a, 0, rows)
						}
						cpuRate(b, c0, ms[0].Bytes())
					})
				}
			}
		}
	}
}

// BenchmarkTernaryMatMat is prefill: 64 tokens per weight pass (a prefill
// chunk), the batched kernel (on each assembly path) against one token at
// a time (the path before it). MB/s counts weight bytes times tokens: the
// decode-equivalent rate.
func BenchmarkTernaryMatMat(b *testing.B) {
	const tokens = 64
	for _, sh := range benchShapes {
		rows, cols := sh[0], sh[1]
		for _, mode := range []string{"batch/isa=avx512", "batch/isa=avxvnni", "batch/isa=avx2", "single/isa=avx2"} {
			isa := mode[strings.IndexByte(mode, '=')+1:]
			if !hasISA(isa) {
				continue
			}
			b.Run(fmt.Sprintf("%dx%d/tokens=%d/%s", rows, cols, tokens, mode), func(b *testing.B) {
				defer setISA(isa)()
				rng := rand.New(rand.NewPCG(1, 1))
				tc := randTernary(rng, rows, cols, "row")
				m, _ := NewTernary(rows, cols, tc.codes, tc.bscale, 64, TernaryOptions{})
				a, _ := NewActs(cols, tokens)
				a.Set(randActs(rng, cols, tokens))
				dst := make([]float32, rows*tokens)
				b.SetBytes(int64(m.Bytes() * tokens))
				b.ResetTimer()
				c0 := processCPU()
				for i := 0; i < b.N; i++ {
					if strings.HasPrefix(mode, "batch") {
						m.MatMat(dst, a, 0, rows)
						continue
					}
					for r := 0; r < rows; r += 32 {
						for k := 0; k < tokens; k++ {
							m.rowsTok(dst[k*rows:(k+1)*rows], a, k, r, min(r+32, rows))
						}
					}
				}
				cpuRate(b, c0, m.Bytes()*tokens)
			})
		}
	}
}

// BenchmarkHead is the LM head / embedding matrices: Q8_0 (int8 with float16
// scales), Q4_0 (4 bits with float16 scales), int8 with float32 scales per
// 32 and per 16 (Q6_K), and F16, at
// BitNet's width (a 32768-row slice of the 128256-row head) and SmolLM's
// whole 49152x576 head from memory, and a ~1.3 MB slice of each in cache
// ("hot": the kernel's own speed).
func BenchmarkHead(b *testing.B) {
	for _, sh := range [][3]int{{32768, 2560, 0}, {49152, 576, 0}, {512, 2560, 1}, {2048, 576, 1}} {
		rows, cols, hot := sh[0], sh[1], sh[2] == 1
		mode := "dram"
		if hot {
			mode = "hot"
		}
		for _, kind := range []string{"q8_0", "q4_0", "int8g32", "int8g16", "f16"} {
			for _, isa := range isas {
				if !hasISA(isa) || (isa == "avxvnni" || isa == "avx512") && (kind == "int8g16" || kind == "f16") {
					continue // the AVX-VNNI and AVX-512 head kernels are group-32 ones
				}
				b.Run(fmt.Sprintf("%s/isa=%s/%s/%dx%d", kind, isa, mode, rows, cols), func(b *testing.B) {
					defer setISA(isa)()
					rng := rand.New(rand.NewPCG(1, 1))
					var ms []Matrix
					for len(ms) == 0 || !hot && len(ms)*ms[0].Bytes() < streamBytes {
						var m Matrix
						var err error
						// values do not change the speed: fill cheaply
						switch kind {
						case "f16":
							w := make([]uint16, rows*cols)
							for i := range w {
								w[i] = uint16(i*7919) % 0x3c00
							}
							m, err = NewF16Mat(rows, cols, w)
						case "q8_0": // int8 with the file's float16 scales
							v := make([]int8, rows*cols)
							for i := range v {
								v[i] = int8(i * 7919)
							}
							m, err = newInt8MatHalf("Q8_0", rows, cols, v, make([]uint16, rows*cols/32))
						case "q4_0": // the file's blocks, kept in 4 bits
							d := make([]byte, rows*cols/32*18)
							for i := range d {
								d[i] = byte(i * 7919)
							}
							for i := 0; i < len(d); i += 18 {
								d[i], d[i+1] = 0, 0x3c
							}
							m, err = FromQ4_0(rows, cols, d, nil)
						default:
							g := 32
							if kind == "int8g16" {
								g = 16
							}
							v := make([]int8, rows*cols)
							for i := range v {
								v[i] = int8(i * 7919)
							}
							m, err = NewInt8Mat(rows, cols, v, make([]float32, rows*cols/g), g)
						}
						if err != nil {
							b.Fatal(err)
						}
						ms = append(ms, m)
					}
					a, _ := NewActs(cols, 1)
					if NeedsLaneBias(ms[0]) {
						a.EnableLaneBias()
					}
					a.Set(randActs(rng, cols, 1))
					dst := make([]float32, rows)
					b.SetBytes(int64(ms[0].Bytes()))
					b.ResetTimer()
					c0 := processCPU()
					for i := 0; i < b.N; i++ {
						ms[i%len(ms)].MatVec(dst, a, 0, rows)
					}
					cpuRate(b, c0, ms[0].Bytes())
				})
			}
		}
	}
}

// BenchmarkActsSet quantizes one token, and with "bias" also writes the
// lane biases 4-bit matrices read.
func BenchmarkActsSet(b *testing.B) {
	for _, cols := range []int{576, 2560, 6912} {
		for _, bias := range []bool{false, true} {
			name := fmt.Sprint(cols)
			if bias {
				name += "/bias"
			}
			b.Run(name, func(b *testing.B) {
				a, _ := NewActs(cols, 1)
				if bias {
					a.EnableLaneBias()
				}
				x := randActs(rand.New(rand.NewPCG(1, 1)), cols, 1)
				b.SetBytes(int64(4 * cols))
				for i := 0; i < b.N; i++ {
					a.Set(x)
				}
			})
		}
	}
}

// BenchmarkStreamBaseline reads 128 MiB+ of memory with plain loads: the
// machine's single-thread read rate, the ceiling for the "dram" figures.
func BenchmarkStreamBaseline(b *testing.B) {
	buf := make([]uint64, streamBytes/8+4096)
	for i := range buf {
		buf[i] = uint64(i)
	}
	const chunk = 1 << 20 // 8 MiB per op, walking the whole buffer in turn
	b.SetBytes(8 * chunk)
	c0 := processCPU()
	off := 0
	var sink uint64
	for i := 0; i < b.N; i++ {
		if off+chunk > len(buf) {
			off = 0
		}
		var s0, s1, s2, s3 uint64
		p := buf[off : off+chunk]
		for j := 0; j+3 < len(p); j += 4 {
			s0 += p[j]
			s1 += p[j+1]
			s2 += p[j+2]
			s3 += p[j+3]
		}
		sink += s0 + s1 + s2 + s3
		off += chunk
	}
	cpuRate(b, c0, 8*chunk)
	if sink == 1 {
		b.Log(sink)
	}
}

// BenchmarkTernaryMatVecThreads splits the rows of one product over
// goroutines as the backend's workers do (spawned per op here, which costs a
// few microseconds), from memory.
func BenchmarkTernaryMatVecThreads(b *testing.B) {
	for _, threads := range []int{1, 2} {
		for _, sh := range benchShapes[:3] {
			rows, cols := sh[0], sh[1]
			b.Run(fmt.Sprintf("threads=%d/%dx%d", threads, rows, cols), func(b *testing.B) {
				rng := rand.New(rand.NewPCG(1, 1))
				tc := randTernary(rng, rows, cols, "row")
				m0, err := NewTernary(rows, cols, tc.codes, tc.bscale, 64, TernaryOptions{})
				if err != nil {
					b.Fatal(err)
				}
				n := benchCopies(m0.Bytes(), "dram")
				ms := make([]*Ternary, n)
				for i := range ms {
					m := *m0
					m.data = append([]byte(nil), m0.data...)
					ms[i] = &m
				}
				a, _ := NewActs(cols, 1)
				a.Set(randActs(rng, cols, 1))
				dst := make([]float32, rows)
				b.SetBytes(int64(m0.Bytes()))
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					m := ms[i%n]
					var wg sync.WaitGroup
					for t := 0; t < threads; t++ {
						r0, r1 := rows*t/threads/4*4, rows*(t+1)/threads/4*4
						if t == threads-1 {
							r1 = rows
						}
						wg.Add(1)
						go func() { m.MatVec(dst, a, r0, r1); wg.Done() }()
					}
					wg.Wait()
				}
			})
		}
	}
}

// BenchmarkMatVecCores is the one-token kernels' compute ceiling: each of
// threads goroutines runs its own product of a 64x2560 matrix (40 KB of
// ternary codes, 90 KB of Q4_0, 170 KB of Q8_0: in each core's L2) over
// and over, so no
// byte comes from memory and nothing is shared. MB/s is all threads'
// weight bytes together. Against the machine's stream at the same thread
// count it says whether a kernel can keep up with memory at all
// (docs/cpu-notes.md, "The one-token kernels' compute ceiling").
func BenchmarkMatVecCores(b *testing.B) {
	const rows, cols = 64, 2560
	for _, kind := range []string{"ternary", "q4_0", "q8_0"} {
		for _, isa := range isas[1:] {
			if !hasISA(isa) {
				continue
			}
			for _, threads := range []int{1, 2} {
				b.Run(fmt.Sprintf("%s/isa=%s/threads=%d", kind, isa, threads), func(b *testing.B) {
					defer setISA(isa)()
					type matVec interface {
						MatVec(dst []float32, a *Acts, r0, r1 int)
						Bytes() int
					}
					ms := make([]matVec, threads)
					acts := make([]*Acts, threads)
					for t := range ms {
						rng := rand.New(rand.NewPCG(uint64(t), 2))
						switch kind {
						case "q8_0":
							ms[t], _, _ = randQ8Half(b, rng, rows, cols)
						case "q4_0":
							_, ms[t], _ = randQ4(b, rng, rows, cols)
						default:
							tc := randTernary(rng, rows, cols, "row")
							m, err := NewTernary(rows, cols, tc.codes, tc.bscale, 64, TernaryOptions{Layout: Layout2Bit})
							if err != nil {
								b.Fatal(err)
							}
							ms[t] = m
						}
						acts[t], _ = NewActs(cols, 1)
						if kind == "q4_0" {
							acts[t].EnableLaneBias()
						}
						acts[t].Set(randActs(rng, cols, 1))
					}
					b.SetBytes(int64(threads * ms[0].Bytes()))
					b.ResetTimer()
					var wg sync.WaitGroup
					for t := range ms {
						wg.Add(1)
						go func() {
							defer wg.Done()
							dst := make([]float32, rows)
							for i := 0; i < b.N; i++ {
								ms[t].MatVec(dst, acts[t], 0, rows)
							}
						}()
					}
					wg.Wait()
				})
			}
		}
	}
}
