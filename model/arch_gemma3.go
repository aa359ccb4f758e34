package model

import "math"

// ArchGemma3 is Gemma 3 (270M to 27B, text): the embedding scaled by
// sqrt(Dim), RMS norms both before and after attention and FFN (the
// stored norm weights already hold Gemma's +1), per-head q/k RMS norms
// before NeoX RoPE, a GELU(tanh)-gated FFN, a tied LM head, and
// sliding-window layers with a RoPE base of their own. As llama.cpp reads
// it: attention.sliding_window (no window when absent or 0);
// attention.sliding_window_pattern, a period n (layer l is local unless
// l%n == n-1; 6 when absent) or one bool per layer; rope.freq_base_swa
// (10000 when absent) for local layers, which are never position-scaled;
// final_logit_softcapping (none when absent).
const ArchGemma3 Arch = "gemma3"

// gemma27BLayers is the layer count by which llama.cpp recognises Gemma 3
// 27B, whose queries are scaled by 1/sqrt(Dim/Heads) instead of
// 1/sqrt(HeadDim) (Gemma's query_pre_attn_scalar).
const gemma27BLayers = 62

func init() {
	register(&architecture{
		names: []Arch{ArchGemma3},
		describe: func(l *loader, c *Config) {
			c.RopeStyle, c.Act = RopeNeoX, GELUTanh
			c.QKNorm, c.PostNorms = true, true
			c.EmbedScale = float32(math.Sqrt(float64(c.Dim)))
			if c.Layers == gemma27BLayers && c.Heads > 0 {
				c.AttnScale = float32(1 / math.Sqrt(float64(c.Dim/c.Heads)))
			}
			c.LogitSoftcap = l.floatKey("final_logit_softcapping", 0)
			if c.Window = l.uintKey("attention.sliding_window", 0); c.Window > 0 {
				c.Local = l.slidingLayers(c.Layers, 6)
				c.LocalRopeBase = l.floatKey("rope.freq_base_swa", 10000)
			}
		},
	})
}
