package route

import (
	"reflect"
	"strings"
	"testing"

	"github.com/hl7edge/hl7edge/pipeline/hl7"
)

func parse(t testing.TB, segs ...string) *hl7.Message {
	t.Helper()
	m, err := hl7.Parse([]byte(strings.Join(segs, "\r")))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// Fake messages: an admission to ICU and a lab result with three OBX.
func adt(t testing.TB) *hl7.Message {
	return parse(t,
		"MSH|^~\\&|REG|Good Health|GW|WARD3|20240101||ADT^A01^ADT_A01|C1|P|2.5",
		"PID|1||MRN123^^^GH^MR~99^^^SSA^SS||EXAMPLE&VAN^ALEX||\"\"|M|||^^^||||||| ",
		"PV1|1|I|ICU-North^12^B|||||||Sur\\T\\gery",
	)
}

func oru(t testing.TB) *hl7.Message {
	return parse(t,
		"MSH|^~\\&|LAB|CENTRAL LAB|GW|WARD3|20240101||ORU^R01|C2|T|2.5.1",
		"PID|1||MRN456",
		"OBR|1|||LIPID^Lipid panel",
		"OBX|1|NM|GLU^Glucose||5.5|mmol/L||N|||F",
		"OBX|2|NM|HBA1C^Hemoglobin A1c||6.1|%||H|||F",
		"OBX|3|NM|NA^Sodium||140|mmol/L||||F",
	)
}

func TestOps(t *testing.T) {
	a, o := adt(t), oru(t)
	cases := []struct {
		rule string
		m    *hl7.Message
		want bool
	}{
		// in / not-in, with folding of case, spaces and punctuation.
		{"MSH-9.1 in ADT,ORU", a, true},
		{"MSH-9.1 in adt", a, true},
		{"MSH-9.1 in ORM, OML", a, false},
		{"MSH-9 in ADT^A01^ADT_A01", a, true},
		{"MSH-9 in adt a01 adt-a01", a, true},
		{"MSH-9 in ADT", a, false},
		{"PV1-3.1 in icu north", a, true},
		{"PV1-3.1 in ICU", a, false},
		{"MSH-4 in GOOD-HEALTH", a, true},
		{"MSH-11.1 not-in T,D", a, true},
		{"MSH-11.1 not-in T,D", o, false},
		{"MSH-11.1 NOT-IN t", o, false},
		{"PID-19 not-in X", a, true}, // an empty field is not X
		{"PID-19 in X", a, false},
		// contains / prefix.
		{"PV1-3.1 prefix ICU", a, true},
		{"PV1-3.1 prefix icun", a, true},
		{"PV1-3.1 prefix North", a, false},
		{"PV1-3 contains north", a, true},
		{"PV1-3 contains south,12B", a, true},
		{"OBR-4 contains LIPID", o, true},
		{"OBR-4 contains GLU", o, false},
		{"MSH-4 prefix good health", a, true},
		// matches: raw value, case-insensitive, commas belong to the expression.
		{"MSH-9.2 matches ^A0[1-4]$", a, true},
		{"MSH-9.2 matches ^a0[5-8]$", a, false},
		{"PV1-3.1 matches ^icu-", a, true},
		{"PV1-3.1 matches ^ICU N", a, false},
		{"MSH-10 matches ^C[0-9]{1,3}$", a, true},
		// escape sequences count as punctuation for folding, as written for matches.
		{"PV1-10 in surgery", a, true},
		{`PV1-10 matches ^Sur\\T\\gery$`, a, true},
		// exists / missing; "" and separator-only values are absent.
		{"PID-3 exists", a, true},
		{"PID-3.1 exists", a, true},
		{"PID-19 exists", a, false},
		{"PID-19 missing", a, true},
		{"PID-7 missing", a, true},  // ""
		{"PID-11 missing", a, true}, // ^^^
		{"PID-20 missing", a, true}, // a single space
		{"PID-3.4 exists", a, true},
		{"PID-5.1.2 in van", a, true},
		{"PID-5.1.3 missing", a, true},
		{"PID-3 not-exists", a, false},
		{"MSH-2 exists", a, true},
		{"MSH-1 exists", a, true},
		// Only the first repetition is read.
		{"PID-3.1 in 99", a, false},
		// A missing segment never matches, whatever the operator.
		{"PV1-3.1 in ICU", o, false},
		{"PV1-3.1 not-in ICU", o, false},
		{"PV1-3.1 missing", o, false},
		{"PV1-3.1 exists", o, false},
		{"PV1-3.1 matches .*", o, false},
		{"OBX-5 exists", a, false},
		{"ZZZ-1 not-in anything", a, false},
		// Repeating segments: positive ops need any occurrence...
		{"OBX-3.1 in GLU", o, true},
		{"OBX-3.1 in NA", o, true},
		{"OBX-3.1 in K", o, false},
		{"OBX-3.2 contains a1c", o, true},
		{"OBX-3.2 prefix sod", o, true},
		{"OBX-8 exists", o, true},
		{"OBX-5 matches ^6\\.", o, true},
		// ...not-in and missing need every occurrence.
		{"OBX-3.1 not-in GLU", o, false},
		{"OBX-3.1 not-in K,CL", o, true},
		{"OBX-8 missing", o, false},
		{"OBX-9 missing", o, true},
	}
	for _, c := range cases {
		r, err := ParseRule(c.rule)
		if err != nil {
			t.Errorf("ParseRule(%q): %v", c.rule, err)
			continue
		}
		if got := r.Holds(c.m); got != c.want {
			t.Errorf("%q on %s: got %v, want %v", c.rule, c.m.Header().MessageType, got, c.want)
		}
	}
	var zero Rule
	if zero.Holds(a) {
		t.Error("zero Rule holds")
	}
	r, _ := ParseRule("MSH-9 exists")
	if r.Holds(nil) {
		t.Error("rule holds on a nil message")
	}
}

func TestParseRule(t *testing.T) {
	good := map[string]string{
		"MSH-9.1 in ADT,ORU":              "MSH-9.1 in ADT,ORU",
		"  msh-9.1   IN   ADT , ORU ":     "MSH-9.1 in ADT,ORU",
		"PV1-3.1\tprefix\tICU North":      "PV1-3.1 prefix ICU North",
		"PID-3 exists":                    "PID-3 exists",
		"PID-3 not-exists":                "PID-3 missing",
		"PID-5.1.2 Missing":               "PID-5.1.2 missing",
		"MSH-9.2 matches ^A0[1-4]{1,2}$ ": "MSH-9.2 matches ^A0[1-4]{1,2}$",
		"OBR-4 contains GLU":              "OBR-4 contains GLU",
		"MSH-11.1 not-in T,D":             "MSH-11.1 not-in T,D",
	}
	for in, want := range good {
		r, err := ParseRule(in)
		if err != nil {
			t.Errorf("ParseRule(%q): %v", in, err)
			continue
		}
		if r.String() != want {
			t.Errorf("ParseRule(%q).String() = %q, want %q", in, r.String(), want)
		}
		if again, err := ParseRule(r.String()); err != nil || again.String() != want {
			t.Errorf("%q does not read back: %v", r.String(), err)
		}
	}
	r, _ := ParseRule("pv1-3.1 prefix ICU")
	if r.Op() != Prefix || r.Path() != (hl7.Path{Segment: "PV1", Field: 3, Component: 1}) {
		t.Errorf("Op/Path = %v %+v", r.Op(), r.Path())
	}

	bad := map[string]string{
		"":                       "matching rule is empty: write",
		"   ":                    "matching rule is empty",
		"MSH-9.1":                `no operator after MSH-9.1: use one of in, not-in, contains, prefix, matches, exists, missing`,
		"MSH9.1 in ADT":          `field path "MSH9.1": no '-'`,
		"MSH-0 in ADT":           "field must be a number from 1 to 999",
		"MSH-9.1 inn ADT":        `unknown operator "inn": use one of in, not-in`,
		"MSH-9.1 == ADT":         `unknown operator "=="`,
		"MSH-9.1 in":             `in needs comma-separated values, for example "MSH-9.1 in ADT,ORU"`,
		"MSH-9.1 not-in":         "not-in needs comma-separated values",
		"OBR-4 contains":         "contains needs",
		"PV1-3 prefix":           "prefix needs",
		"MSH-9.1 in ADT,,ORU":    "empty value between commas",
		"MSH-9.1 in ADT,":        "empty value between commas",
		"MSH-9.1 in --":          `value "--" has no letters or digits`,
		"MSH-9.1 in é":           `value "é" has no letters or digits`,
		"PID-3 exists yes":       `exists takes no values: write "PID-3 exists"`,
		"PID-3 missing x":        "missing takes no values",
		"MSH-9.2 matches":        "matches needs a regular expression",
		"MSH-9.2 matches ^A0[1-": "regular expression (Go syntax): error parsing regexp",
	}
	for in, want := range bad {
		_, err := ParseRule(in)
		if err == nil {
			t.Errorf("ParseRule(%q) accepted", in)
			continue
		}
		if !strings.Contains(err.Error(), want) {
			t.Errorf("ParseRule(%q) error:\n %v\nwant it to contain %q", in, err, want)
		}
	}
}

func TestMatcher(t *testing.T) {
	a, o := adt(t), oru(t)
	cases := []struct {
		name     string
		match    Match
		adt, oru bool
	}{
		{"empty matches all", Match{}, true, true},
		{"all", Match{All: []string{"MSH-9.1 in ADT,ORU", "MSH-11.1 not-in T,D"}}, true, false},
		{"all, one fails", Match{All: []string{"MSH-9.1 in ADT", "PV1-3.1 prefix WARD"}}, false, false},
		{"any", Match{Any: []string{"PV1-3.1 prefix ICU", "OBX-3.1 in GLU"}}, true, true},
		{"any, none", Match{Any: []string{"MSH-9.1 in ORM", "MSH-9.1 in OML"}}, false, false},
		{"all and any both needed", Match{All: []string{"MSH-9.1 in ORU"}, Any: []string{"OBX-3.1 in GLU", "PV1-3.1 prefix ICU"}}, false, true},
		{"all holds, any fails", Match{All: []string{"MSH-9.1 in ORU,ADT"}, Any: []string{"OBX-3.1 in K"}}, false, false},
	}
	for _, c := range cases {
		mt, err := Compile(c.match)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if c.match.Validate() != nil {
			t.Errorf("%s: Validate refuses what Compile accepts", c.name)
		}
		if got := mt.Match(a); got != c.adt {
			t.Errorf("%s on ADT = %v", c.name, got)
		}
		if got := mt.Match(o); got != c.oru {
			t.Errorf("%s on ORU = %v", c.name, got)
		}
		if mt.Empty() != (len(c.match.All)+len(c.match.Any) == 0) {
			t.Errorf("%s: Empty() = %v", c.name, mt.Empty())
		}
	}
	var nilMatcher *Matcher
	if !nilMatcher.Match(a) || !nilMatcher.Empty() {
		t.Error("a nil matcher should match everything and be empty")
	}

	_, err := Compile(Match{All: []string{"MSH-9.1 in ADT", "MSH-9.1 inn ADT"}, Any: []string{"PID3 exists"}})
	if err == nil {
		t.Fatal("Compile accepted bad rules")
	}
	for _, want := range []string{`match.all[1]: matching rule "MSH-9.1 inn ADT": unknown operator`, `match.any[0]: matching rule "PID3 exists"`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Compile error:\n%v\nwant it to contain %q", err, want)
		}
	}
	if Match(Match{Any: []string{"x"}}).Validate() == nil {
		t.Error("Validate accepted a bad rule")
	}
}

