package frontpanel

import (
	"fmt"
	"strings"
	"time"

	"github.com/hl7edge/hl7edge/board/led"
	"github.com/hl7edge/hl7edge/pipeline/vocab/health"
)

// Reading is what one LED shows and what that means, in the words a
// technician in front of the box needs.
type Reading struct {
	LED     string `json:"led"`     // sys, link, act, fault
	Shows   string `json:"shows"`   // "slow blink", "4 flashes, pause"...
	Meaning string `json:"meaning"` // "FAULT: code 4, clock not synchronised: check NTP..."
}

// FaultInfo explains the fault code a snapshot shows.
type FaultInfo struct {
	Code int `json:"code"`
	// What is the condition and where, stable while the condition lasts
	// ("serial device missing: source analyzer").
	What string `json:"what,omitempty"`
	// Detail is the changing part: a percentage, the component's last error.
	Detail string `json:"detail,omitempty"`
	// Advice is what to do first.
	Advice string `json:"advice,omitempty"`
}

// String is the one-line form: "code 4, clock not synchronised: check NTP...".
func (f FaultInfo) String() string {
	if f.Code == 0 {
		return "no fault"
	}
	return fmt.Sprintf("code %d, %s: %s", f.Code, f.What, f.Advice)
}

// ExplainFault names the fault FaultOf picks, where it is and what to do.
func ExplainFault(s health.Snapshot) FaultInfo {
	f := FaultOf(s)
	info := FaultInfo{Code: int(f)}
	comps := func(pred func(health.ComponentSnapshot) bool, kinds ...health.Kind) (names, errs []string) {
		for _, k := range kinds {
			list := s.Services
			switch k {
			case health.Source:
				list = s.Sources
			case health.Destination:
				list = s.Destinations
			}
			for _, c := range list {
				if pred(c) {
					names = append(names, string(k)+" "+c.Name)
					if c.LastError != "" {
						errs = append(errs, c.Name+": "+c.LastError)
					}
				}
			}
		}
		return names, errs
	}
	switch f {
	case NoFault:
		return info
	case FaultStorage:
		info.What = "storage error"
		info.Detail = s.Spool.Error
		info.Advice = "the spool cannot write: check the disk (dmesg, free space, the SD card); senders get AE until it writes again"
	case FaultSpoolFull:
		pct := int64(0)
		if s.Spool.MaxBytes > 0 {
			pct = s.Spool.Bytes * 100 / s.Spool.MaxBytes
		}
		info.Detail = fmt.Sprintf("%d%% of spool.max_bytes (%d of %d bytes)", pct, s.Spool.Bytes, s.Spool.MaxBytes)
		if s.Spool.Full {
			info.What = "spool full"
			info.Advice = "senders get AE: find why destinations do not deliver (queued, oldest, last error below) or raise spool.max_bytes"
		} else {
			info.What = "spool nearly full"
			info.Advice = "senders will get AE soon: find why destinations do not deliver (queued, oldest, last error below) or raise spool.max_bytes"
		}
	case FaultDeviceMissing:
		names, errs := comps(func(c health.ComponentSnapshot) bool { return c.State == health.Missing }, health.Source, health.Destination)
		info.What = "serial device missing: " + strings.Join(names, ", ")
		info.Detail = strings.Join(errs, "; ")
		info.Advice = "check the cable and USB adapter; the device path in the configuration must exist"
	case FaultUpstreamRefusing:
		info.What, info.Detail, info.Advice = explainRefusing(s, comps)
	case FaultClockTLS:
		if !s.ClockSynced {
			info.What = "clock not synchronised"
			info.Advice = "check NTP (timedatectl timesync-status); certificates and timestamps need the right time"
			break
		}
		names, errs := comps(func(c health.ComponentSnapshot) bool {
			return c.State == health.Down && c.Counters[health.CounterTLSErrors] > 0
		}, health.Source, health.Destination, health.Service)
		info.What = "TLS failure: " + strings.Join(names, ", ")
		info.Detail = strings.Join(errs, "; ")
		info.Advice = "check the peer's certificate against ca_file and allowed_hosts, and the clock"
	}
	return info
}

