package mqttagent

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"runtime/debug"
	"strings"
	"unicode/utf8"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/hl7edge/hl7edge/device/command"
	"github.com/hl7edge/hl7edge/device/trust"
	"github.com/hl7edge/hl7edge/pipeline/vocab/health"
)

// cmdLogBurst is how many lines of each kind the command path logs per
// second; a flood's other lines are counted (health) and summed
// ("suppressed") on the next line written.
const cmdLogBurst = 5

// Limits on a command and its answer.
const (
	MaxCommandBytes  = 64 << 10  // a larger cmd/req payload is rejected unread
	MaxResponseBytes = 256 << 10 // a larger cmd/res answer is replaced by a failure
	maxIDBytes       = 128
)

var nameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9_.-]{0,63}$`)

// parseRequest decodes a cmd/req payload. On failure it returns a reason for
// the rejection and whatever ID could be read. A reason never quotes the
// payload: an operator's mistake must not copy data into cmd/res or logs.
func parseRequest(payload []byte) (command.Request, string) {
	if len(payload) > MaxCommandBytes {
		return command.Request{}, fmt.Sprintf("command is %d bytes; the limit is %d; send smaller arguments", len(payload), MaxCommandBytes)
	}
	var req command.Request
	if err := json.Unmarshal(payload, &req); err != nil {
		req = command.Request{ID: lenientID(payload)}
		var se *json.SyntaxError
		if errors.As(err, &se) {
			return req, fmt.Sprintf("command is not valid JSON (error at byte %d); send {\"id\":\"…\",\"name\":\"…\",\"args\":{…},\"expires\":\"RFC3339\"}", se.Offset)
		}
		return req, "command fields have the wrong types; send {\"id\":string,\"name\":string,\"args\":object,\"expires\":RFC3339 time}"
	}
	if !validID(req.ID) {
		return command.Request{}, fmt.Sprintf("command id must be printable UTF-8 of at most %d bytes", maxIDBytes)
	}
	if req.Name != "" && !nameRE.MatchString(req.Name) {
		req.Name = ""
		return req, "command name must be lower-case letters, digits, '.', '_' or '-', at most 64 bytes"
	}
	if a := strings.TrimSpace(string(req.Args)); a != "" && a != "null" && a[0] != '{' {
		return req, "command args must be a JSON object"
	}
	return req, ""
}

// lenientID recovers the id of a malformed command, when it comes before
// the mistake, so the answer can still be correlated; else "".
func lenientID(payload []byte) string {
	dec := json.NewDecoder(bytes.NewReader(payload))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return ""
	}
	for dec.More() {
		key, err := dec.Token()
		if err != nil {
			return ""
		}
		if key == "id" {
			v, err := dec.Token()
			if s, ok := v.(string); err == nil && ok && validID(s) {
				return s
			}
			return ""
		}
		var skip json.RawMessage
		if dec.Decode(&skip) != nil {
			return ""
		}
	}
	return ""
}

func validID(id string) bool {
	return len(id) <= maxIDBytes && utf8.ValidString(id) && !strings.ContainsFunc(id, isControl)
}

// parseCommand decodes a plain command or opens a signed envelope; signed
// says the command came in a valid envelope.
func (a *Agent) parseCommand(payload []byte) (command.Request, bool, string) {
	if len(payload) > MaxCommandBytes || !trust.IsEnvelope(payload) {
		req, why := parseRequest(payload)
		return req, false, why
	}
	var (
		req    command.Request
		signer string
		err    error
	)
	if a.opts.Signed == nil {
		req.ID, req.Name = trust.Peek(payload)
		err = errors.New("signed command refused: this gateway has no trust.keys to check it against; add the operators' minisign public keys under trust.keys")
	} else {
		req, signer, err = a.opts.Signed(payload)
	}
	if err != nil {
		// The id and name are unverified: answer with them only when they
		// pass the checks a plain command's do.
		if !validID(req.ID) {
			req.ID = ""
		}
		if !nameRE.MatchString(req.Name) {
			req.Name = ""
		}
		return command.Request{ID: req.ID, Name: req.Name}, false, err.Error()
	}
	inner, err := json.Marshal(req)
	if err != nil {
		return command.Request{ID: req.ID}, false, "signed command does not encode again as JSON"
	}
	r, why := parseRequest(inner)
	if why == "" {
		a.cmdLog.Info("mqtt signed command verified", "id", r.ID, "name", r.Name, "key", signer)
	}
	return r, why == "", why
}

// unsignedWhy is the answer to a privileged command that came unsigned.
func (a *Agent) unsignedWhy(name string) string {
	if a.opts.Signed == nil {
		return fmt.Sprintf("%s changes where data goes, deletes data or runs code, and this gateway has no trust.keys: "+
			"over MQTT it is refused; use the local admin socket, or add the operators' minisign public keys under trust.keys and send it signed", name)
	}
	return fmt.Sprintf("%s changes where data goes, deletes data or runs code: over MQTT it is obeyed only signed, "+
		`as {"signed": base64 of the command JSON with "device", "minisig": minisign signature of exactly those bytes}; make one with hl7edge command sign`, name)
}

// onCommand runs in a paho goroutine; it must not block, so it checks the
// command, answers "accepted" and hands it to the worker, or rejects it.
func (a *Agent) onCommand(_ mqtt.Client, m mqtt.Message) {
	if !a.enterHandler() {
		return // Run has stopped: nobody would run or answer it
	}
	defer a.handlers.Done()
	payload := m.Payload()
	if len(payload) == 0 {
		return // how a retained command is cleared; nothing to answer
	}
	req, signed, why := a.open(payload, m.Retained())
	if m.Retained() {
		why = a.retainedWhy()
	}
	if why == "" && !signed && a.opts.Dispatcher.Privileged(req.Name) {
		why = a.unsignedWhy(req.Name)
	}
	if why == "" {
		why = a.opts.Dispatcher.Check(req)
	}
	if why == "" && !signed {
		if why = a.opts.Throttle.Allow(req.Name); why != "" {
			a.comp.Add(health.CounterCommandsThrottled, 1)
		}
	}
	if why != "" {
		why = a.notRun(req, signed, why)
		a.comp.Add(health.CounterCommandsRejected, 1)
		a.cmdLog.Info("mqtt command rejected", "id", req.ID, "name", req.Name, "why", why)
		a.respond(command.Response{ID: req.ID, Name: req.Name, Status: command.Rejected, Detail: why})
		return
	}
	a.cmdMu.Lock()
	defer a.cmdMu.Unlock()
	if a.cmdClosed {
		a.comp.Add(health.CounterCommandsRejected, 1)
		a.respond(command.Response{ID: req.ID, Name: req.Name, Status: command.Rejected,
			Detail: a.notRun(req, signed, "agent is stopping; send the command again after it restarts")})
		return
	}
	select {
	case a.cmdQ <- queued{req, signed}:
		a.comp.Add(health.CounterCommandsAccepted, 1)
		a.cmdLog.Info("mqtt command accepted", "id", req.ID, "name", req.Name)
		a.respond(command.Response{ID: req.ID, Name: req.Name, Status: command.Accepted})
	default:
		a.comp.Add(health.CounterCommandsRejected, 1)
		a.cmdLog.Warn("mqtt command rejected: queue full", "id", req.ID, "name", req.Name)
		a.respond(command.Response{ID: req.ID, Name: req.Name, Status: command.Rejected,
			Detail: a.notRun(req, signed, a.busyWhy())})
	}
}

// open parses a command. A signed one is opened, and its id recorded, only
// when it could be queued now: a retained copy or one that finds the queue
// full is refused unopened, so that copies of an envelope sent again and
// again cost the card no writes (recording an id and giving it back).
func (a *Agent) open(payload []byte, retained bool) (command.Request, bool, string) {
	if a.opts.Signed == nil || len(payload) > MaxCommandBytes || !trust.IsEnvelope(payload) {
		return a.parseCommand(payload)
	}
	var why string
	switch {
	case retained:
		why = a.retainedWhy()
	case len(a.cmdQ) >= cap(a.cmdQ):
		why = a.busyWhy()
	default:
		return a.parseCommand(payload)
	}
	id, name := trust.Peek(payload) // unverified: only to answer, when they pass a plain command's checks
	if !validID(id) {
		id = ""
	}
	if !nameRE.MatchString(name) {
		name = ""
	}
	return command.Request{ID: id, Name: name}, false, why
}

func (a *Agent) retainedWhy() string {
	return "retained command ignored: commands must be published without the retain flag; clear it by publishing an empty retained message to " + a.topics.cmdReq
}

func (a *Agent) busyWhy() string {
	return fmt.Sprintf("busy: %d commands are waiting; send it again later", cap(a.cmdQ))
}

// queued is a command accepted for the worker.
type queued struct {
	req    command.Request
	signed bool // its id is in the replay record
}

// notRun gives back the id of a signed command that will not run, so that
// the same envelope may come again as the answer why says; it returns why,
// with what went wrong when the id stays used.
func (a *Agent) notRun(req command.Request, signed bool, why string) string {
	if !signed || a.opts.Forget == nil {
		return why
	}
	if err := a.opts.Forget(req.ID); err != nil {
		a.log.Warn("signed command not run, its id stays used", "id", req.ID, "err", err)
		return why + "; but " + err.Error()
	}
	return why
}

// enterHandler counts a command handler in, unless Run has stopped
// waiting for them.
func (a *Agent) enterHandler() bool {
	a.handlerMu.Lock()
	defer a.handlerMu.Unlock()
	if a.handlersClosed {
		return false
	}
	a.handlers.Add(1)
	return true
}

// waitHandlers lets no more command handlers in and waits for those under
// way, once the client is disconnected.
func (a *Agent) waitHandlers() {
	a.handlerMu.Lock()
	a.handlersClosed = true
	a.handlerMu.Unlock()
	a.handlers.Wait()
}

// commandWorker runs accepted commands one at a time. When ctx ends it
// answers the commands still queued, so every "accepted" gets a final answer.
func (a *Agent) commandWorker(ctx context.Context) {
	for {
		select {
		case q := <-a.cmdQ:
			a.finish(a.run(ctx, q.req))
		case <-ctx.Done():
			a.cmdMu.Lock()
			a.cmdClosed = true
			a.cmdMu.Unlock()
			for {
				select {
				case q := <-a.cmdQ:
					a.finish(command.Response{ID: q.req.ID, Name: q.req.Name, Status: command.Failed,
						Detail: a.notRun(q.req, q.signed, "agent stopped before running the command; send it again after it restarts")})
				default:
					return
				}
			}
		}
	}
}

// run dispatches one command; a panicking handler fails its command rather
// than the box.
func (a *Agent) run(ctx context.Context, req command.Request) (resp command.Response) {
	defer func() {
		if p := recover(); p != nil {
			// The stack shows where, without the values involved.
			a.log.Error("command handler panicked", "id", req.ID, "name", req.Name, "stack", string(debug.Stack()))
			resp = command.Response{ID: req.ID, Name: req.Name, Status: command.Failed, Detail: "command handler failed unexpectedly; see the device log"}
		}
	}()
	resp = a.opts.Dispatcher.Dispatch(ctx, req)
	if resp.Status == command.Rejected {
		// It was accepted, so it cannot be rejected any more (it expired while queued).
		resp.Status = command.Failed
	}
	return resp
}

// finish sends a final answer, after its "accepted" (which onCommand
// queues while holding cmdMu).
func (a *Agent) finish(resp command.Response) {
	a.cmdMu.Lock()
	defer a.cmdMu.Unlock()
	a.cmdLog.Info("mqtt command done", "id", resp.ID, "name", resp.Name, "status", resp.Status)
	a.respond(resp)
}

func (a *Agent) respond(resp command.Response) {
	b, err := json.Marshal(resp)
	if err != nil || len(b) > MaxResponseBytes {
		detail := fmt.Sprintf("result is larger than the %d-byte limit of cmd/res; ask for less (for example fewer log lines)", MaxResponseBytes)
		if err != nil {
			detail = "result does not encode as JSON; this is a bug in the command, see the device log"
			a.log.Error("command result does not encode as JSON", "id", resp.ID, "name", resp.Name, "err", err)
		}
		b, _ = json.Marshal(command.Response{ID: resp.ID, Name: resp.Name, Status: command.Failed, Detail: detail})
	}
	a.out.put(outMsg{topic: a.topics.cmdRes, payload: b, kind: kindResponse})
}
