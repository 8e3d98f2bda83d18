// Package health is the one picture of the box that every consumer agrees on:
// the MQTT agent publishes it, the LEDs are derived from it, the watchdog and
// the admin socket read it. Components report into it; nothing in it blocks.
package health

import (
	"maps"
	"slices"
	"sync"
	"time"
)

// State of one component.
type State string

// States a component can be in.
const (
	Starting State = "starting" // not yet ready
	Up       State = "up"       // working (a source listening, a destination delivering or idle)
	Down     State = "down"     // failing: its peer unreachable or refusing; retrying
	Held     State = "held"     // the receiver refused the first message in line for good (on_reject: hold); the rest wait for an operator
	Paused   State = "paused"   // paused by an operator
	Missing  State = "missing"  // its device (serial adapter) is not present; waiting for it
	Stopped  State = "stopped"
)

// Kind of component.
type Kind string

// Kinds of component.
const (
	Source      Kind = "source"
	Destination Kind = "destination"
	Service     Kind = "service" // spool, MQTT link, clock...
)

// Component is one tracked part of the box. Its methods are safe for
// concurrent use and never block on consumers.
type Component struct {
	reg      *Registry
	kind     Kind
	name     string
	typ      string
	mu       sync.Mutex
	state    State
	since    time.Time
	lastErr  string
	errAt    time.Time
	counters map[string]uint64
	lanes    func() LaneStat
	upstream bool
}

// LaneStat is how a destination delivering over several lanes is doing.
type LaneStat struct {
	Lanes   int `json:"lanes"`   // configured
	Busy    int `json:"busy"`    // with a request in flight
	Backoff int `json:"backoff"` // waiting before retrying their first message
	Blocked int `json:"blocked"` // holding messages while the destination is paused
}

// SetLanes sets the function that counts the component's lanes for
// snapshots. It is called outside the component's lock.
func (c *Component) SetLanes(f func() LaneStat) {
	c.mu.Lock()
	c.lanes = f
	c.mu.Unlock()
}

// Name of the component.
func (c *Component) Name() string { return c.name }

// MarkUpstream says the component carries the box's messages out to the
// hospital's systems (component.DestinationType.Upstream).
func (c *Component) MarkUpstream() {
	c.mu.Lock()
	c.upstream = true
	c.mu.Unlock()
}

// SetState records a state; a change notifies subscribers at once.
func (c *Component) SetState(s State) {
	c.mu.Lock()
	changed := c.state != s
	if changed {
		c.state = s
		c.since = c.reg.now()
	}
	c.mu.Unlock()
	if changed {
		c.reg.notify()
	}
}

// State returns the current state.
func (c *Component) State() State {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.state
}

// Fail records the last error (it must not contain patient data) and, when
// state is not empty, the new state.
func (c *Component) Fail(s State, errText string) {
	c.mu.Lock()
	c.lastErr = errText
	c.errAt = c.reg.now()
	c.mu.Unlock()
	if s != "" {
		c.SetState(s)
	}
}

// Add increases a named counter: one of the Counter names (counters.go).
func (c *Component) Add(counter string, n uint64) {
	c.mu.Lock()
	c.counters[counter] += n
	c.mu.Unlock()
}

// Counter reads a named counter.
func (c *Component) Counter(counter string) uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.counters[counter]
}

func (c *Component) snapshot() ComponentSnapshot {
	c.mu.Lock()
	s := ComponentSnapshot{
		Name: c.name, Type: c.typ, Upstream: c.upstream, State: c.state, Since: c.since,
		Counters: maps.Clone(c.counters), LastError: c.lastErr,
	}
	if !c.errAt.IsZero() {
		t := c.errAt
		s.LastErrorAt = &t
	}
	lanes := c.lanes
	c.mu.Unlock()
	if lanes != nil {
		ls := lanes()
		s.Lanes = &ls
	}
	return s
}

// ComponentSnapshot is one component in a Snapshot.
type ComponentSnapshot struct {
	Name             string            `json:"name"`
	Type             string            `json:"type"`
	Upstream         bool              `json:"upstream,omitempty"` // a destination its type marks as the box's link
	State            State             `json:"state"`
	Since            time.Time         `json:"since"`
	Counters         map[string]uint64 `json:"counters,omitempty"`
	Queued           int64             `json:"queued,omitempty"`
	QueuedAtStart    int64             `json:"queued_at_start,omitempty"`
	Dead             int64             `json:"dead,omitempty"`
	OldestAgeSeconds float64           `json:"oldest_age_seconds,omitempty"`
	Lanes            *LaneStat         `json:"lanes,omitempty"` // only for a destination with lanes > 1
	LastError        string            `json:"last_error,omitempty"`
	LastErrorAt      *time.Time        `json:"last_error_at,omitempty"`
}

// QueueStat is what the spool reports per destination.
type QueueStat struct {
	Queued           int64
	QueuedAtStart    int64 // the backlog found when the spool was opened
	Dead             int64
	OldestAgeSeconds float64
}

