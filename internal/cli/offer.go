package cli

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/cloisterhq/cloister/internal/bytesize"
	"github.com/cloisterhq/cloister/keys"
	"github.com/cloisterhq/cloister/ledger"
	"github.com/cloisterhq/cloister/ledger/client"
	"github.com/cloisterhq/cloister/ledger/deal"
	"github.com/cloisterhq/cloister/ledger/verify"
	"github.com/cloisterhq/cloister/market"
)

// newOfferCmd is 'offer': providers' offers of capacity on the ledger.
func newOfferCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "offer",
		Short: "List or publish providers' offers of attested capacity",
		Long: `A provider node publishes an offer on the ledger — its isolate classes, the
digest of the evidence and the measurements it attests to, memory, cores,
concurrent runs, an optional price per CPU-second and region labels — that
lives for --ttl from the block that takes it, and renews it (a heartbeat)
before it expires. Everything in an offer is the provider's claim; a
dispatcher checks fresh evidence before trusting it. See docs/marketplace.md.`,
		Example: `  cloister offer list --ledger http://127.0.0.1:7480 --json`,
	}
	cmd.AddCommand(newOfferListCmd(), newOfferPublishCmd(), newOfferStatsCmd())
	return cmd
}

// offerRow is one line of 'offer list --json'.
type offerRow struct {
	client.LiveOffer
	AgeSeconds float64 `json:"age_seconds"` // since the offer entry's time, as of the answer
}

type offerListing struct {
	AsOf   time.Time  `json:"as_of"`
	Height int64      `json:"height"`
	Offers []offerRow `json:"offers"`
}

func newOfferListCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "list --ledger URL",
		Short: "List the live offers with the age of each",
		Long: `list shows every node's latest offer that has not expired, with its age (time
since the node signed it: a node that renews its offer keeps it young), the
node's endpoint and organisation. Each offer entry's signature is checked
here; which offers are live is the ledger API's reading of its state.

Exit status: 0 listed (possibly none); 1 the ledger is unreachable or its
answer is malformed; 2 bad usage.`,
		Example: `  cloister offer list --ledger http://127.0.0.1:7480
  cloister offer list --ledger http://127.0.0.1:7480 --json`,
		Args: cobra.NoArgs,
	}
	read := func(c *client.Client, ctx context.Context) (offerListing, error) {
		l, err := c.Offers(ctx)
		if err != nil {
			return offerListing{}, err
		}
		out := offerListing{AsOf: l.AsOf, Height: l.Height, Offers: make([]offerRow, 0, len(l.Offers))}
		for _, o := range l.Offers {
			// The entry's time is the node's clock, within the ledger's
			// allowed skew of the ledger's: a node a little ahead shows 0.
			age := max(l.AsOf.Sub(o.Published), 0).Round(time.Second)
			out.Offers = append(out.Offers, offerRow{LiveOffer: o, AgeSeconds: age.Seconds()})
		}
		return out, nil
	}
	ledgerListing(cmd, "offer list", "print the offers as JSON", read, func(w io.Writer, out offerListing) error {
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "NODE\tAGE\tEXPIRES IN\tCLASSES\tMEMORY\tCORES\tRUNS\tPRICE\tREGIONS\tENDPOINT")
		for _, o := range out.Offers {
			price := o.Offer.Price
			if price == "" {
				price = "-"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%d\t%s\t%s\t%s\n", printable(o.Node), time.Duration(o.AgeSeconds)*time.Second,
				o.Expires.Sub(out.AsOf).Round(time.Second), printable(strings.Join(o.Offer.Classes, ",")), offerMemory(o.Offer.Memory),
				o.Offer.Cores, o.Offer.Concurrency, printable(price), printable(strings.Join(o.Offer.Regions, ",")), printable(o.Endpoint))
		}
		return tw.Flush()
	})
	return cmd
}

