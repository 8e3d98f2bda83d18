package frontpanel

import (
	"testing"
	"time"

	"github.com/hl7edge/hl7edge/board/led"
	"github.com/hl7edge/hl7edge/pipeline/vocab/health"
	"periph.io/x/conn/v3/gpio"
)

var (
	off      = Pattern{Kind: Off}
	on       = Pattern{Kind: On}
	slow     = Pattern{Kind: Blink, Period: SlowBlink}
	fast     = Pattern{Kind: Blink, Period: FastBlink}
	linkDown = Pattern{Kind: Blink, Period: LinkBlink}
	flash    = Pattern{Kind: Flash}
	ident    = Pattern{Kind: Blink, Period: IdentifyBlink}
)

func code(n int) Pattern { return Pattern{Kind: Code, N: n} }

// healthy is a box with a web-service upstream, an MLLP destination, a
// serial and an MLLP source, all up, clock synchronised, spool at 10%.
func healthy() health.Snapshot {
	return health.Snapshot{
		ClockSynced: true,
		Sources: []health.ComponentSnapshot{
			{Name: "analyzer", Type: "serial", State: health.Up},
			{Name: "monitors", Type: "mllp", State: health.Up},
		},
		Destinations: []health.ComponentSnapshot{
			{Name: "ehr", Type: "webservice", Upstream: true, State: health.Up},
			{Name: "lis", Type: "mllp", State: health.Up},
		},
		Services: []health.ComponentSnapshot{{Name: "spool", Type: "spool", State: health.Up}},
		Spool:    health.SpoolSnapshot{Bytes: 100, MaxBytes: 1000},
	}
}

func with(f func(*health.Snapshot)) health.Snapshot {
	s := healthy()
	f(&s)
	return s
}

