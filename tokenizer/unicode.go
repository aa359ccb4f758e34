package tokenizer

import (
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

//go:generate go run ./internal/gen -o unicode_tables.go

// Character classes as llama.cpp's pre-tokenizer sees them. llama.cpp runs a
// regex that uses \p{...} classes on "collapsed" text (unicode_regex_split):
// every non-ASCII code point becomes one stand-in per category (whitespace
// becomes "\v"), and each \p{X} in the regex becomes the stand-in plus the
// ASCII members of X. We do the same, with categories from
// unicode_tables.go (Unicode 15.1, llama.cpp's version, whatever Go's
// unicode package is), so that letters newer than Go's tables split as there.

// The stand-ins of collapsed text: llama.cpp's bytes 0xD0..0xD5 as runes.
const (
	standInOther  rune = 0xD0 // unassigned, control, format, private use, other separators
	standInNumber rune = 0xD1
	standInLetter rune = 0xD2
	standInPunct  rune = 0xD3
	standInMark   rune = 0xD4
	standInSymbol rune = 0xD5
)

// isSpace is llama.cpp's whitespace (its unicode_set_whitespace).
func isSpace(r rune) bool { return unicode.Is(ucdSpace, r) }

func isLetter(r rune) bool { return unicode.Is(ucdLetter, r) }

func isNumber(r rune) bool { return unicode.Is(ucdNumber, r) }

// collapse is the stand-in of a code point in collapsed text.
func collapse(r rune) rune {
	switch {
	case r < 0x80:
		return r
	case isSpace(r):
		return '\v'
	case isLetter(r):
		return standInLetter
	case isNumber(r):
		return standInNumber
	case unicode.Is(ucdPunct, r):
		return standInPunct
	case unicode.Is(ucdMark, r):
		return standInMark
	case unicode.Is(ucdSymbol, r):
		return standInSymbol
	}
	return standInOther
}

// classStandIns are the \p{...} classes llama.cpp rewrites: the stand-in,
// then the class's ASCII members as llama.cpp lists them (its \p{S} leaves
// out "~", and \p{Lu}, \p{Ll}... are any letter).
var classStandIns = map[string]string{
	"N":  string(standInNumber) + `0-9`,
	"L":  string(standInLetter) + `A-Za-z`,
	"P":  string(standInPunct) + `!-#%-*,-/:-;?-@\[-\]_\{\}`,
	"M":  string(standInMark),
	"S":  string(standInSymbol) + `\$\+<->\^` + "`" + `\|`,
	"Lu": string(standInLetter) + `A-Za-z`,
	"Ll": string(standInLetter) + `A-Za-z`,
	"Lt": string(standInLetter) + `A-Za-z`,
	"Lm": string(standInLetter) + `A-Za-z`,
	"Lo": string(standInLetter) + `A-Za-z`,
}

// collapseRegex rewrites a regex that uses \p{...} classes for collapsed
// text; ok is false for one that uses none (it runs on the code points).
func collapseRegex(expr string) (out string, ok bool, err error) {
	if !strings.Contains(expr, `\p{`) {
		return expr, false, nil
	}
	var sb strings.Builder
	inside := false
	for i := 0; i < len(expr); i++ {
		c := expr[i]
		switch {
		case c >= 0x80:
			return "", false, fmt.Errorf("regex %q mixes \\p{...} classes and non-ASCII characters", expr)
		case c == '\\' && i+1 < len(expr) && expr[i+1] == 'p' && strings.HasPrefix(expr[i+2:], "{"):
			end := strings.IndexByte(expr[i:], '}')
			if end < 0 {
				return "", false, fmt.Errorf("regex %q: unterminated \\p{", expr)
			}
			name := expr[i+3 : i+end]
			set, known := classStandIns[name]
			if !known {
				return "", false, fmt.Errorf("regex %q: class \\p{%s} not supported", expr, name)
			}
			if inside {
				sb.WriteString(set)
			} else {
				sb.WriteString("[" + set + "]")
			}
			i += end
		case c == '\\' && i+1 < len(expr):
			sb.WriteString(expr[i : i+2])
			i++
		case c == '[':
			inside = true
			sb.WriteByte(c)
		case c == ']':
			inside = false
			sb.WriteByte(c)
		default:
			sb.WriteByte(c)
		}
	}
	return sb.String(), true, nil
}

// cptsFromUTF8 decodes text as llama.cpp's unicode_cpts_from_utf8 does: a
// lead byte followed by the continuation bytes it announces is one code
// point, with no check for overlong forms or surrogates ("\xc0\xaf" is "/",
// "\xed\xa0\x80" is U+D800); any other byte is U+FFFD. A sequence beyond
// U+10FFFF (lead bytes F4 to F7), which makes llama.cpp abort, is U+FFFD
// for its lead byte here.
func cptsFromUTF8(s string) []rune {
	// Go counts at least as many code points (each byte of an overlong form
	// or surrogate is one), and exactly as many in valid UTF-8.
	out := make([]rune, 0, utf8.RuneCountInString(s))
	for i := 0; i < len(s); {
		c := s[i]
		n := 0
		var r rune
		switch {
		case c < 0x80:
			out = append(out, rune(c))
			i++
			continue
		case c&0xE0 == 0xC0:
			n, r = 2, rune(c&0x1F)
		case c&0xF0 == 0xE0:
			n, r = 3, rune(c&0x0F)
		case c&0xF8 == 0xF0:
			n, r = 4, rune(c&0x07)
		}
		ok := n > 0 && i+n <= len(s)
		for k := 1; ok && k < n; k++ {
			if s[i+k]&0xC0 != 0x80 {
				ok = false
			}
			r = r<<6 | rune(s[i+k]&0x3F)
		}
		if !ok || r > unicode.MaxRune {
			out = append(out, unicode.ReplacementChar)
			i++
			continue
		}
		out = append(out, r)
		i += n
	}
	return out
}

// appendCpt appends r encoded as llama.cpp's unicode_cpt_to_utf8 does:
// shortest form, surrogates like any other code point.
func appendCpt(b []byte, r rune) []byte {
	switch {
	case r < 0x80:
		return append(b, byte(r))
	case r < 0x800:
		return append(b, 0xC0|byte(r>>6), 0x80|byte(r&0x3F))
	case r < 0x10000:
		return append(b, 0xE0|byte(r>>12), 0x80|byte(r>>6&0x3F), 0x80|byte(r&0x3F))
	}
	return append(b, 0xF0|byte(r>>18), 0x80|byte(r>>12&0x3F), 0x80|byte(r>>6&0x3F), 0x80|byte(r&0x3F))
}
