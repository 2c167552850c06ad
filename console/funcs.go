package console

import (
	"encoding/json"
	"fmt"
	"html/template"
	"strings"
	"time"
)

func (s *Server) funcs() template.FuncMap {
	return template.FuncMap{
		"short": func(s string) string {
			if len(s) > 20 {
				return s[:16] + "…"
			}
			return s
		},
		"when": func(t time.Time) string {
			if t.IsZero() {
				return "—"
			}
			return t.UTC().Format("2006-01-02 15:04:05.000Z")
		},
		"ago": func(t time.Time) string {
			if t.IsZero() {
				return ""
			}
			return time.Since(t).Round(time.Second).String()
		},
		"unixms": func(t time.Time) int64 { return t.UnixMilli() },
		"int64":  func(n uint64) int64 { return int64(min(n, 1<<63-1)) },
		"join":   strings.Join,
		"dict": func(kv ...any) map[string]any {
			m := map[string]any{}
			for i := 0; i+1 < len(kv); i += 2 {
				k, _ := kv[i].(string)
				m[k] = kv[i+1]
			}
			return m
		},
		"bytes": func(n int64) string {
			switch {
			case n >= 1<<30:
				return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
			case n >= 1<<20:
				return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
			case n >= 1<<10:
				return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
			}
			return fmt.Sprintf("%d B", n)
		},
		"json": func(v any) string {
			b, err := json.MarshalIndent(v, "", "  ")
			if err != nil {
				return err.Error()
			}
			return string(b)
		},
		"text":    func(b []byte) string { return string(b) },
		"isEvent": func(kind string) bool { return kind == "session.event" },
		"stepLabel": func(status string) string {
			switch status {
			case "done":
				return "passed"
			case "current":
				return "now"
			case "skipped":
				return "not taken"
			}
			return "to come"
		},
	}
}
