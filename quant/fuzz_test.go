package quant

import (
	"testing"
)

// Arbitrary bytes, types and lengths must give an error or a result, never
// a panic or a hang.
func FuzzDecode(f *testing.F) {
	f.Add(uint8(TQ2_0), uint16(256), make([]byte, 66))
	f.Add(uint8(Q2_0), uint16(64), filled(18, 0xff))
	f.Add(uint8(I2_S), uint16(128), filled(160, 0xff))
	f.Add(uint8(Q4_K), uint16(256), filled(144, 0x7b))
	f.Add(uint8(Q5_0), uint16(64), filled(44, 0xff))
	f.Add(uint8(TQ1_0), uint16(256), filled(54, 0xff))
	f.Add(uint8(255), uint16(64), filled(48, 0xe4))
	f.Fuzz(func(t *testing.T, typ uint8, n uint16, data []byte) {
		tt := Type(typ)
		if typ == 255 { // no GGML id: stands for the in-memory I2_S_ARM
			tt = I2_S_ARM
		}
		dst := make([]float32, n)
		err := Dequantize(tt, dst, data)
		_ = Dot(tt, data, dst)
		codes := make([]int8, n)
		scales, terr := TernaryCodes(tt, data, codes)
		if terr == nil {
			if err != nil {
				t.Fatalf("TernaryCodes accepted what Dequantize refused: %v", err)
			}
			// Codes times scales must reproduce Dequantize.
			bs := tt.BlockSize()
			for i, c := range codes {
				if c < -1 || c > 1 {
					t.Fatalf("code %d at %d", c, i)
				}
				want := float32(c)
				if scales != nil {
					want *= scales[i/bs]
				}
				if got := dst[i]; got != want && !(got != got && want != want) {
					t.Fatalf("element %d: Dequantize %g, codes give %g", i, got, want)
				}
			}
		}
		if IsI2S(tt) {
			_, _ = I2SScale(data, int(n))
		}
	})
}
