// Package refserver is a reference web service for the Postmaster
// ping/post and ping/mailbox protocol (docs/protocol.md). It is the peer of the
// gateway's tests and of `hl7edge webservice`, and it is written to be read:
// a customer building their own receiver can follow ServeHTTP from top to
// bottom.
//
// Both directions share one URL; the root element of the request says what
// is asked:
//
//	<PING ...>                      ping (a destination's or a data source's)
//	<HL7 ...><MESSAGE>…</MESSAGE>   post: store the message once per GUID, answer <ACK>
//	<HL7MAILBOX ...>                list the waiting messages, oldest first
//	<HL7 ID="…" ...> (no MESSAGE)   get one waiting message
//	<HL7ACK ID="…" ...>             the gateway stored it: remove it, answer an empty EXCEPTION
//
// Posted messages are written to StoreDir as <GUID>.hl7, atomically and
// with fsync, before the ACK; a GUID seen before is acknowledged again and
// not stored twice. received.log in StoreDir gets one line per post.
package refserver

import (
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/hl7edge/hl7edge/pipeline/webservice/wire"
)

// Config of a reference server.
type Config struct {
	StoreDir   string // posted messages land here as <GUID>.hl7, with received.log
	MailboxDir string // files waiting for a data source (each file one message, its name the ID); "" disables the mailbox
	Logon      string // the logon id clients must send; "" accepts any logon and password
	Password   string
	// PublicURL is the base URL handed out in ping replies (with an Action
	// query added). Empty: the URL the request came in on.
	PublicURL string
	// Reping asks destinations to ping before every post (REPING="True");
	// a load balancer that hands out a different post URL each time would.
	Reping       bool
	Faults       Faults
	Log          *slog.Logger // nil: discard
	MaxBodyBytes int64        // a larger request gets HTTP 413; default 32 MiB
}

// Faults make the server misbehave on purpose so that clients can be tested
// against failures. "Every Nth" counts only the requests of that kind, from
// the start; 0 disables a fault.
type Faults struct {
	Delay                   time.Duration // wait this long before every reply
	ExceptionEvery          int           // answer every Nth request with an EXCEPTION
	Status500Every          int           // answer every Nth request with HTTP 500
	WrongAckEvery           int           // store every Nth post but ACK it with another GUID
	DropAckEvery            int           // process every Nth data-source ack but lose its reply (alternately HTTP 500 and a closed connection)
	LoseAckEvery            int           // do not process every Nth data-source ack and answer HTTP 500: the message is offered again
	ExceptionOnGetEvery     int           // answer every Nth get with an EXCEPTION
	Status500OnMailboxEvery int           // answer every Nth mailbox request with HTTP 500
}

// Stats counts what the server has seen.
type Stats struct {
	Requests, Pings, Posts, Stored, Duplicates uint64
	Mailboxes, Gets, Acks, Exceptions, Faults  uint64
}

// ErrorCode and text of the EXCEPTION for bad credentials, as the
// Postmaster sends it.
const (
	CodeInvalidLogon = "3267"
	textInvalidLogon = "Invalid logon id"
)

// Server is an http.Handler. Close it to close received.log.
type Server struct {
	cfg Config
	log *slog.Logger

	mu     sync.Mutex // guards faults, counts and stats
	faults Faults
	counts map[string]int // per kind of request, for the "every Nth" faults
	stats  Stats

	// storeMu makes dedupe and received.log agree. It is not held while a
	// message is written and fsynced, so posts of different GUIDs store in
	// parallel, as a real service would; a post of a GUID being stored
	// waits for that store (storeDone) and is then a duplicate.
	storeMu   sync.Mutex
	storeDone *sync.Cond
	storing   map[string]bool
	received  *os.File
	dropped   int // replies lost by DropAckEvery, to alternate 500 and close
}