// SpoolSnapshot is the spool's part of a Snapshot.
type SpoolSnapshot struct {
	Messages      int64  `json:"messages"`
	Bytes         int64  `json:"bytes"`
	MaxBytes      int64  `json:"max_bytes"`
	DiskBytes     int64  `json:"disk_bytes"`
	FreeDiskBytes int64  `json:"free_disk_bytes"`
	Undeliverable int64  `json:"undeliverable"`
	Full          bool   `json:"full"`
	Error         string `json:"error,omitempty"`
	// Reopens counts re-opens from disk after a failed sync since start.
	Reopens uint64 `json:"reopens,omitempty"`
	// Retained delivered messages kept for replay, and the message traces'
	// estimated size (docs/operations.md, "Where did message X go").
	RetainedMessages int64      `json:"retained_messages"`
	RetainedBytes    int64      `json:"retained_bytes"`
	OldestRetained   *time.Time `json:"oldest_retained,omitempty"`
	TraceBytes       int64      `json:"trace_bytes"`
	// Queues is per destination; merged into Destinations in a Snapshot.
	Queues map[string]QueueStat `json:"-"`
}

// Snapshot is the whole box at one instant.
type Snapshot struct {
	Device        string              `json:"device"`
	Version       string              `json:"version"`
	Labels        map[string]string   `json:"labels,omitempty"`
	Time          time.Time           `json:"time"`
	UptimeSeconds int64               `json:"uptime_seconds"`
	ClockSynced   bool                `json:"clock_synced"`
	Sources       []ComponentSnapshot `json:"sources"`
	Destinations  []ComponentSnapshot `json:"destinations"`
	Services      []ComponentSnapshot `json:"services,omitempty"`
	Spool         SpoolSnapshot       `json:"spool"`
	// StorageDevice is the card under the spool (omitted when the daemon
	// does not watch it, as in tests and the fleet simulator).
	StorageDevice *StorageDevice `json:"storage_device,omitempty"`
	Stalled       []string       `json:"stalled,omitempty"`
	// Alarms are the ones active now, oldest first (see Registry.RaiseAlarm).
	Alarms []Alarm `json:"alarms,omitempty"`
}

// Alarm is one active alarm: the latest detail of its kind, when it was
// first raised and how often since. Its detail follows the alarm contract:
// control IDs and GUIDs, never patient data.
type Alarm struct {
	Kind   string    `json:"kind"`
	Detail string    `json:"detail,omitempty"`
	Since  time.Time `json:"since"`
	Last   time.Time `json:"last"`
	Count  int       `json:"count"`
}

// AlarmHold is how long an alarm stays active after it was last raised when
// nothing clears it. Most alarms are events (a dead letter, a refused URL)
// with no "fixed" event to follow; an hour keeps them in view of a
// technician or a fleet table long enough to be seen, without a box showing
// last week's trouble forever.
const AlarmHold = time.Hour

// Component returns the named component of a kind, if present.
func (s *Snapshot) Component(kind Kind, name string) (ComponentSnapshot, bool) {
	var list []ComponentSnapshot
	switch kind {
	case Source:
		list = s.Sources
	case Destination:
		list = s.Destinations
	default:
		list = s.Services
	}
	for _, c := range list {
		if c.Name == name {
			return c, true
		}
	}
	return ComponentSnapshot{}, false
}

// Registry holds every component of one box.
type Registry struct {
	device, version string
	labels          map[string]string
	now             func() time.Time
	start           time.Time

	mu         sync.Mutex
	components []*Component
	spool      func() SpoolSnapshot
	storage    func() StorageDevice
	clock      func() bool
	loops      map[string]*Loop
	subs       []chan struct{}
	alarms     *Alarms
}

// NewRegistry makes an empty registry. now may be nil (time.Now).
func NewRegistry(device, version string, now func() time.Time) *Registry {
	if now == nil {
		now = time.Now
	}
	return &Registry{device: device, version: version, now: now, start: now(), loops: map[string]*Loop{}, alarms: NewAlarms()}
}

// SetLabels sets the box's labels (device.labels), copied into every
// snapshot so that fleet tools can select the box by them.
func (r *Registry) SetLabels(labels map[string]string) {
	r.mu.Lock()
	r.labels = maps.Clone(labels)
	r.mu.Unlock()
}

// UseAlarms makes the registry keep its alarms in a, which outlives it: the
// process keeps one Alarms and every registry it builds (one per pipeline
// start) uses it, so a restart loses no active alarm. Call it before the
// registry is used.
func (r *Registry) UseAlarms(a *Alarms) {
	r.mu.Lock()
	r.alarms = a
	r.mu.Unlock()
}

func (r *Registry) book() *Alarms {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.alarms
}

// Component registers (or returns the already registered) component.
func (r *Registry) Component(kind Kind, name, typ string) *Component {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, c := range r.components {
		if c.kind == kind && c.name == name {
			return c
		}
	}
	c := &Component{reg: r, kind: kind, name: name, typ: typ, state: Starting, since: r.now(), counters: map[string]uint64{}}
	r.components = append(r.components, c)
	return c
}

