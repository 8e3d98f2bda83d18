package fleetcmd

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"unicode"
)

// Render writes one row per box and a summary line.
func Render(w io.Writer, name string, rs []Result) {
	fmt.Fprintf(w, "%s to %d gateways: %s\n", name, len(rs), Summary(rs))
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "DEVICE\tOUTCOME\tDETAIL")
	for _, r := range rs {
		d := printable(r.Detail)
		if d == "" {
			d = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\n", r.Device, r.Outcome, d)
	}
	_ = tw.Flush()
}

// maxDetail bounds a detail in the table; --json has it in full.
const maxDetail = 120

// printable keeps a gateway's text from steering the terminal: control and
// format characters become '?', and it is cut to maxDetail characters.
func printable(s string) string {
	var b strings.Builder
	for i, c := range []rune(s) {
		if i == maxDetail {
			b.WriteString("…")
			break
		}
		if unicode.IsControl(c) || unicode.Is(unicode.Cf, c) || c == unicode.ReplacementChar {
			c = '?'
		}
		b.WriteRune(c)
	}
	return b.String()
}
