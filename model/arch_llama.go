package model

// ArchLlama is Llama 2 and 3, SmolLM, TinyLlama and llama2.c's stories:
// RMSNorm before attention and FFN, RoPE on adjacent pairs, SiLU-gated
// FFN. Llama 3's rope_freqs tensor, read for every architecture, gives its
// frequency scaling.
const ArchLlama Arch = "llama"

func init() {
	register(&architecture{
		names: []Arch{ArchLlama},
		describe: func(_ *loader, c *Config) {
			c.RopeStyle, c.Act = RopeNorm, SiLU
		},
	})
}
