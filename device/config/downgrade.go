package config

import (
	"fmt"
	"net"
	"net/url"
	"path"
	"reflect"
	"strings"

	"github.com/hl7edge/hl7edge/pipeline/component"
	"github.com/hl7edge/hl7edge/pipeline/gateway"
	"github.com/hl7edge/hl7edge/pipeline/mllp"
	"github.com/hl7edge/hl7edge/pipeline/webservice"
)

// TransportDowngrades lists how next would let patient data or a password
// travel less safely than cur does: plain HTTP where there was none, a
// wider allowed_hosts, an upstream host (web service, MLLP receiver, MQTT
// broker) cur never names, TLS turned off, other trusted roots. Each entry
// names the key and the value. An empty list means next is at least as
// safe. Used to refuse such changes from anyone who is not a local
// operator, however the command was authenticated: a stolen fleet key must
// not be enough to redirect a ward's messages.
func TransportDowngrades(cur, next *Config) []string {
	d := downgrades{known: knownHosts(cur)}
	d.webServices(cur, next)
	d.mllp(cur, next)
	d.mqtt(cur, next)
	d.unvetted(cur, next)
	return d.out
}

// downgrades collects what TransportDowngrades finds.
type downgrades struct {
	known hostSet
	out   []string
}

func (d *downgrades) add(f string, a ...any) { d.out = append(d.out, fmt.Sprintf(f, a...)) }

// webPeer is the web-service peer of a source's or destination's block,
// or nil for another type.
func webPeer(c component.Config) *webservice.Peer {
	switch b := c.(type) {
	case *webservice.SourceConfig:
		return &b.Peer
	case *webservice.DestinationConfig:
		return &b.Peer
	}
	return nil
}

type peerOf struct {
	kind, name string
	p          *webservice.Peer
}

// webPeers maps "kind name" to each web-service source and destination.
func webPeers(c *Config) map[string]peerOf {
	m := map[string]peerOf{}
	for _, s := range c.Sources {
		if p := webPeer(s.Config); p != nil {
			m["source "+s.Name] = peerOf{"source", s.Name, p}
		}
	}
	for _, d := range c.Destinations {
		if p := webPeer(d.Config); p != nil {
			m["destination "+d.Name] = peerOf{"destination", d.Name, p}
		}
	}
	return m
}

func (d *downgrades) webServices(cur, next *Config) {
	oldPeers := webPeers(cur)
	for key, np := range webPeers(next) {
		var old *webservice.Peer
		if op, ok := oldPeers[key]; ok {
			old = op.p
		}
		d.webService(fmt.Sprintf("%s %q", np.kind, np.name), old, np.p)
	}
}

// webService compares one peer with its namesake (old, nil when new).
func (d *downgrades) webService(who string, old, np *webservice.Peer) {
	if np.AllowInsecureHTTP && (old == nil || !old.AllowInsecureHTTP) {
		d.add("%s: allow_insecure_http turned on", who)
	}
	u, err := url.Parse(np.URL)
	if err != nil {
		return // Validate has refused it already
	}
	if strings.EqualFold(u.Scheme, "http") && (old == nil || !isHTTP(old.URL)) {
		d.add("%s: url %s is plain http", who, hostOf(u.Host))
	}
	if h := hostOf(u.Host); !d.known.has(h) {
		d.add("%s: url host %s is new", who, h)
	}
	switch {
	case old != nil && len(old.AllowedHosts) == 0:
		// Any host was allowed before: nothing can be wider.
	case len(np.AllowedHosts) == 0:
		d.add("%s: allowed_hosts empty, so a ping reply could send it to any host", who)
	default:
		var before []string
		if old != nil {
			before = old.AllowedHosts
		}
		for _, pat := range np.AllowedHosts {
			if !covered(pat, before) && !d.known.has(strings.ToLower(strings.TrimSpace(pat))) {
				d.add("%s: allowed_hosts pattern %q is wider than before", who, pat)
			}
		}
	}
	if np.CAFile != "" && (old == nil || old.CAFile != np.CAFile) {
		d.add("%s: ca_file %s trusts other roots", who, np.CAFile)
	}
}

// mllp checks MLLP destinations (host, TLS, roots) and listeners (TLS).
func (d *downgrades) mllp(cur, next *Config) {
	oldDests := map[string]gateway.Destination{}
	for _, dst := range cur.Destinations {
		oldDests[dst.Name] = dst
	}
	for _, dst := range next.Destinations {
		nm, _ := dst.Config.(*mllp.DestinationConfig)
		if nm == nil {
			continue
		}
		who := fmt.Sprintf("destination %q", dst.Name)
		if h := hostOf(nm.Address); !d.known.has(h) {
			d.add("%s: address host %s is new", who, h)
		}
		om, _ := oldDests[dst.Name].Config.(*mllp.DestinationConfig)
		if om != nil && om.TLS.On() && !nm.TLS.On() {
			d.add("%s: tls turned off", who)
		}
		if ca := nm.TLS.CAFile; ca != "" && (om == nil || om.TLS.CAFile != ca) {
			d.add("%s: tls.ca_file %s trusts other roots", who, ca)
		}
	}
	oldSources := map[string]gateway.Source{}
	for _, s := range cur.Sources {
		oldSources[s.Name] = s
	}
	for _, s := range next.Sources {
		nm, _ := s.Config.(*mllp.ListenerConfig)
		om, _ := oldSources[s.Name].Config.(*mllp.ListenerConfig)
		if nm == nil || om == nil {
			continue
		}
		who := fmt.Sprintf("source %q", s.Name)
		if om.TLS.Enabled() && !nm.TLS.Enabled() {
			d.add("%s: tls turned off", who)
		}
		if om.TLS.ClientCAFile != "" && om.TLS.ClientCAFile != nm.TLS.ClientCAFile {
			d.add("%s: tls.client_ca_file changed from %s", who, om.TLS.ClientCAFile)
		}
	}
}