// New checks the directories and opens received.log.
func New(cfg Config) (*Server, error) {
	if cfg.StoreDir == "" {
		return nil, errors.New("refserver: StoreDir is empty: name the directory posted messages are written to")
	}
	if err := os.MkdirAll(cfg.StoreDir, 0o750); err != nil {
		return nil, fmt.Errorf("refserver: store directory: %w", err)
	}
	if cfg.MailboxDir != "" {
		if err := os.MkdirAll(cfg.MailboxDir, 0o750); err != nil {
			return nil, fmt.Errorf("refserver: mailbox directory: %w", err)
		}
	}
	if cfg.PublicURL != "" {
		if u, err := url.Parse(cfg.PublicURL); err != nil || !u.IsAbs() {
			return nil, fmt.Errorf("refserver: PublicURL %q: want an absolute URL such as https://host:8443/hl7", cfg.PublicURL)
		}
	}
	if cfg.MaxBodyBytes <= 0 {
		cfg.MaxBodyBytes = 32 << 20
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	f, err := os.OpenFile(filepath.Join(cfg.StoreDir, ReceivedLog), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
	if err != nil {
		return nil, fmt.Errorf("refserver: %w", err)
	}
	s := &Server{cfg: cfg, log: cfg.Log, faults: cfg.Faults, counts: map[string]int{}, received: f, storing: map[string]bool{}}
	s.storeDone = sync.NewCond(&s.storeMu)
	return s, nil
}

// Close closes received.log. In-flight requests should be drained first
// (http.Server.Shutdown).
func (s *Server) Close() error { return s.received.Close() }

// SetFaults replaces the faults at run time.
func (s *Server) SetFaults(f Faults) {
	s.mu.Lock()
	s.faults = f
	s.mu.Unlock()
}

// Faults returns the current faults.
func (s *Server) Faults() Faults {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.faults
}

// Stats returns the counters.
func (s *Server) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stats
}

// next counts one request of a kind and says whether the fault "every
// Nth" of that kind fires on it.
func (s *Server) next(kind string, every func(Faults) int) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.counts[kind]++
	n := every(s.faults)
	if n > 0 && s.counts[kind]%n == 0 {
		s.stats.Faults++
		return true
	}
	return false
}

func (s *Server) stat(f func(*Stats)) {
	s.mu.Lock()
	f(&s.stats)
	s.mu.Unlock()
}

// ServeHTTP answers one protocol request.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		http.Error(w, "this web service takes one XML element per POST", http.StatusMethodNotAllowed)
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.cfg.MaxBodyBytes))
	if err != nil {
		http.Error(w, fmt.Sprintf("request body over %d bytes or unreadable", s.cfg.MaxBodyBytes), http.StatusRequestEntityTooLarge)
		return
	}
	s.stat(func(st *Stats) { st.Requests++ })

	// Faults that hit any request.
	if d := s.Faults().Delay; d > 0 {
		select {
		case <-time.After(d):
		case <-r.Context().Done():
			// Abort rather than return: a plain return would answer
			// 200 with an empty body, which a client must never be able
			// to mistake for a reply.
			panic(http.ErrAbortHandler)
		}
	}
	// Both counters advance on every request, so each fault keeps its own
	// rhythm; when both fire, the 500 wins.
	fail500 := s.next("request-500", func(f Faults) int { return f.Status500Every })
	failException := s.next("request-exception", func(f Faults) int { return f.ExceptionEvery })
	if fail500 {
		http.Error(w, "injected fault", http.StatusInternalServerError)
		return
	}
	if failException {
		s.exception(w, "Request", "9999", "Injected fault: try again later", "")
		return
	}

	req, err := wire.Parse(body)
	if err != nil {
		http.Error(w, "the request is not one XML element", http.StatusBadRequest)
		return
	}
	switch {
	case req.Name == "PING":
		s.ping(w, r, req)
	case req.Name == "HL7" && req.Child("MESSAGE") != nil:
		s.post(w, req)
	case req.Name == "HL7":
		s.get(w, req)
	case req.Name == "HL7MAILBOX":
		s.mailbox(w, req)
	case req.Name == "HL7ACK":
		s.ack(w, req)
	default:
		s.exception(w, "Request", "2", "Unknown request <"+wire.Clean(req.Name, 40)+">", "")
	}
}

