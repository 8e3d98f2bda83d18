package mllp

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// maxACKBytes bounds an acknowledgement read by the client. An ACK is a few
// hundred bytes; anything near this is a confused peer.
const maxACKBytes = 1 << 20

// Client is one MLLP connection to a receiver. Send may be called from
// several goroutines; exchanges are serialised because MLLP answers in order.
type Client struct {
	addr string

	mu     sync.Mutex
	conn   net.Conn
	r      *Reader
	broken error // set after an I/O error: the stream's position is unknown
	closed atomic.Bool
}

// ErrBroken is matched (errors.Is) by Send on a client whose connection
// failed earlier; Close it and Dial again.
var ErrBroken = errors.New("mllp: connection unusable after an earlier error")

// Dial connects to addr (host:port). With tlsConf non-nil the connection is
// TLS: at least TLS 1.2 and always verified (InsecureSkipVerify is refused);
// an empty ServerName is taken from addr.
func Dial(ctx context.Context, addr string, tlsConf *tls.Config) (*Client, error) {
	var (
		c   net.Conn
		err error
	)
	if tlsConf != nil {
		if tlsConf.InsecureSkipVerify {
			return nil, fmt.Errorf("mllp: dial %s: InsecureSkipVerify is not allowed: give the receiver's CA instead", addr)
		}
		conf := tlsConf.Clone()
		conf.MinVersion = max(conf.MinVersion, tls.VersionTLS12)
		d := tls.Dialer{Config: conf}
		c, err = d.DialContext(ctx, "tcp", addr)
	} else {
		var d net.Dialer
		c, err = d.DialContext(ctx, "tcp", addr)
	}
	if err != nil {
		return nil, fmt.Errorf("mllp: dial %s: %w", addr, err)
	}
	return &Client{addr: addr, conn: c, r: NewReader(c, maxACKBytes)}, nil
}

// Send writes msg as one frame and returns the content of the next frame
// the peer sends back (its acknowledgement). It stops at ctx's deadline or
// cancellation. After any error the connection is left unusable (a late
// ACK could otherwise be taken for the next message's): later calls fail
// with ErrBroken.
func (c *Client) Send(ctx context.Context, msg []byte) ([]byte, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed.Load() {
		return nil, fmt.Errorf("mllp: send to %s: %w", c.addr, net.ErrClosed)
	}
	if c.broken != nil {
		return nil, fmt.Errorf("%w (%v): dial again", ErrBroken, c.broken)
	}
	ack, err := c.exchange(ctx, msg)
	if err != nil {
		if !errors.Is(err, ErrFramingByte) { // nothing was written then
			c.broken = err
			c.conn.Close()
		}
		return nil, fmt.Errorf("mllp: send to %s: %w", c.addr, err)
	}
	return ack, nil
}

func (c *Client) exchange(ctx context.Context, msg []byte) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	dl, _ := ctx.Deadline() // zero: none
	if err := c.conn.SetDeadline(dl); err != nil {
		return nil, err
	}
	stop := context.AfterFunc(ctx, func() { c.conn.SetDeadline(aLongTimeAgo) })
	defer stop()
	// Report the context's reason rather than a bare I/O timeout.
	ctxErr := func(err error) error {
		if cerr := context.Cause(ctx); cerr != nil {
			return fmt.Errorf("%w (%v)", cerr, err)
		}
		// The socket deadline can fire a moment before the context's
		// own timer marks it done.
		if errors.Is(err, os.ErrDeadlineExceeded) && !dl.IsZero() && !time.Now().Before(dl) {
			return fmt.Errorf("%w (%v)", context.DeadlineExceeded, err)
		}
		return err
	}
	if err := WriteFrame(c.conn, msg); err != nil {
		return nil, ctxErr(err)
	}
	f, err := c.r.ReadFrame()
	if err != nil {
		return nil, ctxErr(fmt.Errorf("waiting for the ACK: %w", err))
	}
	if f.Oversize {
		return nil, fmt.Errorf("the reply is %d bytes, over the %d-byte limit for an ACK: the peer is not answering with an HL7 ACK", f.Size, maxACKBytes)
	}
	return f.Data, nil
}

// Close closes the connection; a Send in progress fails at once.
func (c *Client) Close() error {
	c.closed.Store(true)
	err := c.conn.Close()
	if errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}