func newOfferPublishCmd() *cobra.Command {
	var keyFile, evidenceFile, memory, price, endpoint string
	var classes, measurements, regions []string
	var cores, concurrency uint64
	var ttl, every time.Duration
	cmd := &cobra.Command{
		Use:   "publish --ledger URL --key NODE.key --class C --evidence FILE --memory SIZE --cores N --concurrency N",
		Short: "Publish a node's offer, once or renewed on a heartbeat",
		Long: `publish signs an offer entry with the node's platform key (the node must be
registered on the ledger) and appends it. With --every it renews the offer
at that interval until interrupted; --every must be shorter than --ttl, or
the offer lapses between heartbeats.

Exit status: 0 published (or, with --every, stopped by a signal); 1 the
ledger refused the offer or is unreachable; 2 bad usage.`,
		Example: `  cloister offer publish --ledger http://127.0.0.1:7480 --key node.key --class software \
    --evidence node.evidence --memory 4GiB --cores 2 --concurrency 4 --price 0.001 --region eu-west --ttl 60s --every 20s`,
		Args: cobra.NoArgs,
	}
	newClient := ledgerURLFlag(cmd)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		if keyFile == "" || evidenceFile == "" || len(classes) == 0 || memory == "" || cores == 0 || concurrency == 0 {
			return usageError("offer publish: --key, --class, --evidence, --memory, --cores and --concurrency are required")
		}
		if ttl < time.Second || ttl > 600*time.Second {
			return usageError("offer publish: --ttl must be 1s to 10m")
		}
		if every != 0 && every >= ttl {
			return usageError("offer publish: --every %s must be shorter than --ttl %s", every, ttl)
		}
		mem, err := bytesize.Parse(memory)
		if err != nil || mem <= 0 {
			return usageError("offer publish: --memory %q: want a size such as 4GiB", memory)
		}
		k, err := keys.Load(keyFile)
		if err != nil {
			return usageError("offer publish: --key: %v", err)
		}
		ev, err := os.ReadFile(evidenceFile)
		if err != nil {
			return usageError("offer publish: --evidence: %v", err)
		}
		sum := sha256.Sum256(ev)
		offer := client.Offer{Classes: classes, EvidenceDigest: hex.EncodeToString(sum[:]), Measurements: measurements,
			Memory: uint64(mem), Cores: cores, Concurrency: concurrency, Price: price, Regions: regions,
			TTL: uint64(ttl / time.Second)}
		c, err := newClient()
		if err != nil {
			return err
		}
		ctx, stop := signalContext(cmd)
		defer stop()
		if endpoint != "" {
			se, err := verify.NewEntry(k.Signer(), ledger.KindNodeEndpoint, map[string]string{"endpoint": endpoint})
			if err != nil {
				return usageError("offer publish: %v", err)
			}
			if _, err := c.Append(ctx, se); err != nil {
				return ledgerFailure("offer publish: node.endpoint", c, err)
			}
		}
		publish := func(ctx context.Context) error {
			se, err := verify.NewEntry(k.Signer(), ledger.KindOffer, offer)
			if err != nil {
				return usageError("offer publish: %v", err)
			}
			rc, err := c.Append(ctx, se)
			if err != nil {
				return ledgerFailure("offer publish", c, err)
			}
			fmt.Fprintln(cmd.OutOrStdout(), rc.Index)
			return nil
		}
		if err := publish(ctx); err != nil || every == 0 {
			return err
		}
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return nil
			case <-t.C:
				if err := publish(ctx); err != nil {
					if ctx.Err() != nil {
						return nil
					}
					fmt.Fprintf(cmd.ErrOrStderr(), "offer publish: renewal failed, retrying at the next heartbeat: %v\n", err)
				}
			}
		}
	}
	f := cmd.Flags()
	f.StringVar(&keyFile, "key", "", "the node's platform key file (signs the offer)")
	f.StringVar(&evidenceFile, "evidence", "", "the evidence the node attests with (its sha256 goes in the offer)")
	f.StringSliceVar(&classes, "class", nil, "isolate class offered (repeatable)")
	f.StringSliceVar(&measurements, "measurement", nil, "measurement attested to, lower-case hex (repeatable)")
	f.StringSliceVar(&regions, "region", nil, "region label (repeatable)")
	f.StringVar(&memory, "memory", "", "memory offered, e.g. 4GiB")
	f.Uint64Var(&cores, "cores", 0, "cores offered")
	f.Uint64Var(&concurrency, "concurrency", 0, "concurrent runs offered")
	f.StringVar(&price, "price", "", "price per CPU-second, a decimal such as 0.001")
	f.StringVar(&endpoint, "endpoint", "", "first move the node to this URL (a node.endpoint entry): where dispatchers and consumers reach it")
	f.DurationVar(&ttl, "ttl", 60*time.Second, "how long the offer lives after the block that takes it (at most 10m)")
	f.DurationVar(&every, "every", 0, "renew the offer at this interval until interrupted (0: publish once)")
	return cmd
}

// offerMemory renders an offer's memory for people: whole GiB when it is,
// else MiB.
func offerMemory(n uint64) string {
	if n%(1<<30) == 0 {
		return fmt.Sprintf("%dGiB", n>>30)
	}
	return fmt.Sprintf("%.0fMiB", float64(n)/(1<<20))
}

