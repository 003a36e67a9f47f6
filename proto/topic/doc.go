package topic

import (
	"fmt"
	"strings"
)

// MarkdownTable renders the table for docs/protocol.md; a test keeps the
// document in step with the code.
func (s Scheme) MarkdownTable() string {
	var b strings.Builder
	b.WriteString("| topic | publisher | subscriber | QoS | retained | message | max size | what |\n")
	b.WriteString("|---|---|---|---|---|---|---|---|\n")
	for _, e := range Table {
		var t string
		switch e.Scope {
		case PerDevice:
			t = s.pattern(e, "{device}")
		case PerBundle:
			t = s.pattern(e, "{bundle}")
		default:
			t = s.pattern(e, "")
		}
		ret := "no"
		if e.Retained {
			ret = "yes"
		}
		msg := "`" + e.Message + "`"
		fmt.Fprintf(&b, "| `%s` | %s | %s | %d | %s | %s | %d KiB | %s |\n",
			t, e.Publisher, e.Subscriber, e.QoS, ret, msg, e.MaxSize>>10, e.Doc)
	}
	return b.String()
}
