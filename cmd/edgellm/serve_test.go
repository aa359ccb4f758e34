package main

import (
	"net"
	"strings"
	"testing"
)

// Serving beyond loopback without a key warns; loopback or a key does not.
func TestExposureWarning(t *testing.T) {
	cases := []struct {
		addr string
		key  bool
		warn bool
	}{
		{"127.0.0.1:11434", false, false},
		{"[::1]:11434", false, false},
		{"0.0.0.0:11434", false, true},
		{"[::]:11434", false, true},
		{"192.168.1.5:80", false, true},
		{"0.0.0.0:11434", true, false},
	}
	for _, c := range cases {
		a, err := net.ResolveTCPAddr("tcp", c.addr)
		if err != nil {
			t.Fatal(err)
		}
		w := exposureWarning(a, c.key)
		if (w != "") != c.warn || (c.warn && !strings.Contains(w, "--api-key")) {
			t.Errorf("%s key %v: warning %q", c.addr, c.key, w)
		}
	}
}