// ping hands out the URLs of the session. A data-source ping carries
// FREQUENCY and no password; a destination's carries the password.
func (s *Server) ping(w http.ResponseWriter, r *http.Request, req *wire.Element) {
	s.stat(func(st *Stats) { st.Pings++ })
	var p wire.Ping
	_ = req.Into(&p)
	_, hasFrequency := req.Attr("FREQUENCY")
	_, hasPassword := req.Attr("PASSWORD")
	source := hasFrequency || !hasPassword
	if !s.logonOK(p.LogonID, p.Password, !source) {
		s.log.Warn("ping refused: invalid logon", "logon", wire.Clean(p.LogonID, 64), "computer", wire.Clean(p.ComputerName, 64))
		s.exception(w, "PingAcknowledgement", CodeInvalidLogon, textInvalidLogon, "StreamRequest")
		return
	}
	s.log.Info("ping", "logon", wire.Clean(p.LogonID, 64), "computer", wire.Clean(p.ComputerName, 64), "pmversion", wire.Clean(p.PMVersion, 32), "data_source", source)
	if source {
		if s.cfg.MailboxDir == "" {
			s.exception(w, "PingAcknowledgement", "3", "This server has no mailbox", "")
			return
		}
		s.reply(w, &wire.PingReply{
			MailboxURL: s.actionURL(r, "HL7Mailbox"),
			HL7GetURL:  s.actionURL(r, "GetHL7"),
			HL7AckURL:  s.actionURL(r, "HL7Ack"),
			Logon:      p.LogonID,
		})
		return
	}
	s.reply(w, &wire.PingReply{HL7PostURL: s.actionURL(r, "PostHL7"), LogonID: p.LogonID, Reping: wire.FormatBool(s.cfg.Reping)})
}

// post stores a message once per GUID and acknowledges it.
func (s *Server) post(w http.ResponseWriter, req *wire.Element) {
	s.stat(func(st *Stats) { st.Posts++ })
	var h wire.HL7
	_ = req.Into(&h)
	if !s.logonOK(h.LogonID, h.Password, true) {
		s.exception(w, "PostHL7", CodeInvalidLogon, textInvalidLogon, "")
		return
	}
	if !validID(h.ID) {
		s.exception(w, "PostHL7", "4", "ID must be 1 to 128 letters, digits, '.', '_' or '-'", "")
		return
	}
	if h.Message.ID != "" && h.Message.ID != h.ID {
		s.exception(w, "PostHL7", "5", "MESSAGE ID differs from HL7 ID", "")
		return
	}
	raw, err := wire.DecodeMessage(h.Message.Data)
	if err != nil || len(raw) == 0 {
		s.exception(w, "PostHL7", "6", "MESSAGE is empty or not Base64", "")
		return
	}
	controlID := wire.ReadMSH(raw).ControlID
	dup, err := s.store(h.ID, controlID, raw)
	if err != nil {
		s.log.Error("cannot store a posted message", "guid", h.ID, "control_id", controlID, "err", err)
		// A storage failure is the server's problem: a 500 makes the
		// client retry the same GUID later.
		http.Error(w, "cannot store the message", http.StatusInternalServerError)
		return
	}
	ackID := h.ID
	if s.next("post-wrong-ack", func(f Faults) int { return f.WrongAckEvery }) {
		ackID = uuid.NewString()
	}
	s.reply(w, &wire.Ack{MessageID: ackID})
	s.log.Debug("post", "guid", h.ID, "control_id", controlID, "duplicate", dup)
}

