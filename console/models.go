package console

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"time"

	lclient "github.com/cloisterhq/cloister/ledger/client"
)

// The federation's page: the computation models organisations published
// on the ledger, each with its functions' parameter and result schemas,
// the datasets they read (names and schemas, never contents), its output
// rules and who may call it, and the receipts of the calls its holders'
// nodes answered.

type modelsData struct {
	Ledger *ledgerInfo              `json:"ledger"`
	Models []lclient.PublishedModel `json:"models"`
	Shown  []modelView              `json:"-"`
	Error  string                   `json:"error,omitempty"`
	Calls  []entryRow               `json:"recent_entries"`
}

func (modelsData) title() string { return "Models" }

// modelView is a model as the page shows it: schemas indented.
type modelView struct {
	lclient.PublishedModel
	Funcs []funcView
	Sets  []setView
}

type funcView struct {
	Name, Params, Result string
	Datasets             []string
}

type setView struct{ Name, Schema string }

const modelsRecent = 50

func modelKind(k string) bool { return strings.HasPrefix(k, "model.") }

func (s *Server) loadModels(r *http.Request) (any, error) {
	if s.opts.Ledger == nil {
		return nil, notFound("this node records on no ledger (it runs with --no-ledger)")
	}
	ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
	defer cancel()
	d := modelsData{Ledger: s.ledgerInfo(ctx), Models: []lclient.PublishedModel{}, Calls: []entryRow{}}
	if list, err := s.opts.Ledger.Models(ctx); err != nil {
		d.Error = ruleHint(err, 7, "no published models")
	} else {
		d.Models = list.Models
		for _, m := range list.Models {
			v := modelView{PublishedModel: m}
			for _, f := range m.Functions {
				v.Funcs = append(v.Funcs, funcView{Name: f.Name, Params: indentJSON(f.Params), Result: indentJSON(f.Result), Datasets: f.Datasets})
			}
			for _, ds := range m.Datasets {
				v.Sets = append(v.Sets, setView{ds.Name, indentJSON(ds.Schema)})
			}
			d.Shown = append(d.Shown, v)
		}
	}
	ids, _ := s.index.listMatch(modelKind, 1<<63-1, modelsRecent)
	for _, i := range ids {
		if m, ok := s.index.meta(i); ok {
			d.Calls = append(d.Calls, entryRow{i, m})
		}
	}
	return d, nil
}

func indentJSON(b json.RawMessage) string {
	var out bytes.Buffer
	if json.Indent(&out, b, "", "  ") != nil {
		return string(b)
	}
	return out.String()
}
