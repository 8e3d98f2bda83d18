package trust

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/hl7edge/hl7edge/device/atomicfile"
	"github.com/hl7edge/hl7edge/device/command"
	"github.com/hl7edge/hl7edge/device/strictjson"
	"github.com/hl7edge/hl7edge/storage/syncgate"
)

// Envelope is how a signed command travels on cmd/req: the inner command's
// exact bytes in base64 and the minisign signature of those bytes.
type Envelope struct {
	Signed  string `json:"signed"`
	Minisig string `json:"minisig"`
}

// Inner is the signed command: the usual request plus the device it is for,
// so a command signed for one gateway cannot be replayed on another.
type Inner struct {
	command.Request
	Device string `json:"device"`
}

// Limits on signed commands.
const (
	// MaxValidity bounds how far ahead a signed command may expire: the
	// replay record must hold every id until its expiry. It is the limit
	// of every command (command.MaxExpiry), signed or not.
	MaxValidity = command.MaxExpiry
	// MaxUsed bounds the replay record.
	MaxUsed = 4096
)

// IsEnvelope says whether a cmd/req payload is a signed envelope (a JSON
// object with a "signed" member) rather than a plain command.
func IsEnvelope(payload []byte) bool {
	var probe struct {
		Signed *json.RawMessage `json:"signed"`
	}
	return json.Unmarshal(payload, &probe) == nil && probe.Signed != nil
}

// Peek reads the id and name of an envelope's command without checking its
// signature, to correlate a refusal; never act on them.
func Peek(payload []byte) (id, name string) {
	var env Envelope
	if json.Unmarshal(payload, &env) != nil {
		return "", ""
	}
	inner, err := base64.StdEncoding.DecodeString(env.Signed)
	if err != nil {
		return "", ""
	}
	var in Inner
	_ = json.Unmarshal(inner, &in)
	return in.ID, in.Name
}

// Gate opens signed envelopes for one gateway.
type Gate struct {
	keys   *Keys
	device string
	used   *Used
	now    func() time.Time
}

// NewGate makes a gate for device that trusts keys and remembers used
// command ids in usedFile, whose syncs go through syncs, the disk sync
// gates of the spool beside it (nil: the file's own syncs). now may be nil
// (time.Now).
func NewGate(keys *Keys, device, usedFile string, syncs *syncgate.Gates, now func() time.Time) *Gate {
	if now == nil {
		now = time.Now
	}
	u := openUsed(usedFile)
	u.syncs = syncs
	return &Gate{keys: keys, device: device, used: u, now: now}
}

// Open checks an envelope and returns the command inside, with the signer's
// key ID. On failure the returned request still carries the id and name when
// they could be read, so the rejection can be correlated; the error says why
// in words an operator can act on.
func (g *Gate) Open(payload []byte) (command.Request, string, error) {
	var env Envelope
	if err := strictjson.Unmarshal(payload, &env); err != nil {
		return command.Request{}, "", fmt.Errorf(`signed command is not {"signed":"<base64 of the command>","minisig":"<minisign signature>"}: %w`, err)
	}
	inner, err := base64.StdEncoding.DecodeString(env.Signed)
	if err != nil {
		return command.Request{}, "", errors.New(`signed command: "signed" is not standard base64`)
	}
	var in Inner
	parseErr := strictjson.Unmarshal(inner, &in)
	if parseErr != nil {
		in = Inner{} // what a lenient decode read is not what was signed
		_ = json.Unmarshal(inner, &in)
	}
	req := command.Request{ID: in.ID, Name: in.Name}
	keyID, _, err := g.keys.Verify(inner, env.Minisig)
	if err != nil {
		return req, keyID, fmt.Errorf("signed command refused: %w", err)
	}
	if parseErr != nil {
		return req, keyID, fmt.Errorf(`signed command: the signed bytes are not {"id","name","args","expires","device"}: %w`, parseErr)
	}
	if in.Device != g.device {
		return req, keyID, fmt.Errorf("signed command is for device %q, this is %q; sign one for this gateway", in.Device, g.device)
	}
	if in.ID == "" {
		return req, keyID, errors.New("signed command has no id")
	}
	now := g.now()
	if in.Expires == nil {
		return req, keyID, errors.New(`signed command has no "expires"; a signed command must expire (at most 24h ahead) so its id can be remembered until then`)
	}
	if !now.Before(*in.Expires) {
		return req, keyID, fmt.Errorf("signed command expired at %s; sign it again with a later expiry", in.Expires.UTC().Format(time.RFC3339))
	}
	if in.Expires.Sub(now) > MaxValidity {
		return req, keyID, fmt.Errorf("signed command expires %s, more than %s ahead; sign it with a nearer expiry", in.Expires.UTC().Format(time.RFC3339), MaxValidity)
	}
	if err := g.used.claim(in.ID, *in.Expires, now); err != nil {
		return req, keyID, err
	}
	return in.Request, keyID, nil
}

