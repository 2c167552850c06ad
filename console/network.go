package console

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/cloisterhq/cloister/ledger/acl"
	lclient "github.com/cloisterhq/cloister/ledger/client"
)

// The pages of the network's capabilities: the marketplace (offers,
// requests, providers' records) and the key releases per sealed artifact.
// Both read the ledger through its public API, each entry checked by the
// ledger client; what they list is the ledger's record, not this node's
// word.

// --- market

type marketData struct {
	Ledger       *ledgerInfo             `json:"ledger"`
	Offers       *lclient.OfferList      `json:"offers,omitempty"`
	OffersError  string                  `json:"offers_error,omitempty"`
	Open         *lclient.MarketOpen     `json:"open_requests,omitempty"`
	OpenError    string                  `json:"open_requests_error,omitempty"`
	Records      *lclient.MarketRecords  `json:"provider_records,omitempty"`
	RecordsError string                  `json:"provider_records_error,omitempty"`
	Providers    []providerRow           `json:"-"`
	Recent       []entryRow              `json:"recent_entries"`
	Nodes        map[string]providerInfo `json:"-"`
}

func (marketData) title() string { return "Market" }

// providerRow is a provider's record as the page shows it.
type providerRow struct {
	lclient.ProviderRecord
	Endpoint     string
	Organisation string
	MedianMs     uint64
	RecentFailed int
}

type providerInfo struct{ Endpoint, Organisation string }

// marketKinds are the kinds the market page lists among recent entries.
func marketKind(k string) bool {
	return strings.HasPrefix(k, "market.") || k == "offer" || k == "node.endpoint"
}

const marketRecent = 50

func (s *Server) loadMarket(r *http.Request) (any, error) {
	if s.opts.Ledger == nil {
		return nil, notFound("this node records on no ledger (it runs with --no-ledger)")
	}
	ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
	defer cancel()
	d := marketData{Ledger: s.ledgerInfo(ctx), Recent: []entryRow{}, Nodes: map[string]providerInfo{}}
	var err error
	if d.Offers, err = s.opts.Ledger.Offers(ctx); err != nil {
		d.OffersError = ruleHint(err, 5, "no marketplace")
	} else {
		for _, o := range d.Offers.Offers {
			d.Nodes[o.Node] = providerInfo{o.Endpoint, o.Organisation}
		}
	}
	if d.Open, err = s.opts.Ledger.MarketOpen(ctx); err != nil {
		d.OpenError = ruleHint(err, 5, "no marketplace")
	}
	if d.Records, err = s.opts.Ledger.MarketRecords(ctx); err != nil {
		d.RecordsError = ruleHint(err, 5, "no marketplace")
	} else {
		for _, rec := range d.Records.Records {
			row := providerRow{ProviderRecord: rec, Endpoint: d.Nodes[rec.Node].Endpoint, Organisation: d.Nodes[rec.Node].Organisation}
			if n := len(rec.LatencyMs); n > 0 {
				l := slices.Clone(rec.LatencyMs)
				slices.Sort(l)
				row.MedianMs = l[n/2]
			}
			for _, f := range rec.Recent {
				if f {
					row.RecentFailed++
				}
			}
			d.Providers = append(d.Providers, row)
		}
	}
	ids, _ := s.index.listMatch(marketKind, 1<<63-1, marketRecent)
	for _, i := range ids {
		if m, ok := s.index.meta(i); ok {
			d.Recent = append(d.Recent, entryRow{i, m})
		}
	}
	return d, nil
}

// ruleHint is a ledger error as a page says it: a ledger whose rules
// predate a capability has no API for it.
func ruleHint(err error, version int, what string) string {
	var apiErr *lclient.APIError
	if errors.As(err, &apiErr) && apiErr.Code == "not_found" {
		return fmt.Sprintf("%v (a ledger running rules older than version %d has %s)", err, version, what)
	}
	return err.Error()
}

// --- key releases

type keysData struct {
	Ledger    *ledgerInfo   `json:"ledger"`
	Artifacts []artifactRow `json:"artifacts"`
	More      bool          `json:"more,omitempty"` // older artifacts are not listed
}

func (keysData) title() string { return "Key releases" }

type artifactRow struct {
	Digest      string `json:"digest"`
	Owner       string `json:"owner"`
	Index       uint64 `json:"index"`
	Time        string `json:"time"`
	Delegations int    `json:"delegations"`
	Grants      int    `json:"grants"`
	Revocations int    `json:"revocations"`
	Releases    int    `json:"releases"`
}

const keysListed = 200

func (s *Server) loadKeys(r *http.Request) (any, error) {
	if s.opts.Ledger == nil {
		return nil, notFound("this node records on no ledger (it runs with --no-ledger)")
	}
	d := keysData{Ledger: s.ledgerInfo(r.Context()), Artifacts: []artifactRow{}}
	ids, older := s.index.list(acl.KindArtifactRegistered, 1<<63-1, keysListed)
	d.More = older != 0
	for _, i := range ids {
		m, ok := s.index.meta(i)
		if !ok {
			continue
		}
		row := artifactRow{Index: i, Owner: m.Submitter, Time: m.Time}
		row.Digest = s.index.artifactAtRegistration(i)
		if row.Digest == "" {
			continue
		}
		for _, j := range s.index.lookup(tokArtifact + row.Digest) {
			jm, _ := s.index.meta(j)
			switch jm.Kind {
			case acl.KindDelegated:
				row.Delegations++
			case acl.KindGranted:
				row.Grants++
			case acl.KindRevoked:
				row.Revocations++
			case acl.KindKeyReleased:
				row.Releases++
			}
		}
		d.Artifacts = append(d.Artifacts, row)
	}
	return d, nil
}

