package store

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
)

// A good layer keeps every option it gives and names those it ignores; a bad
// one is an error naming the option.
func TestParseParams(t *testing.T) {
	p, ignored, err := ParseParams([]byte(`{"stop":["<|eot_id|>","<|start_header_id|>"],"temperature":0.7,"num_ctx":8192,"top_k":20,"top_p":0.8,"min_p":0,"repeat_penalty":1.05,"repeat_last_n":-1,"seed":42,"num_predict":-1,"num_gpu":99,"penalize_newline":false}`))
	if err != nil {
		t.Fatal(err)
	}
	if *p.Temperature != 0.7 || *p.NumCtx != 8192 || *p.TopK != 20 || *p.TopP != 0.8 || *p.MinP != 0 || *p.RepeatPenalty != 1.05 ||
		*p.RepeatLastN != -1 || *p.Seed != 42 || *p.NumPredict != -1 || !reflect.DeepEqual(p.Stop, []string{"<|eot_id|>", "<|start_header_id|>"}) {
		t.Errorf("parsed %+v", p)
	}
	if !reflect.DeepEqual(ignored, []string{"num_gpu", "penalize_newline"}) {
		t.Errorf("ignored %q", ignored)
	}
	for _, blank := range []string{"", " \n", "null", "{}"} {
		if p, ig, err := ParseParams([]byte(blank)); err != nil || !reflect.ValueOf(p).IsZero() || ig != nil {
			t.Errorf("%q: %+v %q %v", blank, p, ig, err)
		}
	}
	for _, bad := range []struct{ js, says string }{
		{`{"temperature":"hot"}`, "temperature"},
		{`{"temperature":-1}`, "option temperature = -1 out of range [0, 100]"},
		{`{"top_p":1.5}`, "option top_p = 1.5 out of range [0, 1]"},
		{`{"min_p":-0.1}`, "min_p"},
		{`{"repeat_penalty":101}`, "repeat_penalty"},
		{`{"top_k":-1}`, "top_k"},
		{`{"top_k":1.5}`, "top_k"},
		{`{"num_ctx":1000000000}`, "option num_ctx = 1000000000 out of range [0, 131072]"},
		{`{"repeat_last_n":-2}`, "repeat_last_n"},
		{`{"presence_penalty":0.5}`, "presence_penalty = 0.5 is not supported"},
		{`{"frequency_penalty":1}`, "frequency_penalty"},
		{`{"num_predict":-3}`, "num_predict = -3"},
		{`{"seed":-2}`, "seed = -2"},
		{`{"stop":"x"}`, "stop"},
		{`{"stop":[""]}`, "empty stop string"},
		{`{"stop":["` + strings.Repeat("x", 257) + `"]}`, "longer than 256"},
		{`{"stop":["a","b","c","d","e","f","g","h","i","j","k","l","m","n","o","p","q"]}`, "at most 16 stop strings"},
		{`[1,2]`, "params layer"},
		{`{"temperature":0.7`, "params layer"},
		{"{\"stop\":[\"" + strings.Repeat("x", maxParamsLayer) + "\"]}", "bytes"},
	} {
		_, _, err := ParseParams([]byte(bad.js))
		if err == nil || !strings.Contains(err.Error(), bad.says) || !strings.HasPrefix(err.Error(), "params layer: ") {
			t.Errorf("%.40s: %v", bad.js, err)
		}
	}
	// The edges of each range are valid.
	if _, _, err := ParseParams([]byte(`{"temperature":100,"top_p":1,"min_p":0,"repeat_penalty":0,"top_k":16777216,"num_ctx":131072,"repeat_last_n":131072,"num_predict":-2,"seed":-1,"presence_penalty":0}`)); err != nil {
		t.Errorf("edges: %v", err)
	}
}

// FuzzParseParams: any bytes give params or an error, never a panic; what
// parses passes Check and reads back the same once written again.
func FuzzParseParams(f *testing.F) {
	f.Add([]byte(`{"stop":["<|eot_id|>"],"temperature":0.7,"num_ctx":8192}`))
	f.Add([]byte(`{"repeat_last_n":-1,"num_predict":-2,"seed":-1,"mirostat":2}`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, js []byte) {
		p, _, err := ParseParams(js)
		if err != nil {
			return
		}
		if err := p.Check(); err != nil {
			t.Fatalf("%q parsed but: %v", js, err)
		}
		b, err := json.Marshal(p)
		if err != nil {
			t.Fatal(err)
		}
		q, _, err := ParseParams(b)
		if err != nil || !reflect.DeepEqual(p, q) {
			t.Fatalf("%q: %+v, again %+v %v", js, p, q, err)
		}
	})
}
