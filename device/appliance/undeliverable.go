package appliance

import (
	"fmt"
	"time"

	"github.com/hl7edge/hl7edge/device/command"
	"github.com/hl7edge/hl7edge/pipeline/hl7"
	"github.com/hl7edge/hl7edge/storage"
)

// UndeliverableInfo is one message of the undeliverable store as listed to
// an operator: identifiers and the message type routing looks at, never
// content.
type UndeliverableInfo struct {
	GUID        string    `json:"guid"`
	ControlID   string    `json:"control_id"`
	MessageType string    `json:"message_type"` // MSH-9.1^MSH-9.2
	Source      string    `json:"source"`
	Received    time.Time `json:"received"`
}

// maxUndeliverableList bounds one undeliverable-list answer.
const maxUndeliverableList = 1000

// registerUndeliverable registers undeliverable-list, undeliverable-retry
// and undeliverable-purge (privileged: it deletes data) on d.
func registerUndeliverable(d *command.Dispatcher, ops SpoolOps, with func(func(nameArgs) (any, string, error)) command.Handler) {
	d.Register(command.UndeliverableList, with(func(args nameArgs) (any, string, error) {
		limit := args.Limit
		if limit <= 0 || limit > maxUndeliverableList {
			limit = 100
		}
		list, err := ops.Undeliverable(limit)
		if err != nil {
			return nil, "", err
		}
		out := undeliverableInfos(list)
		return out, fmt.Sprintf("%d undeliverable (at most %d listed)", len(out), limit), nil
	}))
	d.Register(command.UndeliverableRetry, with(func(args nameArgs) (any, string, error) {
		r, err := ops.RetryUndeliverable(args.GUIDs...)
		return r, fmt.Sprintf("%d queued, %d taken by a rubbish bin, %d still match no destination", r.Queued, r.Discarded, r.Unmatched), err
	}))
	d.RegisterPrivileged(command.UndeliverablePurge, with(func(args nameArgs) (any, string, error) {
		n, err := ops.PurgeUndeliverable(args.GUIDs...)
		return map[string]int{"purged": n}, fmt.Sprintf("%d undeliverable deleted", n), err
	}))
}

func undeliverableInfos(list []storage.DeadLetter) []UndeliverableInfo {
	out := []UndeliverableInfo{}
	for _, u := range list {
		info := UndeliverableInfo{GUID: u.GUID, Source: u.Source, Received: u.Received}
		if m, err := hl7.Parse(u.Raw); err == nil {
			h := m.Header()
			info.ControlID, info.MessageType = h.ControlID, h.MessageType+"^"+h.TriggerEvent
		}
		out = append(out, info)
	}
	return out
}

// Undeliverable implements SpoolOps.
func (o OfflineSpool) Undeliverable(limit int) ([]storage.DeadLetter, error) {
	return o.Spool.Undeliverable(limit)
}

// RetryUndeliverable implements SpoolOps.
func (o OfflineSpool) RetryUndeliverable(guids ...string) (storage.Rerouted, error) {
	if o.Reroute == nil {
		return storage.Rerouted{}, fmt.Errorf("no match rules to route by (%s)", o.ConfigPath)
	}
	return o.Spool.RetryUndeliverable(o.Reroute, guids...)
}

// PurgeUndeliverable implements SpoolOps.
func (o OfflineSpool) PurgeUndeliverable(guids ...string) (int, error) {
	return o.Spool.PurgeUndeliverable(guids...)
}
