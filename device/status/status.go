// Package status turns one health snapshot into the verdict a technician or
// a script needs: healthy or not, what is wrong, what each LED shows and
// why. The daemon builds the report (it alone knows the LED inputs); the
// CLI renders it, and the fleet view judges retained snapshots with the
// same rules.
package status

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/hl7edge/hl7edge/board/led"
	"github.com/hl7edge/hl7edge/device/frontpanel"
	"github.com/hl7edge/hl7edge/pipeline/vocab/health"
)

// Report is `hl7edge status` in data.
type Report struct {
	Healthy  bool                            `json:"healthy"`
	Problems []string                        `json:"problems,omitempty"`
	Fault    frontpanel.FaultInfo            `json:"fault"`
	LEDs     [led.NumLEDs]frontpanel.Reading `json:"leds"`
	Health   health.Snapshot                 `json:"health"`
}

// Build judges s with the LED engine's inputs in.
func Build(s health.Snapshot, in frontpanel.Inputs) Report {
	p := Problems(s)
	if !in.Ready {
		p = append([]string{"the daemon is still starting"}, p...)
	}
	return Report{Healthy: len(p) == 0, Problems: p, Fault: frontpanel.ExplainFault(s), LEDs: frontpanel.Explain(s, in), Health: s}
}

// Problems lists what is wrong in s, most severe first; none means
// healthy. A component still starting counts: a destination that never
// reaches its peer stays "starting", and that is not healthy.
func Problems(s health.Snapshot) []string {
	var out []string
	for _, l := range s.Stalled {
		out = append(out, "loop "+l+" stopped beating (hung); the watchdog restarts the service")
	}
	if f := frontpanel.ExplainFault(s); f.Code != 0 {
		line := "FAULT " + f.String()
		if f.Detail != "" {
			line += " (" + f.Detail + ")"
		}
		out = append(out, line)
	}
	for _, k := range []struct {
		kind health.Kind
		list []health.ComponentSnapshot
	}{{health.Source, s.Sources}, {health.Destination, s.Destinations}, {health.Service, s.Services}} {
		for _, c := range k.list {
			switch c.State {
			case health.Up, health.Paused, health.Stopped:
				continue
			}
			line := fmt.Sprintf("%s %s is %s", k.kind, c.Name, c.State)
			if c.LastError != "" && c.State != health.Starting {
				line += ": " + c.LastError
			}
			out = append(out, line)
		}
	}
	for _, a := range s.Alarms {
		out = append(out, fmt.Sprintf("alarm %s: %s", a.Kind, a.Detail))
	}
	return out
}

// Render writes the report as one screen of text.
func (r Report) Render(w io.Writer) {
	s := r.Health
	fmt.Fprintf(w, "hl7edge %s   firmware %s   up %s   %s\n", s.Device, s.Version,
		time.Duration(s.UptimeSeconds)*time.Second, s.Time.UTC().Format("2006-01-02 15:04:05 UTC"))
	if r.Healthy {
		fmt.Fprintln(w, "HEALTHY")
	} else {
		fmt.Fprintf(w, "NOT HEALTHY (%d):\n", len(r.Problems))
		for _, p := range r.Problems {
			fmt.Fprintf(w, "  - %s\n", oneLine(p))
		}
	}

	fmt.Fprintln(w, "\nLEDs")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, l := range r.LEDs {
		name := strings.ToUpper(l.LED)
		fmt.Fprintf(tw, "  %s\t%s\t%s\n", name, l.Shows, strings.TrimPrefix(l.Meaning, name+": "))
	}
	_ = tw.Flush()

	table := func(title string, list []health.ComponentSnapshot, queues bool) {
		fmt.Fprintf(w, "\n%s\n", title)
		if len(list) == 0 {
			fmt.Fprintln(w, "  (none)")
			return
		}
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		if queues {
			fmt.Fprintln(tw, "  NAME\tTYPE\tSTATE\tSINCE\tQUEUED\tDEAD\tOLDEST\tLAST ERROR")
		} else {
			fmt.Fprintln(tw, "  NAME\tTYPE\tSTATE\tSINCE\tRECEIVED\tLAST ERROR")
		}
		for _, c := range list {
			since := ago(s.Time, c.Since)
			if queues {
				fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%d\t%d\t%s\t%s\n", c.Name, c.Type, c.State, since, c.Queued, c.Dead,
					age(c.OldestAgeSeconds), lastError(s.Time, c))
			} else {
				fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%d\t%s\n", c.Name, c.Type, c.State, since, c.Counters[health.CounterReceived], lastError(s.Time, c))
			}
		}
		_ = tw.Flush()
	}
	table("Sources", s.Sources, false)
	table("Destinations", s.Destinations, true)
	if len(s.Services) > 0 {
		table("Services", s.Services, false)
	}
	renderCommands(w, s)

	sp := s.Spool
	fmt.Fprintln(w, "\nSpool")
	pct := int64(0)
	if sp.MaxBytes > 0 {
		pct = sp.Bytes * 100 / sp.MaxBytes
	}
	fmt.Fprintf(w, "  %d messages, %s of %s (%d%%), on disk %s, disk free %s, undeliverable %d\n",
		sp.Messages, size(sp.Bytes), size(sp.MaxBytes), pct, size(sp.DiskBytes), size(sp.FreeDiskBytes), sp.Undeliverable)
	retained := "none"
	if sp.OldestRetained != nil {
		retained = fmt.Sprintf("since %s", sp.OldestRetained.Local().Format(time.RFC3339))
	}
	fmt.Fprintf(w, "  retained for replay: %d messages, %s (%s); traces %s\n", sp.RetainedMessages, size(sp.RetainedBytes), retained, size(sp.TraceBytes))
	if sp.Full {
		fmt.Fprintln(w, "  FULL: intake answers AE")
	}
	if sp.Error != "" {
		fmt.Fprintf(w, "  ERROR: %s\n", oneLine(sp.Error))
	}
	if sp.Reopens > 0 {
		fmt.Fprintf(w, "  re-opened from disk %d times after a failed sync: the card failed writes; plan to replace it\n", sp.Reopens)
	}
	renderCard(w, s.StorageDevice)
	fmt.Fprintf(w, "  clock synchronised: %s\n", yesNo(s.ClockSynced))

	fmt.Fprintln(w, "\nActive alarms")
	if len(s.Alarms) == 0 {
		fmt.Fprintln(w, "  (none)")
	}
	for _, a := range s.Alarms {
		n := ""
		if a.Count > 1 {
			n = fmt.Sprintf(", %d times, last %s ago", a.Count, ago(s.Time, a.Last))
		}
		fmt.Fprintf(w, "  %s since %s ago%s: %s\n", a.Kind, ago(s.Time, a.Since), n, oneLine(a.Detail))
	}
}