// Forget takes back the id Open recorded for a command that was then not
// run (refused after all, no room in the queue, the agent stopping), so
// the same envelope may be sent again as its answer says. Call it only for
// a command that certainly did not run: its envelope can run once more.
// When the record cannot be written the id stays used, and the error says
// so: a resend is then refused, never obeyed twice.
func (g *Gate) Forget(id string) error { return g.used.forget(id) }

// ErrReplay is a signed command id seen before.
var ErrReplay = errors.New("signed command id already used")

// Used remembers the ids of signed commands until they expire, on disk, so
// a restart does not open a window for replaying one.
//
// Ids are forgotten by the gateway's clock, which a spoofed NTP server can
// run ahead: ids then go early and, once the clock is corrected, their
// commands would run again until their real expiry. So the record keeps
// the latest expiry it ever forgot (Forgot) and refuses every command that
// expires at or before it: a forgotten id can never come back, whatever the
// clock does. In normal running Forgot is in the past and refuses nothing.
type Used struct {
	path  string
	syncs *syncgate.Gates
	mu    sync.Mutex
	rec   usedRecord
	err   error // the record could not be read: refuse rather than forget
}

// usedRecord is the file's content.
type usedRecord struct {
	IDs    map[string]time.Time `json:"ids"`
	Forgot time.Time            `json:"forgot_expiries_until,omitzero"`
}

func openUsed(path string) *Used {
	u := &Used{path: path, rec: usedRecord{IDs: map[string]time.Time{}}}
	b, err := os.ReadFile(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		u.err = fmt.Errorf("replay record %s unreadable: %w; signed commands are refused until it is fixed or removed", path, err)
	default:
		if err := u.rec.decode(b); err != nil {
			u.err = fmt.Errorf("replay record %s is not JSON: %w; signed commands are refused until it is removed", path, err)
		}
	}
	return u
}

// decode reads the record, or the plain id-to-expiry map of earlier
// versions.
func (r *usedRecord) decode(b []byte) error {
	var probe map[string]json.RawMessage
	if err := json.Unmarshal(b, &probe); err != nil {
		return err
	}
	if ids, ok := probe["ids"]; ok && len(ids) > 0 && ids[0] == '{' {
		return json.Unmarshal(b, r)
	}
	return json.Unmarshal(b, &r.IDs)
}

func (u *Used) claim(id string, until, now time.Time) error {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.err != nil {
		return u.err
	}
	if !until.After(u.rec.Forgot) {
		return fmt.Errorf("signed command expires %s, no later than ids the replay record has forgotten (until %s, after the clock ran ahead); sign it again with a later expiry",
			until.UTC().Format(time.RFC3339), u.rec.Forgot.UTC().Format(time.RFC3339))
	}
	for k, exp := range u.rec.IDs {
		if !now.Before(exp) {
			delete(u.rec.IDs, k)
			if exp.After(u.rec.Forgot) {
				u.rec.Forgot = exp
			}
		}
	}
	if _, seen := u.rec.IDs[id]; seen {
		return fmt.Errorf("%w: %q was obeyed before; sign a new command with a new id", ErrReplay, id)
	}
	if len(u.rec.IDs) >= MaxUsed {
		return fmt.Errorf("%d signed commands are still unexpired; send later or with nearer expiries", MaxUsed)
	}
	u.rec.IDs[id] = until
	b, err := json.Marshal(u.rec)
	if err == nil {
		err = atomicfile.Write(u.syncs, u.path, append(b, '\n'), 0o640)
	}
	if errors.Is(err, syncgate.ErrFailedSince) {
		// The record on the card may not hold the id: the command must not
		// run. Its id is not used, so the same envelope may come again.
		delete(u.rec.IDs, id)
		return fmt.Errorf("signed command refused, nothing ran: cannot record its id against replay: %w; send the same command again, and if this repeats check the storage health (docs/power-loss.md)", err)
	}
	if err != nil {
		delete(u.rec.IDs, id)
		return fmt.Errorf("signed command refused: cannot record its id against replay: %w", err)
	}
	return nil
}

func (u *Used) forget(id string) error {
	u.mu.Lock()
	defer u.mu.Unlock()
	until, ok := u.rec.IDs[id]
	if !ok || u.err != nil {
		return nil
	}
	delete(u.rec.IDs, id)
	b, err := json.Marshal(u.rec)
	if err == nil {
		err = atomicfile.Write(u.syncs, u.path, append(b, '\n'), 0o640)
	}
	if err != nil {
		// The file may still hold it: keep it used here as well, so that
		// a resend is refused now as it would be after a restart.
		u.rec.IDs[id] = until
		return fmt.Errorf("replay record: the id %q of a command that did not run stays used: %w; sign the command again with a new id", id, err)
	}
	return nil
}

// Seal makes the envelope of a command signed with sign (which returns the
// text of a minisign signature of its argument).
func Seal(in Inner, sign func([]byte) ([]byte, error)) ([]byte, error) {
	inner, err := json.Marshal(in)
	if err != nil {
		return nil, err
	}
	sig, err := sign(inner)
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(Envelope{Signed: base64.StdEncoding.EncodeToString(inner), Minisig: string(sig)}); err != nil {
		return nil, err
	}
	return bytes.TrimRight(buf.Bytes(), "\n"), nil
}
