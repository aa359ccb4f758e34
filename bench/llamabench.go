package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"strconv"
)

// LlamaBench is llama.cpp's llama-bench result on the same file.
type LlamaBench struct {
	Command        string  `json:"command"`
	PrefillTokPerS float64 `json:"prefill_tok_per_s"`
	DecodeTokPerS  float64 `json:"decode_tok_per_s"`
	PrefillRatio   float64 `json:"prefill_ratio"` // ours / llama.cpp's
	DecodeRatio    float64 `json:"decode_ratio"`
}

// llamaBenchRow is the part of llama-bench's JSON output we read.
type llamaBenchRow struct {
	NPrompt int     `json:"n_prompt"`
	NGen    int     `json:"n_gen"`
	AvgTS   float64 `json:"avg_ts"`
}

// RunLlamaBench runs llama.cpp's llama-bench at path on file with the same
// threads and token counts (-ngl 99 when gpu).
func RunLlamaBench(ctx context.Context, path, file string, threads, prompt, gen, repeat int, gpu bool) (*LlamaBench, error) {
	args := []string{"-m", file, "-p", strconv.Itoa(prompt), "-n", strconv.Itoa(gen),
		"-r", strconv.Itoa(repeat), "-o", "json"}
	if threads > 0 {
		args = append(args, "-t", strconv.Itoa(threads))
	}
	if gpu {
		args = append(args, "-ngl", "99", "-fa", "1")
	} else {
		args = append(args, "-ngl", "0")
	}
	cmd := exec.CommandContext(ctx, path, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("bench: llama-bench: %w: %s", err, lastLine(errb.Bytes()))
	}
	lb, err := parseLlamaBench(out.Bytes())
	if err != nil {
		return nil, err
	}
	lb.Command = cmd.String()
	return lb, nil
}

func parseLlamaBench(b []byte) (*LlamaBench, error) {
	var rows []llamaBenchRow
	if err := json.Unmarshal(b, &rows); err != nil {
		return nil, fmt.Errorf("bench: llama-bench output is not its JSON: %w", err)
	}
	lb := &LlamaBench{}
	for _, r := range rows {
		switch {
		case r.NPrompt > 0 && r.NGen == 0:
			lb.PrefillTokPerS = r.AvgTS
		case r.NGen > 0 && r.NPrompt == 0:
			lb.DecodeTokPerS = r.AvgTS
		}
	}
	if lb.PrefillTokPerS == 0 && lb.DecodeTokPerS == 0 {
		return nil, fmt.Errorf("bench: llama-bench reported no prompt or generation rows")
	}
	return lb, nil
}

// Compare fills the ratios of ours to llama.cpp's.
func (lb *LlamaBench) Compare(r *Result) {
	if lb.PrefillTokPerS > 0 {
		lb.PrefillRatio = r.PrefillTokPerS / lb.PrefillTokPerS
	}
	if lb.DecodeTokPerS > 0 {
		lb.DecodeRatio = r.DecodeTokPerS / lb.DecodeTokPerS
	}
}

func lastLine(b []byte) string {
	b = bytes.TrimSpace(b)
	if i := bytes.LastIndexByte(b, '\n'); i >= 0 {
		b = b[i+1:]
	}
	return string(b)
}
