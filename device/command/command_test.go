package command

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
)

func TestDispatchStatuses(t *testing.T) {
	now := time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)
	d := NewDispatcher(func() time.Time { return now })
	d.Register("ok", func(context.Context, json.RawMessage) (any, string, error) { return 42, "done", nil })
	d.Register("whoami", func(ctx context.Context, _ json.RawMessage) (any, string, error) { return nil, IDFrom(ctx), nil })
	d.Register("bad", func(context.Context, json.RawMessage) (any, string, error) { return nil, "", errors.New("nope") })
	later, earlier := now.Add(time.Minute), now.Add(-time.Second)
	cases := []struct {
		req    Request
		status Status
		detail string
	}{
		{Request{ID: "1", Name: "ok", Expires: &later}, Successful, "done"},
		{Request{ID: "2", Name: "bad"}, Failed, "nope"},
		{Request{ID: "cmd-77", Name: "whoami"}, Successful, "cmd-77"},
		{Request{ID: "3", Name: "ok", Expires: &earlier}, Rejected, "expired"},
		{Request{ID: "4", Name: "nosuch"}, Rejected, "unknown command"},
		{Request{Name: "ok"}, Rejected, "no id"},
	}
	for _, c := range cases {
		r := d.Dispatch(context.Background(), c.req)
		if r.Status != c.status || !strings.Contains(r.Detail, c.detail) || r.ID != c.req.ID {
			t.Errorf("%+v: got %+v", c.req, r)
		}
	}
}