// Explain says what every LED shows for s and in, and why, indexed by LED.
func Explain(s health.Snapshot, in Inputs) [led.NumLEDs]Reading {
	set := Patterns(s, in)
	var out [led.NumLEDs]Reading
	for i, p := range set {
		out[i] = Reading{LED: led.LED(i).String(), Shows: p.Words()}
	}
	if in.Identify {
		for i := range out {
			out[i].Meaning = "IDENTIFY: an operator asked which box this is; all four blink together"
		}
		return out
	}
	switch {
	case len(s.Stalled) > 0:
		out[led.SYS].Meaning = "SYS: hung: " + strings.Join(s.Stalled, ", ") + " stopped beating; the watchdog restarts the service"
	case !in.Ready:
		out[led.SYS].Meaning = "SYS: starting"
	default:
		out[led.SYS].Meaning = "SYS: running, every internal loop beats"
	}
	if set[led.LINK].Kind == On {
		out[led.LINK].Meaning = "LINK: " + linkUp(s)
	} else {
		var down []string
		for _, c := range s.Destinations {
			if c.Upstream && c.State != health.Up && c.State != health.Paused {
				down = append(down, fmt.Sprintf("destination %s %s", c.Name, c.State))
			}
		}
		if !in.MQTTUp {
			down = append(down, "MQTT down")
		}
		out[led.LINK].Meaning = "LINK: not all up: " + strings.Join(down, ", ")
	}
	out[led.ACT].Meaning = "ACT: one flash per message in or out"
	if f := ExplainFault(s); f.Code == 0 {
		out[led.FAULT].Meaning = "FAULT: none"
	} else {
		out[led.FAULT].Meaning = "FAULT: " + f.String()
	}
	return out
}

// linkUp says what a solid LINK stands for on this box: only what it has.
func linkUp(s health.Snapshot) string {
	var up []string
	if anyComponent(func(c health.ComponentSnapshot) bool { return c.Upstream }, s.Destinations) {
		up = append(up, "upstream destinations")
	}
	if _, ok := s.Component(health.Service, "mqtt"); ok {
		up = append(up, "MQTT")
	}
	if len(up) == 0 {
		return "nothing to watch (no upstream destination, no MQTT broker configured)"
	}
	return strings.Join(up, " and ") + " up"
}

// Words is the pattern as a person describes it.
func (p Pattern) Words() string {
	switch p.Kind {
	case Off:
		return "off"
	case On:
		return "on"
	case Blink:
		return fmt.Sprintf("blinking %s", hz(p.Period))
	case Code:
		if p.N == 1 {
			return "1 flash, pause"
		}
		return fmt.Sprintf("%d flashes, pause", p.N)
	case Flash:
		return "flash"
	}
	return p.String()
}

func hz(period time.Duration) string {
	if period <= 0 {
		return ""
	}
	f := float64(time.Second) / float64(period)
	if f == float64(int(f)) {
		return fmt.Sprintf("%dHz", int(f))
	}
	return fmt.Sprintf("%.1fHz", f)
}

// explainRefusing tells a destination held by a message its receiver
// refused (the operator must act) from one whose receiver keeps refusing
// (it may come round), with the advice that fits the destination's type:
// only a web service has a logon.
func explainRefusing(s health.Snapshot, comps func(func(health.ComponentSnapshot) bool, ...health.Kind) ([]string, []string)) (what, detail, advice string) {
	held, errs := comps(func(c health.ComponentSnapshot) bool { return c.State == health.Held }, health.Destination)
	if len(held) > 0 {
		return "held by a refused message: " + strings.Join(held, ", "), strings.Join(errs, "; "),
			"the receiver refused the first message in line for good (AR/CR or EXCEPTION) and the rest wait behind it: " +
				"fix it at the receiver, or move it to the dead letters with hl7edge spool skip --destination NAME"
	}
	var ws bool
	names, errs := comps(func(c health.ComponentSnapshot) bool {
		r := c.State == health.Down && refusing(c)
		ws = ws || r && c.Upstream
		return r
	}, health.Destination)
	advice = "the receiver answers but refuses (AE/NAK): its own log says why; messages stay queued and are retried"
	if ws {
		advice = "the receiver answers but refuses: for a web service check logon_id and password_file, then the receiver's own log; messages stay queued"
	}
	return "upstream refusing: " + strings.Join(names, ", "), strings.Join(errs, "; "), advice
}