// renderCommands shows what the MQTT command path took and refused: a
// throttled count that grows means someone floods cmd/req with restarts.
func renderCommands(w io.Writer, s health.Snapshot) {
	mq, ok := s.Component(health.Service, "mqtt")
	if !ok {
		return
	}
	c := mq.Counters
	fmt.Fprintf(w, "  MQTT commands: %d accepted, %d rejected, of which %d throttled (unsigned restarts too soon)\n",
		c[health.CounterCommandsAccepted], c[health.CounterCommandsRejected], c[health.CounterCommandsThrottled])
}

// renderCard shows the card under the spool: its wear as the card reports
// it, what to do about it, and what is written to it. A snapshot from a
// daemon that does not watch the card has none: no line.
func renderCard(w io.Writer, sd *health.StorageDevice) {
	if sd == nil {
		return
	}
	if sd.Error != "" {
		fmt.Fprintf(w, "  card: %s\n", oneLine(sd.Error))
		return
	}
	disk := sd.Disk
	if disk == "" {
		disk = "(disk not found)"
	}
	wear := "wear unknown: the card does not report it (SD cards never do; eMMC 5.0 and later do)"
	switch sd.PreEOL {
	case "normal":
		wear = "wear normal"
	case "warning":
		wear = "wear WARNING, 80% of its spare blocks used: order a replacement card"
	case "urgent":
		wear = "wear URGENT, 90% of its spare blocks used: replace the card now"
	}
	if sd.LifeUsedA != "unknown" || sd.LifeUsedB != "unknown" {
		wear += fmt.Sprintf("; life used %s (type A), %s (type B)", sd.LifeUsedA, sd.LifeUsedB)
	}
	fmt.Fprintf(w, "  card %s (spool on %s): %s\n", disk, sd.BlockDevice, wear)
	written := "unknown"
	if sd.BytesWritten != nil {
		written = size(*sd.BytesWritten) + " since boot"
	}
	rate := "rate after the first minute"
	if sd.BytesPerDay != nil {
		rate = fmt.Sprintf("%s a day over the last %s", size(*sd.BytesPerDay), Age(time.Duration(sd.RateWindowSeconds)*time.Second))
	}
	if sd.BytesWritten == nil {
		rate = "rate unknown"
	}
	fmt.Fprintf(w, "  written to %s: %s, %s\n", sd.BlockDevice, written, rate)
}

func lastError(now time.Time, c health.ComponentSnapshot) string {
	if c.LastError == "" {
		return "-"
	}
	if c.LastErrorAt != nil {
		return fmt.Sprintf("%s (%s ago)", oneLine(c.LastError), ago(now, *c.LastErrorAt))
	}
	return oneLine(c.LastError)
}

// oneLine keeps a multi-line error (Badger's have newlines) on its line of
// the screen.
func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "NO"
}

// ago is a short age such as 3s, 4m10s, 2h5m, 3d4h.
func ago(now, t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return Age(now.Sub(t))
}

func age(seconds float64) string {
	if seconds <= 0 {
		return "-"
	}
	return Age(time.Duration(seconds * float64(time.Second)))
}

// Age writes a duration the short way people read it: 3s, 4m10s, 2h5m, 3d4h.
func Age(d time.Duration) string {
	if d < 0 {
		d = 0
	}
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d/time.Second))
	case d < time.Hour:
		return fmt.Sprintf("%dm%02ds", int(d/time.Minute), int(d%time.Minute/time.Second))
	case d < 24*time.Hour:
		return fmt.Sprintf("%dh%02dm", int(d/time.Hour), int(d%time.Hour/time.Minute))
	}
	return fmt.Sprintf("%dd%02dh", int(d/(24*time.Hour)), int(d%(24*time.Hour)/time.Hour))
}

func size(n int64) string {
	const k = 1024
	switch {
	case n < k:
		return fmt.Sprintf("%dB", n)
	case n < k*k:
		return fmt.Sprintf("%.1fKiB", float64(n)/k)
	case n < k*k*k:
		return fmt.Sprintf("%.1fMiB", float64(n)/(k*k))
	}
	return fmt.Sprintf("%.1fGiB", float64(n)/(k*k*k))
}