type artifactData struct {
	Digest        string         `json:"digest"`
	Registrations []registration `json:"registrations"`
	Delegations   []delegation   `json:"delegations"`
	Grants        []grant        `json:"grants"`
	Releases      []release      `json:"releases"`
	Unread        []string       `json:"unread,omitempty"` // entries that could not be read or decoded
	Truncated     bool           `json:"truncated,omitempty"`
}

func (d artifactData) title() string { return "Artifact " + d.Digest }

type entryHead struct {
	Index     uint64 `json:"index"`
	Submitter string `json:"submitter"`
	Time      string `json:"time"`
}

type registration struct {
	entryHead
	acl.Artifact
}

type delegation struct {
	entryHead
	acl.Delegation
	RevokedBy uint64 `json:"revoked_by,omitempty"`
}

type grant struct {
	entryHead
	acl.Grant
	RevokedBy uint64 `json:"revoked_by,omitempty"`
	Releases  int    `json:"releases"`
}

type release struct {
	entryHead
	acl.Release
}

// artifactEntries bounds the entries read for one artifact's page.
const artifactEntries = 500

func (s *Server) loadArtifact(r *http.Request) (any, error) {
	if s.opts.Ledger == nil {
		return nil, notFound("this node records on no ledger (it runs with --no-ledger)")
	}
	digest := r.PathValue("digest")
	if !validArtifact(digest) {
		return nil, badRequest("artifact %.80q: want sha256: and 64 lower-case hex digits", digest)
	}
	ids := s.index.lookup(tokArtifact + digest)
	if len(ids) == 0 {
		return nil, notFound("no ledger entry names artifact %s (the explorer has indexed what the ledger committed so far)", digest)
	}
	d := artifactData{Digest: digest, Registrations: []registration{}, Delegations: []delegation{}, Grants: []grant{}, Releases: []release{}}
	if len(ids) > artifactEntries {
		ids, d.Truncated = ids[len(ids)-artifactEntries:], true
	}
	ctx, cancel := context.WithTimeout(r.Context(), 20*time.Second)
	defer cancel()
	grants, delegations := map[uint64]int{}, map[uint64]int{}
	type revocation struct {
		by uint64
		r  acl.Revocation
	}
	var revs []revocation
	for _, i := range ids {
		e, err := s.opts.Ledger.Get(ctx, i)
		if err != nil {
			d.Unread = append(d.Unread, fmt.Sprintf("entry %d: %v", i, err))
			continue
		}
		se := e.Signed
		h := entryHead{Index: i, Submitter: se.Entry.Submitter, Time: se.Entry.Time}
		body := []byte(se.Entry.Body)
		var derr error
		switch string(se.Entry.Kind) {
		case acl.KindArtifactRegistered:
			var a acl.Artifact
			if derr = acl.Decode(acl.KindArtifactRegistered, body, &a); derr == nil {
				d.Registrations = append(d.Registrations, registration{h, a})
			}
		case acl.KindDelegated:
			var v acl.Delegation
			if derr = acl.Decode(acl.KindDelegated, body, &v); derr == nil {
				delegations[i] = len(d.Delegations)
				d.Delegations = append(d.Delegations, delegation{entryHead: h, Delegation: v})
			}
		case acl.KindGranted:
			var v acl.Grant
			if derr = acl.Decode(acl.KindGranted, body, &v); derr == nil {
				grants[i] = len(d.Grants)
				d.Grants = append(d.Grants, grant{entryHead: h, Grant: v})
			}
		case acl.KindRevoked:
			var v acl.Revocation
			if derr = acl.Decode(acl.KindRevoked, body, &v); derr == nil {
				revs = append(revs, revocation{i, v})
			}
		case acl.KindKeyReleased:
			var v acl.Release
			if derr = acl.Decode(acl.KindKeyReleased, body, &v); derr == nil {
				d.Releases = append(d.Releases, release{h, v})
			}
		}
		if derr != nil {
			d.Unread = append(d.Unread, fmt.Sprintf("entry %d: %v", i, derr))
		}
	}
	// The ledger accepted only revocations by the owner of what they end;
	// the page shows each against its grant or delegation.
	for _, rv := range revs {
		if rv.r.Grant != nil {
			if k, ok := grants[*rv.r.Grant]; ok && d.Grants[k].RevokedBy == 0 {
				d.Grants[k].RevokedBy = rv.by
			}
		}
		if rv.r.Delegation != nil {
			if k, ok := delegations[*rv.r.Delegation]; ok && d.Delegations[k].RevokedBy == 0 {
				d.Delegations[k].RevokedBy = rv.by
			}
		}
	}
	for _, rl := range d.Releases {
		if k, ok := grants[rl.Grant]; ok {
			d.Grants[k].Releases++
		}
	}
	// Newest first, as the other lists.
	sort.SliceStable(d.Grants, func(i, j int) bool { return d.Grants[i].Index > d.Grants[j].Index })
	sort.SliceStable(d.Delegations, func(i, j int) bool { return d.Delegations[i].Index > d.Delegations[j].Index })
	sort.SliceStable(d.Releases, func(i, j int) bool { return d.Releases[i].Index > d.Releases[j].Index })
	return d, nil
}
