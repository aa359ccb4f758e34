package cuda

import (
	"sync/atomic"

	"github.com/edgellm/edgellm/backend"
)

// counters are the model's cumulative device traffic over all its sessions,
// read by the bench through backend.DeviceInfo.
type counters struct {
	h2d, d2h, launches, tokens atomic.Int64
}

func (c *counters) add(h2d, d2h, launches int) {
	c.h2d.Add(int64(h2d))
	c.d2h.Add(int64(d2h))
	c.launches.Add(int64(launches))
	c.tokens.Add(1)
}

var (
	_ backend.DeviceInfo  = (*Model)(nil)
	_ backend.WeightBytes = (*Model)(nil)
)

// Device names the card.
func (m *Model) Device() string { return m.dev.info.Name }

// Counters implements backend.DeviceInfo.
func (m *Model) Counters() backend.Counters {
	return backend.Counters{
		H2DBytes: m.traffic.h2d.Load(), D2HBytes: m.traffic.d2h.Load(),
		Launches: m.traffic.launches.Load(), Tokens: m.traffic.tokens.Load(),
	}
}

// CopyBandwidth implements backend.DeviceInfo: 256 MiB device-to-device
// copies, bytes read plus written per second.
func (m *Model) CopyBandwidth() (float64, error) {
	gbps, err := CopyBandwidth(int(m.dev.ordinal), 256<<20, 20)
	return gbps * 1e9, err
}

// WeightBytesPerToken is what one decode step reads of the resident
// weights: all of them but a separate embedding table (one row of it).
func (m *Model) WeightBytesPerToken() int64 {
	n := int64(m.weightBytes - m.embedBytes)
	if m.embedBytes > 0 && m.embed.rows > 0 {
		n += int64(m.embedBytes / m.embed.rows)
	}
	return n
}
