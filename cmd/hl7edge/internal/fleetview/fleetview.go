// Package fleetview reads every gateway's retained status and latest health
// from the MQTT broker and judges them with the same rules as `hl7edge
// status`, for one table of the whole fleet, worst first.
//
// Both topics are retained (device/mqttagent), so one subscription brings
// every box the broker knows, offline ones included, without asking any of
// them. The end of the retained flood is recognised by a probe: after the
// subscriptions are acknowledged the reader publishes to a topic of its own,
// and since a broker answers one connection's packets in order, the probe
// comes back after the last retained message.
package fleetview

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"text/tabwriter"
	"time"
	"unicode"
	"unicode/utf8"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/hl7edge/hl7edge/device/frontpanel"
	"github.com/hl7edge/hl7edge/device/mqttagent"
	"github.com/hl7edge/hl7edge/device/status"
	"github.com/hl7edge/hl7edge/pipeline/vocab/health"
)

// Row is one gateway in the table.
type Row struct {
	ID      string `json:"id"`
	Online  bool   `json:"online"`
	Known   bool   `json:"status_known"` // a status message was seen
	Session uint64 `json:"session,omitempty"`
	// Since is when it came online (its birth), or for an offline box
	// when it was last heard of (its latest health).
	Since   time.Time `json:"since,omitzero"`
	Version string    `json:"version,omitempty"`
	// Labels are the box's device.labels, from its birth or its health.
	Labels     map[string]string `json:"labels,omitempty"`
	HealthTime time.Time         `json:"health_time,omitzero"`
	Queued     int64             `json:"queued"`
	Dead       int64             `json:"dead"`
	OldestAge  float64           `json:"oldest_age_seconds"`
	Fault      int               `json:"fault"`
	FaultWhat  string            `json:"fault_what,omitempty"`
	Alarms     []string          `json:"alarms,omitempty"`
	Problems   []string          `json:"problems,omitempty"`
}

// rank orders rows worst first: offline boxes (nothing is known of them
// now), then fault codes in the LEDs' priority, then other problems, then
// healthy ones.
func (r Row) rank() int {
	switch {
	case !r.Online:
		return 0
	case r.Fault != 0:
		return 1 + slices.Index(frontpanel.FaultPriority(), frontpanel.Fault(r.Fault))
	case len(r.Problems) > 0:
		return 10
	}
	return 11
}

