package config

import (
	"fmt"
	"path"
	"path/filepath"
	"reflect"
	"slices"
	"strings"

	"github.com/hl7edge/hl7edge/pipeline/component"
)

// RemoteRefusals lists why next may not replace cur when the change comes
// from afar (a config-apply over MQTT), however it was authenticated: a
// stolen fleet key must not be enough to redirect a ward's messages, weaken
// how they travel, or move the state that keeps the box safe. Each entry
// names the key and the reason; an empty list means the change may be
// applied. It reads what every block states through component.Reacher, so
// it knows no source or destination type by name.
func RemoteRefusals(cur, next *Config) []string {
	out := remoteRule(surfaceOf(cur), surfaceOf(next))
	return append(out, unjudged(cur, next)...)
}

// surface is everything of a configuration a remote change is judged on;
// every Key is the full key path.
type surface struct {
	endpoints []component.Endpoint
	files     []component.File
	stateDir  string
}

func surfaceOf(c *Config) surface {
	s := surface{stateDir: c.StateDir()}
	add := func(prefix string, r component.Reach) {
		for _, e := range r.Endpoints {
			e.Key = prefix + e.Key
			s.endpoints = append(s.endpoints, e)
		}
		for _, f := range r.Files {
			f.Key = prefix + f.Key
			s.files = append(s.files, f)
		}
	}
	for _, src := range c.Sources {
		if r, ok := src.Config.(component.Reacher); ok {
			add(fmt.Sprintf("source %q: ", src.Name), r.Reach())
		}
	}
	for _, d := range c.Destinations {
		if r, ok := d.Config.(component.Reacher); ok {
			add(fmt.Sprintf("destination %q: ", d.Name), r.Reach())
		}
	}
	add("mqtt.", c.MQTT.Reach())
	for key, p := range map[string]string{
		"spool.dir": c.Spool.Dir, "admin.socket": c.Admin.Socket, "firmware.dir": c.Firmware.Dir,
		"spool.encryption_key_file": c.Spool.EncryptionKeyFile, "leds.sysfs_root": c.LEDs.SysfsRoot,
	} {
		s.files = append(s.files, component.File{Key: key, Path: p, Kind: component.FileState})
	}
	return s
}

// remoteRule is the one rule for a remote change, over endpoints and files
// whatever their names: every endpoint of next must be one cur already has,
// or one on a new port of a host cur reaches by the same protocol with TLS,
// and in either case at least as safe (TLS not off, the same CA, server
// name, client certificate and password file, allowed_hosts no wider).
// State keys keep their value; every other file key stays in the
// directories cur uses for files of its kind and out of the state.
func remoteRule(cur, next surface) []string {
	var out []string
	for _, e := range next.endpoints {
		if why := endpointRefusal(e, cur.endpoints); why != "" {
			out = append(out, fmt.Sprintf("%s %s: %s", e.Key, hostPort(e), why))
		}
	}
	for _, f := range next.files {
		if why := fileRefusal(f, cur); why != "" {
			out = append(out, fmt.Sprintf("%s %s: %s", f.Key, f.Path, why))
		}
	}
	return out
}

func hostPort(e component.Endpoint) string {
	if strings.Contains(e.Host, ":") {
		return "[" + e.Host + "]:" + e.Port
	}
	return e.Host + ":" + e.Port
}

// endpointRefusal says why e is not allowed beside the current endpoints,
// or "". Listeners are compared whatever their bind address, and one on a
// new port of an address cur listens on counts as the same; a host cur's
// allowed_hosts cover counts as reached.
func endpointRefusal(e component.Endpoint, cur []component.Endpoint) string {
	var reasons []string
	for _, c := range cur {
		if c.Proto != e.Proto || c.Listens != e.Listens {
			continue
		}
		if !e.Listens && c.Host != e.Host && !covered(e.Host, c.AllowedHosts) {
			continue
		}
		// A listener on another port of the same address takes nothing
		// from anyone the old one did not: only its address counts.
		same := c.Host == e.Host && (c.Port == e.Port || e.Listens)
		r := weaker(e, c)
		if !same && !e.TLS {
			r = append(r, "a new endpoint without TLS")
		}
		if len(r) == 0 {
			return ""
		}
		if reasons == nil || same {
			reasons = r
		}
	}
	switch {
	case reasons != nil:
		return strings.Join(reasons, "; ")
	case e.Listens:
		return fmt.Sprintf("the current configuration has no %s listener to compare it with", e.Proto)
	}
	return fmt.Sprintf("the current configuration sends nothing by %s to host %s", e.Proto, e.Host)
}

