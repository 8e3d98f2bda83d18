package wire

import (
	"bytes"
	"encoding/base64"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strings"
	"unicode/utf8"
)

// ErrNotXML means a body is not one well-formed XML element. To a client it
// is a transport failure.
var ErrNotXML = errors.New("body is not one XML element")

// ErrShape means a body is XML but not the element the exchange expects
// (and not an EXCEPTION). To a client it is a transport failure.
var ErrShape = errors.New("unexpected XML reply")

// MaxDepth is how deeply elements may nest. The protocol needs 2; the limit
// keeps a hostile body from costing more than its size.
const MaxDepth = 16

// Attr is one attribute with its name in upper case.
type Attr struct {
	Name, Value string
}

// Element is one parsed element with every name in upper case, so that
// callers compare names without caring how the peer spelled them.
type Element struct {
	Name     string
	Attrs    []Attr
	Children []*Element
	Text     string // character data directly inside the element
}

// Attr returns an attribute by upper-case name; the first wins when a peer
// repeats a name in two letter cases.
func (e *Element) Attr(name string) (string, bool) {
	for _, a := range e.Attrs {
		if a.Name == name {
			return a.Value, true
		}
	}
	return "", false
}

// Child returns the first child element with the upper-case name, or nil.
func (e *Element) Child(name string) *Element {
	for _, c := range e.Children {
		if c.Name == name {
			return c
		}
	}
	return nil
}

var utf8BOM = []byte{0xEF, 0xBB, 0xBF}

// Parse reads one XML element leniently: a UTF-8 BOM, leading white space,
// an XML declaration (with any encoding label), comments, a DOCTYPE and
// namespace prefixes are all accepted; element and attribute names are
// upper-cased. Anything but exactly one root element is ErrNotXML.
func Parse(body []byte) (*Element, error) {
	body = bytes.TrimPrefix(body, utf8BOM)
	body = bytes.TrimLeft(body, " \t\r\n")
	if len(body) == 0 {
		return nil, fmt.Errorf("%w: the body is empty", ErrNotXML)
	}
	d := xml.NewDecoder(bytes.NewReader(body))
	d.Strict = true
	d.CharsetReader = charsetReader
	var (
		root  *Element
		stack []*Element
		text  []*strings.Builder
	)
	for {
		tok, err := d.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrNotXML, err)
		}
		switch t := tok.(type) {
		case xml.StartElement:
			if len(stack) == 0 && root != nil {
				return nil, fmt.Errorf("%w: a second root element <%s> follows <%s>", ErrNotXML, Clean(t.Name.Local, 40), root.Name)
			}
			if len(stack) == MaxDepth {
				return nil, fmt.Errorf("%w: elements nest deeper than %d levels", ErrNotXML, MaxDepth)
			}
			e := &Element{Name: strings.ToUpper(t.Name.Local)}
			for _, a := range t.Attr {
				if a.Name.Space == "xmlns" || (a.Name.Space == "" && a.Name.Local == "xmlns") {
					continue
				}
				e.Attrs = append(e.Attrs, Attr{Name: strings.ToUpper(a.Name.Local), Value: a.Value})
			}
			if len(stack) == 0 {
				root = e
			} else {
				parent := stack[len(stack)-1]
				parent.Children = append(parent.Children, e)
			}
			stack = append(stack, e)
			text = append(text, &strings.Builder{})
		case xml.EndElement:
			// The decoder has already checked that start and end match.
			top := len(stack) - 1
			stack[top].Text = text[top].String()
			stack, text = stack[:top], text[:top]
		case xml.CharData:
			if len(stack) == 0 {
				if len(bytes.TrimSpace(t)) != 0 {
					return nil, fmt.Errorf("%w: text outside the root element", ErrNotXML)
				}
				continue
			}
			text[len(text)-1].Write(t)
		}
	}
	if root == nil {
		return nil, fmt.Errorf("%w: no element found", ErrNotXML)
	}
	if len(stack) != 0 {
		return nil, fmt.Errorf("%w: <%s> is never closed", ErrNotXML, stack[len(stack)-1].Name)
	}
	return root, nil
}