// statsRow is one provider in 'offer stats --json'.
type statsRow struct {
	Node            string  `json:"node"`
	Runs            uint64  `json:"runs"`
	Failures        uint64  `json:"failures"`
	RecentFailures  int     `json:"recent_failures"` // among the last market.RecordWindow runs: the rank's input
	MedianLatencyMs *uint64 `json:"median_latency_ms"`
	Samples         int     `json:"latency_samples"`
	// CPU time of its accounted runs, as the provider's node reported it
	// (market.accounted cpu_ms): the total, and the runs that reported
	// any (0 is "not measured").
	CPUMillis   uint64 `json:"cpu_ms"`
	CPUMeasured int    `json:"cpu_measured_runs"`
}

// cpuByProvider folds the log's market.accounted entries into each
// provider's total CPU time and the number of runs that reported one.
func cpuByProvider(ctx context.Context, c *client.Client) (map[string][2]uint64, error) {
	out := map[string][2]uint64{}
	for from := uint64(0); ; {
		page, err := c.Entries(ctx, from, 1000)
		if err != nil {
			return nil, err
		}
		for _, e := range page.Entries {
			if string(e.Signed.Entry.Kind) != deal.KindAccounted {
				continue
			}
			a, err := deal.DecodeAccount(e.Signed.Entry.Body)
			if err != nil || a.CPUMillis == 0 {
				continue
			}
			t := out[a.Provider]
			out[a.Provider] = [2]uint64{t[0] + a.CPUMillis, t[1] + 1}
		}
		from += uint64(len(page.Entries))
		if len(page.Entries) == 0 || from >= page.Size {
			return out, nil
		}
	}
}

// statsListing is what 'offer stats --json' prints.
type statsListing struct {
	Height    int64      `json:"height"`
	Providers []statsRow `json:"providers"`
}

func newOfferStatsCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "stats --ledger URL",
		Short: "Summarise each provider's marketplace runs: runs, failures, median latency, CPU time",
		Long: `stats reads every provider's record from the ledger — kept by the state
machine from market.failed entries (a failure) and market.accounted entries
(a finished run, with the wall time the provider reported) — and shows its
runs, failures, failures among its last 10 runs (what the dispatcher's
ranking counts) and the median wall time of its latest 100 finished runs;
and, folded from the log's market.accounted entries, the CPU time of its
accounted runs as its node reported it (the provider's claim: the consumer
countersigns the wall time it observed, not the CPU time).

Exit status: 0 shown; 1 the ledger is unreachable or its answer is
malformed; 2 bad usage.`,
		Example: `  cloister offer stats --ledger http://127.0.0.1:7480 --json`,
		Args:    cobra.NoArgs,
	}
	read := func(c *client.Client, ctx context.Context) (statsListing, error) {
		recs, err := c.MarketRecords(ctx)
		if err != nil {
			return statsListing{}, err
		}
		cpu, err := cpuByProvider(ctx, c)
		if err != nil {
			return statsListing{}, err
		}
		rows := make([]statsRow, 0, len(recs.Records))
		for _, r := range recs.Records {
			row := statsRow{Node: r.Node, Runs: r.Runs, Failures: r.Failures, Samples: len(r.LatencyMs),
				RecentFailures: market.Candidate{Recent: r.Recent}.Failures(), CPUMillis: cpu[r.Node][0], CPUMeasured: int(cpu[r.Node][1])}
			if len(r.LatencyMs) > 0 {
				l := slices.Clone(r.LatencyMs)
				slices.Sort(l)
				m := l[len(l)/2]
				if len(l)%2 == 0 {
					m = (l[len(l)/2-1] + l[len(l)/2]) / 2
				}
				row.MedianLatencyMs = &m
			}
			rows = append(rows, row)
		}
		return statsListing{Height: recs.Height, Providers: rows}, nil
	}
	ledgerListing(cmd, "offer stats", "print the records as JSON", read, func(w io.Writer, l statsListing) error {
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "NODE\tRUNS\tFAILURES\tRECENT FAILURES\tMEDIAN LATENCY\tCPU (REPORTED)")
		for _, r := range l.Providers {
			lat := "-"
			if r.MedianLatencyMs != nil {
				lat = (time.Duration(*r.MedianLatencyMs) * time.Millisecond).String()
			}
			cpu := "-"
			if r.CPUMeasured > 0 {
				cpu = fmt.Sprintf("%s in %d runs", time.Duration(r.CPUMillis)*time.Millisecond, r.CPUMeasured)
			}
			fmt.Fprintf(tw, "%s\t%d\t%d\t%d/%d\t%s\t%s\n", printable(r.Node), r.Runs, r.Failures, r.RecentFailures, min(r.Runs, market.RecordWindow), lat, cpu)
		}
		return tw.Flush()
	})
	return cmd
}
