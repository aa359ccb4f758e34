package model

import (
	"slices"
)

// architecture is one GGUF architecture's description: how to read the
// features of its layers from the file's metadata. Each lives in its own
// arch_*.go file; adding an architecture whose maths the reference
// already has means adding one such file.
type architecture struct {
	names []Arch
	// describe sets, on a Config whose sizes, RoPE base and scaling are
	// already read, what a layer does (norm placement, biases, activation,
	// RoPE style, window...), reading the architecture's own keys through
	// l (l.fail reports a bad value).
	describe func(l *loader, c *Config)
	// headFromEmbed: the LM head is token_embd even when the file also
	// has output.weight.
	headFromEmbed bool
	// tensorScales: matrices may carry a one-element "<name>.scale" tensor
	// that multiplies their products (BitNet).
	tensorScales bool
	// ignored are tensors the file may hold that the network does not use.
	ignored []string
}

var architectures = map[Arch]*architecture{}

func register(a *architecture) {
	for _, n := range a.names {
		if _, dup := architectures[n]; dup {
			panic("model: architecture " + string(n) + " registered twice")
		}
		architectures[n] = a
	}
}

// Architectures lists the GGUF architecture names FromGGUF reads, sorted.
func Architectures() []string {
	var names []string
	for n := range architectures {
		names = append(names, string(n))
	}
	slices.Sort(names)
	return names
}
