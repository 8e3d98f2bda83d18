// Package strictjson decodes JSON that is signed, or that vouches for
// something signed, so that it means to Go what it means to every other
// reader. encoding/json matches object keys to struct fields without regard
// to case (with Unicode folding: U+017F ſ and U+212A K count as s and k) and
// keeps the last of duplicate keys, while most other tools keep the first or
// match exactly; a signer who checked a command with one of them could be
// made to vouch for another. Here a key must spell a field's json name
// exactly, appear once, and no object anywhere may hold two keys that fold
// to the same name. Written on encoding/json's tokenizer rather than a
// dependency: the rule is a short walk over the tokens.
package strictjson

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"slices"
	"strings"
)

// Unmarshal checks data against v's type (a pointer to a struct, map,
// slice or json.RawMessage) and then decodes it into v.
func Unmarshal(data []byte, v any) error {
	if err := Check(data, reflect.TypeOf(v)); err != nil {
		return err
	}
	return json.Unmarshal(data, v)
}

// Check walks data and refuses, in its error, the first key that is not a
// field of t's struct spelt exactly, a key seen twice in one object, or two
// keys of one object that differ only in case. Objects decoded into a map,
// an interface or json.RawMessage may hold any keys, but still no two that
// fold together. Malformed JSON is left to the decoder that follows.
func Check(data []byte, t reflect.Type) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	err := walk(dec, t, "")
	if errors.Is(err, io.EOF) || errors.Is(err, errSyntax) {
		return nil // json.Unmarshal names the syntax error
	}
	return err
}

var errSyntax = errors.New("syntax")

var rawMessage = reflect.TypeFor[json.RawMessage]()

// walk reads one value from dec; t is the Go type it would decode into,
// nil when unknown (any key is allowed).
func walk(dec *json.Decoder, t reflect.Type, at string) error {
	for t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t == rawMessage {
		t = nil
	}
	tok, err := dec.Token()
	if err != nil {
		return errSyntax
	}
	switch tok {
	case json.Delim('{'):
		return walkObject(dec, t, at)
	case json.Delim('['):
		var elem reflect.Type
		if t != nil && (t.Kind() == reflect.Slice || t.Kind() == reflect.Array) {
			elem = t.Elem()
		}
		for i := 0; dec.More(); i++ {
			if err := walk(dec, elem, fmt.Sprintf("%s[%d]", at, i)); err != nil {
				return err
			}
		}
		if _, err := dec.Token(); err != nil {
			return errSyntax
		}
	}
	return nil
}

func walkObject(dec *json.Decoder, t reflect.Type, at string) error {
	var fields map[string]reflect.Type
	var elem reflect.Type
	switch {
	case t != nil && t.Kind() == reflect.Struct:
		fields = fieldsOf(t)
	case t != nil && t.Kind() == reflect.Map:
		elem = t.Elem()
	}
	var seen []string
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return errSyntax
		}
		key, _ := tok.(string)
		for _, s := range seen {
			switch {
			case s == key:
				return fmt.Errorf("key %q twice in %s; give each key once", key, where(at))
			case strings.EqualFold(s, key):
				return fmt.Errorf("keys %q and %q in %s differ only in case; spell each key once, in lower case", s, key, where(at))
			}
		}
		seen = append(seen, key)
		next := elem
		if fields != nil {
			ft, ok := fields[key]
			if !ok {
				return fmt.Errorf("unknown key %q in %s; the keys are %s", key, where(at), names(fields))
			}
			next = ft
		}
		if err := walk(dec, next, at+"."+key); err != nil {
			return err
		}
	}
	if _, err := dec.Token(); err != nil {
		return errSyntax
	}
	return nil
}

func where(at string) string {
	if at == "" {
		return "the object"
	}
	return strings.TrimPrefix(at, ".")
}

// fieldsOf maps the exact json names of t's fields (embedded structs
// inlined, as encoding/json does) to their types.
func fieldsOf(t reflect.Type) map[string]reflect.Type {
	out := map[string]reflect.Type{}
	for i := range t.NumField() {
		f := t.Field(i)
		tag := f.Tag.Get("json")
		name, _, _ := strings.Cut(tag, ",")
		if name == "-" && !strings.HasPrefix(tag, "-,") || !f.IsExported() && !f.Anonymous {
			continue
		}
		if f.Anonymous && name == "" && f.Type.Kind() == reflect.Struct {
			for k, v := range fieldsOf(f.Type) {
				if _, own := out[k]; !own {
					out[k] = v
				}
			}
			continue
		}
		if name == "" {
			name = f.Name
		}
		out[name] = f.Type
	}
	return out
}

func names(fields map[string]reflect.Type) string {
	var ks []string
	for k := range fields {
		ks = append(ks, fmt.Sprintf("%q", k))
	}
	slices.Sort(ks)
	return strings.Join(ks, ", ")
}
