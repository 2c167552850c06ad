package console

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/cloisterhq/cloister/ledger/challenge"
	lclient "github.com/cloisterhq/cloister/ledger/client"
)

// The page of proof of isolated execution (docs/piee.md): each node's
// score as the ledger tallies it, the published challenge operators, and
// the latest verdicts decoded — each with what its outcome shows for the
// node's isolate class. A viewer recomputes any verdict from the signed
// reveals with `cloister piee verdicts`.

type pieeData struct {
	Ledger         *ledgerInfo            `json:"ledger"`
	Scores         *lclient.PieeScores    `json:"scores,omitempty"`
	ScoresError    string                 `json:"scores_error,omitempty"`
	Operators      *lclient.PieeOperators `json:"operators,omitempty"`
	OperatorsError string                 `json:"operators_error,omitempty"`
	Verdicts       []verdictRow           `json:"verdicts"`
	Unread         []string               `json:"unread,omitempty"`
}

func (pieeData) title() string { return "PIEE" }

type verdictRow struct {
	entryHead
	challenge.Verdict
}

const pieeVerdicts = 40

func (s *Server) loadPiee(r *http.Request) (any, error) {
	if s.opts.Ledger == nil {
		return nil, notFound("this node records on no ledger (it runs with --no-ledger)")
	}
	ctx, cancel := context.WithTimeout(r.Context(), 15*time.Second)
	defer cancel()
	d := pieeData{Ledger: s.ledgerInfo(ctx), Verdicts: []verdictRow{}}
	var err error
	if d.Scores, err = s.opts.Ledger.PieeScores(ctx); err != nil {
		d.ScoresError = ruleHint(err, 9, "no proof of isolated execution")
	}
	if d.Operators, err = s.opts.Ledger.PieeOperators(ctx); err != nil {
		d.OperatorsError = ruleHint(err, 9, "no proof of isolated execution")
	}
	ids, _ := s.index.list(challenge.KindVerdict, 1<<63-1, pieeVerdicts)
	for _, i := range ids {
		e, err := s.opts.Ledger.Get(ctx, i)
		if err != nil {
			d.Unread = append(d.Unread, fmt.Sprintf("entry %d: %v", i, err))
			continue
		}
		v, err := challenge.DecodeVerdict(e.Signed.Entry.Body)
		if err != nil {
			d.Unread = append(d.Unread, fmt.Sprintf("entry %d: %v", i, err))
			continue
		}
		d.Verdicts = append(d.Verdicts, verdictRow{entryHead{i, e.Signed.Entry.Submitter, e.Signed.Entry.Time}, *v})
	}
	return d, nil
}