// charsetReader accepts whatever encoding a declaration names. Latin-1 and
// its Windows superset are converted; any other label is read as UTF-8,
// because servers that declare "utf-16" while sending UTF-8 are common and
// everything the protocol carries outside MESSAGE (which is Base64) is ASCII.
func charsetReader(label string, r io.Reader) (io.Reader, error) {
	switch strings.ToLower(strings.TrimSpace(label)) {
	case "iso-8859-1", "iso8859-1", "latin1", "latin-1", "l1", "windows-1252", "cp1252":
		b, err := io.ReadAll(r)
		if err != nil {
			return nil, err
		}
		out := make([]byte, 0, len(b))
		for _, c := range b {
			out = utf8.AppendRune(out, rune(c))
		}
		return bytes.NewReader(out), nil
	}
	return r, nil
}

// Into fills v, a pointer to one of this package's shapes, from e. It
// matches names without regard to case and ignores attributes and children
// the shape does not know. A root of another name is ErrShape.
func (e *Element) Into(v any) error {
	rv := reflect.ValueOf(v)
	if rv.Kind() != reflect.Pointer || rv.Elem().Kind() != reflect.Struct {
		return fmt.Errorf("wire: Into needs a pointer to a struct, not %T", v)
	}
	want := rootName(rv.Elem().Type())
	if want != "" && e.Name != want {
		return fmt.Errorf("%w: the root element is <%s>, want <%s>", ErrShape, Clean(e.Name, 40), want)
	}
	return fill(e, rv.Elem())
}

func rootName(t reflect.Type) string {
	f, ok := t.FieldByName("XMLName")
	if !ok {
		return ""
	}
	name, _, _ := strings.Cut(f.Tag.Get("xml"), ",")
	return strings.ToUpper(name)
}

func fill(e *Element, rv reflect.Value) error {
	t := rv.Type()
	for i := range t.NumField() {
		f, fv := t.Field(i), rv.Field(i)
		if f.Name == "XMLName" {
			fv.Set(reflect.ValueOf(xml.Name{Local: e.Name}))
			continue
		}
		if f.Anonymous {
			if err := fill(e, fv); err != nil {
				return err
			}
			continue
		}
		name, opts, _ := strings.Cut(f.Tag.Get("xml"), ",")
		name = strings.ToUpper(name)
		switch {
		case strings.Contains(opts, "attr"):
			s, _ := e.Attr(name)
			fv.SetString(s)
		case strings.Contains(opts, "chardata"):
			fv.SetString(e.Text)
		case fv.Kind() == reflect.Struct:
			if c := e.Child(name); c != nil {
				if err := fill(c, fv); err != nil {
					return err
				}
			}
		case fv.Kind() == reflect.Slice && fv.Type().Elem().Kind() == reflect.Struct:
			for _, c := range e.Children {
				if c.Name != name {
					continue
				}
				item := reflect.New(fv.Type().Elem()).Elem()
				if err := fill(c, item); err != nil {
					return err
				}
				fv.Set(reflect.Append(fv, item))
			}
		default:
			return fmt.Errorf("wire: field %s.%s of kind %s is not supported", t.Name(), f.Name, fv.Kind())
		}
	}
	return nil
}

// DecodeReply parses a reply into v. When the root is EXCEPTION (empty or
// not), it returns the *Exception as the error and leaves v alone; callers
// that expect an empty EXCEPTION check Empty. A body that is not XML wraps
// ErrNotXML; XML of another shape wraps ErrShape.
func DecodeReply(body []byte, v any) error {
	e, err := Parse(body)
	if err != nil {
		return err
	}
	if e.Name == "EXCEPTION" {
		x := &Exception{}
		if err := e.Into(x); err != nil {
			return err
		}
		return x
	}
	return e.Into(v)
}

// EncodeMessage is the MESSAGE payload: standard Base64 with padding.
func EncodeMessage(raw []byte) string { return base64.StdEncoding.EncodeToString(raw) }

// DecodeMessage reads a MESSAGE payload. White space (servers that wrap
// lines) and missing padding are tolerated.
func DecodeMessage(s string) ([]byte, error) {
	clean := strings.Map(func(r rune) rune {
		switch r {
		case ' ', '\t', '\r', '\n':
			return -1
		}
		return r
	}, s)
	enc := base64.StdEncoding
	if len(clean)%4 != 0 {
		enc = base64.RawStdEncoding
		clean = strings.TrimRight(clean, "=")
	}
	b, err := enc.DecodeString(clean)
	if err != nil {
		return nil, fmt.Errorf("MESSAGE is not standard Base64 (%d characters): %w", len(clean), err)
	}
	return b, nil
}
