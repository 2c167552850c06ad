package node

import (
	"fmt"
	"time"

	"connectrpc.com/connect"
	"golang.org/x/sys/unix"
	"golang.org/x/time/rate"

	cloisterv1 "github.com/cloisterhq/cloister/api/cloister/v1"
)

// Quotas bound what creators hold on a node, each and all together. A
// zero field takes its default.
type Quotas struct {
	// MaxSessions bounds the sessions the node holds (open, finished or
	// failed, until closed or swept). Default 10000.
	MaxSessions int
	// MaxSessionsPerCreator bounds those of one creator. Default 1000.
	MaxSessionsPerCreator int
	// MaxStoredBytes bounds the bytes sessions hold on disk: canonical
	// policies, sealed programs and inputs, sealed outputs. Default 64 GiB.
	MaxStoredBytes int64
	// MaxStoredBytesPerCreator bounds those of one creator's sessions.
	// Default 16 GiB.
	MaxStoredBytesPerCreator int64
	// CreateRate bounds sessions created per second on the node (bursts
	// of twice as many). Default 100.
	CreateRate float64
	// CreateRatePerCreator bounds those of one creator. Default 20.
	CreateRatePerCreator float64
	// SessionIdle is how long a session may go without a step before the
	// sweeper erases it (a run in progress is not idle). Default 24 h.
	SessionIdle time.Duration
	// SweepEvery is how often the sweeper looks for expired and idle
	// sessions. Default 1 min.
	SweepEvery time.Duration
	// MinFreeBytes is the free space kept on the data directory's file
	// system for the sessions already admitted and the ledger: below it,
	// new sessions and uploads are refused. Default 256 MiB.
	MinFreeBytes int64
	// MaxCreators bounds the creators whose counts are kept (those with
	// nothing stored and a full rate allowance are forgotten first).
	// Default 65536.
	MaxCreators int
}

// DefaultQuotas are the values zero Quotas fields take.
var DefaultQuotas = Quotas{
	MaxSessions:              10000,
	MaxSessionsPerCreator:    1000,
	MaxStoredBytes:           64 << 30,
	MaxStoredBytesPerCreator: 16 << 30,
	CreateRate:               100,
	CreateRatePerCreator:     20,
	SessionIdle:              24 * time.Hour,
	SweepEvery:               time.Minute,
	MinFreeBytes:             256 << 20,
	MaxCreators:              1 << 16,
}

func (q Quotas) withDefaults() Quotas {
	d := DefaultQuotas
	orDefault(&q.MaxSessions, d.MaxSessions)
	orDefault(&q.MaxSessionsPerCreator, d.MaxSessionsPerCreator)
	orDefault(&q.MaxStoredBytes, d.MaxStoredBytes)
	orDefault(&q.MaxStoredBytesPerCreator, d.MaxStoredBytesPerCreator)
	orDefault(&q.CreateRate, d.CreateRate)
	orDefault(&q.CreateRatePerCreator, d.CreateRatePerCreator)
	orDefault(&q.SessionIdle, d.SessionIdle)
	orDefault(&q.SweepEvery, d.SweepEvery)
	orDefault(&q.MinFreeBytes, d.MinFreeBytes)
	orDefault(&q.MaxCreators, d.MaxCreators)
	return q
}

// orDefault sets *v to def unless it is positive.
func orDefault[T int | int64 | float64 | time.Duration](v *T, def T) {
	if *v <= 0 {
		*v = def
	}
}

// usage is what one creator holds.
type usage struct {
	sessions int
	stored   int64
	lim      *rate.Limiter
}

type rateLimits struct {
	total                *rate.Limiter
	perCreator           rate.Limit
	burst, creatorBursts int
}

func burstOf(r float64) int { return max(1, int(2*r)) }

func newRateLimits(q Quotas) rateLimits {
	return rateLimits{total: rate.NewLimiter(rate.Limit(q.CreateRate), burstOf(q.CreateRate)),
		perCreator: rate.Limit(q.CreateRatePerCreator), burst: burstOf(q.CreateRate), creatorBursts: burstOf(q.CreateRatePerCreator)}
}

// usageOf returns c's usage, making it; callers hold a.mu.
func (a *admitter) usageOf(c creator, now time.Time) (*usage, error) {
	if u := a.usage[c]; u != nil {
		return u, nil
	}
	if len(a.usage) >= a.q.MaxCreators {
		for k, u := range a.usage {
			if u.sessions == 0 && u.stored == 0 && u.lim.TokensAt(now) >= float64(a.rates.creatorBursts) {
				delete(a.usage, k)
			}
		}
		if len(a.usage) >= a.q.MaxCreators {
			return nil, refused(connect.CodeResourceExhausted, ruleCreatorsMemory, "the node keeps the quotas of %d creators, its limit; retry later", a.q.MaxCreators)
		}
	}
	u := &usage{lim: rate.NewLimiter(a.rates.perCreator, a.rates.creatorBursts)}
	a.usage[c] = u
	return u, nil
}

