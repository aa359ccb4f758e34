package cuda

// rowDesc mirrors rows.cu Row: one token of a many-row step.
type rowDesc struct {
	Tok, Pos, Slot, Flags int32
}

// slotDesc mirrors rows.cu Slot: one sequence's KV cache and RoPE tables.
type slotDesc struct {
	K, V, Rope, RopeLocal uint64
	Layer, Ctx            int64
}

// The many-row step's entry points, by file (rows.cu says what each does).
var (
	rowsKernels    = []string{} // rows.cu, sample.cu: k_rembed, k_rpostnorm, k_rargmax, k_rsample
	mmKernels      = []string{} // mm.cu: k_rnorm_*, k_mm_*
	rowAttnKernels = []string{"k_rqkv", "k_pattn", "k_battn"}
)
