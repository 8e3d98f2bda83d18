// Package command is the one set of operator commands shared by the local
// admin socket and the MQTT agent, so that both paths behave identically.
package command

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sync"
	"time"
)

// Status of a command, as answered on cmd/res and on the admin socket.
type Status string

// Command statuses (docs/mqtt-api.md, cmd/req and cmd/res).
const (
	Accepted   Status = "accepted"   // taken; the outcome follows in a second response
	Successful Status = "successful" // done
	Failed     Status = "failed"     // tried and failed; Detail says why
	Rejected   Status = "rejected"   // not tried: unknown, malformed, retained or expired
)

// Request is one command.
type Request struct {
	ID      string          `json:"id"`
	Name    string          `json:"name"`
	Args    json.RawMessage `json:"args,omitempty"`
	Expires *time.Time      `json:"expires,omitempty"`
}

// Response answers one Request.
type Response struct {
	ID     string `json:"id"`
	Name   string `json:"name,omitempty"`
	Status Status `json:"status"`
	Detail string `json:"detail,omitempty"`
	Data   any    `json:"data,omitempty"`
}

// Handler carries out one command. It returns data to include in the
// response, a short detail, or an error whose text becomes the detail of a
// failed response (so it must hold no patient data).
type Handler func(ctx context.Context, args json.RawMessage) (data any, detail string, err error)

// Dispatcher maps command names to handlers.
type Dispatcher struct {
	now      func() time.Time
	mu       sync.RWMutex
	handlers map[string]Handler
	// privileged commands change where data goes, delete data or run
	// code; remote transports obey them only signed (device/trust).
	privileged map[string]bool
}

// NewDispatcher makes an empty dispatcher; now may be nil (time.Now).
func NewDispatcher(now func() time.Time) *Dispatcher {
	if now == nil {
		now = time.Now
	}
	return &Dispatcher{now: now, handlers: map[string]Handler{}, privileged: map[string]bool{}}
}

// Register adds or replaces the handler of a command.
func (d *Dispatcher) Register(name string, h Handler) {
	d.mu.Lock()
	d.handlers[name] = h
	d.mu.Unlock()
}

// RegisterPrivileged adds or replaces the handler of a command that changes
// where data goes, deletes data or runs code. The local admin socket runs it
// like any other; a remote transport asks Privileged first.
func (d *Dispatcher) RegisterPrivileged(name string, h Handler) {
	d.mu.Lock()
	d.handlers[name] = h
	d.privileged[name] = true
	d.mu.Unlock()
}

// Privileged says whether name was registered with RegisterPrivileged.
func (d *Dispatcher) Privileged(name string) bool {
	d.mu.RLock()
	defer d.mu.RUnlock()
	return d.privileged[name]
}

// Names lists the registered commands, sorted.
func (d *Dispatcher) Names() []string {
	d.mu.RLock()
	defer d.mu.RUnlock()
	var out []string
	for n := range d.handlers {
		out = append(out, n)
	}
	slices.Sort(out)
	return out
}

// Check says why a request must not run, or "" when it may.
func (d *Dispatcher) Check(req Request) string {
	if req.ID == "" {
		return "command has no id; send {\"id\":…,\"name\":…}"
	}
	if req.Expires != nil && !d.now().Before(*req.Expires) {
		return fmt.Sprintf("command expired at %s; send it again with a later expiry", req.Expires.UTC().Format(time.RFC3339))
	}
	if req.Expires != nil && req.Expires.Sub(d.now()) > MaxExpiry {
		return fmt.Sprintf("command expires at %s, more than 24h ahead; commands are for now: send it with an expiry within 24h",
			req.Expires.UTC().Format(time.RFC3339))
	}
	d.mu.RLock()
	_, ok := d.handlers[req.Name]
	d.mu.RUnlock()
	if !ok {
		return fmt.Sprintf("unknown command %q; known: %v", req.Name, d.Names())
	}
	return ""
}

// MaxExpiry is the longest a command may stay valid: one captured on the
// broker must not be replayable for years.
const MaxExpiry = 24 * time.Hour

type idKey struct{}

// IDFrom returns the id of the command a handler is running for, so that a
// handler whose outcome is only known later (a configuration's roll-back
// check) can name it.
func IDFrom(ctx context.Context) string {
	id, _ := ctx.Value(idKey{}).(string)
	return id
}

// Dispatch checks and runs a request and returns its final response.
func (d *Dispatcher) Dispatch(ctx context.Context, req Request) Response {
	if why := d.Check(req); why != "" {
		return Response{ID: req.ID, Name: req.Name, Status: Rejected, Detail: why}
	}
	d.mu.RLock()
	h := d.handlers[req.Name]
	d.mu.RUnlock()
	data, detail, err := h(context.WithValue(ctx, idKey{}, req.ID), req.Args)
	if err != nil {
		return Response{ID: req.ID, Name: req.Name, Status: Failed, Detail: err.Error()}
	}
	return Response{ID: req.ID, Name: req.Name, Status: Successful, Detail: detail, Data: data}
}

type localKey struct{}

// WithLocal marks ctx as carrying a command from a local operator (the
// admin socket, reachable only on the box). Commands from anywhere else,
// MQTT included, are remote: the mark cannot be forged from outside the
// process, so a handler that only a local operator may run checks IsLocal.
func WithLocal(ctx context.Context) context.Context {
	return context.WithValue(ctx, localKey{}, true)
}

// IsLocal reports whether ctx was marked by WithLocal. Unmarked means remote.
func IsLocal(ctx context.Context) bool {
	l, _ := ctx.Value(localKey{}).(bool)
	return l
}
