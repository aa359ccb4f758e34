package cuda

import "os"

// rowDesc mirrors rows.cu Row: one token of a many-row step.
type rowDesc struct {
	Tok, Pos, Slot, Flags int32
}

// slotDesc mirrors rows.cu Slot: one sequence's KV cache and RoPE tables,
// and its sampling block (k_rsample; 0: the argmax).
type slotDesc struct {
	K, V, Rope, RopeLocal uint64
	Layer, Ctx            int64
	Sample                uint64
}

// The many-row step's entry points, by file (rows.cu says what each does).
var (
	rowsKernels    = []string{"k_rembed", "k_rpostnorm", "k_rargmax", "k_rsample"}                                                                        // rows.cu, sample.cu
	mmKernels      = []string{"k_rnorm_dim", "k_rnorm_qd", "k_rnorm_ffn", "k_rnorm_head", "k_mm_qkv", "k_mm_wo", "k_mm_gateup", "k_mm_down", "k_mm_head"} // mm.cu
	rowAttnKernels = []string{"k_rqkv", "k_pattn", "k_battn"}                                                                                             // mattn.cu: k_rqkv, k_pattn, k_battn
)

// RowsEnv is the environment variable that sets Options.Rows in the
// programs that take it from the environment (the engine, selftest): "1"
// on for every model, "0" off, anything else RowsAuto.
const RowsEnv = "EDGELLM_CUDA_ROWS"

// RowsFromEnv is Options.Rows as RowsEnv says.
func RowsFromEnv() RowsMode {
	switch os.Getenv(RowsEnv) {
	case "1":
		return RowsOn
	case "0":
		return RowsOff
	}
	return RowsAuto
}
