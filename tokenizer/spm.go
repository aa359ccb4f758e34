package tokenizer

import (
	"container/heap"
	"fmt"
	"math"
	"unicode/utf8"
)

// spmSpace is SentencePiece's visible space, "▁" (U+2581).
const spmSpace = "\u2581"

// symbol is a span of the text being merged, in a doubly linked list over
// the initial characters; n == 0 marks a symbol merged into its left one.
// int32 fields: a prompt makes one symbol per character, so their size is
// most of the tokenizer's memory (texts are far below 2 GB: the server
// bounds them by the context).
type symbol struct {
	start, n   int32
	prev, next int32
}

// spmBigram is a candidate merge of two adjacent symbols (16 bytes: the
// queue holds up to two per character).
type spmBigram struct {
	left, right int32
	score       float32
	size        int32
}

// spmQueue pops the highest score first, then the leftmost pair.
type spmQueue []spmBigram

func (q spmQueue) Len() int { return len(q) }
func (q spmQueue) Less(i, j int) bool {
	if q[i].score != q[j].score {
		return q[i].score > q[j].score
	}
	return q[i].left < q[j].left
}
func (q spmQueue) Swap(i, j int) { q[i], q[j] = q[j], q[i] }
func (q *spmQueue) Push(x any)   { *q = append(*q, x.(spmBigram)) }
func (q *spmQueue) Pop() any {
	old := *q
	b := old[len(old)-1]
	*q = old[:len(old)-1]
	return b
}

// utf8Len is the length of the UTF-8 sequence a lead byte announces; a
// stray continuation byte counts as one, as in llama.cpp.
func utf8Len(b byte) int {
	switch {
	case b < 0xC0:
		return 1
	case b < 0xE0:
		return 2
	case b < 0xF0:
		return 3
	}
	return 4
}

// splitChars makes one symbol per UTF-8 character of s.
func splitChars(s string, syms []symbol) []symbol {
	syms = syms[:0]
	for off := 0; off < len(s); {
		n := min(utf8Len(s[off]), len(s)-off)
		syms = append(syms, symbol{start: int32(off), n: int32(n), prev: int32(len(syms) - 1), next: int32(len(syms) + 1)})
		off += n
	}
	if len(syms) > 0 {
		syms[len(syms)-1].next = -1
	}
	return syms
}

// encodeSPM is llama.cpp's SentencePiece BPE: repeatedly merge the adjacent
// pair whose concatenation is the highest-scoring token, then emit each
// symbol as its token, else as byte tokens. text already has spaces
// replaced by "▁".
//
// llama.cpp also keeps a map from each candidate pair's text to the pair,
// to re-split a symbol whose text is not a token along the merges that
// built it. Only merges whose text is a token are ever made, so a merged
// symbol is always a token and the map is never consulted for one; a
// single character that is not a token is not in it either (its keys are
// pairs). It is left out: it was most of the memory a long prompt took.
func (t *Tokenizer) encodeSPM(text string, out []int32) ([]int32, error) {
	if len(text) > math.MaxInt32/2 {
		return nil, fmt.Errorf("tokenizer: text of %d bytes is too long", len(text))
	}
	syms := splitChars(text, make([]symbol, 0, utf8.RuneCountInString(text)))
	q := make(spmQueue, 0, len(syms))
	tryAdd := func(l, r int32) {
		if l < 0 || r < 0 {
			return
		}
		s := text[syms[l].start : syms[r].start+syms[r].n]
		id, ok := t.toID[s]
		if !ok {
			return
		}
		heap.Push(&q, spmBigram{left: l, right: r, score: t.scores[id], size: int32(len(s))})
	}
	for i := int32(1); i < int32(len(syms)); i++ {
		tryAdd(i-1, i)
	}
	for q.Len() > 0 {
		b := heap.Pop(&q).(spmBigram)
		l, r := &syms[b.left], &syms[b.right]
		if l.n == 0 || r.n == 0 || l.n+r.n != b.size {
			continue // stale: one side was merged since
		}
		l.n += r.n
		r.n = 0
		l.next = r.next
		if r.next >= 0 {
			syms[r.next].prev = b.left
		}
		tryAdd(l.prev, b.left)
		tryAdd(b.left, l.next)
	}
	for i := int32(0); i != -1 && len(syms) > 0; i = syms[i].next {
		s := text[syms[i].start : syms[i].start+syms[i].n]
		if id, ok := t.toID[s]; ok {
			out = append(out, id)
			continue
		}
		for j := 0; j < len(s); j++ {
			id, err := t.byteToken(s[j])
			if err != nil {
				return nil, err
			}
			out = append(out, id)
		}
	}
	return out, nil
}

// byteToken finds the token for one raw byte: "<0xXX>", else the byte as a
// one-character token, else UNK.
func (t *Tokenizer) byteToken(b byte) (int32, error) {
	if id, ok := t.toID[fmt.Sprintf("<0x%02X>", b)]; ok {
		return id, nil
	}
	if id, ok := t.toID[string([]byte{b})]; ok {
		return id, nil
	}
	if t.unk != none {
		return t.unk, nil
	}
	return 0, fmt.Errorf("tokenizer: byte 0x%02X has no token and the vocabulary has no UNK", b)
}
