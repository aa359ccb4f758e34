package server

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// metrics live in a registry of the server's own, so that several servers
// (tests) in one process do not collide.
type metrics struct {
	reg        *prometheus.Registry
	requests   *prometheus.CounterVec   // endpoint, code
	tokensIn   *prometheus.CounterVec   // model
	tokensOut  *prometheus.CounterVec   // model
	ttft       *prometheus.HistogramVec // model
	tokenLat   *prometheus.HistogramVec // model
	queueDepth *prometheus.GaugeVec     // model
	active     *prometheus.GaugeVec     // model
	batchSize  *prometheus.HistogramVec // model
	loads      *prometheus.CounterVec   // model
	loaded     prometheus.Gauge
	refused    *prometheus.CounterVec // reason: host, origin, auth, body
}

func newMetrics() *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edgellm_http_requests_total", Help: "HTTP requests by endpoint and status code.",
		}, []string{"endpoint", "code"}),
		tokensIn: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edgellm_prompt_tokens_total", Help: "Prompt tokens evaluated.",
		}, []string{"model"}),
		tokensOut: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edgellm_generated_tokens_total", Help: "Tokens generated.",
		}, []string{"model"}),
		ttft: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "edgellm_time_to_first_token_seconds", Help: "Time from request arrival to the first generated token (queueing and loading included).",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 16),
		}, []string{"model"}),
		tokenLat: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "edgellm_token_latency_seconds", Help: "Time to produce each generated token after the first.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16),
		}, []string{"model"}),
		queueDepth: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "edgellm_queue_depth", Help: "Requests waiting for a generation slot.",
		}, []string{"model"}),
		active: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "edgellm_active_generations", Help: "Generations running.",
		}, []string{"model"}),
		batchSize: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "edgellm_batch_size", Help: "Sequences decoded per batched decode step (continuous batching).",
			Buckets: []float64{1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64},
		}, []string{"model"}),
		loads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edgellm_model_loads_total", Help: "Model loads.",
		}, []string{"model"}),
		loaded: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "edgellm_models_loaded", Help: "Models loaded now.",
		}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edgellm_http_refused_total", Help: "Requests refused before any endpoint by reason: host, origin, auth (API key), body (too large or too slow).",
		}, []string{"reason"}),
	}
	m.reg.MustRegister(m.requests, m.tokensIn, m.tokensOut, m.ttft, m.tokenLat, m.queueDepth, m.active, m.batchSize, m.loads, m.loaded, m.refused,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

func (m *metrics) handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}