// Sort orders rows worst first; within a rank the oldest queued message
// first, then by ID.
func Sort(rows []Row) {
	slices.SortFunc(rows, func(a, b Row) int {
		if c := cmp.Compare(a.rank(), b.rank()); c != 0 {
			return c
		}
		if c := cmp.Compare(b.OldestAge, a.OldestAge); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
}

type statusMsg struct {
	State   string            `json:"state"`
	Session uint64            `json:"session"`
	Version string            `json:"version"`
	Time    string            `json:"time"`
	Labels  map[string]string `json:"labels"`
}

// Bounds on what a status may claim (docs/mqtt-api.md, status).
const (
	// MaxSession is the highest session a status may carry. The counter
	// grows by one per pipeline start, and a start takes seconds: 2^32
	// starts is over a century of one a second. A larger number can only
	// be forged or corrupt, and would make every real will look stale.
	MaxSession = 1 << 32
	// MaxWillLag is how many sessions a Last Will may lag the birth it
	// follows and still be taken for a late one (ignored): the restarts
	// that fit in the broker's wait before it gives up on a connection
	// (1.5 keepalives, 45 s by default). A will further behind is taken.
	MaxWillLag = 64
)

// validID says whether id can be a gateway's: device.id's rule (1-63
// letters, digits, '.', '-' or '_', a letter or digit first), so that a
// topic level holding control characters, the fleet view's own probe
// topics, or an operator's user name with '@' is no row.
func validID(id string) bool {
	if len(id) == 0 || len(id) > 63 {
		return false
	}
	for i, r := range id {
		alnum := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9'
		if !alnum && (i == 0 || r != '.' && r != '-' && r != '_') {
			return false
		}
	}
	return true
}

// View collects what the broker says about each gateway. It is safe for
// concurrent use: the MQTT client feeds it, the caller reads Rows.
type View struct {
	root string

	mu     sync.Mutex
	status map[string]statusMsg
	// wills is the session of each box's latest offline taken, and births
	// its latest online: what a later status must be consistent with.
	wills   map[string]uint64
	births  map[string]statusMsg
	health  map[string]health.Snapshot
	changed chan struct{}
}

// NewView makes an empty view of the gateways under topicRoot.
func NewView(topicRoot string) *View {
	return &View{root: topicRoot, status: map[string]statusMsg{}, wills: map[string]uint64{}, births: map[string]statusMsg{},
		health: map[string]health.Snapshot{}, changed: make(chan struct{}, 1)}
}

// Changed signals (coalesced) that a message changed the view.
func (v *View) Changed() <-chan struct{} { return v.changed }

// id is the device ID of topic root/<id>/<leaf>, "" for anything else.
func (v *View) id(topic, leaf string) string {
	rest, ok := strings.CutPrefix(topic, v.root+"/")
	if !ok {
		return ""
	}
	id, l, ok := strings.Cut(rest, "/")
	if !ok || l != leaf || !validID(id) {
		return ""
	}
	return id
}

// Put records one message; an empty payload (a cleared retained message)
// forgets that part of the box.
func (v *View) Put(topic string, payload []byte) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if id := v.id(topic, "status"); id != "" {
		if !v.putStatus(id, payload) {
			return
		}
	} else if id := v.id(topic, "health"); id != "" {
		var h health.Snapshot
		if len(payload) == 0 {
			delete(v.health, id)
		} else if json.Unmarshal(payload, &h) == nil {
			v.health[id] = h
		}
	} else {
		return
	}
	select {
	case v.changed <- struct{}{}:
	default:
	}
}

// putStatus takes a status unless it contradicts what is known of the box,
// and reports whether it did. An empty payload forgets the box's status.
func (v *View) putStatus(id string, payload []byte) bool {
	if len(payload) == 0 {
		delete(v.status, id)
		delete(v.wills, id)
		delete(v.births, id)
		return true
	}
	var s statusMsg
	if json.Unmarshal(payload, &s) != nil || s.Session > MaxSession {
		return false
	}
	old, seen := v.status[id]
	switch s.State {
	case "offline":
		// A Last Will of an earlier session that the broker publishes
		// after the box is back (it noticed the old connection late) is
		// stale: the session counter says so, within MaxWillLag.
		if seen && old.State == "online" && s.Session < old.Session && old.Session-s.Session <= MaxWillLag {
			return false
		}
		v.wills[id] = s.Session
	case "online":
		// After the will of session N, only a new run (above N) or a
		// reconnect of N (a birth later than the one before) is online:
		// an earlier birth, replayed or forged, is not.
		if w, ok := v.wills[id]; ok && (s.Session < w || s.Session == w && !v.laterBirth(id, s)) {
			return false
		}
		v.births[id] = s
	default:
		return false
	}
	v.status[id] = s
	return true
}

// laterBirth says whether s, of the session of the box's last birth seen
// (if any), came online after it; both times are the box's clock.
func (v *View) laterBirth(id string, s statusMsg) bool {
	prev, ok := v.births[id]
	if !ok || prev.Session != s.Session {
		return true
	}
	at, err1 := time.Parse(time.RFC3339, s.Time)
	before, err2 := time.Parse(time.RFC3339, prev.Time)
	return err1 == nil && (err2 != nil || at.After(before))
}

// Rows is the table now, worst first.
func (v *View) Rows() []Row {
	v.mu.Lock()
	defer v.mu.Unlock()
	ids := map[string]bool{}
	for id := range v.status {
		ids[id] = true
	}
	for id := range v.health {
		ids[id] = true
	}
	rows := make([]Row, 0, len(ids))
	for id := range ids {
		st, known := v.status[id]
		h, hasHealth := v.health[id]
		r := Row{ID: id, Known: known, Online: known && st.State == "online", Session: st.Session, Version: st.Version, Labels: v.births[id].Labels}
		if r.Online {
			r.Since, _ = time.Parse(time.RFC3339, st.Time)
		}
		if hasHealth {
			r.HealthTime = h.Time
			if r.Version == "" {
				r.Version = h.Version
			}
			if r.Labels == nil {
				r.Labels = h.Labels
			}
			if !r.Online {
				r.Since = h.Time
			}
			for _, d := range h.Destinations {
				r.Queued += d.Queued
				r.Dead += d.Dead
				r.OldestAge = max(r.OldestAge, d.OldestAgeSeconds)
			}
			f := frontpanel.ExplainFault(h)
			r.Fault, r.FaultWhat = f.Code, f.What
			for _, a := range h.Alarms {
				r.Alarms = append(r.Alarms, a.Kind)
			}
			r.Problems = status.Problems(h)
		} else {
			r.Problems = []string{"no health published yet"}
		}
		rows = append(rows, r.printable())
	}
	Sort(rows)
	return rows
}

// maxField bounds each text a row prints: one line of a table, not a page.
const maxField = 200

// printable is r with every text a gateway (or anyone on the broker)
// wrote made safe to print on a terminal: control characters (C0, DEL,
// C1: ESC sequences that clear the screen, set the title or hide text,
// BEL) and format characters (bidi overrides) become '?', invalid UTF-8
// too, and each text is cut to maxField characters.
func (r Row) printable() Row {
	r.Version = clean(r.Version)
	if r.Labels != nil {
		labels := make(map[string]string, len(r.Labels))
		for k, v := range r.Labels {
			labels[clean(k)] = clean(v)
		}
		r.Labels = labels
	}
	r.FaultWhat = clean(r.FaultWhat)
	r.Alarms = cleanAll(r.Alarms)
	r.Problems = cleanAll(r.Problems)
	return r
}

func cleanAll(list []string) []string {
	out := make([]string, len(list))
	for i, s := range list {
		out[i] = clean(s)
	}
	return out
}

func clean(s string) string {
	var b strings.Builder
	n := 0
	for _, c := range s {
		if n == maxField {
			b.WriteString("…")
			break
		}
		n++
		if c == utf8.RuneError || unicode.IsControl(c) || unicode.Is(unicode.Cf, c) {
			c = '?'
		}
		b.WriteRune(c)
	}
	return b.String()
}

// Options say how to reach the broker: the daemon's mqtt section.
type Options struct {
	MQTT     mqttagent.Config
	ClientID string // default hl7edge-fleet-<random>
	// Settle bounds the wait for the retained flood when the broker does not
	// echo the probe (an ACL that forbids publishing): Read returns after
	// this long without a new message.
	Settle time.Duration
}

// Reader is a connected subscription feeding a View.
type Reader struct {
	View   *View
	client mqtt.Client
	probe  string
	done   chan struct{}
	once   sync.Once
}

// Open connects, subscribes to every gateway's status and health, and
// returns once the broker has sent everything it retains (or Settle passed
// without news, or ctx ended).
func Open(ctx context.Context, o Options) (*Reader, error) {
	c := o.MQTT
	c.SetDefaults()
	if !c.Enabled() {
		return nil, errors.New("no broker: give --broker URL (tls://host:8883)")
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	tlsCfg, password, err := c.Connection()
	if err != nil {
		return nil, err
	}
	nonce := make([]byte, 6)
	_, _ = rand.Read(nonce)
	if o.ClientID == "" {
		o.ClientID = "hl7edge-fleet-" + hex.EncodeToString(nonce)
	}
	if o.Settle <= 0 {
		o.Settle = 2 * time.Second
	}
	r := &Reader{View: NewView(c.TopicRoot), probe: c.TopicRoot + "/_fleet/" + o.ClientID + "/probe", done: make(chan struct{})}
	opts := mqtt.NewClientOptions().AddBroker(c.Broker).SetClientID(o.ClientID).
		SetProtocolVersion(4).SetCleanSession(true).SetOrderMatters(true).
		SetAutoReconnect(true).SetConnectTimeout(10 * time.Second).SetKeepAlive(c.KeepAlive.D())
	if c.Username != "" {
		opts.SetUsername(c.Username).SetPassword(password)
	}
	if tlsCfg != nil {
		opts.SetTLSConfig(tlsCfg)
	}
	opts.SetDefaultPublishHandler(func(_ mqtt.Client, m mqtt.Message) {
		if m.Topic() == r.probe {
			r.once.Do(func() { close(r.done) })
			return
		}
		r.View.Put(m.Topic(), m.Payload())
	})
	r.client = mqtt.NewClient(opts)
	if err := wait(ctx, r.client.Connect()); err != nil {
		return nil, fmt.Errorf("broker %s: %w", c.Broker, err)
	}
	// QoS 0: a read-only view needs no acknowledgements, and a broker
	// limits the QoS 1 messages it queues per client (Mosquitto's
	// max_queued_messages, 1000 by default) and drops the rest, which a
	// fleet's retained flood of two messages per gateway exceeds.
	filters := map[string]byte{c.TopicRoot + "/+/status": 0, c.TopicRoot + "/+/health": 0, r.probe: 0}
	if err := Subscribe(ctx, r.client, filters, nil); err != nil {
		r.Close()
		return nil, fmt.Errorf("broker %s: %w", c.Broker, err)
	}
	// A broker whose ACL refuses the probe may drop it silently, so the
	// quiet period ends the wait too.
	_ = wait(ctx, r.client.Publish(r.probe, 1, false, []byte("end of retained")))
	settle := time.NewTimer(o.Settle)
	defer settle.Stop()
	for {
		select {
		case <-r.done:
			return r, nil
		case <-ctx.Done():
			return r, nil
		case <-r.View.Changed():
			settle.Reset(o.Settle)
		case <-settle.C:
			return r, nil
		}
	}
}

func wait(ctx context.Context, t mqtt.Token) error {
	select {
	case <-t.Done():
		return t.Error()
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Close disconnects.
func (r *Reader) Close() { r.client.Disconnect(250) }

// Client is the reader's connection, for tools that also send commands
// over it (one connection, one client ID, one ACL entry per operator).
func (r *Reader) Client() mqtt.Client { return r.client }

// Render writes the table.
func Render(w io.Writer, rows []Row, now time.Time) {
	online, faulted := 0, 0
	for _, r := range rows {
		if r.Online {
			online++
		}
		if r.Fault != 0 {
			faulted++
		}
	}
	fmt.Fprintf(w, "%d gateways: %d online, %d offline, %d with a fault code   %s\n", len(rows), online, len(rows)-online, faulted, now.UTC().Format("2006-01-02 15:04:05 UTC"))
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tSTATE\tSINCE\tHEALTH\tVERSION\tLABELS\tQUEUED\tOLDEST\tFAULT\tALARMS\tPROBLEMS")
	for _, r := range rows {
		state := "online"
		if !r.Online {
			state = "OFFLINE"
		}
		since := "-"
		if !r.Since.IsZero() {
			since = status.Age(now.Sub(r.Since))
			if !r.Online {
				since += " (last seen)"
			}
		}
		fault := "-"
		if r.Fault != 0 {
			fault = fmt.Sprintf("%d %s", r.Fault, r.FaultWhat)
		}
		oldest := "-"
		if r.OldestAge > 0 {
			oldest = status.Age(time.Duration(r.OldestAge * float64(time.Second)))
		}
		alarms := "-"
		if len(r.Alarms) > 0 {
			alarms = strings.Join(r.Alarms, ",")
		}
		ver := r.Version
		if ver == "" {
			ver = "-"
		}
		// HEALTH is the age of the latest health: an online box whose
		// health stops coming (every health_interval, 30 s by default) is
		// connected but not reporting.
		seen := "-"
		if !r.HealthTime.IsZero() {
			seen = status.Age(now.Sub(r.HealthTime)) + " ago"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\t%s\t%s\n", r.ID, state, since, seen, ver, labelText(r.Labels), r.Queued, oldest, fault, alarms, problems(r.Problems))
	}
	_ = tw.Flush()
}

// maxProblem is how much of the first problem the table shows; `hl7edge
// status` on the box, or --json, has them all in full.
const maxProblem = 60

// problems is the PROBLEMS cell: the first of the status screen's reasons,
// cut short, and how many more there are.
func problems(list []string) string {
	if len(list) == 0 {
		return "-"
	}
	p := list[0]
	if r := []rune(p); len(r) > maxProblem {
		p = string(r[:maxProblem-1]) + "…"
	}
	if len(list) > 1 {
		p += fmt.Sprintf(" (+%d more)", len(list)-1)
	}
	return p
}
