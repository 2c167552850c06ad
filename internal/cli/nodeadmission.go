package cli

import (
	"crypto/ed25519"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/cloisterhq/cloister/internal/bytesize"
	"github.com/cloisterhq/cloister/keys"
	"github.com/cloisterhq/cloister/node"
)

// admissionFlags are cloister node's admission and quota flags.
type admissionFlags struct {
	mode                            string
	allowOpen                       bool
	admitKeys, issuers              []string
	maxSessions, maxSessionsCreator int
	maxStored, maxStoredCreator     string
	rate, rateCreator               float64
	idle                            time.Duration
	minFree                         string
}

func (a *admissionFlags) add(f *pflag.FlagSet) {
	modes := make([]string, len(node.Modes))
	for i, m := range node.Modes {
		modes[i] = string(m)
	}
	q := node.DefaultQuotas
	f.StringVar(&a.mode, "admission", string(node.AdmitOpen), "who may create sessions: "+strings.Join(modes, ", "))
	f.BoolVar(&a.allowOpen, "allow-open", false, "with --admission open, serve on an address beyond loopback anyway (anyone who reaches it may create sessions)")
	f.StringArrayVar(&a.admitKeys, "admit-key", nil, "with --admission allow-list: a creator key (ed25519:...) that may create sessions (repeatable)")
	f.StringArrayVar(&a.issuers, "token-issuer", nil, "with --admission token: an operator key (ed25519:...) whose admission tokens the node accepts (repeatable)")
	f.IntVar(&a.maxSessions, "max-sessions", q.MaxSessions, "sessions the node holds at once, all creators together")
	f.IntVar(&a.maxSessionsCreator, "max-sessions-per-creator", q.MaxSessionsPerCreator, "sessions one creator holds at once")
	f.StringVar(&a.maxStored, "max-stored", sizeText(q.MaxStoredBytes), "bytes the sessions hold on disk, all creators together")
	f.StringVar(&a.maxStoredCreator, "max-stored-per-creator", sizeText(q.MaxStoredBytesPerCreator), "bytes one creator's sessions hold on disk")
	f.Float64Var(&a.rate, "create-rate", q.CreateRate, "sessions created per second, all creators together (bursts of twice as many)")
	f.Float64Var(&a.rateCreator, "create-rate-per-creator", q.CreateRatePerCreator, "sessions one creator creates per second (bursts of twice as many)")
	f.DurationVar(&a.idle, "session-idle", q.SessionIdle, "erase a session after this long without a step (sessions whose policy expired are erased too)")
	f.StringVar(&a.minFree, "min-free", sizeText(q.MinFreeBytes), "free space kept on the data directory's file system; below it new sessions and uploads are refused")
}

// parse checks the flags and returns the node's admission configuration
// (Members is set by the caller, from the ledger).
func (a *admissionFlags) parse(noLedger bool) (node.Admission, error) {
	adm := node.Admission{Mode: node.AdmissionMode(a.mode), AllowOpen: a.allowOpen}
	if !slices.Contains(node.Modes, adm.Mode) {
		return adm, usageError("node: --admission %q: want one of %v", a.mode, node.Modes)
	}
	parseKeys := func(flag string, ss []string) ([]ed25519.PublicKey, error) {
		var out []ed25519.PublicKey
		for _, s := range ss {
			k, err := keys.ParseSigningKey(s)
			if err != nil {
				return nil, usageError("node: --%s %q: %v", flag, s, err)
			}
			out = append(out, k)
		}
		return out, nil
	}
	var err error
	if adm.AllowKeys, err = parseKeys("admit-key", a.admitKeys); err != nil {
		return adm, err
	}
	if adm.TokenIssuers, err = parseKeys("token-issuer", a.issuers); err != nil {
		return adm, err
	}
	switch {
	case adm.Mode == node.AdmitAllowList && len(adm.AllowKeys) == 0:
		return adm, usageError("node: --admission allow-list needs at least one --admit-key")
	case adm.Mode == node.AdmitToken && len(adm.TokenIssuers) == 0:
		return adm, usageError("node: --admission token needs at least one --token-issuer")
	case adm.Mode == node.AdmitConsortium && noLedger:
		return adm, usageError("node: --admission consortium reads the members from the ledger; it excludes --no-ledger")
	case adm.Mode != node.AdmitAllowList && len(adm.AllowKeys) > 0, adm.Mode != node.AdmitToken && len(adm.TokenIssuers) > 0:
		return adm, usageError("node: --admit-key goes with --admission allow-list, --token-issuer with --admission token")
	}
	q := &adm.Quotas
	q.MaxSessions, q.MaxSessionsPerCreator = a.maxSessions, a.maxSessionsCreator
	q.CreateRate, q.CreateRatePerCreator = a.rate, a.rateCreator
	q.SessionIdle = a.idle
	for _, sz := range []struct {
		flag, val string
		dst       *int64
	}{{"max-stored", a.maxStored, &q.MaxStoredBytes}, {"max-stored-per-creator", a.maxStoredCreator, &q.MaxStoredBytesPerCreator}, {"min-free", a.minFree, &q.MinFreeBytes}} {
		v, err := bytesize.Parse(sz.val)
		if err != nil || v <= 0 {
			return adm, usageError("node: --%s %q: want a positive size such as 64GiB", sz.flag, sz.val)
		}
		*sz.dst = v
	}
	if q.MaxSessions < 1 || q.MaxSessionsPerCreator < 1 || q.CreateRate <= 0 || q.CreateRatePerCreator <= 0 || q.SessionIdle <= 0 {
		return adm, usageError("node: --max-sessions, --max-sessions-per-creator, --create-rate, --create-rate-per-creator and --session-idle must be positive")
	}
	return adm, nil
}

// sizeText writes n in the largest binary unit that divides it, the form
// bytesize.Parse reads back.
func sizeText(n int64) string {
	for _, u := range []struct {
		s string
		m int64
	}{{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if n >= u.m && n%u.m == 0 {
			return fmt.Sprintf("%d%s", n/u.m, u.s)
		}
	}
	return fmt.Sprint(n)
}
