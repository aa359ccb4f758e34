package model

// Qwen2 and Qwen2.5 are the Llama block with biases on q, k and v (read
// when the file has them, as llama.cpp does) and NeoX RoPE; Qwen3 drops
// the biases and RMS-normalises each head of q and k before RoPE. Both tie
// the LM head when output.weight is absent.
const (
	ArchQwen2 Arch = "qwen2"
	ArchQwen3 Arch = "qwen3"
)

func init() {
	register(&architecture{
		names: []Arch{ArchQwen2},
		describe: func(l *loader, c *Config) {
			c.RopeStyle, c.Act = RopeNeoX, SiLU
			c.QKVBias = l.hasTensor("blk.0.attn_q.bias")
		},
	})
	register(&architecture{
		names: []Arch{ArchQwen3},
		describe: func(_ *loader, c *Config) {
			c.RopeStyle, c.Act, c.QKNorm = RopeNeoX, SiLU, true
		},
	})
}
