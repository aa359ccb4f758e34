package tokenizer

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"

	"github.com/edgellm/edgellm/internal/testfiles"
)

// category is a code point's class in our tables: one of "L", "N", "P",
// "M", "S", or "" (none of them).
func category(r rune) string {
	for _, c := range []struct {
		name string
		t    *unicode.RangeTable
	}{{"L", ucdLetter}, {"N", ucdNumber}, {"P", ucdPunct}, {"M", ucdMark}, {"S", ucdSymbol}} {
		if unicode.Is(c.t, r) {
			return c.name
		}
	}
	return ""
}

func goCategory(r rune) string {
	for _, c := range []struct {
		name string
		t    *unicode.RangeTable
	}{{"L", unicode.L}, {"N", unicode.N}, {"P", unicode.P}, {"M", unicode.M}, {"S", unicode.S}} {
		if unicode.Is(c.t, r) {
			return c.name
		}
	}
	return ""
}

// unicode151 are the code points Unicode 15.1 added to 15.0 (DerivedAge),
// the only documented differences from Go's Unicode 15.0 tables.
var unicode151 = []struct {
	lo, hi rune
	cat    string
}{{0x2FFC, 0x2FFF, "S"}, {0x31EF, 0x31EF, "S"}, {0x2EBF0, 0x2EE5D, "L"}}

// TestUnicodeTables: the generated tables are Go's on every code point both
// versions assign, plus Unicode 15.1's additions; their whitespace is
// llama.cpp's set. Under a Go with newer tables, each of ours must still be
// in Go's class (Unicode never moves an assigned code point between L, N,
// P, M and S without a note in unicode151's place).
func TestUnicodeTables(t *testing.T) {
	if ucdVersion != "15.1.0" {
		t.Fatalf("tables of Unicode %s, want llama.cpp's 15.1.0", ucdVersion)
	}
	added := func(r rune) string {
		for _, a := range unicode151 {
			if r >= a.lo && r <= a.hi {
				return a.cat
			}
		}
		return ""
	}
	diffs := 0
	for r := rune(0); r <= unicode.MaxRune; r++ {
		ours, std := category(r), goCategory(r)
		if a := added(r); a != "" {
			if ours != a {
				t.Errorf("U+%04X: %q, want %q (Unicode 15.1)", r, ours, a)
			}
			continue
		}
		if unicode.Version == "15.0.0" && ours != std || ours != "" && ours != std {
			if diffs++; diffs <= 10 {
				t.Errorf("U+%04X: %q, Go's Unicode %s says %q", r, ours, unicode.Version, std)
			}
		}
		if isSpace(r) != refWhitespace[r] {
			t.Errorf("U+%04X: whitespace %v, llama.cpp %v", r, isSpace(r), refWhitespace[r])
		}
	}
	if diffs > 0 {
		t.Errorf("%d code points differ from Go's tables", diffs)
	}
}

// TestUnicodeTablesMatchLlamaCpp compares the tables with llama.cpp's own,
// code point by code point, where its source is beside the repository
// (../peer/src, docs/peer/README.md).
func TestUnicodeTablesMatchLlamaCpp(t *testing.T) {
	path := filepath.Join(testfiles.Root(), "..", "peer", "src", "src", "unicode-data.cpp")
	data, err := os.ReadFile(path)
	if err != nil {
		t.Skipf("skipped: llama.cpp's source is not beside the repository (%v)", err)
	}
	src := string(data)
	start := strings.Index(src, "unicode_ranges_flags")
	end := strings.Index(src, "unicode_set_whitespace")
	if start < 0 || end < start {
		t.Fatalf("%s: no unicode_ranges_flags table", path)
	}
	type entry struct {
		start rune
		flags uint64
	}
	var table []entry
	for _, m := range regexp.MustCompile(`\{0x([0-9A-Fa-f]+), 0x([0-9A-Fa-f]+)\}`).FindAllStringSubmatch(src[start:end], -1) {
		cp, _ := strconv.ParseUint(m[1], 16, 32)
		fl, _ := strconv.ParseUint(m[2], 16, 16)
		table = append(table, entry{rune(cp), fl})
	}
	if len(table) < 1000 {
		t.Fatalf("%s: %d ranges read", path, len(table))
	}
	// llama.cpp's flag bits (src/unicode.h)
	flagOf := map[string]uint64{"N": 0x02, "L": 0x04, "M": 0x10, "P": 0x20, "S": 0x40}
	const classes = 0x02 | 0x04 | 0x10 | 0x20 | 0x40
	diffs, k := 0, 0
	for r := rune(0); r <= unicode.MaxRune; r++ {
		for k+1 < len(table) && table[k+1].start <= r {
			k++
		}
		want := table[k].flags & classes
		if got := flagOf[category(r)]; got != want {
			if diffs++; diffs <= 10 {
				t.Errorf("U+%04X: flags %#x, llama.cpp %#x", r, got, want)
			}
		}
	}
	if diffs > 0 {
		t.Errorf("%d code points differ from llama.cpp's table", diffs)
	}
	ws := src[end:]
	ws = ws[:strings.Index(ws, "};")]
	n := 0
	for _, m := range regexp.MustCompile(`0x([0-9A-Fa-f]+)`).FindAllStringSubmatch(ws, -1) {
		cp, _ := strconv.ParseUint(m[1], 16, 32)
		n++
		if !isSpace(rune(cp)) {
			t.Errorf("U+%04X is llama.cpp's whitespace, not ours", cp)
		}
	}
	if count := len(refWhitespace); n != count {
		t.Errorf("llama.cpp has %d whitespace code points, we %d", n, count)
	}
}