// reserveSession counts a new session of c holding bytes, or refuses it
// by the first quota it would exceed. Rates are consumed only by sessions
// that pass every other check; then the request's nonce is remembered
// (auth: the create request's signature, nil for an unsigned one), and a
// replay gives the rates back.
func (a *admitter) reserveSession(c creator, bytes int64, auth *cloisterv1.SignedRequest, now time.Time) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	u, err := a.usageOf(c, now)
	if err != nil {
		return err
	}
	q := a.q
	switch {
	case a.sessions >= q.MaxSessions:
		return refused(connect.CodeResourceExhausted, ruleMaxSessions, "the node holds %d sessions, its limit; retry after some are closed (the operator raises --max-sessions)", a.sessions)
	case u.sessions >= q.MaxSessionsPerCreator:
		return refused(connect.CodeResourceExhausted, ruleCreatorSess, "creator %s holds %d sessions, the limit per creator; close some (the operator raises --max-sessions-per-creator)", c, u.sessions)
	}
	if err := a.checkBytes(c, u, bytes); err != nil {
		return err
	}
	rc := u.lim.ReserveN(now, 1)
	if d := rc.DelayFrom(now); d > 0 {
		rc.CancelAt(now)
		return refused(connect.CodeResourceExhausted, ruleCreatorRate, "creator %s creates more than %g sessions/s; retry in %s (the operator raises --create-rate-per-creator)", c, q.CreateRatePerCreator, d.Round(time.Millisecond))
	}
	rt := a.rates.total.ReserveN(now, 1)
	if d := rt.DelayFrom(now); d > 0 {
		rt.CancelAt(now)
		rc.CancelAt(now)
		return refused(connect.CodeResourceExhausted, ruleCreateRate, "the node creates at most %g sessions/s; retry in %s (the operator raises --create-rate)", q.CreateRate, d.Round(time.Millisecond))
	}
	if err := a.admitNonce(auth, now); err != nil {
		rt.CancelAt(now)
		rc.CancelAt(now)
		return err
	}
	a.sessions++
	u.sessions++
	a.stored += bytes
	u.stored += bytes
	return nil
}

// checkBytes refuses bytes more for c; callers hold a.mu.
func (a *admitter) checkBytes(c creator, u *usage, bytes int64) error {
	q := a.q
	switch {
	case a.stored+bytes > q.MaxStoredBytes:
		return refused(connect.CodeResourceExhausted, ruleMaxStored, "the node's sessions hold %d bytes; %d more would pass its limit of %d (the operator raises --max-stored)", a.stored, bytes, q.MaxStoredBytes)
	case u.stored+bytes > q.MaxStoredBytesPerCreator:
		return refused(connect.CodeResourceExhausted, ruleCreatorStored, "the sessions of creator %s hold %d bytes; %d more would pass the limit per creator of %d (close some; the operator raises --max-stored-per-creator)", c, u.stored, bytes, q.MaxStoredBytesPerCreator)
	}
	return nil
}

// addBytes counts bytes more held by a session of c, or refuses them
// (force: count them anyway, for outputs a run already produced).
func (a *admitter) addBytes(c creator, bytes int64, force bool, now time.Time) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	u := a.usage[c]
	if u == nil {
		var err error
		if u, err = a.usageOf(c, now); err != nil && !force {
			return err
		}
		if u == nil { // forced past MaxCreators
			u = &usage{lim: rate.NewLimiter(a.rates.perCreator, a.rates.creatorBursts)}
			a.usage[c] = u
		}
	}
	if !force {
		if err := a.checkBytes(c, u, bytes); err != nil {
			return err
		}
	}
	a.stored += bytes
	u.stored += bytes
	return nil
}

// release gives back what a session of c held (sessions: 1 when it is
// erased, 0 when only bytes go).
func (a *admitter) release(c creator, sessions int, bytes int64) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.sessions -= sessions
	a.stored -= bytes
	if u := a.usage[c]; u != nil {
		u.sessions -= sessions
		u.stored -= bytes
	}
}

// restored counts a session held since before a restart, without any
// check: it was admitted then.
func (a *admitter) restored(c creator, bytes int64) {
	a.mu.Lock()
	defer a.mu.Unlock()
	u := a.usage[c]
	if u == nil {
		u = &usage{lim: rate.NewLimiter(a.rates.perCreator, a.rates.creatorBursts)}
		a.usage[c] = u
	}
	a.sessions++
	u.sessions++
	a.stored += bytes
	u.stored += bytes
}

func (a *admitter) storedTotal() int64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.stored
}

// checkDisk refuses new work while the data directory's file system has
// less than MinFreeBytes (plus need) free: what is left is kept for the
// sessions already admitted to finish, and for the ledger.
func (a *admitter) checkDisk(need int64) error {
	free, err := freeBytes(a.n.opts.DataDir)
	if err != nil {
		return nil // no answer: the write itself will say
	}
	if free-need < a.q.MinFreeBytes {
		return refused(connect.CodeResourceExhausted, ruleDiskReserve, "the node's data directory has %d bytes free; %d more would leave less than the %d kept for admitted sessions and the ledger. Free some space (the operator lowers --min-free)",
			free, need, a.q.MinFreeBytes)
	}
	return nil
}

// freeBytes is the space available to the node on dir's file system.
func freeBytes(dir string) (int64, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return 0, fmt.Errorf("statfs %s: %w", dir, err)
	}
	return int64(st.Bavail) * int64(st.Bsize), nil
}
