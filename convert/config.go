package convert

import (
	"encoding/json"
	"fmt"
	"path/filepath"
)

// hfConfig is what we read of a Hugging Face config.json. Optional values
// are pointers, so "absent" and "zero" stay apart as the converters of
// llama.cpp tell them apart.
type hfConfig struct {
	Architectures     []string `json:"architectures"`
	ModelType         string   `json:"model_type"`
	HiddenSize        int      `json:"hidden_size"`
	IntermediateSize  int      `json:"intermediate_size"`
	NumHiddenLayers   int      `json:"num_hidden_layers"`
	NumAttentionHeads *int     `json:"num_attention_heads"`
	NumKeyValueHeads  *int     `json:"num_key_value_heads"`
	HeadDim           *int     `json:"head_dim"`
	VocabSize         int      `json:"vocab_size"`
	MaxPositions      *int     `json:"max_position_embeddings"`
	RMSNormEps        *float64 `json:"rms_norm_eps"`
	RopeTheta         *float64 `json:"rope_theta"`
	RopeLocalBaseFreq *float64 `json:"rope_local_base_freq"`
	// rope_scaling (older configs) or rope_parameters (newer ones).
	RopeScaling       *ropeScaling `json:"rope_scaling"`
	RopeParameters    *ropeScaling `json:"rope_parameters"`
	HiddenAct         string       `json:"hidden_act"`
	HiddenActivation  string       `json:"hidden_activation"` // Gemma's name for it
	TieWordEmbeddings *bool        `json:"tie_word_embeddings"`

	SlidingWindow         *int     `json:"sliding_window"`
	SlidingWindowPattern  *int     `json:"sliding_window_pattern"`
	LayerTypes            []string `json:"layer_types"`
	FinalLogitSoftcapping *float64 `json:"final_logit_softcapping"`
	AttnLogitSoftcapping  *float64 `json:"attn_logit_softcapping"`
	QueryPreAttnScalar    *float64 `json:"query_pre_attn_scalar"`

	QuantizationConfig *struct {
		QuantMethod string `json:"quant_method"`
		LinearClass string `json:"linear_class"`
	} `json:"quantization_config"`
}

// ropeScaling is rope_scaling / rope_parameters: "type" in older configs,
// "rope_type" in newer ones.
type ropeScaling struct {
	Type                 string   `json:"type"`
	RopeType             string   `json:"rope_type"`
	Factor               *float64 `json:"factor"`
	LowFreqFactor        *float64 `json:"low_freq_factor"`
	HighFreqFactor       *float64 `json:"high_freq_factor"`
	OriginalMaxPositions *float64 `json:"original_max_position_embeddings"`
	RopeTheta            *float64 `json:"rope_theta"`
	// Newer configs split rope_parameters by attention kind (Gemma 3).
	FullAttention    *ropeScaling `json:"full_attention"`
	SlidingAttention *ropeScaling `json:"sliding_attention"`
}

// kind is the scaling's type, whichever key gives it.
func (r *ropeScaling) kind() string {
	if r == nil {
		return ""
	}
	if r.RopeType != "" {
		return r.RopeType
	}
	return r.Type
}

// rope returns the global layers' rope_parameters, else rope_scaling (nil
// when neither).
func (c *hfConfig) rope() *ropeScaling {
	if r := c.RopeParameters; r != nil {
		if r.FullAttention != nil {
			return r.FullAttention
		}
		return r
	}
	return c.RopeScaling
}

// localRopeTheta is the sliding-window layers' RoPE base, when the config
// gives one.
func (c *hfConfig) localRopeTheta() *float64 {
	if c.RopeLocalBaseFreq != nil {
		return c.RopeLocalBaseFreq
	}
	if r := c.RopeParameters; r != nil && r.SlidingAttention != nil {
		return r.SlidingAttention.RopeTheta
	}
	return nil
}

// ropeTheta is rope_theta, from the top level or rope_parameters.
func (c *hfConfig) ropeTheta() *float64 {
	if c.RopeTheta != nil {
		return c.RopeTheta
	}
	if r := c.rope(); r != nil {
		return r.RopeTheta
	}
	return nil
}

// heads is num_attention_heads (0 when absent).
func (c *hfConfig) heads() int {
	if c.NumAttentionHeads == nil {
		return 0
	}
	return *c.NumAttentionHeads
}

// kvHeads is num_key_value_heads, defaulting to the head count.
func (c *hfConfig) kvHeads() int {
	if c.NumKeyValueHeads == nil {
		return c.heads()
	}
	return *c.NumKeyValueHeads
}

// headDim is head_dim, else hidden/heads.
func (c *hfConfig) headDim() int {
	if c.HeadDim != nil {
		return *c.HeadDim
	}
	if h := c.heads(); h > 0 {
		return c.HiddenSize / h
	}
	return 0
}

// activation is hidden_act, or Gemma's hidden_activation.
func (c *hfConfig) activation() string {
	if c.HiddenAct != "" {
		return c.HiddenAct
	}
	return c.HiddenActivation
}

// bitnetPacked tells whether the config says the checkpoint's linear
// weights are BitNet-packed (quantization_config.quant_method "bitnet").
func (c *hfConfig) bitnetPacked() bool {
	return c.QuantizationConfig != nil && c.QuantizationConfig.QuantMethod == "bitnet"
}

// loadConfig reads dir/config.json.
func loadConfig(dir string) (*hfConfig, error) {
	path := filepath.Join(dir, "config.json")
	var top map[string]json.RawMessage
	if err := readJSON(path, &top); err != nil {
		return nil, fmt.Errorf("convert: config: %w", err)
	}
	c, err := parseConfig(top)
	if err != nil {
		return nil, fmt.Errorf("convert: config: %s: %w", path, err)
	}
	return c, nil
}

// parseConfig decodes config.json's object. A multimodal config's
// text_config (Gemma 3 4B and up) is lifted to the top level, as
// llama.cpp does.
func parseConfig(top map[string]json.RawMessage) (*hfConfig, error) {
	if tc, ok := top["text_config"]; ok {
		var text map[string]json.RawMessage
		if err := json.Unmarshal(tc, &text); err != nil {
			return nil, fmt.Errorf("text_config: %w", err)
		}
		for k, v := range text {
			top[k] = v
		}
	}
	merged, err := json.Marshal(top)
	if err != nil {
		return nil, err
	}
	var c hfConfig
	if err := json.Unmarshal(merged, &c); err != nil {
		return nil, err
	}
	if len(c.Architectures) == 0 {
		return nil, fmt.Errorf("names no architecture")
	}
	return &c, nil
}
