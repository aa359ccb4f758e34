package model

// BitNet b1.58: the Llama block with an RMSNorm before W_o and before
// W_down (sub-norms), NeoX RoPE, the LM head always from token_embd, and
// optional per-tensor ".scale" tensors. llama.cpp's graph (bitnet) gates
// with SiLU; bitnet.cpp's (bitnet-b1.58, earlier bitnet-25) with ReLU².
const (
	ArchBitNet    Arch = "bitnet"
	ArchBitNet158 Arch = "bitnet-b1.58"
	ArchBitNet25  Arch = "bitnet-25"
)

func init() {
	bitnet := func(act Activation) func(*loader, *Config) {
		return func(_ *loader, c *Config) {
			c.RopeStyle, c.Act, c.SubNorms = RopeNeoX, act, true
		}
	}
	register(&architecture{
		names: []Arch{ArchBitNet}, describe: bitnet(SiLU),
		headFromEmbed: true, tensorScales: true, ignored: []string{"output.weight"},
	})
	register(&architecture{
		names: []Arch{ArchBitNet158, ArchBitNet25}, describe: bitnet(ReLU2),
		headFromEmbed: true, tensorScales: true, ignored: []string{"output.weight"},
	})
}