func TestCollapseRegex(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{`\p{N}+`, "[\u00D10-9]+"},
		{`[^\s\p{L}\p{N}]+`, "[^\\s\u00D2A-Za-z\u00D10-9]+"},
		{`\\p{L}`, `\\p{L}`}, // an escaped backslash, then text
		{`[\p{P}\p{S}]`, "[\u00D3!-#%-*,-/:-;?-@\\[-\\]_\\{\\}\u00D5\\$\\+<->\\^`\\|]"},
		{`\p{M}`, "[\u00D4]"},
		{`[0-9]+`, `[0-9]+`},
	} {
		got, _, err := collapseRegex(c.in)
		if err != nil || got != c.want {
			t.Errorf("collapseRegex(%q) = %q, %v; want %q", c.in, got, err, c.want)
		}
	}
	for _, bad := range []string{`\p{Han}+`, `\p{L}é`, `\p{L`} {
		if _, _, err := collapseRegex(bad); err == nil {
			t.Errorf("collapseRegex(%q) accepted", bad)
		}
	}
	// Every code point collapses to a stand-in of its class.
	for r, want := range map[rune]rune{'a': 'a', 'é': standInLetter, 0x2EBF0: standInLetter, '٣': standInNumber,
		'。': standInPunct, 0x301: standInMark, '€': standInSymbol, 0x3000: '\v', 0x85: '\v', 0x200B: standInOther,
		0x378: standInOther, 0xE000: standInOther} {
		if got := collapse(r); got != want {
			t.Errorf("collapse(U+%04X) = U+%04X, want U+%04X", r, got, want)
		}
	}
}

func TestCptsFromUTF8(t *testing.T) {
	const bad = unicode.ReplacementChar
	for in, want := range map[string][]rune{
		"a\xffb":           {'a', bad, 'b'},
		"\xc0\xaf":         {'/'},    // overlong, decoded all the same
		"\xed\xa0\x80":     {0xD800}, // a surrogate
		"\xe6\x97 x":       {bad, bad, ' ', 'x'},
		"\xf4\x90\x80\x80": {bad, bad, bad, bad}, // beyond U+10FFFF: llama.cpp aborts
		"é😀":               {'é', '😀'},
		"":                 {},
	} {
		if got := cptsFromUTF8(in); !slices.Equal(got, want) {
			t.Errorf("cptsFromUTF8(%q) = %U, want %U", in, got, want)
		}
	}
	if got := string(appendCpt(nil, 0xD800)); got != "\xed\xa0\x80" {
		t.Errorf("appendCpt(U+D800) = %q", got)
	}
}

// FuzzCptsFromUTF8: valid UTF-8 decodes as Go decodes it and encodes back
// to itself; any input decodes to at most one code point a byte, each
// within Unicode's range.
func FuzzCptsFromUTF8(f *testing.F) {
	for _, s := range []string{"a\xffb", "\xc0\xaf", "\xed\xa0\x80", "\xf4\x90\x80\x80", "é😀", "\xf0\x9f\x98"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		cpts := cptsFromUTF8(s)
		if len(cpts) > len(s) {
			t.Fatalf("%q: %d code points", s, len(cpts))
		}
		var b []byte
		for _, r := range cpts {
			if r < 0 || r > unicode.MaxRune {
				t.Fatalf("%q: code point %#x", s, r)
			}
			b = appendCpt(b, r)
		}
		if utf8.ValidString(s) {
			if !slices.Equal(cpts, []rune(s)) || string(b) != s {
				t.Fatalf("%q: %U, encoded %q", s, cpts, b)
			}
		}
	})
}