func mustCompile(t *testing.T, rules ...string) *Matcher {
	t.Helper()
	mt, err := Compile(Match{Any: rules})
	if err != nil {
		t.Fatal(err)
	}
	return mt
}

func TestRouter(t *testing.T) {
	a, o := adt(t), oru(t)
	prod := parse(t, "MSH|^~\\&|LAB|X|GW|W|1||ORU^R01|C3|P|2.5", "OBX|1|NM|GLU||5")
	orm := parse(t, "MSH|^~\\&|HIS|X|GW|W|1||ORM^O01|C4|P|2.5")
	dests := []Destination{
		{Name: "ehr", Match: mustCompile(t, "MSH-9.1 in ADT,ORU")},
		{Name: "tests-bin", Rubbish: true, Match: mustCompile(t, "MSH-11.1 in T")},
		{Name: "icu", Match: mustCompile(t, "PV1-3.1 prefix ICU")},
		{Name: "lab-bin", Rubbish: true, Match: mustCompile(t, "OBX-3.1 in GLU", "MSH-9.1 in ORU")},
		{Name: "archive"}, // no match: block
	}
	r := New(dests)
	dests[0].Name = "changed" // New copies its input
	cases := []struct {
		name string
		m    *hl7.Message
		want Decision
	}{
		{"every matching destination, config order", a, Decision{Destinations: []string{"ehr", "icu", "archive"}}},
		{"first matching bin wins over the later bin and destinations", o, Decision{Rubbish: "tests-bin"}},
		{"later bin still runs before destinations", prod, Decision{Rubbish: "lab-bin"}},
		{"only the catch-all", orm, Decision{Destinations: []string{"archive"}}},
	}
	for _, c := range cases {
		got := r.Route(c.m)
		if !reflect.DeepEqual(got, c.want) {
			t.Errorf("%s: Route = %+v, want %+v", c.name, got, c.want)
		}
		if got.Undeliverable() {
			t.Errorf("%s: undeliverable", c.name)
		}
	}

	narrow := New([]Destination{
		{Name: "ehr", Match: mustCompile(t, "MSH-9.1 in ADT")},
		{Name: "bin", Rubbish: true, Match: mustCompile(t, "MSH-11.1 in D")},
	})
	got := narrow.Route(orm)
	if !got.Undeliverable() || got.Rubbish != "" || got.Destinations != nil {
		t.Errorf("unwanted message: %+v, want undeliverable", got)
	}
	if got := New(nil).Route(a); !got.Undeliverable() {
		t.Errorf("no destinations: %+v", got)
	}
	if (Decision{Rubbish: "bin"}).Undeliverable() {
		t.Error("an eaten message is not undeliverable")
	}
}

