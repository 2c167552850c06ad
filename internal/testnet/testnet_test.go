package testnet_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cloisterhq/cloister/client"
	"github.com/cloisterhq/cloister/internal/testbin"
	"github.com/cloisterhq/cloister/internal/testnet"
	"github.com/cloisterhq/cloister/keys"
	lclient "github.com/cloisterhq/cloister/ledger/client"
)

func TestMain(m *testing.M) {
	code := m.Run()
	testbin.Cleanup()
	os.Exit(code)
}

// TestNetwork starts a network of one validator, two nodes of two
// organisations with different classes (software and, where swtpm is
// installed, tpm) and limits, a broker, a blob store and a dispatcher,
// each a process;
// checks that each answers, that the organisations are consortium
// members and the nodes are on the ledger with their endpoints,
// organisations and live offers (through the API and 'cloister offer
// list'); kills one node and waits until its offer has expired while the
// other's stays live; and stops everything, leaving no process of any
// component's process group behind. Every wait is bounded; none is timed.
func TestNetwork(t *testing.T) {
	bin, err := testbin.Cloister()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	var events bytes.Buffer
	nw, err := testnet.Start(ctx, testnet.Options{Dir: filepath.Join(t.TempDir(), "net"), Bin: bin, OfferTTL: 6 * time.Second, Out: &events})
	if err != nil {
		t.Fatal(err)
	}
	info := nw.Info()
	var pids []int
	for _, name := range nw.Names() {
		pids = append(pids, nw.PID(name))
	}
	stopped := false
	defer func() {
		if !stopped {
			nw.Stop()
		}
	}()

	// The layout: what was asked for, and testnet.json saying the same.
	if len(info.Validators) != 1 || len(info.Nodes) != 2 || len(info.Brokers) != 1 || info.BlobStore == nil || len(info.Dispatchers) != 1 {
		t.Fatalf("info: %+v", info)
	}
	var saved testnet.Info
	if b, err := os.ReadFile(filepath.Join(info.Dir, testnet.InfoFile)); err != nil {
		t.Fatal(err)
	} else if err := json.Unmarshal(b, &saved); err != nil || saved.LedgerURL != info.LedgerURL || len(saved.Nodes) != 2 {
		t.Fatalf("%s: %v %+v", testnet.InfoFile, err, saved)
	}
	if testnet.SwtpmInstalled() {
		if info.Nodes[0].Class == info.Nodes[1].Class {
			t.Errorf("two nodes of class %s; want software and tpm", info.Nodes[0].Class)
		}
	} else {
		t.Log("swtpm is not installed (Debian package swtpm): both nodes are of class software")
	}
	if info.Nodes[0].Organisation == info.Nodes[1].Organisation || info.Nodes[0].Memory == info.Nodes[1].Memory {
		t.Errorf("nodes share an organisation or limits: %+v", info.Nodes)
	}

	// Every component answers.
	lc := nw.Ledger()
	if st, err := lc.Status(ctx); err != nil || st.ChainID != info.ChainID {
		t.Fatalf("ledger status: %v %+v", err, st)
	}
	for _, b := range info.Brokers {
		get(t, b.URL+"/readyz")
		if k, err := keys.Load(b.KeyFile); err != nil || k.Public().SigningString() != b.SigningKey {
			t.Errorf("broker %s: key file %s: %v", b.Name, b.KeyFile, err)
		}
	}
	get(t, info.BlobStore.URL+"/v2/")
	if len(info.Dispatchers) != 1 {
		t.Fatalf("dispatchers: %+v", info.Dispatchers)
	}
	get(t, info.Dispatchers[0].URL+"/v1/info")
	for _, nd := range info.Nodes {
		c, err := client.Dial(ctx, nd.URL)
		if err != nil {
			t.Fatal(err)
		}
		ni, err := c.NodeInfo(ctx)
		c.Close()
		if err != nil {
			t.Fatalf("node %s: %v", nd.Name, err)
		}
		if ni.IsolateClass != nd.Class || ni.PlatformKey != nd.PlatformKey {
			t.Errorf("node %s answers class %s key %s; info says %s %s", nd.Name, ni.IsolateClass, ni.PlatformKey, nd.Class, nd.PlatformKey)
		}
	}

	// The organisations are consortium members; the nodes are on the
	// ledger with their endpoints, organisations and offers.
	orgKey := map[string]string{}
	for _, o := range info.Organisations {
		pk, err := o.PublicKey()
		if err != nil {
			t.Fatal(err)
		}
		if ok, err := lc.IsMember(ctx, pk); err != nil || !ok {
			t.Errorf("organisation %s is not a member: %v", o.Name, err)
		}
		orgKey[o.Name] = o.Key
	}
	offers := offerList(t, bin, info.LedgerURL)
	for _, nd := range info.Nodes {
		i := slices.IndexFunc(offers, func(o lclient.LiveOffer) bool { return o.Node == nd.PlatformKey })
		if i < 0 {
			t.Fatalf("no live offer of node %s in 'offer list': %+v", nd.Name, offers)
		}
		o := offers[i]
		if o.Endpoint != nd.URL || o.Organisation != orgKey[nd.Organisation] || !slices.Equal(o.Offer.Classes, []string{nd.Class}) ||
			o.Offer.Cores != nd.Cores || o.Offer.Concurrency != nd.Concurrency || o.Offer.Price != nd.Price {
			t.Errorf("node %s's offer %+v; want endpoint %s, organisation %s, class %s, %d cores, %d runs, price %s",
				nd.Name, o, nd.URL, orgKey[nd.Organisation], nd.Class, nd.Cores, nd.Concurrency, nd.Price)
		}
	}

	// A provider dies: its offer expires; the other's stays live, renewed.
	dead, alive := info.Nodes[1], info.Nodes[0]
	if err := nw.Kill(dead.Name); err != nil {
		t.Fatal(err)
	}
	if nw.Running(dead.Name) {
		t.Fatalf("%s still runs after Kill", dead.Name)
	}
	waitOffers(t, ctx, lc, func(l *lclient.OfferList) bool { return !hasOffer(l, dead.PlatformKey) })
	waitOffers(t, ctx, lc, func(l *lclient.OfferList) bool { return hasOffer(l, alive.PlatformKey) })
	if !strings.Contains(events.String(), dead.Name+" stopped unexpectedly") {
		t.Errorf("the killed node was not reported: %q", events.String())
	}

	// Stop: every process ends, and nothing of their process groups stays.
	nw.Stop()
	stopped = true
	for _, name := range nw.Names() {
		if nw.Running(name) {
			t.Errorf("%s still runs after Stop", name)
		}
	}
	if left := inGroups(pids); len(left) > 0 {
		t.Errorf("processes left after Stop: %v", left)
	}
}

