package mllp

import (
	"context"
	_ "embed"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/hl7edge/hl7edge/pipeline/component"
	"github.com/hl7edge/hl7edge/pipeline/hl7"
	"github.com/hl7edge/hl7edge/pipeline/vocab/flow"
)

//go:embed sample.yaml
var sample []byte

// Register adds `type: mllp` sources (a listener) and destinations (a
// client) to r.
func Register(r *component.Types) {
	r.AddSource(component.NewSource("mllp", sample, func(c *ListenerConfig, d component.Deps) (component.Runner, error) {
		h := &intakeHandler{source: d.Name, intake: d.Intake, max: int64(c.MaxMessageBytes)}
		return NewServer(d.Name, *c, h, d.Log, d.Health)
	}))
	r.AddDestination(component.NewDestination("mllp", sample, func(c *DestinationConfig, d component.Deps) (flow.Output, error) {
		return NewOutput(d.Name, *c, d.Log, d.Health)
	}))
}

// Reach: the port it opens, with TLS and the client certificates it
// requires, and its certificate files.
func (c *ListenerConfig) Reach() component.Reach {
	host, port := component.HostPort(c.Listen, "")
	t := c.TLS
	return component.Reach{
		Endpoints: []component.Endpoint{{Key: "listen", Proto: "mllp", Listens: true, Host: host, Port: port, TLS: t.Enabled(), CAFile: t.ClientCAFile}},
		Files:     credentials(map[string]string{"tls.cert_file": t.CertFile, "tls.key_file": t.KeyFile, "tls.client_ca_file": t.ClientCAFile}),
	}
}

// Reach: the receiver it sends to, with TLS, and its certificate files.
func (c *DestinationConfig) Reach() component.Reach {
	host, port := component.HostPort(c.Address, "")
	t := c.TLS
	return component.Reach{
		Endpoints: []component.Endpoint{{Key: "address", Proto: "mllp", Host: host, Port: port, TLS: t.On(), CAFile: t.CAFile, ServerName: t.ServerName, ClientCert: t.CertFile}},
		Files:     credentials(map[string]string{"tls.ca_file": t.CAFile, "tls.cert_file": t.CertFile, "tls.key_file": t.KeyFile}),
	}
}

// credentials lists the set keys of m, in key order, as credential files;
// the private key is secret.
func credentials(m map[string]string) []component.File {
	var out []component.File
	for _, k := range slices.Sorted(maps.Keys(m)) {
		if m[k] != "" {
			out = append(out, component.File{Key: k, Path: m[k], Kind: component.FileCredential, Secret: k == "tls.key_file"})
		}
	}
	return out
}

// intakeHandler answers each frame with intake's verdict.
type intakeHandler struct {
	source string
	intake flow.Intake
	max    int64
}

func (h *intakeHandler) HandleFrame(ctx context.Context, peer string, f Frame) []byte {
	if f.Oversize {
		reason := fmt.Sprintf("message of %d bytes exceeds max_message_bytes %d of source %q: split it, or raise the limit in the gateway's configuration", f.Size, h.max, h.source)
		return hl7.ACKUnparsed(f.Data, flow.Rejected, hl7.CodeInternalError, reason, "", time.Now())
	}
	return h.intake.Accept(ctx, flow.Inbound{Source: h.source, Raw: f.Data, Peer: peer}).ACK
}