func TestPatterns(t *testing.T) {
	up := Inputs{Ready: true, MQTTUp: true}
	cases := []struct {
		name string
		s    health.Snapshot
		in   Inputs
		want Set
	}{
		{"healthy", healthy(), up, Set{slow, on, off, off}},
		{"starting", healthy(), Inputs{MQTTUp: true}, Set{fast, on, off, off}},
		{"zero inputs: starting, MQTT not yet up", healthy(), Inputs{}, Set{fast, linkDown, off, off}},
		{"stalled loop: SYS dark", with(func(s *health.Snapshot) { s.Stalled = []string{"deliver/ehr"} }), up, Set{off, on, off, off}},
		{"stalled while starting: dark wins", with(func(s *health.Snapshot) { s.Stalled = []string{"intake"} }), Inputs{MQTTUp: true}, Set{off, on, off, off}},
		{"MQTT down", healthy(), Inputs{Ready: true}, Set{slow, linkDown, off, off}},
		{"upstream down", with(func(s *health.Snapshot) { s.Destinations[0].State = health.Down }), up, Set{slow, linkDown, off, off}},
		{"upstream still starting", with(func(s *health.Snapshot) { s.Destinations[0].State = health.Starting }), up, Set{slow, linkDown, off, off}},
		{"upstream paused by operator", with(func(s *health.Snapshot) { s.Destinations[0].State = health.Paused }), up, Set{slow, on, off, off}},
		{"second upstream down", with(func(s *health.Snapshot) {
			s.Destinations = append(s.Destinations, health.ComponentSnapshot{Name: "vendor", Type: "webservice", Upstream: true, State: health.Down})
		}), up, Set{slow, linkDown, off, off}},
		{"MLLP destination down is not upstream", with(func(s *health.Snapshot) { s.Destinations[1].State = health.Down }), up, Set{slow, on, off, off}},
		{"no upstream configured", with(func(s *health.Snapshot) { s.Destinations = s.Destinations[1:] }), up, Set{slow, on, off, off}},
		{"no upstream and MQTT down", with(func(s *health.Snapshot) { s.Destinations = nil }), Inputs{Ready: true}, Set{slow, linkDown, off, off}},
		{"activity", healthy(), Inputs{Ready: true, MQTTUp: true, Activity: true}, Set{slow, on, flash, off}},

		{"spool full", with(func(s *health.Snapshot) { s.Spool.Full = true }), up, Set{slow, on, off, code(1)}},
		{"spool at 90%", with(func(s *health.Snapshot) { s.Spool.Bytes = 900 }), up, Set{slow, on, off, code(1)}},
		{"spool just under 90%", with(func(s *health.Snapshot) { s.Spool.Bytes = 899 }), up, Set{slow, on, off, off}},
		{"spool over max", with(func(s *health.Snapshot) { s.Spool.Bytes = 2000 }), up, Set{slow, on, off, code(1)}},
		{"spool without a limit", with(func(s *health.Snapshot) { s.Spool = health.SpoolSnapshot{Bytes: 1 << 40} }), up, Set{slow, on, off, off}},
		{"upstream refusing", with(func(s *health.Snapshot) {
			s.Destinations[0].State = health.Down
			s.Destinations[0].Counters = map[string]uint64{"exceptions": 3}
		}), up, Set{slow, linkDown, off, code(2)}},
		{"MLLP peer refusing", with(func(s *health.Snapshot) {
			s.Destinations[1].State = health.Down
			s.Destinations[1].Counters = map[string]uint64{"refused": 1}
		}), up, Set{slow, on, off, code(2)}},
		{"refused in the past, up now", with(func(s *health.Snapshot) {
			s.Destinations[0].Counters = map[string]uint64{"exceptions": 3}
		}), up, Set{slow, on, off, off}},
		{"upstream unreachable, never refused", with(func(s *health.Snapshot) { s.Destinations[0].State = health.Down }), up, Set{slow, linkDown, off, off}},
		{"source refusals are not upstream", with(func(s *health.Snapshot) {
			s.Sources[1].State = health.Down
			s.Sources[1].Counters = map[string]uint64{"refused": 9}
		}), up, Set{slow, on, off, off}},
		{"serial source missing", with(func(s *health.Snapshot) { s.Sources[0].State = health.Missing }), up, Set{slow, on, off, code(3)}},
		{"serial destination missing", with(func(s *health.Snapshot) {
			s.Destinations = append(s.Destinations, health.ComponentSnapshot{Name: "pump", Type: "serial", State: health.Missing})
		}), up, Set{slow, on, off, code(3)}},
		{"clock not synchronised", with(func(s *health.Snapshot) { s.ClockSynced = false }), up, Set{slow, on, off, code(4)}},
		{"TLS failing on a service", with(func(s *health.Snapshot) {
			s.Services = append(s.Services, health.ComponentSnapshot{Name: "mqtt", State: health.Down, Counters: map[string]uint64{"tls_errors": 1}})
		}), up, Set{slow, on, off, code(4)}},
		{"TLS failure upstream", with(func(s *health.Snapshot) {
			s.Destinations[0].State = health.Down
			s.Destinations[0].Counters = map[string]uint64{"tls_errors": 2}
		}), up, Set{slow, linkDown, off, code(4)}},
		{"storage error", with(func(s *health.Snapshot) { s.Spool.Error = "value log write failed" }), up, Set{slow, on, off, code(5)}},

		// Priority 5, 1, 3, 2, 4.
		{"storage error beats full spool", with(func(s *health.Snapshot) { s.Spool.Error = "x"; s.Spool.Full = true }), up, Set{slow, on, off, code(5)}},
		{"full spool beats missing device", with(func(s *health.Snapshot) { s.Spool.Full = true; s.Sources[0].State = health.Missing }), up, Set{slow, on, off, code(1)}},
		{"missing device beats refusing upstream", with(func(s *health.Snapshot) {
			s.Sources[0].State = health.Missing
			s.Destinations[0].State = health.Down
			s.Destinations[0].Counters = map[string]uint64{"exceptions": 1}
		}), up, Set{slow, linkDown, off, code(3)}},
		{"refusing upstream beats clock", with(func(s *health.Snapshot) {
			s.ClockSynced = false
			s.Destinations[0].State = health.Down
			s.Destinations[0].Counters = map[string]uint64{"exceptions": 1}
		}), up, Set{slow, linkDown, off, code(2)}},
		{"everything wrong", with(func(s *health.Snapshot) {
			s.ClockSynced = false
			s.Spool.Error, s.Spool.Full = "x", true
			s.Sources[0].State = health.Missing
			s.Stalled = []string{"intake"}
		}), Inputs{Activity: true}, Set{off, linkDown, flash, code(5)}},

		{"identify overrides everything", with(func(s *health.Snapshot) {
			s.Stalled = []string{"intake"}
			s.Spool.Error = "x"
		}), Inputs{Identify: true, Activity: true}, Set{ident, ident, ident, ident}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := Patterns(c.s, c.in); got != c.want {
				t.Errorf("Patterns = %v\n          want %v", got, c.want)
			}
		})
	}
}

