package conformance

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
)

// Result of one check.
type Result string

// Results.
const (
	Pass Result = "pass"
	Fail Result = "fail" // the gateway cannot work with this service, or it is unsafe
	Warn Result = "warn" // works, but deserves a look
	Skip Result = "skip" // not run because an earlier check failed
)

// Item is one line of a Report.
type Item struct {
	Check  string
	Result Result
	Detail string
}

// Report is the outcome of Check, in the order the checks ran.
type Report struct {
	Items []Item
	// Cause, when set, is why the checks stopped before the protocol
	// itself was tested, with what to do (a CA to give, a password to
	// fix): then the failures say nothing about conformance.
	Cause string
}

// OK reports whether no check failed (warnings and skips allowed only when
// nothing failed, since a skip follows a failure).
func (r Report) OK() bool { return r.Count(Fail) == 0 }

// Count is the number of items with a result.
func (r Report) Count(res Result) int {
	n := 0
	for _, it := range r.Items {
		if it.Result == res {
			n++
		}
	}
	return n
}

// Find returns the item of a check by name.
func (r Report) Find(check string) (Item, bool) {
	for _, it := range r.Items {
		if it.Check == check {
			return it, true
		}
	}
	return Item{}, false
}

// WriteTo prints the report as an aligned table with a summary line.
func (r Report) WriteTo(w io.Writer) (int64, error) {
	var b strings.Builder
	tw := tabwriter.NewWriter(&b, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "CHECK\tRESULT\tDETAIL")
	for _, it := range r.Items {
		fmt.Fprintf(tw, "%s\t%s\t%s\n", it.Check, it.Result, strings.ReplaceAll(it.Detail, "\n", " "))
	}
	tw.Flush()
	fmt.Fprintf(&b, "\n%d passed, %d failed, %d warnings, %d skipped\n", r.Count(Pass), r.Count(Fail), r.Count(Warn), r.Count(Skip))
	n, err := io.WriteString(w, b.String())
	return int64(n), err
}

func (r Report) String() string {
	var b strings.Builder
	_, _ = r.WriteTo(&b)
	return b.String()
}
