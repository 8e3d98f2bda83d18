package mqttagent

import "sync"

// outMsg is one publication waiting for the broker.
type outMsg struct {
	topic    string
	payload  []byte
	retained bool
	kind     kind
}

type kind uint8

const (
	kindResponse kind = iota
	kindAlarm
	kindHealth
	kindState // retained, latest per topic (the firmware state)
)

// outbox holds what waits for the broker, bounded so that a long outage
// costs a fixed amount of memory: only a flag that health is due (the
// snapshot itself is taken when it is published, so it is always the
// latest), the last
// alarmCap alarms and the last respCap command responses. Everything the
// agent publishes (except its status) goes through it, so the same code
// path serves the connected and the offline case.
type outbox struct {
	alarmCap, respCap int

	mu            sync.Mutex
	healthDue     bool
	healthTopic   string
	states        map[string]outMsg // latest retained state per topic
	alarms        []outMsg
	resps         []outMsg
	droppedAlarms uint64
	droppedResps  uint64

	wake chan struct{} // capacity 1: a pending signal is never lost

	// onDrop, when set, is told of each message dropped to the bounds
	// (called with mu held: it must not call back into the outbox).
	onDrop func(kind)
}

func (o *outbox) drop(k kind) {
	if k == kindAlarm {
		o.droppedAlarms++
	} else {
		o.droppedResps++
	}
	if o.onDrop != nil {
		o.onDrop(k)
	}
}

func newOutbox(alarmCap, respCap int) *outbox {
	return &outbox{alarmCap: alarmCap, respCap: respCap, wake: make(chan struct{}, 1)}
}

func (o *outbox) signal() {
	select {
	case o.wake <- struct{}{}:
	default:
	}
}

// put queues m, dropping the oldest of its kind when full.
func (o *outbox) put(m outMsg) {
	o.mu.Lock()
	switch m.kind {
	case kindHealth:
		o.healthDue, o.healthTopic = true, m.topic
	case kindState:
		o.putState(m)
	case kindAlarm:
		if len(o.alarms) >= o.alarmCap {
			o.alarms = o.alarms[1:]
			o.drop(kindAlarm)
		}
		o.alarms = append(o.alarms, m)
	default:
		if len(o.resps) >= o.respCap {
			o.resps = o.resps[1:]
			o.drop(kindResponse)
		}
		o.resps = append(o.resps, m)
	}
	o.mu.Unlock()
	o.signal()
}

// requeue puts back a message that could not be handed to the client, ahead
// of newer ones of its kind.
func (o *outbox) requeue(m outMsg) {
	o.mu.Lock()
	defer o.mu.Unlock()
	switch m.kind {
	case kindHealth:
		o.healthDue, o.healthTopic = true, m.topic
	case kindState:
		if _, newer := o.states[m.topic]; !newer {
			o.putState(m)
		}
	case kindAlarm:
		if len(o.alarms) >= o.alarmCap {
			o.drop(kindAlarm) // it is the oldest
			return
		}
		o.alarms = append([]outMsg{m}, o.alarms...)
	default:
		if len(o.resps) >= o.respCap {
			o.drop(kindResponse)
			return
		}
		o.resps = append([]outMsg{m}, o.resps...)
	}
}

// pop takes the next message: command responses first (an operator is
// waiting), then retained states, then alarms in order, then health (with no payload: the caller
// takes the snapshot).
func (o *outbox) pop() (outMsg, bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	switch {
	case len(o.resps) > 0:
		m := o.resps[0]
		o.resps[0] = outMsg{}
		o.resps = o.resps[1:]
		return m, true
	case len(o.states) > 0:
		for t, m := range o.states {
			delete(o.states, t)
			return m, true
		}
	case len(o.alarms) > 0:
		m := o.alarms[0]
		o.alarms[0] = outMsg{}
		o.alarms = o.alarms[1:]
		return m, true
	case o.healthDue:
		o.healthDue = false
		return outMsg{topic: o.healthTopic, kind: kindHealth, retained: true}, true
	}
	return outMsg{}, false
}

// putState keeps m as the latest of its topic; the caller holds mu.
func (o *outbox) putState(m outMsg) {
	if o.states == nil {
		o.states = map[string]outMsg{}
	}
	o.states[m.topic] = m
}

// dropped reports how many alarms and responses were lost to the bounds.
func (o *outbox) dropped() (alarms, resps uint64) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.droppedAlarms, o.droppedResps
}

// pending reports what waits, for tests and logs.
func (o *outbox) pending() (health bool, alarms, resps int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.healthDue, len(o.alarms), len(o.resps)
}