// FuzzParseRule: ParseRule never panics, a rule it accepts writes itself
// back in a form that parses to the same rule, and evaluating it on real
// messages never panics.
func FuzzParseRule(f *testing.F) {
	for _, s := range []string{
		"MSH-9.1 in ADT,ORU", "MSH-11.1 not-in T,D", "PV1-3.1 prefix ICU", "OBR-4 contains GLU",
		"MSH-9.2 matches ^A0[1-4]{1,2}$", "PID-3 exists", "PID-19 missing", "PID-5.1.2 not-exists",
		"", "MSH-9.1", "MSH-9.1 in ,", "msh-9.1 IN adt", "OBX-5 matches (?-i)abc", "ZZZ-999.999.999 in x",
	} {
		f.Add(s)
	}
	a, o := adt(f), oru(f)
	f.Fuzz(func(t *testing.T, s string) {
		r, err := ParseRule(s)
		if err != nil {
			if !strings.Contains(err.Error(), "rule") {
				t.Fatalf("error does not say it is about a rule: %v", err)
			}
			return
		}
		again, err := ParseRule(r.String())
		if err != nil {
			t.Fatalf("String() %q does not parse: %v", r.String(), err)
		}
		if again.String() != r.String() || again.path != r.path || again.op != r.op || !reflect.DeepEqual(again.folded, r.folded) {
			t.Fatalf("%q reads back as a different rule %q", r.String(), again.String())
		}
		for _, m := range []*hl7.Message{a, o} {
			if r.Holds(m) != again.Holds(m) {
				t.Fatalf("%q and its rewrite disagree", s)
			}
		}
	})
}