// weaker lists how e is less safe than c, or differs from it where any
// difference could be: other roots, another server name, another client
// certificate, a password sent somewhere new.
func weaker(e, c component.Endpoint) []string {
	var r []string
	if c.TLS && !e.TLS {
		r = append(r, "TLS off (on for "+c.Key+")")
	}
	if e.CAFile != c.CAFile {
		what := "other trusted roots"
		if e.Listens {
			what = "another client-certificate requirement"
		}
		r = append(r, fmt.Sprintf("%s (CA file %q; %s has %q)", what, e.CAFile, c.Key, c.CAFile))
	}
	if e.ServerName != c.ServerName {
		r = append(r, fmt.Sprintf("tls.server_name %q; %s has %q", e.ServerName, c.Key, c.ServerName))
	}
	if e.ClientCert != c.ClientCert {
		r = append(r, fmt.Sprintf("client certificate %q; %s has %q", e.ClientCert, c.Key, c.ClientCert))
	}
	if e.Secret != c.Secret {
		r = append(r, fmt.Sprintf("password file %q would go where %s sends %q; a password goes only where it went before", e.Secret, c.Key, c.Secret))
	}
	if wider(e.AllowedHosts, c) {
		r = append(r, fmt.Sprintf("allowed_hosts %q wider than %s's %q", e.AllowedHosts, c.Key, c.AllowedHosts))
	}
	return r
}

// wider says whether the patterns pats let a peer send the box further
// than c's do (nil: anywhere).
func wider(pats []string, c component.Endpoint) bool {
	if c.AllowedHosts == nil {
		return false
	}
	if pats == nil {
		return true
	}
	for _, p := range pats {
		if !covered(p, c.AllowedHosts) && strings.ToLower(strings.TrimSpace(p)) != c.Host {
			return true
		}
	}
	return false
}

// fileRefusal says why f may not be set remotely, or "".
func fileRefusal(f component.File, cur surface) string {
	if f.Kind == component.FileState {
		for _, c := range cur.files {
			if c.Key == f.Key && c.Path != f.Path {
				return fmt.Sprintf("holds state the box's safety depends on (now %s); only a local operator may change it", c.Path)
			}
		}
		return ""
	}
	p := filepath.Clean(f.Path)
	for _, c := range cur.files {
		if c.Kind == f.Kind && filepath.Clean(c.Path) == p {
			return "" // set by a local operator already
		}
	}
	if !filepath.IsAbs(p) {
		return "not an absolute path; only a local operator may set it"
	}
	if why := inState(p, f.Kind, cur); why != "" {
		return why + "; only a local operator may point a file there"
	}
	var dirs []string
	for _, c := range cur.files {
		if c.Kind != f.Kind || c.Path == "" {
			continue
		}
		d := filepath.Clean(c.Path)
		if f.Kind != component.FileOutput {
			d = filepath.Dir(d)
		}
		if f.Kind == component.FileOutput && within(p, d) || filepath.Dir(p) == d {
			return ""
		}
		if !slices.Contains(dirs, d) {
			dirs = append(dirs, d)
		}
	}
	if dirs == nil {
		return fmt.Sprintf("the current configuration names no %s file a remote change could stay beside; only a local operator may add one", f.Kind)
	}
	return fmt.Sprintf("outside the directories the current configuration uses for %s files (%s); only a local operator may point it there", f.Kind, strings.Join(dirs, ", "))
}

// inState says whether p lies in state: inside a state key's path, or
// the state directory itself or (for a file) a file directly in it, where
// the session counter and the replay record live.
func inState(p string, kind component.FileKind, cur surface) string {
	for _, c := range cur.files {
		if c.Kind == component.FileState && c.Path != "" && within(p, filepath.Clean(c.Path)) {
			return "inside " + c.Key
		}
	}
	if p == cur.stateDir || kind != component.FileOutput && filepath.Dir(p) == cur.stateDir {
		return "in the state directory " + cur.stateDir
	}
	return ""
}

// within says whether p is dir or below it.
func within(p, dir string) bool {
	return p == dir || strings.HasPrefix(p, strings.TrimSuffix(dir, "/")+"/")
}

// unjudged fails closed for a block that states no Reach: a new or
// changed one might send messages anywhere.
func unjudged(cur, next *Config) []string {
	old := map[string]component.Config{}
	for _, s := range cur.Sources {
		old["source "+s.Name] = s.Config
	}
	for _, d := range cur.Destinations {
		old["destination "+d.Name] = d.Config
	}
	var out []string
	check := func(kind, name, typ string, c component.Config) {
		if _, ok := c.(component.Reacher); ok || c == nil {
			return
		}
		if o, ok := old[kind+" "+name]; ok && reflect.DeepEqual(o, c) {
			return
		}
		out = append(out, fmt.Sprintf("%s %q: type %s states no endpoints, so no remote change can be judged safe; only a local operator may add or change it", kind, name, typ))
	}
	for _, s := range next.Sources {
		check("source", s.Name, s.Type, s.Config)
	}
	for _, d := range next.Destinations {
		check("destination", d.Name, d.Type, d.Config)
	}
	return out
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
