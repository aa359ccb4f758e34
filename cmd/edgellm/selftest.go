package main

// selftestCmd runs on a machine with a GPU the checks go test cannot:
// GPU logits against the CPU reference forward pass, and greedy tokens.
// Its Run is in selftest_cuda.go (selftest_nocuda.go for -tags nocuda).
type selftestCmd struct {
	Backend string   `help:"Backend to check against the CPU reference." enum:"cuda" default:"cuda"`
	Presets []string `help:"Synthetic presets to check (synthesized here)." default:"smollm-135m,bitnet-2b"`
	Greedy  int      `help:"Greedy tokens that must be identical on models with a vocabulary." default:"64"`
	Models  []string `arg:"" optional:"" help:"Model files to check too (stories260K, tiny-random files)." type:"existingfile"`
}

// countingPrompt is n ids (37*i + 5) mod vocab, the tiny-random sequence.
func countingPrompt(n, vocab int) []int32 {
	p := make([]int32, n)
	for i := range p {
		p[i] = int32((37*i + 5) % vocab)
	}
	return p
}