// SetSpoolProbe sets the function that reports spool figures in snapshots.
// It is called outside the registry lock and must be cheap.
func (r *Registry) SetSpoolProbe(f func() SpoolSnapshot) {
	r.mu.Lock()
	r.spool = f
	r.mu.Unlock()
}

// SetClockProbe sets the function that says whether the clock is synchronised.
func (r *Registry) SetClockProbe(f func() bool) {
	r.mu.Lock()
	r.clock = f
	r.mu.Unlock()
}

// Subscribe returns a channel that receives a (coalesced) signal whenever a
// component changes state. Call the returned func to unsubscribe.
func (r *Registry) Subscribe() (<-chan struct{}, func()) {
	ch := make(chan struct{}, 1)
	r.mu.Lock()
	r.subs = append(r.subs, ch)
	r.mu.Unlock()
	return ch, func() {
		r.mu.Lock()
		defer r.mu.Unlock()
		r.subs = slices.DeleteFunc(r.subs, func(c chan struct{}) bool { return c == ch })
	}
}

// Notify signals subscribers that something worth publishing changed.
func (r *Registry) notify() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, ch := range r.subs {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

// Notify signals subscribers that something worth publishing at once
// changed outside a component state (for example the spool became full).
func (r *Registry) Notify() { r.notify() }

// RaiseAlarm records an alarm of kind as active (again), with detail as its
// latest detail. The list holds one entry per kind, so it is bounded by the
// number of kinds the code raises.
func (r *Registry) RaiseAlarm(kind, detail string) {
	r.book().raise(kind, detail, r.now())
	r.notify()
}

// ClearAlarm ends the alarm of kind (its condition is over, e.g. the spool
// accepts messages again).
func (r *Registry) ClearAlarm(kind string) {
	if r.book().clear(kind) {
		r.notify()
	}
}

// Loop is the liveness beacon of one long-running loop. The watchdog and
// the SYS LED trust the process only while every loop beats.
type Loop struct {
	mu   sync.Mutex
	last time.Time
	now  func() time.Time
}

// Beat says the loop made progress (or is idle but responsive).
func (l *Loop) Beat() {
	l.mu.Lock()
	l.last = l.now()
	l.mu.Unlock()
}

func (l *Loop) lastBeat() time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.last
}

// Loop registers a liveness beacon; it counts as beating from now.
func (r *Registry) Loop(name string) *Loop {
	r.mu.Lock()
	defer r.mu.Unlock()
	l := &Loop{now: r.now, last: r.now()}
	r.loops[name] = l
	return l
}

// RemoveLoop forgets a loop that has ended on purpose.
func (r *Registry) RemoveLoop(name string) {
	r.mu.Lock()
	delete(r.loops, name)
	r.mu.Unlock()
}

// Stalled lists the loops that have not beaten within maxAge, sorted.
func (r *Registry) Stalled(maxAge time.Duration) []string {
	r.mu.Lock()
	loops := maps.Clone(r.loops)
	r.mu.Unlock()
	now := r.now()
	var out []string
	for name, l := range loops {
		if now.Sub(l.lastBeat()) > maxAge {
			out = append(out, name)
		}
	}
	slices.Sort(out)
	return out
}

// StallAge is how long a loop may go without beating before Snapshot lists
// it (and the watchdog stops pinging). It is longer than any single bounded
// operation a loop waits on (a delivery attempt is cut off at DeliverTimeout),
// so a slow peer is never mistaken for a hung process.
const StallAge = 2 * time.Minute

// DeliverTimeout bounds one delivery attempt, whatever the destination's own timeouts.
const DeliverTimeout = 90 * time.Second

// Snapshot assembles the whole picture.
func (r *Registry) Snapshot() Snapshot {
	r.mu.Lock()
	comps := slices.Clone(r.components)
	spool, clock, storage := r.spool, r.clock, r.storage
	now := r.now()
	book := r.alarms
	labels := maps.Clone(r.labels)
	r.mu.Unlock()
	s := Snapshot{
		Device: r.device, Version: r.version, Labels: labels, Time: now,
		UptimeSeconds: int64(now.Sub(r.start) / time.Second),
		Sources:       []ComponentSnapshot{}, Destinations: []ComponentSnapshot{},
	}
	if spool != nil {
		s.Spool = spool()
		if noneDead(s.Spool) {
			book.clear(AlarmDeadLetter)
		}
	}
	if storage != nil {
		sd := storage()
		s.StorageDevice = &sd
	}
	s.Alarms = book.active(now)
	if clock != nil {
		s.ClockSynced = clock()
	}
	for _, c := range comps {
		cs := c.snapshot()
		switch c.kind {
		case Source:
			s.Sources = append(s.Sources, cs)
		case Destination:
			if q, ok := s.Spool.Queues[c.name]; ok {
				cs.Queued, cs.QueuedAtStart, cs.Dead, cs.OldestAgeSeconds = q.Queued, q.QueuedAtStart, q.Dead, q.OldestAgeSeconds
			}
			s.Destinations = append(s.Destinations, cs)
		default:
			s.Services = append(s.Services, cs)
		}
	}
	s.Stalled = r.Stalled(StallAge)
	return s
}
