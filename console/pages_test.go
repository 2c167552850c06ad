package console

import (
	"bytes"
	"encoding/json"
	"html/template"
	"strings"
	"testing"
	"time"

	"github.com/cloisterhq/cloister/ledger/acl"
	"github.com/cloisterhq/cloister/ledger/challenge"
	lclient "github.com/cloisterhq/cloister/ledger/client"
	"github.com/cloisterhq/cloister/ledger/model"
)

// The network pages' templates render every field they name with full
// data (the browser and demo tests render them against real ledgers; a
// template error would otherwise surface only there).
func TestNetworkPagesRender(t *testing.T) {
	s := &Server{}
	var err error
	if s.tmpl, err = template.New("").Funcs(s.funcs()).ParseFS(templateFS, "templates/*.html"); err != nil {
		t.Fatal(err)
	}
	key := "ed25519:" + strings.Repeat("A", 43) + "="
	hex := strings.Repeat("ab", 32)
	digest := "sha256:" + hex
	one := uint64(7)
	now := time.Now()
	pm := lclient.PublishedModel{Model: model.Model{Name: "org/m", Version: 2, ProgramSHA256: hex, Nodes: []string{key, key},
		Functions: []model.Function{{Name: "count", Params: json.RawMessage(`{"type":"object"}`), Result: json.RawMessage(`{"type":"integer"}`), Datasets: []string{"patients"}}},
		Datasets:  []model.Dataset{{Name: "patients", Schema: json.RawMessage(`{"type":"object"}`)}},
		Output:    model.Output{MinRows: 5, Budget: 10}, Approval: model.Approval{Mode: model.ApprovalAutomatic, Allow: []string{key}}, Terms: "research only"},
		Owner: key, Index: 3, Revoked: 9, Calls: 4, Endpoints: []string{"https://127.0.0.1:1", "https://127.0.0.1:2"}}
	rows := []entryRow{{Index: 4, entryMeta: entryMeta{Kind: model.KindCalled, Submitter: key, Time: "t"}}}
	pages := map[string]any{
		"models": modelsData{Models: []lclient.PublishedModel{pm}, Shown: []modelView{{PublishedModel: pm,
			Funcs: []funcView{{Name: "count", Params: "{}", Result: "{}", Datasets: []string{"patients"}}}, Sets: []setView{{"patients", "{}"}}}}, Calls: rows},
		"market": marketData{Ledger: &ledgerInfo{},
			Offers: &lclient.OfferList{AsOf: now, Offers: []lclient.LiveOffer{{Node: key, Index: 1, Published: now, Expires: now, Endpoint: "https://x", Organisation: key,
				Offer: lclient.Offer{Classes: []string{"software"}, Memory: 1 << 30, Cores: 2, Concurrency: 1, Price: "0.001", Regions: []string{"eu"}}}}},
			Open:      &lclient.MarketOpen{Requests: []lclient.RequestState{{ID: hex, Index: 2, Consumer: key, Node: key, Live: 3, Session: "s", Failed: []string{key}}}},
			Records:   &lclient.MarketRecords{Records: []lclient.ProviderRecord{{Node: key, Runs: 3, Failures: 1, Recent: []bool{true, false}, LatencyMs: []uint64{5, 7}}}},
			Providers: []providerRow{{ProviderRecord: lclient.ProviderRecord{Node: key, Runs: 3, Failures: 1, Recent: []bool{true}, LatencyMs: []uint64{5}}, MedianMs: 5, RecentFailed: 1}},
			Recent:    rows},
		"piee": pieeData{Ledger: &ledgerInfo{},
			Scores:    &lclient.PieeScores{Latest: 3, Scores: []lclient.PieeScore{{Node: key, Passed: 2, Failed: 1, Verified: 4}}},
			Operators: &lclient.PieeOperators{Operators: []lclient.PieeOperator{{Operator: challenge.Operator{Name: "matmul", ProgramSHA256: hex, Args: []string{"matmul", "8"}, Class: "software", Memory: 1 << 20, TimeoutMS: 2000}, Index: 2, Publisher: key}}},
			Verdicts:  []verdictRow{{entryHead{5, key, "t"}, challenge.Verdict{Epoch: 1, Node: key, Outcome: "pass", Agree: []string{key, key}, Proves: "availability"}}},
			Unread:    []string{"entry 6: gone"}},
		"keys": keysData{Ledger: &ledgerInfo{}, Artifacts: []artifactRow{{Digest: digest, Owner: key, Index: 1, Grants: 1}}, More: true},
		"artifact": artifactData{Digest: digest,
			Registrations: []registration{{entryHead{1, key, "t"}, acl.Artifact{Digest: digest, PlaintextSHA256: hex, Brokers: []string{key, key}, Threshold: 2}}},
			Delegations:   []delegation{{entryHead: entryHead{2, key, "t"}, Delegation: acl.Delegation{Delegate: key, NotAfter: "t", Limits: acl.Limits{Classes: []string{"software"}, MaxUses: 1, MaxDurationSeconds: 60, MaxGrants: 3}}, RevokedBy: 5}},
			Grants: []grant{{entryHead: entryHead{3, key, "t"}, Grant: acl.Grant{Artifact: digest, Owner: key, Grantee: acl.Grantee{Node: key, Session: "s"}, NotAfter: "t", MaxUses: 1, Delegation: &one}, RevokedBy: 6, Releases: 1},
				{entryHead: entryHead{4, key, "t"}, Grant: acl.Grant{Grantee: acl.Grantee{Class: "software", Measurements: []string{hex}}, NotBefore: "t", NotAfter: "t"}}},
			Releases: []release{{entryHead{8, key, "t"}, acl.Release{Artifact: digest, Grant: 3, Node: key, Session: "s", Class: "software", EvidenceSHA256: hex, Share: 1}}},
			Unread:   []string{"entry 9: gone"}, Truncated: true},
	}
	for name, data := range pages {
		var buf bytes.Buffer
		if err := s.tmpl.ExecuteTemplate(&buf, name, &pageData{Data: data, Scripts: map[string]string{}}); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
}