func TestFaultOfNumbersMatchCodes(t *testing.T) {
	seen := map[Fault]bool{}
	for _, f := range FaultPriority() {
		if f < 1 || f > 5 || seen[f] {
			t.Fatalf("FaultPriority %v: every code 1..5 exactly once", FaultPriority())
		}
		seen[f] = true
	}
	if len(seen) != 5 {
		t.Fatalf("FaultPriority %v misses codes", FaultPriority())
	}
	if FaultOf(healthy()) != NoFault {
		t.Fatalf("healthy box shows fault %v", FaultOf(healthy()))
	}
}

// levels samples p every step for d and returns the levels.
func levels(p Pattern, step, d time.Duration) []gpio.Level {
	var out []gpio.Level
	for t := time.Duration(0); t < d; t += step {
		out = append(out, p.Level(t))
	}
	return out
}

// pulses counts rising edges.
func pulses(ls []gpio.Level) int {
	n := 0
	prev := gpio.Low
	for _, l := range ls {
		if l && !prev {
			n++
		}
		prev = l
	}
	return n
}

func TestPatternLevels(t *testing.T) {
	ms := time.Millisecond
	if got := levels(slow, 100*ms, 2*time.Second); pulses(got) != 2 || countHigh(got) != 10 {
		t.Errorf("slow blink over 2s: %v, want 2 pulses of 500ms", got)
	}
	if got := levels(fast, 100*ms, time.Second); pulses(got) != 5 || countHigh(got) != 5 {
		t.Errorf("fast blink over 1s: %v, want 5 pulses of 100ms", got)
	}
	if on.Level(time.Hour) != gpio.High || off.Level(time.Hour) != gpio.Low {
		t.Error("on/off are not constant")
	}
	if flash.Level(0) != gpio.High || flash.Level(FlashOn) != gpio.Low || flash.Level(time.Hour) != gpio.Low {
		t.Error("flash is not one FlashOn pulse")
	}
	for n := 1; n <= 5; n++ {
		cycle := levels(code(n), 10*ms, CodeCycle(n))
		if got := pulses(cycle); got != n {
			t.Errorf("code %d: %d pulses per cycle", n, got)
		}
		if got := countHigh(cycle); got != n*int(CodeOn/(10*ms)) {
			t.Errorf("code %d: lit %d samples, want %d", n, got, n*int(CodeOn/(10*ms)))
		}
		// The pause: dark from the end of the last flash to the end of the cycle.
		for tt := time.Duration(n-1)*(CodeOn+CodeOff) + CodeOn; tt < CodeCycle(n); tt += 10 * ms {
			if code(n).Level(tt) {
				t.Fatalf("code %d lit at %v, inside the pause", n, tt)
			}
		}
		if pause := CodeCycle(n) - time.Duration(n)*(CodeOn+CodeOff) + CodeOff; pause <= 2*CodeOff {
			t.Errorf("code %d: pause %v is not clearly longer than the gap %v between flashes", n, pause, CodeOff)
		}
	}
}

func countHigh(ls []gpio.Level) int {
	n := 0
	for _, l := range ls {
		if l {
			n++
		}
	}
	return n
}

func TestStrings(t *testing.T) {
	if got := (Set{slow, on, flash, code(3)}).String(); got != "sys=blink(1s) link=on act=flash fault=code(3)" {
		t.Errorf("Set.String = %q", got)
	}
	if FaultStorage.String() != "storage error" || led.LED(7).String() != "led(7)" {
		t.Error("names")
	}
}
