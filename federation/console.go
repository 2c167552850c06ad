package federation

import (
	"embed"
	"io/fs"
	"net/http"

	"github.com/cloisterhq/cloister/console"
)

//go:embed consoletmpl/plans.html
var consoleTemplates embed.FS

// PlansPage is the console's plans page (/ui/plans, JSON at
// /ui/api/plans): the plans this node received, those awaiting a person
// first.
type PlansPage struct {
	Pending []PlanRecord `json:"pending"`
	Decided []PlanRecord `json:"decided"`
}

// ConsoleSection is the console page of the plans this holder received:
// read from the holder in the node's process, so the console holds no
// organisation key and decides nothing; each pending plan shows the
// command a person of the organisation runs to grant or deny it.
func (h *Holder) ConsoleSection() console.Section {
	tmpl, _ := fs.Sub(consoleTemplates, "consoletmpl")
	return console.Section{Path: "plans", Title: "Plans", Template: "plans", Templates: tmpl,
		Load: func(*http.Request) (any, error) {
			p := PlansPage{Pending: []PlanRecord{}, Decided: []PlanRecord{}}
			for _, r := range h.plans.list(true) {
				if r.State == PlanPending {
					p.Pending = append(p.Pending, r)
				} else {
					p.Decided = append(p.Decided, r)
				}
			}
			return p, nil
		}}
}
