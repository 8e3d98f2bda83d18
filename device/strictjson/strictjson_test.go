package strictjson_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/hl7edge/hl7edge/device/strictjson"
)

type inner struct {
	ID   string `json:"id"`
	Tags []struct {
		K string `json:"k"`
	} `json:"tags"`
}

type outer struct {
	inner
	Args  json.RawMessage   `json:"args,omitempty"`
	Extra map[string]string `json:"extra"`
	Skip  string            `json:"-"`
}

// TestUnmarshal: exact keys decode; every key Go would read otherwise than
// a strict reader is refused, at any depth, with the key named.
func TestUnmarshal(t *testing.T) {
	var o outer
	if err := strictjson.Unmarshal([]byte(`{"id":"a","tags":[{"k":"x"}],"args":{"Any":1},"extra":{"a":"b"}}`), &o); err != nil || o.ID != "a" || o.Tags[0].K != "x" || o.Extra["a"] != "b" {
		t.Fatalf("exact keys: %+v %v", o, err)
	}
	bad := map[string]string{
		`{"id":"a","ID":"b"}`:                       `"id" and "ID"`,
		`{"Id":"a"}`:                                `unknown key "Id"`,
		`{"id":"a","id":"b"}`:                       `"id" twice`,
		`{"tags":[{"k":"x","K":"y"}]}`:              `tags[0]`,
		`{"tags":[{"\u212a":"x"}]}`:                 "unknown key \"\u212a\"",
		`{"args":{"s":1,"\u017f":2}}`:               `differ only in case`,
		`{"extra":{"a":"1","a":"2"}}`:               `"a" twice in extra`,
		`{"Skip":"x"}`:                              `unknown key "Skip"`,
		`{"-":"x"}`:                                 `unknown key "-"`,
		`{"id":"a","args":[{"x":1},{"y":1,"y":2}]}`: `args[1]`,
	}
	for doc, want := range bad {
		var o outer
		err := strictjson.Unmarshal([]byte(doc), &o)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want an error containing %s", doc, err, want)
		}
	}
	if err := strictjson.Unmarshal([]byte(`{"id":`), &o); err == nil || !strings.Contains(err.Error(), "unexpected end") {
		t.Errorf("truncated JSON: %v, want json's own syntax error", err)
	}
}
