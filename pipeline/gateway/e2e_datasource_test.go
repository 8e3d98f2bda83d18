package gateway_test

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/hl7edge/hl7edge/pipeline/mllp/mllptest"
	"github.com/hl7edge/hl7edge/pipeline/webservice/refserver"
)

const dataSourceYAML = `
spool:
  dir: {{DIR}}/spool
  max_bytes: 256MiB
sources:
  - name: orders
    type: webservice
    url: {{URL}}
    logon_id: {{LOGON}}
    password_file: {{PASS}}
    ca_file: {{CA}}
    allowed_hosts: ["127.0.0.1"]
    frequency: 1s
    reping: true
    max_backoff: 1s
destinations:
  - name: lis
    type: mllp
    address: {{RCV}}
    timeout: 5s
`

// TestE2EDataSourceToMLLP pulls 200 messages from a web-service mailbox and
// delivers them to an MLLP receiver, while the service loses every 10th ack
// reply and answers every 13th get with an EXCEPTION: every message reaches
// the receiver exactly once, in mailbox order, byte-identical, and the
// mailbox ends empty.
func TestE2EDataSourceToMLLP(t *testing.T) {
	t.Parallel()
	const n = 200
	r := newRig(t)
	ws := r.startWebService("his", wsOptions{Mailbox: true, Faults: refserver.Faults{DropAckEvery: 10, ExceptionOnGetEvery: 13}})
	var want [][]byte
	for i := range n {
		m := oru(fmt.Sprintf("MB-%03d", i))
		want = append(want, m)
		if err := os.WriteFile(filepath.Join(ws.Mailbox, fmt.Sprintf("%06d.hl7", i+1)), m, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	rcv := mllptest.Start(t)
	start := time.Now()
	g := r.startGateway(dataSourceYAML, map[string]string{"URL": ws.URL, "RCV": rcv.Addr})

	waitFor(t, 60*time.Second, "200 messages at the MLLP receiver and an empty mailbox", func() bool {
		left, _ := os.ReadDir(ws.Mailbox)
		return rcv.Len() >= n && len(left) == 0 && g.Queue("lis").Queued == 0
	})
	took := time.Since(start)
	// The last ack's reply may be the one lost, and the source learns that
	// only after the service has emptied the mailbox: wait for one more
	// poll, which comes after the source has recorded that failure.
	polls := g.Source("orders").Counters["polls"]
	waitFor(t, 10*time.Second, "one more mailbox poll", func() bool { return g.Source("orders").Counters["polls"] > polls })
	got := rcv.Got()
	if len(got) != n {
		t.Errorf("the receiver got %d messages, want %d exactly once each", len(got), n)
	}
	for i := range min(len(got), n) {
		if !bytes.Equal(got[i], want[i]) {
			t.Errorf("message %d at the receiver is %s, want %s (in mailbox order, byte-identical)", i, controlID(got[i]), controlID(want[i]))
			break
		}
	}

	st := ws.Ref.Stats()
	src := g.Source("orders")
	t.Logf("took %s; service: %d pings, %d mailboxes, %d gets, %d acks, %d faults, %d exceptions; source counters %v",
		took.Round(time.Millisecond), st.Pings, st.Mailboxes, st.Gets, st.Acks, st.Faults, st.Exceptions, src.Counters)
	if st.Gets < n+n/13 || st.Acks < n {
		t.Errorf("the faults did not bite: %d gets, %d acks", st.Gets, st.Acks)
	}
	c := src.Counters
	if c["messages"] != n || c["duplicates"] != 0 || c["rejected"] != 0 {
		t.Errorf("source counters %v: want messages %d, no duplicates, no rejections", c, n)
	}
	if c["polls"] < 2 || c["pings"] < 2 {
		t.Errorf("source counters %v: want several polls and pings", c)
	}
	// Every get EXCEPTION is one failed round; every lost ack reply is a
	// transport failure.
	if c["exceptions"] != st.Exceptions || st.Exceptions < n/13 {
		t.Errorf("source counted %d exceptions, the service sent %d (want at least %d)", c["exceptions"], st.Exceptions, n/13)
	}
	if dropped := st.Acks / 10; c["transport_errors"] != dropped {
		t.Errorf("source counted %d transport errors, the service lost %d ack replies", c["transport_errors"], dropped)
	}
	if q := g.Queue("lis"); q.Delivered != n || q.Dead != 0 {
		t.Errorf("spool: lis delivered %d, dead %d; want %d and 0", q.Delivered, q.Dead, n)
	}
	ws.Rec.checkConsistent(t, true)
	if reqs, _, _ := ws.Rec.Count(kindPost); reqs != 0 {
		t.Errorf("%d posts to the data source's service", reqs)
	}
}