// vetted says whether the checks here understand a block: the web-service
// and MLLP ones they compare, those of types that reach no other host, and
// none at all (a rubbish bin).
func vetted(c component.Config) bool {
	switch c.(type) {
	case nil, component.Local,
		*webservice.SourceConfig, *webservice.DestinationConfig,
		*mllp.ListenerConfig, *mllp.DestinationConfig:
		return true
	}
	return false
}

// unvetted fails closed for any other type: a new or changed entry whose
// block the checks here cannot read might send messages anywhere.
func (d *downgrades) unvetted(cur, next *Config) {
	old := map[string]component.Config{}
	for _, s := range cur.Sources {
		old["source "+s.Name] = s.Config
	}
	for _, dst := range cur.Destinations {
		old["destination "+dst.Name] = dst.Config
	}
	check := func(kind, name, typ string, c component.Config) {
		if vetted(c) {
			return
		}
		if o, ok := old[kind+" "+name]; ok && reflect.DeepEqual(o, c) {
			return
		}
		d.add("%s %q: type %s: this check cannot tell where its messages go, so only a local operator may add or change it", kind, name, typ)
	}
	for _, s := range next.Sources {
		check("source", s.Name, s.Type, s.Config)
	}
	for _, dst := range next.Destinations {
		check("destination", dst.Name, dst.Type, dst.Config)
	}
}

func (d *downgrades) mqtt(cur, next *Config) {
	if !next.MQTT.Enabled() {
		return
	}
	if cur.MQTT.UsesTLS() && !next.MQTT.UsesTLS() {
		d.add("mqtt.broker: TLS turned off (%s)", schemeOf(next.MQTT.Broker))
	}
	if u, err := url.Parse(next.MQTT.Broker); err == nil && !d.known.has(hostOf(u.Host)) {
		d.add("mqtt.broker: host %s is new", hostOf(u.Host))
	}
	if ca := next.MQTT.CAFile; ca != "" && ca != cur.MQTT.CAFile {
		d.add("mqtt.ca_file %s trusts other roots", ca)
	}
}

// hostSet holds the upstream hosts a configuration names, and the
// allowed_hosts patterns it already trusts.
type hostSet struct {
	hosts    map[string]bool
	patterns []string
}

func (s hostSet) has(h string) bool { return s.hosts[h] || covered(h, s.patterns) }

func knownHosts(c *Config) hostSet {
	s := hostSet{hosts: map[string]bool{}}
	peer := func(p *webservice.Peer) {
		if u, err := url.Parse(p.URL); err == nil {
			s.hosts[hostOf(u.Host)] = true
		}
		s.patterns = append(s.patterns, p.AllowedHosts...)
	}
	for _, src := range c.Sources {
		if p := webPeer(src.Config); p != nil {
			peer(p)
		}
	}
	for _, d := range c.Destinations {
		if p := webPeer(d.Config); p != nil {
			peer(p)
		}
		if m, ok := d.Config.(*mllp.DestinationConfig); ok {
			s.hosts[hostOf(m.Address)] = true
		}
	}
	if c.MQTT.Enabled() {
		if u, err := url.Parse(c.MQTT.Broker); err == nil {
			s.hosts[hostOf(u.Host)] = true
		}
	}
	return s
}

// covered says whether some pattern in pats matches p taken literally: a
// pattern only narrower than one already trusted adds nothing.
func covered(p string, pats []string) bool {
	p = strings.ToLower(strings.TrimSpace(p))
	for _, q := range pats {
		q = strings.ToLower(strings.TrimSpace(q))
		if q == p {
			return true
		}
		if ok, _ := path.Match(q, p); ok {
			return true
		}
	}
	return false
}

// hostOf is the lower-case host name of a URL's host[:port].
func hostOf(hostport string) string {
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		hostport = h
	}
	return strings.ToLower(strings.TrimSuffix(strings.Trim(hostport, "[]"), "."))
}

func isHTTP(raw string) bool {
	u, err := url.Parse(raw)
	return err == nil && strings.EqualFold(u.Scheme, "http")
}

func schemeOf(raw string) string {
	if u, err := url.Parse(raw); err == nil {
		return u.Scheme + "://"
	}
	return "?"
}