// store writes <GUID>.hl7 unless it exists, and appends to received.log
// once the file is safe, so the log's order is the order posts were stored.
func (s *Server) store(guid, controlID string, raw []byte) (duplicate bool, err error) {
	path := filepath.Join(s.cfg.StoreDir, guid+".hl7")
	s.storeMu.Lock()
	for s.storing[guid] {
		s.storeDone.Wait()
	}
	if _, err := os.Stat(path); err == nil {
		duplicate = true
	} else {
		s.storing[guid] = true
		s.storeMu.Unlock()
		err := writeAtomic(path, raw)
		s.storeMu.Lock()
		delete(s.storing, guid)
		s.storeDone.Broadcast()
		if err != nil {
			s.storeMu.Unlock()
			return false, err
		}
	}
	defer s.storeMu.Unlock()
	line := formatReceived(Received{Time: time.Now(), GUID: guid, ControlID: controlID, Duplicate: duplicate})
	if _, err := s.received.WriteString(line); err != nil {
		return duplicate, fmt.Errorf("%s: %w", ReceivedLog, err)
	}
	s.stat(func(st *Stats) {
		if duplicate {
			st.Duplicates++
		} else {
			st.Stored++
		}
	})
	return duplicate, nil
}

// writeAtomic puts data at path so that a crash leaves either nothing or
// the whole file: temporary file, fsync, rename, fsync of the directory.
func writeAtomic(path string, data []byte) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, ".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp) // a no-op after the rename
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// mailbox lists waiting messages, oldest (first by name) first.
func (s *Server) mailbox(w http.ResponseWriter, req *wire.Element) {
	s.stat(func(st *Stats) { st.Mailboxes++ })
	var m wire.Mailbox
	_ = req.Into(&m)
	if !s.logonOK(m.LogonID, m.Password, true) {
		s.exception(w, "HL7Mailbox", CodeInvalidLogon, textInvalidLogon, "")
		return
	}
	if s.next("mailbox-500", func(f Faults) int { return f.Status500OnMailboxEvery }) {
		http.Error(w, "injected fault", http.StatusInternalServerError)
		return
	}
	ids, err := s.waiting()
	if err != nil {
		s.log.Error("cannot list the mailbox", "err", err)
		http.Error(w, "cannot list the mailbox", http.StatusInternalServerError)
		return
	}
	reply := &wire.MailboxReply{Count: strconv.Itoa(len(ids))}
	for _, id := range ids {
		reply.Items = append(reply.Items, wire.MailboxItem{ID: id})
	}
	s.reply(w, reply)
}

// maxListed caps one mailbox reply; the rest is listed at the next poll.
const maxListed = 1000

func (s *Server) waiting() ([]string, error) {
	if s.cfg.MailboxDir == "" {
		return nil, nil
	}
	entries, err := os.ReadDir(s.cfg.MailboxDir) // sorted by name
	if err != nil {
		return nil, err
	}
	var ids []string
	for _, e := range entries {
		// Hidden and .tmp files are being written: drop a file into the
		// mailbox atomically by writing it under such a name and renaming.
		if !e.Type().IsRegular() || !validID(e.Name()) || strings.HasSuffix(e.Name(), ".tmp") {
			continue
		}
		ids = append(ids, e.Name())
		if len(ids) == maxListed {
			break
		}
	}
	return ids, nil
}

// get returns one waiting message.
func (s *Server) get(w http.ResponseWriter, req *wire.Element) {
	s.stat(func(st *Stats) { st.Gets++ })
	var g wire.Get
	_ = req.Into(&g)
	if !s.logonOK(g.LogonID, g.Password, true) {
		s.exception(w, "GetHL7", CodeInvalidLogon, textInvalidLogon, "")
		return
	}
	if s.next("get-exception", func(f Faults) int { return f.ExceptionOnGetEvery }) {
		s.exception(w, "GetHL7", "9998", "Injected fault on get", "")
		return
	}
	if s.cfg.MailboxDir == "" || !validID(g.ID) {
		s.exception(w, "GetHL7", "7", "No such message", "")
		return
	}
	raw, err := os.ReadFile(filepath.Join(s.cfg.MailboxDir, g.ID))
	if errors.Is(err, os.ErrNotExist) {
		s.exception(w, "GetHL7", "7", "No such message", "")
		return
	}
	if err != nil {
		s.log.Error("cannot read a mailbox message", "id", g.ID, "err", err)
		http.Error(w, "cannot read the message", http.StatusInternalServerError)
		return
	}
	s.reply(w, &wire.HL7{ID: g.ID, MSH: wire.ReadMSH(raw), Message: wire.Message{ID: g.ID, Data: wire.EncodeMessage(raw)}})
}

