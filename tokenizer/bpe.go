package tokenizer

import (
	"container/heap"
	"strings"
	"unicode/utf8"
)

// mergePair is one BPE merge rule: left and right parts, in byte-encoded form.
type mergePair struct{ left, right string }

// byteToRune is GPT-2's reversible map from bytes to printable characters:
// printable Latin-1 bytes map to themselves, the others to U+0100 upward in
// byte order. runeToByte is its inverse.
var (
	byteToRune [256]string
	runeToByte = map[rune]byte{}
)

func init() {
	next := rune(256)
	for b := 0; b < 256; b++ {
		r := rune(b)
		printable := (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF)
		if !printable {
			r = next
			next++
		}
		byteToRune[b] = string(r)
		runeToByte[r] = byte(b)
	}
}

// byteEncode maps each byte of s through byteToRune.
func byteEncode(s string) string {
	var sb strings.Builder
	sb.Grow(2 * len(s))
	for i := 0; i < len(s); i++ {
		sb.WriteString(byteToRune[s[i]])
	}
	return sb.String()
}

// bpeBigram is a candidate merge of two adjacent symbols.
type bpeBigram struct {
	left, right int32
	rank        int32
	text        string
}

// bpeQueue pops the lowest rank first, then the leftmost pair.
type bpeQueue []bpeBigram

func (q bpeQueue) Len() int { return len(q) }
func (q bpeQueue) Less(i, j int) bool {
	if q[i].rank != q[j].rank {
		return q[i].rank < q[j].rank
	}
	return q[i].left < q[j].left
}
func (q bpeQueue) Swap(i, j int) { q[i], q[j] = q[j], q[i] }
func (q *bpeQueue) Push(x any)   { *q = append(*q, x.(bpeBigram)) }
func (q *bpeQueue) Pop() any {
	old := *q
	b := old[len(old)-1]
	*q = old[:len(old)-1]
	return b
}

// encodeBPE is llama.cpp's byte-level BPE: pre-tokenize into words, map
// their bytes to GPT-2 characters, merge by rank inside each word, emit.
func (t *Tokenizer) encodeBPE(text string, out []int32) ([]int32, error) {
	var syms []symbol
	var q bpeQueue
	// Each word is merged as the splitter finds it: the words of a long
	// text are never all held at once.
	err := t.split.eachWord(text, func(w string) {
		word := byteEncode(w)
		if t.ignoreMerges {
			if id, ok := t.toID[word]; ok {
				out = append(out, id)
				return
			}
		}
		syms = splitChars(word, syms)
		q = q[:0]
		add := func(l, r int32) {
			if l < 0 || r < 0 {
				return
			}
			ls := word[syms[l].start : syms[l].start+syms[l].n]
			rs := word[syms[r].start : syms[r].start+syms[r].n]
			rank, ok := t.ranks[mergePair{ls, rs}]
			if !ok {
				return
			}
			heap.Push(&q, bpeBigram{left: l, right: r, rank: rank, text: word[syms[l].start : syms[r].start+syms[r].n]})
		}
		for i := int32(1); i < int32(len(syms)); i++ {
			add(i-1, i)
		}
		for q.Len() > 0 {
			b := heap.Pop(&q).(bpeBigram)
			l, r := &syms[b.left], &syms[b.right]
			if l.n == 0 || r.n == 0 || int(l.n+r.n) != len(b.text) || r.start != l.start+l.n {
				continue // stale: a side was merged since
			}
			l.n += r.n
			r.n = 0
			l.next = r.next
			if r.next >= 0 {
				syms[r.next].prev = b.left
			}
			add(l.prev, b.left)
			add(b.left, l.next)
		}
		for _, s := range syms {
			if s.n == 0 {
				continue
			}
			piece := word[s.start : s.start+s.n]
			if id, ok := t.toID[piece]; ok {
				out = append(out, id)
				continue
			}
			// llama.cpp falls back to one token per byte of the encoded
			// piece, dropping bytes that have none.
			for j := 0; j < len(piece); j++ {
				if id, ok := t.toID[piece[j:j+1]]; ok {
					out = append(out, id)
				}
			}
		}
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// bpeDecode maps a byte-level token's characters back to bytes. A character
// outside the map is rendered as llama.cpp does, so nothing is lost silently.
func bpeDecode(s string) []byte {
	out := make([]byte, 0, len(s))
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		if b, ok := runeToByte[r]; ok && !(r == utf8.RuneError && n == 1) {
			out = append(out, b)
		} else {
			out = append(out, "[UNK_BYTE_0x"...)
			for _, c := range []byte(s[i : i+n]) {
				out = append(out, "0123456789abcdef"[c>>4], "0123456789abcdef"[c&15])
			}
			out = append(out, s...)
			out = append(out, ']')
		}
		i += n
	}
	return out
}
