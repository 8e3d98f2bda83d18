package serialport

import (
	"bytes"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hl7edge/hl7edge/pipeline/hl7"
	"github.com/hl7edge/hl7edge/pipeline/lis01"
	"github.com/hl7edge/hl7edge/pipeline/mllp"
)

// lineRate is 115200 baud with 8N1 framing: 10 bits per byte.
const lineRate = 115200 / 10

// counting counts the bytes a device puts on and takes off the line.
type counting struct {
	*os.File
	in, out atomic.Int64
}

func (c *counting) Read(p []byte) (int, error) {
	n, err := c.File.Read(p)
	c.in.Add(int64(n))
	return n, err
}

func (c *counting) Write(p []byte) (int, error) {
	n, err := c.File.Write(p)
	c.out.Add(int64(n))
	return n, err
}

// TestWireOverhead measures the protocol bytes one 1 KiB message costs on
// the line in each framing, both directions, and what that means at 115200
// baud. A pty does not pace bytes, so the rate is computed, not timed.
func TestWireOverhead(t *testing.T) {
	msg := sized(0, 1024)
	if len(msg) != 1024 {
		t.Fatalf("message is %d bytes", len(msg))
	}

	t.Run(FramingLIS01, func(t *testing.T) {
		f := startSource(t, FramingLIS01, true, nil, nil)
		c := &counting{File: f.dev.m}
		if err := lis01.NewSender(c, deviceOpts).Send(t.Context(), msg); err != nil {
			t.Fatal(err)
		}
		frames := (len(msg) + lis01.MaxText - 1) / lis01.MaxText
		// ENQ, EOT and 7 bytes per frame out; an ACK for ENQ and per frame back.
		want := int64(frames*lis01.FrameOverhead + 2 + frames + 1)
		wire := c.in.Load() + c.out.Load()
		if over := wire - int64(len(msg)); over != want {
			t.Fatalf("LIS01 overhead %d bytes, want %d", over, want)
		}
		t.Logf("lis01-a2: 1024-byte message = %d frames, %d bytes on the line (overhead %d: %d out, %d back); at 115200 8N1 (%d B/s) at most %.1f messages/s",
			frames, wire, wire-1024, c.out.Load()-1024, c.in.Load(), lineRate, float64(lineRate)/float64(wire))
	})

	t.Run(FramingMLLP, func(t *testing.T) {
		f := startSource(t, FramingMLLP, true, nil, nil)
		c := &counting{File: f.dev.m}
		if err := mllp.WriteFrame(c, msg); err != nil {
			t.Fatal(err)
		}
		// Read the answer byte by byte up to FS CR so that exactly its
		// bytes are counted.
		var ack []byte
		for !bytes.HasSuffix(ack, []byte{mllp.EndBlock, mllp.CarriageReturn}) {
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			var b [1]byte
			if _, err := c.Read(b[:]); err != nil {
				t.Fatalf("reading the ACK: %v (got %d bytes)", err, len(ack))
			}
			ack = append(ack, b[0])
		}
		body := ack[1 : len(ack)-2]
		if code, _, _, err := hl7.ParseACK(body); err != nil || code != "AA" {
			t.Fatalf("ACK %s, %v", code, err)
		}
		wire := c.in.Load() + c.out.Load()
		if over := wire - 1024; over != int64(6+len(body)) {
			t.Fatalf("MLLP overhead %d bytes, want 6 framing + %d ACK", over, len(body))
		}
		t.Logf("mllp: 1024-byte message = %d bytes on the line (overhead %d: 3 framing out, %d-byte HL7 ACK + 3 framing back); at 115200 8N1 (%d B/s) at most %.1f messages/s",
			wire, wire-1024, len(body), lineRate, float64(lineRate)/float64(wire))
	})
}

// BenchmarkSource measures 1 KiB messages per second through a pty, which
// does not pace bytes: this is the software's ceiling, far above any real
// line (see TestWireOverhead for 115200 baud).
func BenchmarkSource(b *testing.B) {
	for _, fr := range framings {
		b.Run(fr.name, func(b *testing.B) {
			f := startSource(b, fr.name, true, nil, nil)
			f.intake.discard = true
			send := fr.sender(f.dev)
			msg := sized(0, 1024)
			b.SetBytes(int64(len(msg)))
			b.ResetTimer()
			for range b.N {
				if err := send(msg); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
		})
	}
}