// ack removes a message the gateway has stored. Acknowledging an unknown ID
// is not an error: it was acknowledged before and the reply was lost.
func (s *Server) ack(w http.ResponseWriter, req *wire.Element) {
	s.stat(func(st *Stats) { st.Acks++ })
	var a wire.HL7Ack
	_ = req.Into(&a)
	if !s.logonOK(a.LogonID, a.Password, true) {
		s.exception(w, "HL7Ack", CodeInvalidLogon, textInvalidLogon, "")
		return
	}
	if !validID(a.ID) {
		s.exception(w, "HL7Ack", "7", "No such message", "")
		return
	}
	if s.next("ack-lose", func(f Faults) int { return f.LoseAckEvery }) {
		http.Error(w, "injected fault: ack not processed", http.StatusInternalServerError)
		return
	}
	if s.cfg.MailboxDir != "" {
		if err := os.Remove(filepath.Join(s.cfg.MailboxDir, a.ID)); err != nil && !errors.Is(err, os.ErrNotExist) {
			s.log.Error("cannot remove an acknowledged message", "id", a.ID, "err", err)
			http.Error(w, "cannot remove the message", http.StatusInternalServerError)
			return
		}
	}
	s.log.Debug("ack", "id", a.ID)
	if s.next("ack-drop", func(f Faults) int { return f.DropAckEvery }) {
		s.dropReply(w)
		return
	}
	s.exception(w, "", "", "", "") // the empty EXCEPTION means OK
}

// dropReply loses a reply: every other time a 500, else the connection is
// closed without an answer.
func (s *Server) dropReply(w http.ResponseWriter) {
	s.mu.Lock()
	s.dropped++
	closeConn := s.dropped%2 == 0
	s.mu.Unlock()
	if hj, ok := w.(http.Hijacker); ok && closeConn {
		if conn, _, err := hj.Hijack(); err == nil {
			conn.Close()
			return
		}
	}
	http.Error(w, "injected fault: ack reply lost", http.StatusInternalServerError)
}

// logonOK checks credentials in constant time. With no Logon configured
// everything is accepted.
func (s *Server) logonOK(logon, password string, checkPassword bool) bool {
	if s.cfg.Logon == "" {
		return true
	}
	ok := subtle.ConstantTimeCompare([]byte(logon), []byte(s.cfg.Logon)) == 1
	if checkPassword {
		ok = subtle.ConstantTimeCompare([]byte(password), []byte(s.cfg.Password)) == 1 && ok
	}
	return ok
}

// actionURL is the base URL with Action=name in its query.
func (s *Server) actionURL(r *http.Request, action string) string {
	var u *url.URL
	if s.cfg.PublicURL != "" {
		u, _ = url.Parse(s.cfg.PublicURL) // New checked it
	} else {
		u = &url.URL{Scheme: "http", Host: r.Host, Path: r.URL.Path}
		if r.TLS != nil {
			u.Scheme = "https"
		}
	}
	q := u.Query()
	q.Set("Action", action)
	u.RawQuery = q.Encode()
	return u.String()
}

func (s *Server) exception(w http.ResponseWriter, method, code, message, additional string) {
	if code != "" {
		s.stat(func(st *Stats) { st.Exceptions++ })
	}
	s.reply(w, &wire.Exception{Method: method, ErrorCode: code, ErrorMessage: message, Additional: additional})
}

func (s *Server) reply(w http.ResponseWriter, v any) {
	body, err := wire.Encode(v)
	if err != nil {
		http.Error(w, "cannot encode the reply", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", wire.ContentType)
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	_, _ = w.Write(body)
}

// validID keeps IDs safe to use as file names.
func validID(id string) bool {
	if id == "" || len(id) > 128 || id[0] == '.' {
		return false
	}
	for _, c := range id {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '.', c == '_', c == '-':
		default:
			return false
		}
	}
	return true
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}
