package webservice

import (
	_ "embed"
	"net/url"
	"strings"
	"time"

	"github.com/hl7edge/hl7edge/pipeline/component"
	"github.com/hl7edge/hl7edge/pipeline/vocab/flow"
)

//go:embed sample.yaml
var sample []byte

// Register adds `type: webservice` sources (the data source: ping, then
// mailbox, get, ack) and destinations (ping, then post) to r.
func Register(r *component.Types) {
	src := component.NewSource("webservice", sample, func(c *SourceConfig, d component.Deps) (component.Runner, error) {
		return NewSource(d.Name, *c, d.Intake, options(d))
	})
	src.Liveness = true // beaten in every poll round and while it waits
	r.AddSource(src)
	dst := component.NewDestination("webservice", sample, func(c *DestinationConfig, d component.Deps) (flow.Output, error) {
		o := options(d)
		o.Lanes = d.Lanes
		return NewDestination(d.Name, *c, o)
	})
	dst.Upstream = true // the hospital's web service: the box's link
	r.AddDestination(dst)
}

func options(d component.Deps) Options {
	return Options{Log: d.Log, Health: d.Health, DeviceID: d.DeviceID, PMVersion: d.Version, Loop: d.Loop, Alarm: d.Alarm}
}

// MaxBackoffDefault is the destination's max_backoff when the
// destination-wide key is not set: the same key, read by this block with
// its own default.
func (c *DestinationConfig) MaxBackoffDefault() time.Duration { return c.MaxBackoff.D() }

// MaxLanes: posts of one session may be in flight side by side, each on its
// own kept-alive connection.
func (c *DestinationConfig) MaxLanes() int { return 64 }

// Reach: the web service it logs on to, and the hosts a ping may send it
// on to (allowed_hosts); plain http anywhere counts as no TLS.
func (c *Peer) Reach() component.Reach {
	var ep component.Endpoint
	if u, err := url.Parse(c.URL); err == nil {
		def := "443"
		if strings.EqualFold(u.Scheme, "http") {
			def = "80"
		}
		ep.Host, ep.Port = component.HostPort(u.Host, def)
		ep.TLS = strings.EqualFold(u.Scheme, "https") && !c.AllowInsecureHTTP
	}
	ep.Key, ep.Proto, ep.CAFile, ep.ClientCert, ep.Secret = "url", "webservice", c.CAFile, c.CertFile, c.PasswordFile
	if len(c.AllowedHosts) > 0 {
		ep.AllowedHosts = c.AllowedHosts
	}
	r := component.Reach{Endpoints: []component.Endpoint{ep}}
	for _, f := range []component.File{{Key: "password_file", Path: c.PasswordFile, Secret: true}, {Key: "ca_file", Path: c.CAFile}, {Key: "cert_file", Path: c.CertFile}, {Key: "key_file", Path: c.KeyFile, Secret: true}} {
		if f.Path != "" {
			f.Kind = component.FileCredential
			r.Files = append(r.Files, f)
		}
	}
	return r
}
