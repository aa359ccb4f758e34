package bench

import (
	"fmt"
	"io"
)

// Print writes the human-readable report.
func (r *Result) Print(w io.Writer) {
	fmt.Fprintf(w, "model            %s\n", r.Model)
	fmt.Fprintf(w, "backend          %s", r.Backend)
	if r.Device != "" {
		fmt.Fprintf(w, " (%s)", r.Device)
	}
	if r.Threads > 0 {
		fmt.Fprintf(w, ", %d threads", r.Threads)
	}
	if r.Kernels != "" {
		fmt.Fprintf(w, ", %s kernels", r.Kernels)
	}
	fmt.Fprintln(w)
	fmt.Fprintf(w, "tokens           prompt %d, generated %d, repeats %d (medians)\n", r.PromptTokens, r.GenTokens, r.Repeat)
	fmt.Fprintf(w, "load             %.1f ms\n", r.LoadMS)
	fmt.Fprintf(w, "prefill          %.1f tok/s\n", r.PrefillTokPerS)
	fmt.Fprintf(w, "decode           %.1f tok/s (%.3f ms/token)\n", r.DecodeTokPerS, r.MSPerToken)
	fmt.Fprintf(w, "latency ms       p50 %.3f  p90 %.3f  p99 %.3f  max %.3f  std %.3f\n", r.P50MS, r.P90MS, r.P99MS, r.MaxMS, r.StdMS)
	fmt.Fprintf(w, "jitter           p99/p50 %.3f, detrended over position %.3f", r.Jitter, r.P99P50Detrended)
	if r.ControlP99P50 != nil {
		fmt.Fprintf(w, "; control loop %.3f (p50 %.3f ms/step)", *r.ControlP99P50, *r.ControlP50MS)
	}
	fmt.Fprintln(w)
	fmt.Fprintf(w, "peak RSS         %.1f MB", float64(r.PeakRSSBytes)/1e6)
	if r.FileBytes > 0 {
		fmt.Fprintf(w, " (file %.1f MB)", float64(r.FileBytes)/1e6)
	}
	fmt.Fprintln(w)
	fmt.Fprintf(w, "weights/token    %.1f MB, %.2f GB/s", float64(r.WeightBytesPerToken)/1e6, r.WeightGBPerS)
	if r.StreamGBPerS != nil {
		fmt.Fprintf(w, " = %.1f%% of the stream", 100**r.BandwidthFraction)
	}
	fmt.Fprintln(w)
	if r.StreamGBPerS != nil {
		src := "the model's weight memory"
		if r.StreamBuffer {
			src = "a buffer of 4x LLC (the weights are under 4x the LLC)"
		}
		llc := "LLC"
		if r.LLCAssumed {
			llc = "LLC assumed"
		}
		fmt.Fprintf(w, "stream           %.2f GB/s reading %.1f MB of %s (%s %.0f MB)\n",
			*r.StreamGBPerS, float64(r.StreamBytes)/1e6, src, llc, float64(r.LLCBytes)/1e6)
	}
	if r.H2DBytesPerToken != nil {
		fmt.Fprintf(w, "bus/token        H2D %.1f B, D2H %.1f B, %.0f launches\n", *r.H2DBytesPerToken, *r.D2HBytesPerToken, *r.LaunchesPerToken)
	}
	if r.CopyGBPerS != nil {
		fmt.Fprintf(w, "device copy      %.0f GB/s; weights stream at %.1f%% of it\n", *r.CopyGBPerS, 100**r.BandwidthFraction)
	}
	if len(r.Ops) > 0 {
		fmt.Fprintf(w, "\ndecode, per operation (%s; ms per generated token)\n", r.Backend)
		printOps(w, r.Ops)
		if len(r.PrefillOps) > 0 {
			fmt.Fprintf(w, "\nprefill of %d tokens, per operation (%s; ms per prompt token)\n", r.PromptTokens, r.Backend)
			printOps(w, r.PrefillOps)
		} else {
			fmt.Fprintf(w, "\nprefill, per operation: not timed by the %s backend\n", r.Backend)
		}
	}
	if r.Timeline != nil {
		r.Timeline.Print(w)
	}
	if len(r.Batches) > 0 {
		pick := "on the host from the logits"
		if r.BatchDevicePick {
			pick = "on the device, only ids crossing"
		}
		fmt.Fprintf(w, "\nbatched decode   %d steps a size, greedy tokens picked %s; KV cache %.1f MB a session at %d positions\n",
			r.GenTokens, pick, float64(r.KVBytesPerSession)/1e6, r.PromptTokens+r.GenTokens)
		fmt.Fprintf(w, "%-8s %16s %12s %12s %14s\n", "batch", "decode tok/s", "step p50 ms", "step p99 ms", "KV cache MB")
		for _, b := range r.Batches {
			fmt.Fprintf(w, "%-8d %16.1f %12.3f %12.3f %14.1f\n", b.Batch, b.DecodeTokPerS, b.P50MS, b.P99MS,
				float64(r.KVBytesPerSession)*float64(b.Batch)/1e6)
		}
	}
	if lb := r.LlamaBench; lb != nil {
		fmt.Fprintf(w, "\n%-12s %14s %14s\n", "engine", "prefill tok/s", "decode tok/s")
		fmt.Fprintf(w, "%-12s %14.1f %14.1f\n", "edgellm", r.PrefillTokPerS, r.DecodeTokPerS)
		fmt.Fprintf(w, "%-12s %14.1f %14.1f\n", "llama.cpp", lb.PrefillTokPerS, lb.DecodeTokPerS)
		fmt.Fprintf(w, "%-12s %13.2fx %13.2fx\n", "ratio", lb.PrefillRatio, lb.DecodeRatio)
	}
}

// printOps prints a per-operation table.
func printOps(w io.Writer, ops []OpRow) {
	fmt.Fprintf(w, "%-20s %12s %8s\n", "operation", "ms/token", "share")
	for _, o := range ops {
		fmt.Fprintf(w, "%-20s %12.4f %7.1f%%\n", o.Op, o.MSPerTk, 100*o.Share)
	}
}