// TestStartRefusesUsedDir: a network starts in a new directory only, and
// a bad node spec is refused before anything starts.
func TestStartRefusesUsedDir(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "precious"), []byte("x"), 0o600)
	if _, err := testnet.Start(context.Background(), testnet.Options{Dir: dir, Bin: "/bin/false"}); err == nil || !strings.Contains(err.Error(), "not empty") {
		t.Errorf("a used directory: %v", err)
	}
	_, err := testnet.Start(context.Background(), testnet.Options{Dir: t.TempDir(), Bin: "/bin/false", Nodes: []testnet.NodeSpec{{Class: "sgx"}}})
	if err == nil || !strings.Contains(err.Error(), "want software or tpm") {
		t.Errorf("class sgx: %v", err)
	}
}

func get(t *testing.T, url string) {
	t.Helper()
	c := &http.Client{Timeout: 30 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("%s: %s", url, resp.Status)
	}
}

func offerList(t *testing.T, bin, ledgerURL string) []lclient.LiveOffer {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, "offer", "list", "--ledger", ledgerURL, "--json").Output()
	if err != nil {
		t.Fatalf("cloister offer list: %v", err)
	}
	var l struct {
		Offers []lclient.LiveOffer `json:"offers"`
	}
	if err := json.Unmarshal(out, &l); err != nil {
		t.Fatalf("offer list --json: %v\n%s", err, out)
	}
	return l.Offers
}

func hasOffer(l *lclient.OfferList, node string) bool {
	return slices.ContainsFunc(l.Offers, func(o lclient.LiveOffer) bool { return o.Node == node })
}

// waitOffers polls the live offers until ok holds (bounded by ctx).
func waitOffers(t *testing.T, ctx context.Context, lc *lclient.Client, ok func(*lclient.OfferList) bool) {
	t.Helper()
	for {
		l, err := lc.Offers(ctx)
		if err == nil && ok(l) {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("the offers never reached the state awaited (%v): %+v", err, l)
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// inGroups lists the processes whose process group is one of pgids (each
// component leads a group of its own; a node's workers are in its group).
func inGroups(pgids []int) []string {
	var out []string
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid pgrp …; comm may hold spaces.
		rest := string(b[strings.LastIndexByte(string(b), ')')+1:])
		f := strings.Fields(rest)
		if len(f) < 3 {
			continue
		}
		pgrp, _ := strconv.Atoi(f[2])
		if slices.Contains(pgids, pgrp) {
			out = append(out, fmt.Sprintf("%d (%s)", pid, strings.TrimSpace(string(b[:strings.LastIndexByte(string(b), ')')+1]))))
		}
	}
	return out
}
